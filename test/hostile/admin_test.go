package hostile

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/test/chaos"
	"github.com/shoal-project/shoal/test/harness"
)

const (
	adminPort   = 8443
	metricsPort = 9464
)

// clientHTTP makes an HTTP(S) request from the client namespace.
func (r *rig) clientHTTP(t *testing.T, method, url, user, pass string, body []byte) (int, string) {
	t.Helper()
	var code int
	var out string
	ns := r.net.Client()
	// Every connection is dialled on a thread inside the client namespace
	// (a socket keeps its namespace): the Transport's own goroutines run in
	// the root namespace and must never dial from there.
	tr := &http.Transport{DisableKeepAlives: true,
		// The agent's certificate is self-signed and pinned; pinning is
		// adminapi's own test. Here only authentication matters.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := harness.InNamespace(ns, func() error {
				var err error
				c, err = net.DialTimeout(network, addr, 3*time.Second)
				return err
			})
			return c, err
		}}
	err := func() error {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		code, out = resp.StatusCode, string(b)
		return nil
	}()
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return code, out
}

// metric reads one counter from node's plain metrics listener.
func (r *rig) metric(t *testing.T, node int, name, labels string) float64 {
	t.Helper()
	_, body := r.clientHTTP(t, http.MethodGet, fmt.Sprintf("http://%s:%d/metrics", r.net.NodeAddr4(node).Addr(), metricsPort), "", "", nil)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+labels) + ` ([0-9.e+]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestAdminWrites checks writes through the agent's HTTPS admin API with
// no credentials, a wrong password, an unknown user and a read-only user
// (each refused and counted), and config pushes on a restricted node
// (can_update = false: refused on its admin socket, nothing replicated).
func TestAdminWrites(t *testing.T) {
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	users := fmt.Sprintf("[[admin.user]]\nname = \"alice\"\npassword_hash = %q\n\n[[admin.user]]\nname = \"bob\"\npassword_hash = %q\nrole = \"read-only\"\n",
		hash("alice-pw"), hash("bob-pw"))
	r := newRigWith(t, users, func(a *chaos.Agents) error {
		// node1 is restricted; both serve the HTTPS API and plain metrics.
		b, err := os.ReadFile(a.Files.Cluster)
		if err != nil {
			return err
		}
		block := fmt.Sprintf("public_key = %q\ncan_update = true", a.Files.PublicKeys[1])
		if !bytes.Contains(b, []byte(block)) {
			return fmt.Errorf("member node1 block not found in %s", a.Files.Cluster)
		}
		b = bytes.Replace(b, []byte(block), []byte(strings.Replace(block, "true", "false", 1)), 1)
		if err := os.WriteFile(a.Files.Cluster, b, 0o600); err != nil {
			return err
		}
		for _, i := range []int{0, 1} {
			f, err := os.OpenFile(a.Files.Agents[i], os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(f, "admin_listen = \":%d\"\nmetrics_listen = \":%d\"\n", adminPort, metricsPort)
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node0 log:\n%s", shoalTail(r, 0))
		}
	})
	api := func(node int) string { return fmt.Sprintf("https://%s:%d", r.net.NodeAddr4(node).Addr(), adminPort) }
	const fam = "shoal_admin_auth_failures_total"

	t.Run("authenticated read works", func(t *testing.T) {
		if code, body := r.clientHTTP(t, http.MethodGet, api(0)+"/api/v1/whoami", "alice", "alice-pw", nil); code != http.StatusOK {
			t.Fatalf("GET whoami as alice: %d %s", code, body)
		}
	})
	cases := []struct {
		name, user, pass string
		want             int
		metric, labels   string
	}{
		{"no credentials", "", "", http.StatusUnauthorized, fam, `{reason="missing"}`},
		{"wrong password", "alice", "guess", http.StatusUnauthorized, fam, `{reason="bad_password"}`},
		{"unknown user", "mallory", "x", http.StatusUnauthorized, fam, `{reason="unknown_user"}`},
		{"read-only user", "bob", "bob-pw", http.StatusForbidden, "shoal_admin_forbidden_total", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r.metric(t, 0, tc.metric, tc.labels)
			since := time.Now().Add(-time.Second)
			code, body := r.clientHTTP(t, http.MethodPost, api(0)+"/api/v1/status", tc.user, tc.pass, []byte("{}"))
			if code != tc.want {
				t.Errorf("POST as %q: %d %.200s, want %d", tc.user, code, body, tc.want)
			}
			if after := r.metric(t, 0, tc.metric, tc.labels); after < before+1 {
				t.Errorf("%s%s %v -> %v, want +1", tc.metric, tc.labels, before, after)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			evs, err := r.agents.Events(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, e := range evs {
				typ := string(e.Type)
				if !e.Time.Before(since) && (strings.Contains(typ, "auth") || strings.Contains(typ, "forbidden") || strings.Contains(typ, "admin")) {
					found = true
				}
			}
			if !found {
				t.Errorf("no event on node0 for a refused admin API write (%s): the agent raises no event for authentication failures", tc.name)
			}
		})
	}
	t.Run("restricted node refuses a config push", func(t *testing.T) {
		before := r.status(t, 0)
		sock := r.agents.Files.Sockets[1]
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}}}
		cfg, err := os.ReadFile(r.agents.Files.Cluster)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cl.Post("http://shoal/v1/config", "application/toml", bytes.NewReader(append(cfg, []byte("\n# edit from a restricted node\n")...)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /v1/config on restricted node1: %s %s, want 403", resp.Status, b)
		}
		// As admin over HTTPS on the restricted node: read-only for everyone.
		if code, body := r.clientHTTP(t, http.MethodPost, api(1)+"/api/v1/status", "alice", "alice-pw", []byte("{}")); code != http.StatusForbidden {
			t.Errorf("POST as admin on restricted node1: %d %.200s, want 403", code, body)
		}
		time.Sleep(2 * time.Second) // replication would take < 1 s
		for _, i := range []int{0, 1} {
			if st := r.status(t, i); st.ConfigVersion != before.ConfigVersion || st.ConfigHash != before.ConfigHash {
				t.Errorf("node%d config %d/%s after the refused push, was %d/%s", i, st.ConfigVersion, st.ConfigHash, before.ConfigVersion, before.ConfigHash)
			}
		}
	})
	r.waitHealthy(t, "after refused admin writes")
}

func shoalTail(r *rig, node int) string {
	l := r.agents.Logs(node)
	if len(l) > 3000 {
		l = l[len(l)-3000:]
	}
	return l
}
