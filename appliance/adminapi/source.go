package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/dataplane"
	"github.com/shoal-project/shoal/dataplane/multihost"
	"github.com/shoal-project/shoal/gossip"
)

// Source is what the admin API reads from the running node. Every method is
// called from HTTP handlers and scrapes, concurrently: it must be safe for
// concurrent use, cheap, and must not block on the network.
type Source interface {
	// Status is this node's status, the value served on the local socket at
	// /v1/status (appliance.Status). It is served verbatim at
	// /api/v1/status and read back through its JSON form (NodeStatus).
	Status() any
	// Events returns up to n recent events, oldest first (n <= 0: all kept).
	Events(n int) []events.Event
	// Subscribe returns the events published from now on and a cancel
	// function that closes the channel (events.Dispatcher.Subscribe).
	Subscribe() (<-chan events.Event, func())
	// Explain says why ip is where it is. An error wrapping ErrNotFound, or
	// one with an HTTPStatus() int method, chooses the HTTP status.
	Explain(ip netip.Addr) (any, error)
	// Metrics returns the counters that the status does not carry.
	Metrics() MetricsSnapshot
}

// ErrNotFound marks a Source error that means "no such thing" (HTTP 404).
var ErrNotFound = errors.New("not found")

// MetricsSnapshot holds the component counters read at scrape time.
type MetricsSnapshot struct {
	Gossip    gossip.Stats
	Events    events.Stats
	Dataplane dataplane.Status
	// Multihost is nil when this node serves no multi-hosted group.
	Multihost *multihost.Status
}

// SourceFuncs adapts plain functions to a Source, so the agent can wire its
// existing methods without a new type. A nil function yields an empty
// answer (no events, a 404 explanation, zero metrics).
type SourceFuncs struct {
	StatusFunc    func() any
	EventsFunc    func(n int) []events.Event
	SubscribeFunc func() (<-chan events.Event, func())
	ExplainFunc   func(ip netip.Addr) (any, error)
	MetricsFunc   func() MetricsSnapshot
}

var _ Source = SourceFuncs{}

// Status implements Source.
func (f SourceFuncs) Status() any {
	if f.StatusFunc == nil {
		return NodeStatus{}
	}
	return f.StatusFunc()
}

// Events implements Source.
func (f SourceFuncs) Events(n int) []events.Event {
	if f.EventsFunc == nil {
		return nil
	}
	return f.EventsFunc(n)
}

// Subscribe implements Source.
func (f SourceFuncs) Subscribe() (<-chan events.Event, func()) {
	if f.SubscribeFunc == nil {
		return nil, func() {}
	}
	return f.SubscribeFunc()
}

// Explain implements Source.
func (f SourceFuncs) Explain(ip netip.Addr) (any, error) {
	if f.ExplainFunc == nil {
		return nil, fmt.Errorf("explain %s: %w", ip, ErrNotFound)
	}
	return f.ExplainFunc(ip)
}

// Metrics implements Source.
func (f SourceFuncs) Metrics() MetricsSnapshot {
	if f.MetricsFunc == nil {
		return MetricsSnapshot{}
	}
	return f.MetricsFunc()
}

// NodeStatus is the JSON contract of a node status (appliance.Status, served
// at /v1/status on the local socket and /api/v1/status over HTTPS), as far
// as the cluster view, the metrics and the web page read it. Unknown fields
// are ignored, so the agent may add fields freely; renaming one of these is
// an API change (docs/API.md).
type NodeStatus struct {
	Node          string       `json:"node"`
	Cluster       string       `json:"cluster"`
	Version       string       `json:"version"`
	Configured    bool         `json:"configured"`
	Health        NodeHealth   `json:"health"`
	View          NodeView     `json:"view"`
	ConfigVersion uint64       `json:"config_version"`
	ConfigHash    string       `json:"config_hash"`
	Members       []NodeMember `json:"members"`
	Groups        []NodeGroup  `json:"groups"`
}

// NodeHealth is a node's own self-test verdict.
type NodeHealth struct {
	OK      bool     `json:"ok"`
	Reasons []string `json:"reasons,omitempty"`
}

// NodeView is a node's view: members up, epoch, digest.
type NodeView struct {
	Epoch  uint64   `json:"epoch"`
	Up     []string `json:"up"`
	Digest string   `json:"digest"`
}

// NodeMember is one member as a node sees it.
type NodeMember struct {
	Name            string   `json:"name"`
	Address         string   `json:"address"`
	Self            bool     `json:"self"`
	Up              bool     `json:"up"`
	Health          string   `json:"health"`
	Reasons         []string `json:"reasons,omitempty"`
	LastHeartbeatMS int64    `json:"last_heartbeat_ms"`
	ConfigVersion   uint64   `json:"config_version"`
	Gossip          string   `json:"gossip"`
}

// NodeGroup is one traffic IP group's allocation as a node computes it.
type NodeGroup struct {
	Name    string            `json:"name"`
	Mode    string            `json:"mode"`
	Members []string          `json:"members"`
	Passive []string          `json:"passive,omitempty"`
	IPs     map[string]string `json:"ips,omitempty"`
	Held    []string          `json:"held,omitempty"`
	Shares  map[string]int    `json:"shares,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// maxStatusSize bounds a node status read from a peer.
const maxStatusSize = 8 << 20

// DecodeNodeStatus reads a node status from its JSON form. It rejects
// anything that is not a JSON object with a node name.
func DecodeNodeStatus(b []byte) (NodeStatus, error) {
	if len(b) > maxStatusSize {
		return NodeStatus{}, fmt.Errorf("decode node status: %d bytes exceeds %d", len(b), maxStatusSize)
	}
	var st NodeStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return NodeStatus{}, fmt.Errorf("decode node status: %w", err)
	}
	if st.Node == "" {
		return NodeStatus{}, errors.New("decode node status: no node name")
	}
	return st, nil
}

// localStatus returns the Source's status in JSON and decoded form.
func localStatus(src Source) (json.RawMessage, NodeStatus, error) {
	b, err := json.Marshal(src.Status())
	if err != nil {
		return nil, NodeStatus{}, fmt.Errorf("encode status: %w", err)
	}
	var st NodeStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, NodeStatus{}, fmt.Errorf("read status: %w", err)
	}
	return b, st, nil
}
