package events

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Serf event kinds, as serf's EventType.String() spells them and as
// SERF_EVENT carries them.
const (
	SerfMemberJoin   = "member-join"
	SerfMemberLeave  = "member-leave"
	SerfMemberFailed = "member-failed"
	SerfMemberUpdate = "member-update"
	SerfMemberReap   = "member-reap"
	SerfUser         = "user"
	SerfQuery        = "query"
)

// SerfMember is one member of a serf member event.
type SerfMember struct {
	Name string
	Addr net.IP
	Tags map[string]string // the role is Tags["role"], as in serf
}

// SerfEvent is a serf event handed in by gossip/ for the serf-compatible
// handlers. Kind is one of the Serf* constants.
type SerfEvent struct {
	Kind      string       // member-join ... member-reap | user | query
	Members   []SerfMember // member events
	UserName  string       // user events: the event name
	QueryName string       // queries: the query name
	LTime     uint64       // user events and queries: Lamport time
	Payload   []byte       // user events and queries
	// Respond sends a query's response (queries only; nil otherwise). As in
	// serf, a handler that exits 0 with output responds with that output;
	// past the query's deadline Respond is expected to fail, and the failure
	// is logged and counted.
	Respond func([]byte) error
}

// SerfFilter is one event filter of a serf handler: Event is a Serf* kind
// or "*"; Name restricts "user" and "query" to one event or query name.
type SerfFilter struct {
	Event string
	Name  string
}

// String formats f as serf's filter syntax ("user:deploy", "member-join").
func (f SerfFilter) String() string {
	if f.Name != "" {
		return f.Event + ":" + f.Name
	}
	return f.Event
}

// Match reports whether f selects e, with serf's rules: "*" selects every
// event; otherwise the kind must be equal and, for user and query filters
// with a name, the event or query name must be equal.
func (f SerfFilter) Match(e SerfEvent) bool {
	if f.Event == "*" {
		return true
	}
	if f.Event != e.Kind {
		return false
	}
	switch {
	case f.Event == SerfUser && f.Name != "":
		return e.UserName == f.Name
	case f.Event == SerfQuery && f.Name != "":
		return e.QueryName == f.Name
	}
	return true
}

func (f SerfFilter) valid() bool {
	switch f.Event {
	case SerfMemberJoin, SerfMemberLeave, SerfMemberFailed, SerfMemberUpdate, SerfMemberReap, SerfUser, SerfQuery, "*":
		return true
	}
	return false
}

// SerfHandler is one parsed serf_handlers entry.
type SerfHandler struct {
	Filters []SerfFilter // never empty: no filter means "*"
	Script  string       // run with /bin/sh -c
}

// String formats h back into serf's syntax.
func (h SerfHandler) String() string {
	fs := make([]string, len(h.Filters))
	for i, f := range h.Filters {
		fs[i] = f.String()
	}
	return strings.Join(fs, ",") + "=" + h.Script
}

// Matches returns how many times h runs for e. Like serf's agent, which
// expands "a,b=script" into one script per filter, a handler runs once per
// matching filter, so "member-join,*=x" runs twice for a member-join.
func (h SerfHandler) Matches(e SerfEvent) int {
	n := 0
	for _, f := range h.Filters {
		if f.Match(e) {
			n++
		}
	}
	return n
}

// ParseSerfHandler parses serf's -event-handler syntax "[filter[,filter]*=]script"
// the way serf's agent does: the text before the first "=" is the filter
// list (empty or absent means "*"), split on ","; "user:NAME" and
// "query:NAME" name one user event or query. Unknown filters are an error, as
// serf's agent refuses to start with them; an empty script is an error too
// (serf would run an empty shell command).
func ParseSerfHandler(s string) (SerfHandler, error) {
	filter, script, found := strings.Cut(s, "=")
	if !found {
		filter, script = "", s
	}
	if filter == "" {
		filter = "*"
	}
	var h SerfHandler
	for _, ev := range strings.Split(filter, ",") {
		var f SerfFilter
		switch {
		case strings.HasPrefix(ev, "user:"):
			f = SerfFilter{Event: SerfUser, Name: ev[len("user:"):]}
		case strings.HasPrefix(ev, "query:"):
			f = SerfFilter{Event: SerfQuery, Name: ev[len("query:"):]}
		default:
			f = SerfFilter{Event: ev}
		}
		if !f.valid() {
			return SerfHandler{}, fmt.Errorf("parse serf handler %q: invalid event filter %q (want member-join, member-leave, member-failed, member-update, member-reap, user, user:NAME, query, query:NAME or *)", s, ev)
		}
		h.Filters = append(h.Filters, f)
	}
	if strings.TrimSpace(script) == "" {
		return SerfHandler{}, fmt.Errorf("parse serf handler %q: empty script", s)
	}
	h.Script = script
	return h, nil
}

// SerfEnv returns the variables serf's agent adds to a handler's environment
// for e, run on the node named self with the tags selfTags: SERF_EVENT,
// SERF_SELF_NAME, SERF_SELF_ROLE (the "role" tag), SERF_TAG_<NAME> for every
// local tag (name upper-cased, characters outside [A-Z0-9_] replaced by "_";
// serf emits them in map order, Shoal sorts them by tag name), then
// SERF_USER_EVENT and SERF_USER_LTIME for user events or SERF_QUERY_NAME and
// SERF_QUERY_LTIME for queries.
func SerfEnv(e SerfEvent, self string, selfTags map[string]string) []string {
	env := []string{
		"SERF_EVENT=" + e.Kind,
		"SERF_SELF_NAME=" + self,
		"SERF_SELF_ROLE=" + selfTags["role"],
	}
	for _, k := range sortedKeys(selfTags) {
		env = append(env, "SERF_TAG_"+envName(k)+"="+selfTags[k])
	}
	switch e.Kind {
	case SerfUser:
		env = append(env, "SERF_USER_EVENT="+e.UserName, "SERF_USER_LTIME="+strconv.FormatUint(e.LTime, 10))
	case SerfQuery:
		env = append(env, "SERF_QUERY_NAME="+e.QueryName, "SERF_QUERY_LTIME="+strconv.FormatUint(e.LTime, 10))
	}
	return env
}

// SerfStdin returns what serf's agent writes to a handler's stdin for e.
// Member events: one line per member, "NAME\tADDR\tROLE\tTAGS\n", where TAGS
// is "k=v" pairs joined by "," (serf uses map order; Shoal sorts by key) and
// tabs and newlines in the name, role and tags are escaped as `\t` and `\n`.
// User events and queries: the payload, with a newline appended if it does
// not end in one (nothing at all for an empty payload).
func SerfStdin(e SerfEvent) []byte {
	switch e.Kind {
	case SerfUser, SerfQuery:
		if len(e.Payload) == 0 {
			return nil
		}
		out := bytes.Clone(e.Payload)
		if out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return out
	}
	var b bytes.Buffer
	for _, m := range e.Members {
		pairs := make([]string, 0, len(m.Tags))
		for _, k := range sortedKeys(m.Tags) {
			pairs = append(pairs, k+"="+m.Tags[k])
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\n", serfClean(m.Name), m.Addr.String(),
			serfClean(m.Tags["role"]), serfClean(strings.Join(pairs, ",")))
	}
	return b.Bytes()
}

// serfClean escapes tabs and newlines the way serf's agent does.
func serfClean(v string) string {
	return strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(v)
}

// serfMaxOutput is how much handler output serf's agent keeps (the last
// 8 KiB of stdout and stderr together); for a query it is the response.
const serfMaxOutput = 8 * 1024
