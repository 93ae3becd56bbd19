package adminapi

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-project/shoal/appliance/events"
)

// chromiumPath finds headless Chromium (Debian package "chromium", which
// `make test-adminapi` installs). Without it the browser tests skip with a
// banner, or fail when SHOAL_REQUIRE_BROWSER=1 (set by the Makefile target).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := "\n" + strings.Repeat("!", 72) + "\n!!! BROWSER TEST SKIPPED: chromium not installed (run `make test-adminapi`,\n" +
		"!!! or apt-get install chromium). The web status page is NOT tested.\n" + strings.Repeat("!", 72)
	if os.Getenv("SHOAL_REQUIRE_BROWSER") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runChromium loads u headless and returns stdout (the DOM with
// --dump-dom).
func runChromium(t *testing.T, bin string, u string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, u)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", u, err, stderr.String())
	}
	return stdout.String()
}

var memberRowRE = regexp.MustCompile(`<tr data-member="([^"]+)" data-up="(true|false)" data-health="([^"]+)"`)

// memberStates is member -> "up"/"down" as the page's member table shows.
func memberStates(dom string) map[string]string {
	out := map[string]string{}
	for _, m := range memberRowRE.FindAllStringSubmatch(dom, -1) {
		state := "down"
		if m[2] == "true" {
			state = "up"
		}
		out[m[1]] = state
	}
	return out
}

func ipHolders(dom string) map[string]string {
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`<tr data-ip="([^"]+)" data-owner="([^"]*)" data-held-by="([^"]*)"`).FindAllStringSubmatch(dom, -1) {
		out[m[1]] = m[3]
	}
	return out
}

// The web page, served with a fake node, shows the members, follows a
// member's failure live, and renders readably.
func TestWebPageInBrowser(t *testing.T) {
	bin := chromiumPath(t)
	up := map[string]string{ip1: "a", ip2: "b"}
	src := &fakeSource{
		status: clusterStatus("a", names, up, []string{ip1}, 3),
		events: []events.Event{
			{Time: time.Now().Add(-time.Minute), Type: events.MemberJoined, Node: "a", Member: "c", Severity: "info"},
			{Time: time.Now().Add(-30 * time.Second), Type: events.IPRaised, Node: "a", IP: ip1, Group: "web", Severity: "info"},
		},
		explain: map[string]string{ip1: ip1 + " (group \"web\", single-hosted, IP #0)\n  1. a  active  alive, owner"},
	}
	// c fails once the page has polled `flipAfter` times.
	var polls, flipAfter atomic.Int64
	flipAfter.Store(1 << 40)
	src.onStatus = func(int, *NodeStatus) {}
	s := newTestServer(t, src, Options{Users: []User{{Name: "ops", PasswordHash: lowCostHash(t, "pw"), Role: RoleReadOnly}}})
	s.cacheTTL = 0
	s.Timelines().Suspected("c", time.Now().Add(-3*time.Second))
	s.Timelines().Confirmed("c", "no heartbeat", time.Now().Add(-1500*time.Millisecond))

	h := s.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/cluster" && polls.Add(1) > flipAfter.Load() {
			src.set(func(st *NodeStatus) {
				*st = clusterStatus("a", []string{"a", "b"}, map[string]string{ip1: "a", ip2: "a"}, []string{ip1, ip2}, 3)
			})
		}
		r.SetBasicAuth("ops", "pw") // the browser's login, done here for headless runs
		h.ServeHTTP(w, r)
	}))
	defer ts.Close()

	// 1. Load: the members are all up, the IPs with their holders.
	dom := runChromium(t, bin, ts.URL+"/", "--virtual-time-budget=500", "--dump-dom")
	if got, want := memberStates(dom), map[string]string{"a": "up", "b": "up", "c": "up"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members on load = %v, want %v\nDOM:\n%s", got, want, dom)
	}
	if got := ipHolders(dom); got[ip1] != "a" || got[ip2] != "" {
		t.Errorf("IP holders on load = %v, want %s held by a, %s by nobody (b did not answer)", got, ip1, ip2)
	}
	for _, want := range []string{`data-event="ip-raised"`, `data-share-member="c" data-buckets="85"`, "live", ">demo<"} {
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %q", want)
		}
	}

	// 2. c fails after the next load's first poll: the page must follow.
	flipAfter.Store(polls.Load() + 1)
	before := polls.Load()
	dom = runChromium(t, bin, ts.URL+"/", "--virtual-time-budget=4000", "--dump-dom")
	if n := polls.Load() - before; n < 2 {
		t.Fatalf("the page polled %d times in 4 s of virtual time, want >= 2", n)
	}
	if got, want := memberStates(dom), map[string]string{"a": "up", "b": "up", "c": "down"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members after c failed = %v, want %v\nDOM:\n%s", got, want, dom)
	}
	if got := ipHolders(dom); got[ip2] != "a" {
		t.Errorf("%s after c failed held by %q, want a", ip2, got[ip2])
	}
	if !strings.Contains(dom, `data-share-member="c" data-buckets="0"`) {
		t.Error("c's multi-hosted share did not drop to 0")
	}

	// 3. A screenshot, to look at (kept in $SHOAL_SCREENSHOT_DIR if set).
	dir := os.Getenv("SHOAL_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "shoal-status.png")
	runChromium(t, bin, ts.URL+"/", "--virtual-time-budget=3000", "--window-size=1280,1100", "--hide-scrollbars", "--screenshot="+shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1100 {
		t.Errorf("screenshot is %v, want 1280x1100", b)
	}
	t.Logf("screenshot: %s", shot)
}

// Over the real HTTPS listener: Chromium (no Ed25519 support) gets the
// ECDSA certificate, and the page authenticates with Basic credentials.
func TestWebPageOverHTTPS(t *testing.T) {
	bin := chromiumPath(t)
	src := &fakeSource{status: clusterStatus("a", names, map[string]string{ip1: "a", ip2: "b"}, []string{ip1}, 1)}
	s := newTestServer(t, src, Options{Users: []User{{Name: "ops", PasswordHash: lowCostHash(t, "pw"), Role: RoleReadOnly}}})
	addr := serveTLS(t, s)
	u := &url.URL{Scheme: "https", Host: addr, Path: "/", User: url.UserPassword("ops", "pw")}
	dom := runChromium(t, bin, u.String(), "--ignore-certificate-errors", "--virtual-time-budget=1500", "--dump-dom")
	if got := memberStates(dom); len(got) != 3 {
		t.Fatalf("members over HTTPS = %v, want a, b, c\nDOM:\n%s", got, dom)
	}
	// Without credentials: the page itself is refused.
	u.User = nil
	dom = runChromium(t, bin, u.String(), "--ignore-certificate-errors", "--virtual-time-budget=1500", "--dump-dom")
	if strings.Contains(dom, "data-member=") {
		t.Errorf("page without credentials shows members:\n%s", dom)
	}
}
