package appliance

import (
	"time"

	"github.com/shoal-project/shoal/dataplane/multihost"
)

// Status is the answer of the admin API's /v1/status: this node's view of
// the cluster. Field names are part of the documented API (docs/API.md).
type Status struct {
	Node          string            `json:"node"`
	Cluster       string            `json:"cluster"`
	Version       string            `json:"version"`
	Configured    bool              `json:"configured"`
	Health        HealthStatus      `json:"health"`
	View          ViewStatus        `json:"view"`
	ConfigVersion uint64            `json:"config_version"`
	ConfigHash    string            `json:"config_hash"`
	Members       []MemberStatus    `json:"members"`
	Groups        []GroupStatus     `json:"groups"`
	Dataplane     any               `json:"dataplane,omitempty"`
	Multihost     *multihost.Status `json:"multihost,omitempty"` // XDP attachment, counters, responder counters, buckets owned
	Heartbeats    any               `json:"heartbeats,omitempty"`
	Goroutines    int               `json:"goroutines"` // the agent's goroutines now (leak checks)
}

// HealthStatus is this node's own self-test verdict.
type HealthStatus struct {
	OK      bool     `json:"ok"`
	Reasons []string `json:"reasons,omitempty"`
}

// ViewStatus is the current view: the members up, its epoch and digest.
type ViewStatus struct {
	Epoch  uint64   `json:"epoch"`
	Up     []string `json:"up"`
	Digest string   `json:"digest"`
}

// MemberStatus is one member as this node sees it.
type MemberStatus struct {
	Name            string   `json:"name"`
	Address         string   `json:"address"`
	Self            bool     `json:"self"`
	Up              bool     `json:"up"`
	Health          string   `json:"health"` // "ok", "failed" or "unknown"
	Reasons         []string `json:"reasons,omitempty"`
	LastHeartbeatMS int64    `json:"last_heartbeat_ms"` // -1 = never
	ConfigVersion   uint64   `json:"config_version"`
	Gossip          string   `json:"gossip"` // serf's member status
}

// GroupStatus is one traffic IP group's allocation as this node computes it.
type GroupStatus struct {
	Name    string            `json:"name"`
	Mode    string            `json:"mode"`
	Members []string          `json:"members"`
	Passive []string          `json:"passive,omitempty"`
	IPs     map[string]string `json:"ips,omitempty"`    // single: ip -> owner ("" = none)
	Held    []string          `json:"held,omitempty"`   // single: IPs held on this node now
	Shares  map[string]int    `json:"shares,omitempty"` // multi: member -> buckets
	Error   string            `json:"error,omitempty"`
}

// DefaultSocket is the admin socket used when neither --socket nor an agent
// file names one.
const DefaultSocket = "/run/shoal/shoal.sock"

// ConfigVersion is one cluster config version as the admin API returns it.
type ConfigVersion struct {
	Version uint64    `json:"version"` // Lamport counter
	ID      string    `json:"id"`      // hex of the signed header's hash
	Origin  string    `json:"origin"`  // node that made it ("" for the bootstrap version)
	Time    time.Time `json:"time"`
	Content string    `json:"content,omitempty"` // the TOML
}

// ConfigHistoryEntry is one stored version in `shoal config history`.
type ConfigHistoryEntry struct {
	Version uint64    `json:"version"`
	ID      string    `json:"id"`
	Origin  string    `json:"origin"`
	Time    time.Time `json:"time"`
	Status  string    `json:"status"` // applied, history, conflict-loser, rejected
	Reason  string    `json:"reason,omitempty"`
	Size    int       `json:"size"`
	Current bool      `json:"current"`
}
