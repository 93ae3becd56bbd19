package main

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/identity"
)

// cfgAgent is a fake agent: the admin socket's config endpoints (as in
// appliance/config.go) over a real confsync.Node, on a unix socket.
type cfgAgent struct {
	node  *confsync.Node
	sock  string
	posts int
}

func newCfgAgent(t *testing.T, self string, boot []byte) *cfgAgent {
	t.Helper()
	key, err := identity.LoadPrivateKey("../../examples/keys/" + self + ".key")
	if err != nil {
		t.Fatal(err)
	}
	n, err := confsync.New(confsync.Options{Self: self, Key: key, Dir: t.TempDir(), Bootstrap: boot,
		Validate: confsync.ConfigValidator("cluster.toml", nil), Authority: confsync.ConfigAuthority, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cfgsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &cfgAgent{node: n, sock: filepath.Join(dir, "s")}
	ln, err := net.Listen("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, code int, msg string) { reply(w, code, map[string]string{"error": msg}) }
	proposed := func(w http.ResponseWriter, v confsync.Version, err error) {
		switch {
		case errors.Is(err, confsync.ErrRestricted):
			fail(w, http.StatusForbidden, "this node is restricted (can_update = false): make config changes on an unrestricted node")
		case errors.Is(err, confsync.ErrUnchanged):
			fail(w, http.StatusConflict, "config unchanged")
		case errors.Is(err, confsync.ErrNotFound):
			fail(w, http.StatusNotFound, err.Error())
		case err != nil:
			fail(w, http.StatusUnprocessableEntity, err.Error())
		default:
			reply(w, http.StatusOK, appliance.ConfigVersion{Version: v.Counter, ID: v.ID().String(), Origin: v.Origin, Time: v.Time})
		}
	}
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		v, content := n.Current()
		if ref := r.URL.Query().Get("version"); ref != "" {
			rec, err := n.Find(ref)
			if err != nil {
				fail(w, http.StatusNotFound, err.Error())
				return
			}
			v, content = rec.Version, rec.Content
		}
		if loc := r.URL.Query().Get("location"); loc != "" {
			b, err := confsync.Resolve(content, loc)
			if err != nil {
				fail(w, http.StatusBadRequest, err.Error())
				return
			}
			content = b
		}
		reply(w, http.StatusOK, appliance.ConfigVersion{Version: v.Counter, ID: v.ID().String(), Origin: v.Origin, Time: v.Time, Content: string(content)})
	})
	mux.HandleFunc("GET /v1/config/history", func(w http.ResponseWriter, r *http.Request) {
		var out []appliance.ConfigHistoryEntry
		for _, h := range n.History() {
			out = append(out, appliance.ConfigHistoryEntry{Version: h.Version.Counter, ID: h.ID.String(), Origin: h.Version.Origin,
				Time: h.Version.Time, Status: string(h.Status), Reason: h.Reason, Size: h.Size, Current: h.Current})
		}
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/config", func(w http.ResponseWriter, r *http.Request) {
		a.posts++
		body, _ := io.ReadAll(r.Body)
		v, err := n.Propose(body)
		proposed(w, v, err)
	})
	mux.HandleFunc("POST /v1/config/rollback", func(w http.ResponseWriter, r *http.Request) {
		a.posts++
		v, err := n.Rollback(r.URL.Query().Get("version"))
		proposed(w, v, err)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return a
}

func (a *cfgAgent) current() (uint64, string) {
	v, c := a.node.Current()
	return v.Counter, string(c)
}

// cfgInput makes the prompts read answers (and, when terminal, believe
// stdin is a terminal) for the rest of the test.
func cfgInput(t *testing.T, terminal bool, answers string) {
	t.Helper()
	oldIn, oldTerm := promptStdin, stdinTerminal
	promptStdin = strings.NewReader(answers)
	stdinTerminal = func() bool { return terminal }
	t.Cleanup(func() { promptStdin, stdinTerminal = oldIn, oldTerm })
}

func cfgDemo(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(demoConfig)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cfgWrite(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "new.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const cfgOldIPs = `ips = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]`
const cfgNewIPs = `ips = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"]`

func TestConfigShow(t *testing.T) {
	demo := cfgDemo(t)
	withLoc := string(demo) + "\n[location.dc2.group.web]\ninterface = \"eth1\"\n"
	a := newCfgAgent(t, "a", []byte(withLoc))
	code, out, errOut := runCmd(t, "config", "show", "--socket", a.sock)
	if code != 0 || !strings.HasPrefix(errOut, "# version 0 (") || out != withLoc {
		t.Fatalf("show: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	code, out, errOut = runCmd(t, "config", "show", "--socket", a.sock, "--location", "dc2")
	if code != 0 || !strings.Contains(errOut, `resolved for location "dc2"`) || !strings.Contains(out, `interface = "eth1"`) || strings.Contains(out, "[location") {
		t.Errorf("show --location: exit %d:\n%s", code, out)
	}
	code, out, _ = runCmd(t, "config", "show", "--socket", a.sock, "--json", "--version", "0")
	var v appliance.ConfigVersion
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Content != withLoc || v.Version != 0 {
		t.Errorf("show --json: exit %d:\n%s", code, out)
	}
	if code, _, errOut = runCmd(t, "config", "show", "--socket", a.sock, "--version", "7"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("show unknown version: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut = runCmd(t, "config", "show", "--socket", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(errOut, "is `shoal agent` running?") {
		t.Errorf("no agent: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ = runCmd(t, "config", "show", "extra"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}

func TestConfigApply(t *testing.T) {
	demo := string(cfgDemo(t))
	a := newCfgAgent(t, "a", []byte(demo))
	newFile := cfgWrite(t, strings.Replace(demo, cfgOldIPs, cfgNewIPs, 1))

	t.Run("non-terminal without --yes is a usage error", func(t *testing.T) {
		cfgInput(t, false, "y\n")
		code, _, errOut := runCmd(t, "config", "apply", "--socket", a.sock, newFile)
		if code != 2 || !strings.Contains(errOut, "--yes") || a.posts != 0 {
			t.Errorf("exit %d, posts %d, stderr %q", code, a.posts, errOut)
		}
	})
	t.Run("declined", func(t *testing.T) {
		cfgInput(t, true, "n\n")
		code, out, errOut := runCmd(t, "config", "apply", "--socket", a.sock, newFile)
		if code != 1 || !strings.Contains(errOut, "not applied") || !strings.Contains(out, "Apply? [y/N]") || a.posts != 0 {
			t.Errorf("exit %d, posts %d, stdout %q, stderr %q", code, a.posts, out, errOut)
		}
	})
	t.Run("confirmed", func(t *testing.T) {
		cfgInput(t, true, "y\n")
		code, out, errOut := runCmd(t, "config", "apply", "--socket", a.sock, newFile)
		for _, want := range []string{"--- version 0 (", "+++ " + newFile, "-" + cfgOldIPs, "+" + cfgNewIPs, "applied: version 1 ("} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q", want)
			}
		}
		ver, cur := a.current()
		if code != 0 || ver != 1 || cur != strings.Replace(demo, cfgOldIPs, cfgNewIPs, 1) {
			t.Errorf("exit %d, stderr %q, agent at version %d; stdout:\n%s", code, errOut, ver, out)
		}
	})
	t.Run("same file again", func(t *testing.T) {
		code, out, _ := runCmd(t, "config", "apply", "--yes", "--socket", a.sock, newFile)
		if ver, _ := a.current(); code != 0 || !strings.Contains(out, "no changes") || ver != 1 || a.posts != 1 {
			t.Errorf("exit %d, version %d, posts %d:\n%s", code, ver, a.posts, out)
		}
	})
	t.Run("invalid file is refused locally", func(t *testing.T) {
		bad := cfgWrite(t, strings.Replace(demo, cfgOldIPs, `ips = ["192.0.2.10", "192.0.2.300"]`, 1))
		code, _, errOut := runCmd(t, "config", "apply", "--yes", "--socket", a.sock, bad)
		if code != 1 || !strings.Contains(errOut, bad+`:41: group "web" key "ips": 192.0.2.300 is not an IP address`) || a.posts != 1 {
			t.Errorf("exit %d, posts %d, stderr:\n%s", code, a.posts, errOut)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"config", "apply"}, {"config", "apply", "a", "b"}} {
			if code, _, _ := runCmd(t, args...); code != 2 {
				t.Errorf("%q: exit %d, want 2", args, code)
			}
		}
		if code, _, errOut := runCmd(t, "config", "apply", "--yes", "--socket", a.sock, "/nonexistent.toml"); code != 1 || !strings.Contains(errOut, "no such file") {
			t.Errorf("missing file: exit %d, %q", code, errOut)
		}
		if code, _, _ := runCmd(t, "config", "apply", "--help"); code != 0 {
			t.Errorf("--help: exit %d", code)
		}
	})
}

func TestConfigRestricted(t *testing.T) {
	demo := strings.Replace(string(cfgDemo(t)), "name = \"b\"\naddress = \"10.99.0.2\"\n", "name = \"b\"\naddress = \"10.99.0.2\"\ncan_update = false\n", 1)
	b := newCfgAgent(t, "b", []byte(demo))
	newFile := cfgWrite(t, strings.Replace(demo, cfgOldIPs, cfgNewIPs, 1))
	code, _, errOut := runCmd(t, "config", "apply", "--yes", "--socket", b.sock, newFile)
	if ver, _ := b.current(); code != 1 || ver != 0 || !strings.Contains(errOut, "this node is restricted (can_update = false): make config changes on an unrestricted node") {
		t.Errorf("exit %d, version %d, stderr %q", code, ver, errOut)
	}
	code, _, errOut = runCmd(t, "config", "set", "--yes", "--socket", b.sock, "group.web.failback_delay=5s")
	if code != 1 || !strings.Contains(errOut, "restricted") {
		t.Errorf("set on restricted: exit %d, stderr %q", code, errOut)
	}
}

func TestConfigSet(t *testing.T) {
	a := newCfgAgent(t, "a", cfgDemo(t))
	code, out, errOut := runCmd(t, "config", "set", "--yes", "--socket", a.sock,
		"cluster.heartbeat_interval=750ms", "group.web.failback_delay=10s", "member.b.can_update=false")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	for _, want := range []string{`+  heartbeat_interval = "750ms"`, `+  failback_delay = "10s"`, "+  can_update = false", "applied: version 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	_, cur := a.current()
	c, err := confsync.ResolveConfig("cur", []byte(cur), "")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := c.GroupByName("web")
	mb, _ := c.MemberByName("b")
	mc, _ := c.MemberByName("c")
	got := []any{c.Settings.HeartbeatInterval, g.FailbackDelay, mb.CanUpdate, mc.CanUpdate, len(c.Groups), len(c.Members)}
	if d := cmp.Diff([]any{750 * time.Millisecond, 10 * time.Second, false, true, 2, 3}, got); d != "" {
		t.Errorf("config after set (-want +got)\n%s", d)
	}
	// A value the schema refuses is caught before posting, with the key.
	code, _, errOut = runCmd(t, "config", "set", "--yes", "--socket", a.sock, "cluster.heartbeat_interval=1h")
	if ver, _ := a.current(); code != 1 || ver != 1 || !strings.Contains(errOut, `cluster key "heartbeat_interval": 1h0m0s out of range`) || !strings.Contains(errOut, "edited config:5:") {
		t.Errorf("out of range: exit %d, version %d, stderr %q", code, ver, errOut)
	}
	code, _, errOut = runCmd(t, "config", "set", "--yes", "--socket", a.sock, "group.nosuch.failback_delay=1s")
	if code != 1 || !strings.Contains(errOut, `no [[group]] named "nosuch"`) {
		t.Errorf("unknown group: exit %d, stderr %q", code, errOut)
	}
	for _, args := range [][]string{{"config", "set"}, {"config", "set", "--yes", "novalue"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, _, errOut := runCmd(t, "config", "set", "--help"); code != 0 || !strings.Contains(errOut, "COMMENTS AND KEY ORDER ARE LOST") {
		t.Errorf("--help: exit %d, %q", code, errOut)
	}
}

func TestConfigHistoryDiffRollback(t *testing.T) {
	demo := string(cfgDemo(t))
	a := newCfgAgent(t, "a", []byte(demo))
	v1 := strings.Replace(demo, cfgOldIPs, cfgNewIPs, 1)
	if code, _, errOut := runCmd(t, "config", "apply", "--socket", a.sock, cfgWrite(t, v1), "--yes"); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := runCmd(t, "config", "set", "--yes", "--socket", a.sock, "cluster.verbose=true"); code != 0 {
		t.Fatal(errOut)
	}
	code, out, _ := runCmd(t, "config", "history", "--socket", a.sock)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[3], "*") || !strings.Contains(lines[1], "(initial file)") || !strings.Contains(lines[2], " a ") {
		t.Errorf("history: exit %d:\n%s", code, out)
	}
	code, out, _ = runCmd(t, "config", "history", "--json", "--socket", a.sock)
	var hs []appliance.ConfigHistoryEntry
	if code != 0 || json.Unmarshal([]byte(out), &hs) != nil || len(hs) != 3 || !hs[2].Current || hs[1].Current || hs[1].Origin != "a" {
		t.Errorf("history --json: exit %d:\n%s", code, out)
	}
	code, out, _ = runCmd(t, "config", "diff", "--socket", a.sock, "0", "1")
	if code != 0 || !strings.Contains(out, "-"+cfgOldIPs) || !strings.Contains(out, "+"+cfgNewIPs) || !strings.HasPrefix(out, "--- version 0 (") {
		t.Errorf("diff 0 1: exit %d:\n%s", code, out)
	}
	code, out, _ = runCmd(t, "config", "diff", "--socket", a.sock, hs[1].ID[:8])
	if code != 0 || !strings.Contains(out, "+++ version 2 (") || !strings.Contains(out, "verbose = true") {
		t.Errorf("diff ID-prefix current: exit %d:\n%s", code, out)
	}
	code, out, _ = runCmd(t, "config", "diff", "--socket", a.sock, "1", "1")
	if code != 0 || !strings.Contains(out, "same content") {
		t.Errorf("diff 1 1: exit %d:\n%s", code, out)
	}
	code, out, errOut := runCmd(t, "config", "rollback", "--yes", "--socket", a.sock, "0")
	if ver, cur := a.current(); code != 0 || ver != 3 || cur != demo || !strings.Contains(out, "rolled back: version 3") {
		t.Errorf("rollback 0: exit %d, version %d, stderr %q, stdout:\n%s", code, ver, errOut, out)
	}
	code, out, _ = runCmd(t, "config", "rollback", "--yes", "--socket", a.sock, "0")
	if ver, _ := a.current(); code != 0 || ver != 3 || !strings.Contains(out, "no changes") {
		t.Errorf("rollback to the same content: exit %d, version %d:\n%s", code, ver, out)
	}
	cfgInput(t, false, "")
	if code, _, _ := runCmd(t, "config", "rollback", "--socket", a.sock, "1"); code != 2 {
		t.Errorf("rollback without --yes on a pipe: exit %d, want 2", code)
	}
	if code, _, errOut := runCmd(t, "config", "rollback", "--yes", "--socket", a.sock, "99"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("rollback unknown: exit %d, %q", code, errOut)
	}
}
