package config

import (
	"crypto/ed25519"
	"net/netip"
	"time"
)

// Cluster is the replicated cluster configuration (e.g. cluster.toml).
type Cluster struct {
	// File is the name the config was loaded from; used in errors only.
	File     string
	Settings ClusterSettings // [cluster]
	Members  []Member        // [[member]], in file order
	Groups   []Group         // [[group]], in file order
	SelfTest SelfTest        // [selftest]
	Events   Events          // [events]
	Admin    Admin           // [admin]
	// Observers are the [[observer]] tables, in file order: stock serf
	// agents admitted to the gossip pool without being members.
	Observers []Observer
}

// Admin is the [admin] table: who may use the HTTPS admin API.
type Admin struct {
	// Users are the [[admin.user]] tables. Default none: the HTTPS API
	// then answers nobody but peers (node keys).
	Users []AdminUser
}

// Admin API roles.
const (
	RoleAdmin    = "admin"
	RoleReadOnly = "read-only"
)

// AdminUser is one [[admin.user]] table.
type AdminUser struct {
	// Name identifies the user (HTTP basic auth user name). Required,
	// unique.
	Name string
	// PasswordHash is a bcrypt hash ("$2a$", "$2b$" or "$2y$"), e.g. from
	// `shoal admin hash-password`. Optional if TokenHash is set.
	PasswordHash string
	// TokenHash is "sha256:" + 64 hex digits of a bearer token, e.g. from
	// `shoal admin new-token`. Optional if PasswordHash is set.
	TokenHash string
	// Role is RoleAdmin (default) or RoleReadOnly.
	Role string
}

// Observer is one [[observer]] table: a stock serf agent (`serf agent
// -node <name> -encrypt <gossip key>`) admitted to the gossip pool without
// an admission token, to watch members and exchange user events. Observers
// send no heartbeats, so they are never in the view and never get traffic
// IPs; anyone holding the gossip key can claim an observer's name (see
// docs/CONFIG.md for the trade-off).
type Observer struct {
	// Name is the serf node name the observer joins with. Required, unique,
	// not a member's name; letters, digits, '.', '_' and '-', at most 63
	// characters.
	Name string
	// Address, if set, is the only address the observer may advertise; the
	// zero Addr (default) accepts any.
	Address netip.Addr
}

// ObserverAddrs maps every observer's name to its Address (the zero Addr:
// any), the form gossip.Config.Observers takes; nil when there are none.
func (c *Cluster) ObserverAddrs() map[string]netip.Addr {
	if len(c.Observers) == 0 {
		return nil
	}
	out := make(map[string]netip.Addr, len(c.Observers))
	for _, o := range c.Observers {
		out[o.Name] = o.Address
	}
	return out
}

// Modes of a traffic IP group.
const (
	ModeSingle = "single" // each IP is raised by exactly one member
	ModeMulti  = "multi"  // each IP is raised by every alive member, which split the traffic
)

// Hash functions of a multi-hosted group.
const (
	HashIPPort = "ip-port" // source and destination address and port
	HashIP     = "ip"      // source and destination address only
)

// Heartbeat modes.
const (
	HeartbeatMulticast = "multicast"
	HeartbeatUnicast   = "unicast"
)

// Limits checked by validation.
const (
	MinHeartbeatInterval = 100 * time.Millisecond
	MaxHeartbeatInterval = 5 * time.Second
	MaxMultiMembers      = 8  // members of a multi-hosted group
	MaxSingleMembers     = 64 // members of a single-hosted group
)

// ClusterSettings is the [cluster] table.
type ClusterSettings struct {
	// Name is the cluster's name, carried in every heartbeat. Required.
	Name string
	// HeartbeatInterval is how often each member sends a heartbeat.
	// Default 500ms; range 100ms..5s.
	HeartbeatInterval time.Duration
	// MonitorTimeout: a member that sends no heartbeat and answers no probe
	// for this long is down. Default 4 x HeartbeatInterval; at least
	// 2 x HeartbeatInterval, at most 5m.
	MonitorTimeout time.Duration
	// MulticastGroup is the IPv4 multicast group for heartbeats; its low 23
	// bits also give multi-hosted groups their MAC 01:00:5e:xx:xx:xx.
	// Default 239.77.83.1.
	MulticastGroup netip.Addr
	// MulticastPort is the UDP port of heartbeats. Default 7947.
	MulticastPort uint16
	// HeartbeatMode is "multicast" (default) or "unicast" (sent to every
	// member's Address).
	HeartbeatMode string
	// GossipPort is the serf/memberlist port on every member. Default 7946.
	GossipPort uint16
	// ConfigPort is the TCP port of the mutually authenticated config
	// channel (replication and joining) on every member. Default 7948.
	ConfigPort uint16
	// Verbose logs every heartbeat and view change. Default false.
	Verbose bool
}

// DefaultClusterSettings returns the [cluster] defaults (Name is empty and
// must be set).
func DefaultClusterSettings() ClusterSettings {
	return ClusterSettings{
		HeartbeatInterval: 500 * time.Millisecond,
		MonitorTimeout:    2 * time.Second,
		MulticastGroup:    netip.MustParseAddr("239.77.83.1"),
		MulticastPort:     7947,
		HeartbeatMode:     HeartbeatMulticast,
		GossipPort:        7946,
		ConfigPort:        7948,
	}
}

// Member is one [[member]] table: a node of the cluster.
type Member struct {
	// Name identifies the member everywhere (groups, heartbeats). Required,
	// unique, letters, digits, '.', '_' and '-', at most 63 characters.
	Name string
	// Address is the member's unicast address for gossip, probes and
	// unicast heartbeats. Required, unique.
	Address netip.Addr
	// PublicKey is the member's pinned Ed25519 identity; written in TOML as
	// "ed25519:" + base64. Required.
	PublicKey ed25519.PublicKey
	// CanUpdate false makes a restricted node: peers refuse config updates
	// it signs. Default true.
	CanUpdate bool
	// Location is an optional site name. Default "".
	Location string
}

// Group is one [[group]] table: a traffic IP group.
type Group struct {
	// Name identifies the group. Required, unique.
	Name string
	// Mode is ModeSingle (default) or ModeMulti.
	Mode string
	// IPs are the traffic IPs, in file order (order matters: appending an
	// IP never moves the others). Required; no IP may be in two groups.
	IPs []netip.Addr
	// Members are the member names spanning the group. Required; at most
	// 8 for multi-hosted groups, 64 for single-hosted ones.
	Members []string
	// Passive are the standby members, a subset of Members. At least one
	// member must stay active. Default none.
	Passive []string
	// KeepTogether (single-hosted only) raises all IPs on one member.
	// Default false.
	KeepTogether bool
	// Interface is the network interface the IPs are raised on. Required.
	Interface string
	// PrefixLen is the prefix length used when raising an IP; 0 (default)
	// means a host address (/32 or /128).
	PrefixLen int
	// PrefixRoute adds the kernel's prefix route. Default false.
	PrefixRoute bool
	// Hash (multi-hosted only) is HashIPPort (default) or HashIP; empty for
	// single-hosted groups.
	Hash string
	// FailbackDelay holds a recovered member back from taking IPs for this
	// long. Default 0; at most 1h.
	FailbackDelay time.Duration
	// Slots (multi-hosted only) maps every member to its stable slot 0..7.
	// Members without a slot in the file get the lowest free slot, taking
	// members in the order listed; Encode writes them back so they never
	// renumber. Nil for single-hosted groups.
	Slots map[string]int
	// GARPCount is the gratuitous ARP / unsolicited NA burst size on raise.
	// Default 5; range 0..100.
	GARPCount int
	// GARPSpread is the time the burst is spread over. Default 2s; at most 1m.
	GARPSpread time.Duration
	// GARPRefresh is the periodic re-announcement interval; 0 = off.
	// Default 60s; otherwise at least 1s.
	GARPRefresh time.Duration
}

// IsPassive reports whether member name is passive in g.
func (g *Group) IsPassive(name string) bool {
	for _, p := range g.Passive {
		if p == name {
			return true
		}
	}
	return false
}

// DefaultGroup returns a group holding the defaults of every optional key.
func DefaultGroup() Group {
	return Group{
		Mode:        ModeSingle,
		GARPCount:   5,
		GARPSpread:  2 * time.Second,
		GARPRefresh: 60 * time.Second,
	}
}

// SelfTest is the [selftest] table: checks a node runs on itself; a node
// that fails them reports itself failed and drops its IPs.
type SelfTest struct {
	// Gateway is pinged every Interval; the zero Addr (default) disables
	// the gateway test.
	Gateway netip.Addr
	// CheckIPs are more addresses to ping. Default none.
	CheckIPs []netip.Addr
	// Interval between test rounds. Default 1s; range 100ms..1m.
	Interval time.Duration
	// Timeout of one ping. Default 500ms; more than 0, at most Interval.
	Timeout time.Duration
	// FailAfter consecutive failed rounds report the node failed. Default 2.
	FailAfter int
	// RecoverAfter consecutive passed rounds recover it. Default 3.
	RecoverAfter int
	// CheckLinks requires every traffic interface to be up. Default true.
	CheckLinks bool
}

// DefaultSelfTest returns the [selftest] defaults.
func DefaultSelfTest() SelfTest {
	return SelfTest{
		Interval:     time.Second,
		Timeout:      500 * time.Millisecond,
		FailAfter:    2,
		RecoverAfter: 3,
		CheckLinks:   true,
	}
}

// Events is the [events] table: what to do when things happen.
type Events struct {
	// SerfHandlers use the serf agent -event-handler syntax
	// ("member-join,user:deploy=/path/script.sh"). Default none.
	SerfHandlers []string
	// MaxConcurrent actions run at once. Default 4; range 1..64.
	MaxConcurrent int
	// DefaultTimeout of an action without its own. Default 10s; at most 1h.
	DefaultTimeout time.Duration
	// Actions are the [[events.action]] tables.
	Actions []Action
}

// DefaultEvents returns the [events] defaults.
func DefaultEvents() Events {
	return Events{MaxConcurrent: 4, DefaultTimeout: 10 * time.Second}
}

// Action types.
const (
	ActionLog     = "log"
	ActionScript  = "script"
	ActionEmail   = "email"
	ActionWebhook = "webhook"
)

// Action is one [[events.action]] table.
type Action struct {
	// Name identifies the action. Required, unique.
	Name string
	// Type is ActionLog, ActionScript, ActionEmail or ActionWebhook.
	Type string
	// Events are the event types to match; empty (default) = all.
	Events []string
	// Groups are the traffic IP groups to match; empty (default) = all.
	Groups []string
	// Timeout of one run. Default Events.DefaultTimeout.
	Timeout time.Duration
	// Command is the script to run (type script; required there).
	Command string
	// URL receives a JSON POST (type webhook; required there).
	URL string
	// Retries of a failed webhook or email, with backoff. Default 3; 0..10.
	Retries int
	// SMTPServer is host:port (type email; required there).
	SMTPServer string
	// StartTLS upgrades the SMTP connection. Default true.
	StartTLS bool
	// From and To address the mail (type email; required there).
	From string
	To   []string
	// Username and PasswordFile authenticate to the SMTP server. Default
	// none.
	Username     string
	PasswordFile string
	// BatchWindow collects events into one mail. Default 10s.
	BatchWindow time.Duration
	// MaxPerHour limits mails. Default 60; at least 1.
	MaxPerHour int
}

// DefaultAction returns an action holding the defaults of every optional
// key (Timeout 0 means Events.DefaultTimeout until validation fills it).
func DefaultAction() Action {
	return Action{Retries: 3, StartTLS: true, BatchWindow: 10 * time.Second, MaxPerHour: 60}
}

// Agent is the node-local agent file (e.g. agent-a.toml); never replicated.
// LoadAgent resolves every relative path against the file's directory.
type Agent struct {
	// File is the name the agent file was loaded from.
	File string
	// Node is this node's member name. Required.
	Node string
	// ClusterConfig is the initial cluster config. Default "cluster.toml".
	ClusterConfig string
	// DataDir holds the node's state. Default "/var/lib/shoal".
	DataDir string
	// KeyFile is the Ed25519 private key (PEM PKCS#8). Default "node.key".
	KeyFile string
	// SecretFile is the cluster secret. Default "cluster.secret".
	SecretFile string
	// Bind is the local address for gossip, probes and heartbeats; the zero
	// Addr (default) means the member's Address.
	Bind netip.Addr
	// HeartbeatInterface sends and receives multicast heartbeats; empty
	// (default) lets the kernel choose by route.
	HeartbeatInterface string
	// Socket is the local admin socket. Default "/run/shoal/shoal.sock".
	Socket string
	// LogLevel is "debug", "info" (default), "warn" or "error".
	LogLevel string
	// LogFormat is "console" (default) or "json".
	LogFormat string
	// AdminListen is the HTTPS admin API's host:port (API, web page,
	// /metrics); every member must use the same port. Empty (default) = off.
	AdminListen string
	// MetricsListen is a plain-HTTP, unauthenticated /metrics host:port.
	// Empty (default) = off.
	MetricsListen string
	// XDPMode is how multi-hosted groups attach the XDP program: "auto"
	// (default: native when the driver supports it, else generic),
	// "native" or "generic" (veth needs generic; docs/MULTIHOST.md).
	XDPMode string
}

// DefaultAgent returns the agent defaults (Node is empty and must be set).
func DefaultAgent() Agent {
	return Agent{
		ClusterConfig: "cluster.toml",
		XDPMode:       "auto",
		DataDir:       "/var/lib/shoal",
		KeyFile:       "node.key",
		SecretFile:    "cluster.secret",
		Socket:        "/run/shoal/shoal.sock",
		LogLevel:      "info",
		LogFormat:     "console",
	}
}

// MemberByName returns the member called name.
func (c *Cluster) MemberByName(name string) (Member, bool) {
	for _, m := range c.Members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// GroupByName returns the group called name.
func (c *Cluster) GroupByName(name string) (Group, bool) {
	for _, g := range c.Groups {
		if g.Name == name {
			return g, true
		}
	}
	return Group{}, false
}
