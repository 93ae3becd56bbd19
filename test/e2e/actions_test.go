package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// actionEvent is the part of an event's JSON (script stdin, webhook body)
// the tests read; it mirrors events.Event.
type actionEvent struct {
	Type   string `json:"type"`
	Node   string `json:"node"`
	Member string `json:"member"`
}

// hookServer is an HTTP server in a namespace recording the JSON POSTs to
// /hook.
type hookServer struct {
	mu    sync.Mutex
	posts []actionEvent
	bad   []string // requests that were not a JSON event POST
}

func (h *hookServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var ev actionEvent
	if err == nil && r.Method == http.MethodPost && r.URL.Path == "/hook" {
		err = json.Unmarshal(body, &ev)
	} else if err == nil {
		err = fmt.Errorf("%s %s", r.Method, r.URL.Path)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.bad = append(h.bad, fmt.Sprintf("%v: %q", err, body))
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	h.posts = append(h.posts, ev)
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookServer) snapshot() ([]actionEvent, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.posts), slices.Clone(h.bad)
}

// listenIn opens a TCP listener on addr inside namespace ns.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	must(t, harness.InNamespace(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}))
	return ln
}

// serveHook starts the webhook server on ln (closed when the test ends).
func serveHook(t *testing.T, ln net.Listener) *hookServer {
	t.Helper()
	h := &hookServer{}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return h
}

// mail is one message the SMTP server accepted.
type mail struct {
	From string
	To   []string
	Data string
}

// smtpServer is a minimal plain SMTP server (EHLO/HELO, MAIL, RCPT, DATA,
// RSET, NOOP, QUIT; no STARTTLS, no AUTH) recording the mails it accepts.
type smtpServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	mails []mail
	conns map[net.Conn]bool
}

// serveSMTP starts the SMTP server on ln (closed when the test ends).
func serveSMTP(t *testing.T, ln net.Listener) *smtpServer {
	t.Helper()
	s := &smtpServer{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *smtpServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			s.session(textproto.NewConn(c))
		}()
	}
}

// session speaks one SMTP conversation.
func (s *smtpServer) session(tc *textproto.Conn) {
	reply := func(code int, msg string) bool { return tc.PrintfLine("%d %s", code, msg) == nil }
	if !reply(220, "e2e.test ESMTP") {
		return
	}
	var cur mail
	for {
		line, err := tc.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			if tc.PrintfLine("250-e2e.test") != nil || !reply(250, "8BITMIME") {
				return
			}
		case "HELO", "NOOP":
			if !reply(250, "ok") {
				return
			}
		case "RSET":
			cur = mail{}
			if !reply(250, "ok") {
				return
			}
		case "MAIL":
			cur = mail{From: smtpPath(arg)}
			if !reply(250, "ok") {
				return
			}
		case "RCPT":
			cur.To = append(cur.To, smtpPath(arg))
			if !reply(250, "ok") {
				return
			}
		case "DATA":
			if !reply(354, "end with <CRLF>.<CRLF>") {
				return
			}
			b, err := tc.ReadDotBytes()
			if err != nil {
				return
			}
			cur.Data = string(b)
			s.mu.Lock()
			s.mails = append(s.mails, cur)
			s.mu.Unlock()
			cur = mail{}
			if !reply(250, "queued") {
				return
			}
		case "QUIT":
			reply(221, "bye")
			return
		default:
			if !reply(502, "not implemented") {
				return
			}
		}
	}
}

// smtpPath returns the address of a MAIL FROM:<a> or RCPT TO:<a> argument
// (parameters such as BODY=8BITMIME dropped), or the argument itself if it
// has no <...>.
func smtpPath(arg string) string {
	_, rest, ok := strings.Cut(arg, "<")
	if !ok {
		return arg
	}
	a, _, ok := strings.Cut(rest, ">")
	if !ok {
		return arg
	}
	return a
}

func (s *smtpServer) snapshot() []mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mails)
}

// scriptRun is one run of the test's event script: its SHOAL_* environment
// and the event JSON it read on stdin.
type scriptRun struct {
	File  string
	Env   map[string]string
	Stdin actionEvent
	Raw   string
}

// writeEventScript writes a script that stores its SHOAL_* environment and
// its stdin in a new file <dir>/run-<node>-<pid>.out (written to a
// temporary name first, so a reader never sees half a file).
func writeEventScript(t *testing.T, dir string) string {
	t.Helper()
	script := filepath.Join(dir, "on-event.sh")
	body := `#!/bin/sh
set -e
f="` + dir + `/run-${SHOAL_NODE}-$$"
{ env | grep '^SHOAL_' | sort; echo "--- stdin"; cat; } > "$f.tmp"
mv "$f.tmp" "$f.out"
`
	must(t, os.WriteFile(script, []byte(body), 0o755))
	return script
}

// scriptRuns reads every finished run of the event script in dir.
func scriptRuns(dir string) ([]scriptRun, error) {
	files, err := filepath.Glob(filepath.Join(dir, "run-*.out"))
	if err != nil {
		return nil, err
	}
	var out []scriptRun
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		envPart, stdin, ok := strings.Cut(string(b), "--- stdin\n")
		if !ok {
			return nil, fmt.Errorf("script output %s: no stdin marker: %q", f, b)
		}
		r := scriptRun{File: filepath.Base(f), Env: map[string]string{}, Raw: string(b)}
		for _, line := range strings.Split(strings.TrimSpace(envPart), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				r.Env[k] = v
			}
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(stdin)), &r.Stdin); err != nil {
			return nil, fmt.Errorf("script output %s: stdin is not an event: %w: %q", f, err, stdin)
		}
		out = append(out, r)
	}
	return out, nil
}

// TestEventActions runs 3 agents whose cluster config has a script, a
// webhook and an email action on member-failed, the webhook and SMTP
// servers in the client namespace. Killing node2 must run the script on
// both survivors (with the event's environment and JSON), make both POST to
// the webhook and mail about node2.
func TestEventActions(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	script := writeEventScript(t, dir)

	// The cluster config needs the client's address before the topology
	// exists: the harness's addressing is deterministic, so the config
	// points at the client address and fixed ports, and the servers start
	// in the client namespace right after the agents (the actions retry).
	const hookPort, smtpPort = 18080, 10025
	extra := func(client string) string {
		return fmt.Sprintf(`[events]
default_timeout = "5s"

[[events.action]]
name = "script"
type = "script"
events = ["member-failed"]
command = %q

[[events.action]]
name = "hook"
type = "webhook"
events = ["member-failed"]
url = "http://%s/hook"
retries = 5

[[events.action]]
name = "mail"
type = "email"
events = ["member-failed"]
smtp_server = %q
starttls = false
from = "shoal@example.org"
to = ["ops@example.org"]
batch_window = "1s"
retries = 5
`, script, net.JoinHostPort(client, fmt.Sprint(hookPort)), net.JoinHostPort(client, fmt.Sprint(smtpPort)))
	}
	clientAddr := clientAddr4()
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true,
		Shoal: shoalrun.Options{ClusterName: "e2e-actions", Groups: []shoalrun.Group{{Name: "web", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.60")}}}, ExtraTOML: extra(clientAddr)},
	})
	if got := c.Net.ClientAddr4().Addr().String(); got != clientAddr {
		t.Fatalf("client address %s, the config was written for %s", got, clientAddr)
	}
	hook := serveHook(t, listenIn(t, c.Net.Client(), net.JoinHostPort(clientAddr, fmt.Sprint(hookPort))))
	mailer := serveSMTP(t, listenIn(t, c.Net.Client(), net.JoinHostPort(clientAddr, fmt.Sprint(smtpPort))))

	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))
	must(t, c.Kill(2))
	survivors := e2ekit.Except(all, 2)
	must(t, c.WaitView(deadline(t, wait), survivors, survivors))

	isNode2Failed := func(e actionEvent) bool { return e.Type == "member-failed" && e.Member == "node2" }

	// (a) the script ran on every survivor with the event's environment.
	var runs []scriptRun
	var lastErr error
	err := harness.WaitEvery(deadline(t, wait), "script ran on node0 and node1 for node2's failure", 100*time.Millisecond, func() (bool, error) {
		runs, lastErr = scriptRuns(dir)
		if lastErr != nil {
			return false, lastErr
		}
		ran := map[string]bool{}
		for _, r := range runs {
			if r.Env["SHOAL_EVENT"] == "member-failed" && r.Env["SHOAL_MEMBER"] == "node2" && isNode2Failed(r.Stdin) {
				ran[r.Env["SHOAL_NODE"]] = true
			}
		}
		return ran["node0"] && ran["node1"], nil
	})
	if err != nil {
		t.Errorf("%v (last error %v); runs:\n%s", err, lastErr, dumpRuns(runs))
	}
	for _, r := range runs {
		// Only member-failed was subscribed; node0 and node1 never failed.
		if r.Env["SHOAL_EVENT"] != "member-failed" || r.Stdin.Type != "member-failed" || r.Env["SHOAL_MEMBER"] != "node2" {
			t.Errorf("unexpected script run %s:\n%s", r.File, r.Raw)
			continue
		}
		node := r.Env["SHOAL_NODE"]
		if node != "node0" && node != "node1" {
			t.Errorf("script run %s on %q, want a survivor:\n%s", r.File, node, r.Raw)
		}
		if r.Stdin.Node != node {
			t.Errorf("script run %s: stdin node %q, SHOAL_NODE %q", r.File, r.Stdin.Node, node)
		}
		if !strings.HasPrefix(r.File, "run-"+node+"-") {
			t.Errorf("script run %s: file not named after SHOAL_NODE=%s", r.File, node)
		}
		if r.Env["SHOAL_ACTION"] != "script" {
			t.Errorf("script run %s: SHOAL_ACTION=%q, want script", r.File, r.Env["SHOAL_ACTION"])
		}
	}

	// (b) both survivors POSTed the failure to the webhook.
	var posts []actionEvent
	var bad []string
	err = harness.WaitEvery(deadline(t, wait), "webhook POSTs from node0 and node1", 100*time.Millisecond, func() (bool, error) {
		posts, bad = hook.snapshot()
		from := map[string]bool{}
		for _, p := range posts {
			if isNode2Failed(p) {
				from[p.Node] = true
			}
		}
		return from["node0"] && from["node1"], nil
	})
	if err != nil {
		t.Errorf("%v; posts %+v", err, posts)
	}
	if len(bad) > 0 {
		t.Errorf("webhook got bad requests: %q", bad)
	}

	// (c) a mail about node2's failure arrived.
	var mails []mail
	err = harness.WaitEvery(deadline(t, wait), "mail about node2's failure", 100*time.Millisecond, func() (bool, error) {
		mails = mailer.snapshot()
		for _, m := range mails {
			if strings.Contains(m.Data, "member-failed") && strings.Contains(m.Data, "node2") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("%v; mails %+v", err, mails)
	}
	for _, m := range mails {
		if m.From != "shoal@example.org" || !slices.Equal(m.To, []string{"ops@example.org"}) {
			t.Errorf("mail envelope from %q to %q, want shoal@example.org to ops@example.org", m.From, m.To)
		}
	}
	if t.Failed() {
		t.Logf("script runs:\n%s\nwebhook posts: %+v\nmails: %+v", dumpRuns(runs), posts, mails)
	}
}

// clientAddr4 is the client's IPv4 address in a default harness topology
// (host .100 of harness.DefaultSubnet4); the test checks it against the
// built topology.
func clientAddr4() string {
	a := harness.DefaultSubnet4.Addr().As4()
	a[3] = 100
	return netip.AddrFrom4(a).String()
}

func dumpRuns(runs []scriptRun) string {
	var b strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&b, "== %s\n%s\n", r.File, r.Raw)
	}
	return b.String()
}

// pageMemberRE matches a member row of the web status page (see
// appliance/adminapi/browser_test.go).
var pageMemberRE = regexp.MustCompile(`<tr data-member="([^"]+)" data-up="(true|false)"`)

// pageMembers is member -> "up"/"down" as the page's DOM shows.
func pageMembers(dom string) map[string]string {
	out := map[string]string{}
	for _, m := range pageMemberRE.FindAllStringSubmatch(dom, -1) {
		if m[2] == "true" {
			out[m[1]] = "up"
		} else {
			out[m[1]] = "down"
		}
	}
	return out
}

// chromiumIn loads u with headless Chromium run inside namespace ns and
// returns the DOM after the page's scripts ran (--dump-dom).
func chromiumIn(t *testing.T, ns, u string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skipf("needs chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"netns", "exec", ns, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(),
		"--ignore-certificate-errors", "--virtual-time-budget=2000", "--dump-dom", u}
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium in %s: %v\nstderr:\n%s", ns, err, stderr.String())
	}
	return stdout.String()
}

// hashPassword runs `shoal admin hash-password --password-file`.
func hashPassword(t *testing.T, password string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pw")
	must(t, os.WriteFile(f, []byte(password+"\n"), 0o600))
	out, err := exec.Command(shoalBin, "admin", "hash-password", "--password-file", f).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("shoal admin hash-password: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("shoal admin hash-password: %v", err)
	}
	h := strings.TrimSpace(string(out))
	if !strings.HasPrefix(h, "$2") {
		t.Fatalf("shoal admin hash-password printed %q, want a bcrypt hash", h)
	}
	return h
}

// enableAdminListen restarts every agent with admin_listen = ":8443" added
// to its agent file (e2ekit writes the agent files and starts the agents in
// one step). It first waits for the agents to be up, so the SIGTERM finds
// their signal handlers installed.
func enableAdminListen(t *testing.T, c *e2ekit.Cluster) {
	t.Helper()
	must(t, c.WaitView(deadline(t, wait), c.Agents(), c.Agents()))
	for _, i := range c.Agents() {
		must(t, c.Stop(i, 10*time.Second))
	}
	for _, i := range c.Agents() {
		f := c.Files.Agents[i]
		b, err := os.ReadFile(f)
		must(t, err)
		must(t, os.WriteFile(f, append(b, []byte("admin_listen = \":8443\"\n")...), 0o600))
		must(t, c.StartAgent(i))
	}
}

// TestStatusPageLive loads node0's web status page with headless Chromium
// from the client namespace over HTTPS with Basic credentials, kills node2
// and loads it again.
func TestStatusPageLive(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skipf("needs chromium: %v", err)
	}
	const user, password = "ops", "e2e-secret pw"
	users := fmt.Sprintf("[[admin.user]]\nname = %q\npassword_hash = %q\nrole = \"read-only\"\n", user, hashPassword(t, password))
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true,
		Shoal: shoalrun.Options{ClusterName: "e2e-page", Groups: []shoalrun.Group{{Name: "web", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.61")}}}, ExtraTOML: users},
	})
	enableAdminListen(t, c)
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))

	u := (&url.URL{Scheme: "https", Host: net.JoinHostPort(c.Net.NodeAddr4(0).Addr().String(), "8443"), Path: "/",
		User: url.UserPassword(user, password)}).String()
	client := c.Net.Client()
	load := func(what string, want map[string]string) {
		t.Helper()
		// The HTTPS listener may come up a little after the view; retry
		// the page load until it shows want.
		var dom string
		start := time.Now()
		loads := 0
		err := harness.WaitEvery(deadline(t, wait), what, 500*time.Millisecond, func() (bool, error) {
			loads++
			dom = chromiumIn(t, client, u)
			got := pageMembers(dom)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false, fmt.Errorf("members %v", got)
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("%v\nlast DOM:\n%s", err, dom)
		}
		t.Logf("%s: %d page load(s), %v", what, loads, time.Since(start).Round(time.Millisecond))
	}
	load("page shows node0..2 up", map[string]string{"node0": "up", "node1": "up", "node2": "up"})

	must(t, c.Kill(2))
	err := harness.WaitEvery(deadline(t, wait), "node0 sees node2 down", 100*time.Millisecond, func() (bool, error) {
		st, err := c.StatusAPI(0)
		if err != nil {
			return false, err
		}
		for _, m := range st.Members {
			if m.Name == "node2" {
				return !m.Up, nil
			}
		}
		return false, errors.New("node2 not in node0's members")
	})
	must(t, err)
	load("page shows node2 down", map[string]string{"node0": "up", "node1": "up", "node2": "down"})
}
