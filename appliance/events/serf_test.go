package events

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The cases of serf's documentation ("Specifying Event Handlers") and agent
// parser: the filter is the text before the first "=", split on ",".
func TestParseSerfHandler(t *testing.T) {
	tests := []struct {
		in      string
		want    SerfHandler
		wantErr bool
	}{
		{in: "foo.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "*"}}, Script: "foo.sh"}},
		{in: "member-join=foo.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "member-join"}}, Script: "foo.sh"}},
		{in: "member-join,member-leave=foo.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "member-join"}, {Event: "member-leave"}}, Script: "foo.sh"}},
		{in: "user=foo.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "user"}}, Script: "foo.sh"}},
		{in: "user:deploy=foo.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "user", Name: "deploy"}}, Script: "foo.sh"}},
		{in: "query=foo.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "query"}}, Script: "foo.sh"}},
		{in: "query:load=uptime", want: SerfHandler{Filters: []SerfFilter{{Event: "query", Name: "load"}}, Script: "uptime"}},
		{in: "member-join,user:deploy=/path/script.sh", want: SerfHandler{Filters: []SerfFilter{{Event: "member-join"}, {Event: "user", Name: "deploy"}}, Script: "/path/script.sh"}},
		{in: "member-failed,member-update,member-reap=echo a=b | logger", want: SerfHandler{Filters: []SerfFilter{{Event: "member-failed"}, {Event: "member-update"}, {Event: "member-reap"}}, Script: "echo a=b | logger"}},
		{in: "*=x", want: SerfHandler{Filters: []SerfFilter{{Event: "*"}}, Script: "x"}},
		{in: "=cat", want: SerfHandler{Filters: []SerfFilter{{Event: "*"}}, Script: "cat"}},
		// serf keeps an empty name: all user events.
		{in: "user:=wc -c", want: SerfHandler{Filters: []SerfFilter{{Event: "user"}}, Script: "wc -c"}},
		{in: "bogus=foo.sh", wantErr: true},
		{in: "member-join,,user=foo.sh", wantErr: true},
		{in: "Member-Join=foo.sh", wantErr: true},
		{in: "member-join=", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSerfHandler(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSerfHandler(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSerfHandler(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSerfHandlerMatches(t *testing.T) {
	join := SerfEvent{Kind: SerfMemberJoin}
	reap := SerfEvent{Kind: SerfMemberReap}
	deploy := SerfEvent{Kind: SerfUser, UserName: "deploy"}
	other := SerfEvent{Kind: SerfUser, UserName: "other"}
	load := SerfEvent{Kind: SerfQuery, QueryName: "load"}
	tests := []struct {
		handler string
		ev      SerfEvent
		want    int
	}{
		{"x", join, 1},
		{"x", load, 1},
		{"member-join=x", join, 1},
		{"member-join=x", reap, 0},
		{"member-reap=x", reap, 1},
		{"member-join=x", deploy, 0},
		{"user=x", deploy, 1},
		{"user=x", other, 1},
		{"user:deploy=x", deploy, 1},
		{"user:deploy=x", other, 0},
		{"user:deploy=x", SerfEvent{Kind: SerfQuery, QueryName: "deploy"}, 0},
		{"query=x", load, 1},
		{"query:load=x", load, 1},
		{"query:load=x", SerfEvent{Kind: SerfQuery, QueryName: "uptime"}, 0},
		{"query:load=x", SerfEvent{Kind: SerfUser, UserName: "load"}, 0},
		// serf's agent expands one script per filter: overlapping filters run it twice.
		{"member-join,*=x", join, 2},
		{"user,user:deploy=x", deploy, 2},
		{"user,user:deploy=x", other, 1},
	}
	for _, tt := range tests {
		name := tt.handler + "/" + tt.ev.Kind + ":" + tt.ev.UserName + tt.ev.QueryName
		t.Run(name, func(t *testing.T) {
			h, err := ParseSerfHandler(tt.handler)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Matches(tt.ev); got != tt.want {
				t.Errorf("ParseSerfHandler(%q).Matches(%+v) = %d, want %d", tt.handler, tt.ev, got, tt.want)
			}
		})
	}
}

var serfSelfTags = map[string]string{"role": "lb", "dc": "east", "weird-tag.name": "x"}

// serfGoldenCases are the events whose env and stdin are in testdata/serf/,
// written by hand from serf's documentation and agent behaviour.
var serfGoldenCases = []struct {
	name string
	ev   SerfEvent
}{
	{"member-join", SerfEvent{Kind: SerfMemberJoin, Members: []SerfMember{
		{Name: "web-1", Addr: net.ParseIP("192.0.2.11"), Tags: map[string]string{"role": "web", "dc": "east"}},
	}}},
	{"member-failed", SerfEvent{Kind: SerfMemberFailed, Members: []SerfMember{
		{Name: "odd\tname\nx", Addr: net.ParseIP("2001:db8::12")},
		{Name: "web-2", Addr: net.ParseIP("192.0.2.12"), Tags: map[string]string{"role": "web\tfront", "note": "a\tb"}},
	}}},
	{"user-deploy", SerfEvent{Kind: SerfUser, UserName: "deploy", LTime: 42, Payload: []byte("v1.2.3")}},
	{"user-empty", SerfEvent{Kind: SerfUser, UserName: "ping"}},
	{"query-load", SerfEvent{Kind: SerfQuery, QueryName: "load", LTime: 7, Payload: []byte("line1\nline2\n")}},
}

func TestSerfEnvStdinGolden(t *testing.T) {
	for _, tc := range serfGoldenCases {
		t.Run(tc.name, func(t *testing.T) {
			env := strings.Join(SerfEnv(tc.ev, "node-a", serfSelfTags), "\n") + "\n"
			if diff := cmp.Diff(string(readGolden(t, "serf/"+tc.name+".env")), env); diff != "" {
				t.Errorf("SerfEnv(%s) (-want +got):\n%s", tc.name, diff)
			}
			stdin := SerfStdin(tc.ev)
			if want := readGolden(t, "serf/"+tc.name+".stdin"); !bytes.Equal(want, stdin) {
				t.Errorf("SerfStdin(%s) = %q, want %q", tc.name, stdin, want)
			}
		})
	}
}

// TestSerfHandlerContract runs a real handler through the dispatcher and
// compares what the script saw with the golden files: its stdin byte for
// byte, its SERF_* environment line for line (sorted: the shell re-orders
// the environment it passes on).
func TestSerfHandlerContract(t *testing.T) {
	dir := t.TempDir()
	// "*=" first: the script itself contains "=", which serf would take as
	// the end of a filter list.
	script := `*=f=` + shellQuote(dir) + `/$SERF_EVENT-$SERF_USER_EVENT$SERF_QUERY_NAME; env | grep '^SERF_' | LC_ALL=C sort > "$f.env"; cat > "$f.stdin"; echo done > "$f.done"`
	d, _ := newNamedDispatcher(t, "node-a", Config{SerfHandlers: []string{script}})
	d.SetSelfTags(serfSelfTags)
	files := map[string]string{
		"member-join": "member-join-", "member-failed": "member-failed-", "user-deploy": "user-deploy",
		"user-empty": "user-ping", "query-load": "query-load",
	}
	for _, tc := range serfGoldenCases {
		t.Run(tc.name, func(t *testing.T) {
			d.HandleSerf(tc.ev)
			base := filepath.Join(dir, files[tc.name])
			waitFor(t, 20*time.Second, "handler for "+tc.name, func() bool { return fileLines(base+".done") != nil })
			compareScriptOutput(t, base, "serf/"+tc.name)
		})
	}
}

// TestSerfQueryResponse checks serf's query rules: a handler that exits 0
// with output responds with stdout and stderr together (the last 8 KiB); a
// failing or silent handler does not respond.
func TestSerfQueryResponse(t *testing.T) {
	big := strings.Repeat("a", 10000)
	tests := []struct {
		name    string
		script  string
		want    string
		respond bool
		failed  uint64
	}{
		{name: "ok", script: `echo "load $SERF_SELF_NAME"; echo warn >&2`, want: "load a\nwarn\n", respond: true},
		{name: "payload", script: `tr a-z A-Z`, want: "PING\n", respond: true},
		{name: "failing", script: `echo partial; exit 3`, failed: 1},
		{name: "silent", script: `true`},
		{name: "big", script: `printf '%s' ` + big + `; echo END`, want: (big + "END\n")[len(big)+4-serfMaxOutput:], respond: true},
	}
	var handlers []string
	for _, tt := range tests {
		handlers = append(handlers, "query:"+tt.name+"="+tt.script)
	}
	d, _ := newTestDispatcher(t, Config{SerfHandlers: handlers})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			d.HandleSerf(SerfEvent{Kind: SerfQuery, QueryName: tt.name, Payload: []byte("ping"), Respond: func(b []byte) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, string(b))
				return nil
			}})
			name := handlerName(i)
			waitFor(t, 20*time.Second, "query handler run", func() bool { return actionStats(d, name).Runs == 1 })
			mu.Lock()
			defer mu.Unlock()
			var want []string
			if tt.respond {
				want = []string{tt.want}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("responses to query %q (-want +got):\n%s", tt.name, diff)
			}
			if s := actionStats(d, name); s.Failed != tt.failed {
				t.Errorf("query %q: Failed = %d, want %d", tt.name, s.Failed, tt.failed)
			}
		})
	}
}

func handlerName(i int) string { return "serf_handlers[" + string(rune('0'+i)) + "]" }

// A handler with overlapping filters runs once per matching filter, and a
// named filter skips other names (FIFO order proves the skip: the deploy
// run comes after the skipped event).
func TestSerfHandlerDispatch(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	d, _ := newTestDispatcher(t, Config{SerfHandlers: []string{
		"member-join,*=echo $SERF_EVENT >> " + shellQuote(out),
		"user:deploy=echo $SERF_USER_EVENT >> " + shellQuote(out+".user"),
	}})
	d.HandleSerf(SerfEvent{Kind: SerfMemberJoin})
	d.HandleSerf(SerfEvent{Kind: SerfUser, UserName: "other"})
	d.HandleSerf(SerfEvent{Kind: SerfUser, UserName: "deploy"})
	waitFor(t, 20*time.Second, "handlers", func() bool {
		return len(fileLines(out)) == 4 && len(fileLines(out+".user")) == 1
	})
	if diff := cmp.Diff([]string{"member-join", "member-join", "user", "user"}, fileLines(out)); diff != "" {
		t.Errorf("runs of member-join,* (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"deploy"}, fileLines(out+".user")); diff != "" {
		t.Errorf("runs of user:deploy (-want +got):\n%s", diff)
	}
}

func FuzzParseSerfHandler(f *testing.F) {
	file, err := os.Open(filepath.Join("testdata", "serf", "handlers.txt"))
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		f.Add(sc.Text())
	}
	file.Close()
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseSerfHandler(s)
		if err != nil {
			return
		}
		again, err := ParseSerfHandler(h.String())
		if err != nil {
			t.Fatalf("ParseSerfHandler(%q) = %+v, but its String %q does not parse: %v", s, h, h.String(), err)
		}
		if diff := cmp.Diff(h, again); diff != "" {
			t.Errorf("round trip of %q (-first +second):\n%s", s, diff)
		}
	})
}
