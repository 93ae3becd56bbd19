package events

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Type names a kind of cluster event. The names are kebab-case and stable:
// they appear in configs (events = [...]), JSON, SHOAL_EVENT and metrics.
type Type string

// The event types the appliance raises.
const (
	MemberJoined    Type = "member-joined"    // a member appeared in the view
	MemberLeft      Type = "member-left"      // a member left gracefully
	MemberFailed    Type = "member-failed"    // a member stopped answering or reported failure
	MemberRecovered Type = "member-recovered" // a failed member is healthy again

	SelftestFailed Type = "selftest-failed" // this node's self-tests failed (Details: test, reason)
	SelftestPassed Type = "selftest-passed" // this node's self-tests pass again

	IPRaised  Type = "ip-raised"  // this node raised a traffic IP (IP, Group)
	IPDropped Type = "ip-dropped" // this node dropped a traffic IP (IP, Group)

	SharesChanged Type = "shares-changed" // the multi-hosted share table of a group changed
	ViewChanged   Type = "view-changed"   // the set of members seen up changed (Details: up, epoch)

	ConfigApplied  Type = "config-applied"  // a cluster config version was applied (Details: version)
	ConfigRejected Type = "config-rejected" // a config update was refused (Details: version, reason)
	ConfigConflict Type = "config-conflict" // two config versions conflict (Details: versions)

	HeartbeatRejected Type = "heartbeat-rejected" // Details: reason = forged | replayed | unknown
	DuplicateIP       Type = "duplicate-ip"       // another MAC answers ARP/ND for an IP we hold (split-brain alarm; Details: mac)

	AdminRefused Type = "admin-refused" // the HTTPS admin API refused a request (Details: status, reason, user, remote, method)
)

// AllTypes lists every event Type in a stable order.
var AllTypes = []Type{
	MemberJoined, MemberLeft, MemberFailed, MemberRecovered,
	SelftestFailed, SelftestPassed,
	IPRaised, IPDropped,
	SharesChanged, ViewChanged,
	ConfigApplied, ConfigRejected, ConfigConflict,
	HeartbeatRejected, DuplicateIP,
	AdminRefused,
}

// Valid reports whether t is one of AllTypes.
func (t Type) Valid() bool {
	for _, k := range AllTypes {
		if t == k {
			return true
		}
	}
	return false
}

// ParseType returns the Type named s, or an error listing the valid names.
func ParseType(s string) (Type, error) {
	t := Type(s)
	if !t.Valid() {
		names := make([]string, len(AllTypes))
		for i, k := range AllTypes {
			names[i] = string(k)
		}
		return "", fmt.Errorf("parse event type %q: unknown (valid: %s)", s, strings.Join(names, ", "))
	}
	return t, nil
}

// Severity grades an event for logs, mail subjects and UIs.
type Severity string

// Severities, from least to most urgent.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// DefaultSeverity is the severity Publish gives an event of type t that has
// none set.
func DefaultSeverity(t Type) Severity {
	switch t {
	case MemberFailed, SelftestFailed, DuplicateIP:
		return SeverityCritical
	case MemberLeft, ConfigRejected, ConfigConflict, HeartbeatRejected, AdminRefused:
		return SeverityWarning
	default:
		return SeverityInfo
	}
}

// Event is one thing that happened in the cluster, as seen by Node.
type Event struct {
	Time     time.Time         `json:"time"`              // when it was raised (Publish sets now if zero)
	Type     Type              `json:"type"`              // what happened
	Node     string            `json:"node"`              // the node that raised it (Publish sets self if empty)
	Member   string            `json:"member,omitempty"`  // the member it is about, if any
	Group    string            `json:"group,omitempty"`   // the traffic IP group it is about, if any
	IP       string            `json:"ip,omitempty"`      // the traffic IP it is about, if any
	Details  map[string]string `json:"details,omitempty"` // free-form facts (reason, mac, version...)
	Severity Severity          `json:"severity"`          // Publish sets DefaultSeverity(Type) if empty
}

// String is a one-line human summary, used in logs and mail bodies.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s node=%s", e.Time.UTC().Format(time.RFC3339), e.Severity, e.Type, e.Node)
	if e.Member != "" {
		fmt.Fprintf(&b, " member=%s", e.Member)
	}
	if e.Group != "" {
		fmt.Fprintf(&b, " group=%s", e.Group)
	}
	if e.IP != "" {
		fmt.Fprintf(&b, " ip=%s", e.IP)
	}
	for _, k := range sortedKeys(e.Details) {
		fmt.Fprintf(&b, " %s=%q", k, e.Details[k])
	}
	return oneLine(b.String())
}

// ShoalEnv returns the environment variables a Shoal script action gets for
// e, in a stable order: SHOAL_EVENT, SHOAL_SEVERITY, SHOAL_NODE, SHOAL_MEMBER,
// SHOAL_GROUP, SHOAL_IP, SHOAL_TIME (RFC 3339, UTC, nanoseconds), SHOAL_ACTION,
// then SHOAL_DETAILS_<KEY> for each detail sorted by key, where KEY is the
// detail name upper-cased with every character outside [A-Z0-9_] replaced by
// "_" (as serf does for SERF_TAG_*). Empty fields are still set, to "".
func ShoalEnv(e Event, action string) []string {
	env := []string{
		"SHOAL_EVENT=" + string(e.Type),
		"SHOAL_SEVERITY=" + string(e.Severity),
		"SHOAL_NODE=" + e.Node,
		"SHOAL_MEMBER=" + e.Member,
		"SHOAL_GROUP=" + e.Group,
		"SHOAL_IP=" + e.IP,
		"SHOAL_TIME=" + e.Time.UTC().Format(time.RFC3339Nano),
		"SHOAL_ACTION=" + action,
	}
	for _, k := range sortedKeys(e.Details) {
		env = append(env, "SHOAL_DETAILS_"+envName(k)+"="+e.Details[k])
	}
	return env
}

var envUnsafe = regexp.MustCompile(`[^A-Z0-9_]`)

// envName turns a tag or detail name into the environment-variable suffix
// serf uses: upper case, anything outside [A-Z0-9_] becomes "_".
func envName(k string) string {
	return envUnsafe.ReplaceAllString(strings.ToUpper(k), "_")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// oneLine replaces CR and LF so a value cannot break a log line or a mail
// header.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}
