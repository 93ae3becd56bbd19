package adminapi

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/appliance/events"
)

// fakeSource is a mutable Source for tests.
type fakeSource struct {
	mu          sync.Mutex
	status      NodeStatus
	events      []events.Event
	metrics     MetricsSnapshot
	explain     map[string]string // ip -> text
	statusCalls int
	// onStatus, if set, may change the status before the n-th call (1-based)
	// is answered.
	onStatus func(n int, st *NodeStatus)
	subs     []chan events.Event
}

var _ Source = (*fakeSource)(nil)

func (f *fakeSource) Status() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusCalls++
	if f.onStatus != nil {
		f.onStatus(f.statusCalls, &f.status)
	}
	return f.status
}

func (f *fakeSource) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statusCalls
}

func (f *fakeSource) set(fn func(st *NodeStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.status)
}

func (f *fakeSource) Events(n int) []events.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n <= 0 || n > len(f.events) {
		n = len(f.events)
	}
	return slices.Clone(f.events[len(f.events)-n:])
}

func (f *fakeSource) Subscribe() (<-chan events.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan events.Event, 16)
	f.subs = append(f.subs, ch)
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if i := slices.Index(f.subs, ch); i >= 0 {
			f.subs = slices.Delete(f.subs, i, i+1)
			close(ch)
		}
	}
}

func (f *fakeSource) publish(e events.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
	for _, c := range f.subs {
		c <- e
	}
}

func (f *fakeSource) Explain(ip netip.Addr) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.explain[ip.String()]; ok {
		return map[string]any{"group": "web", "text": t}, nil
	}
	return nil, notTrafficIP{ip}
}

type notTrafficIP struct{ ip netip.Addr }

func (e notTrafficIP) Error() string   { return "explain: " + e.ip.String() + " is not a traffic IP" }
func (e notTrafficIP) HTTPStatus() int { return http.StatusNotFound }

func (f *fakeSource) Metrics() MetricsSnapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.metrics
}

// testKey returns a deterministic node key.
func testKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// Cluster fixtures: members a, b, c; single-hosted group "web" with two IPs,
// multi-hosted group "mh" on all three.
const (
	ip1 = "192.0.2.10"
	ip2 = "2001:db8::10"
)

var names = []string{"a", "b", "c"}

// clusterStatus is node self's status: up members, single-hosted owners as
// self computes them, the IPs self holds, and config version.
func clusterStatus(self string, up []string, owners map[string]string, held []string, cfg uint64) NodeStatus {
	st := NodeStatus{Node: self, Cluster: "demo", Version: "test", Configured: true,
		Health:        NodeHealth{OK: true},
		View:          NodeView{Epoch: uint64(len(up)), Up: slices.Clone(up), Digest: "d-" + strings.Join(up, "")},
		ConfigVersion: cfg, ConfigHash: "h" + string(rune('0'+cfg))}
	for i, n := range names {
		m := NodeMember{Name: n, Address: "198.51.100." + string(rune('1'+i)), Self: n == self,
			Up: slices.Contains(up, n), ConfigVersion: cfg, Gossip: "alive", LastHeartbeatMS: 120}
		m.Health = "unknown"
		if m.Up {
			m.Health = "ok"
		}
		if !m.Up {
			m.Gossip, m.LastHeartbeatMS = "failed", 4200
		}
		st.Members = append(st.Members, m)
	}
	shares := map[string]int{}
	for i, n := range up {
		shares[n] = 256 / len(up)
		if i < 256%len(up) {
			shares[n]++
		}
	}
	st.Groups = []NodeGroup{
		{Name: "web", Mode: "single", Members: names, IPs: owners, Held: held},
		{Name: "mh", Mode: "multi", Members: names, Shares: shares},
	}
	return st
}

// lowCostHash is a bcrypt hash made fast for tests.
func lowCostHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// serveTLS serves s over real TLS on 127.0.0.1 until the test ends and
// returns host:port.
func serveTLS(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return ln.Addr().String()
}

// clientTLS is a client that presents cert (if any) and accepts any server
// key (tests that check the server's key do so themselves).
func clientTLS(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test client
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func newTestServer(t *testing.T, src Source, o Options) *Server {
	t.Helper()
	if o.Node == "" {
		o.Node = "a"
	}
	if o.Key == nil {
		o.Key = testKey(1)
	}
	o.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	s, err := New(src, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// do runs one request through h and returns the recorder.
func do(h http.Handler, method, path string, mod func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// metricValue gathers reg and returns the value of the series name{labels}
// (counter, gauge or untyped; a histogram's sample count), or -1 if absent.
// (prometheus/testutil would need github.com/kylelemons/godebug, which is
// not in go.sum.)
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			case m.Untyped != nil:
				return m.GetUntyped().GetValue()
			}
		}
	}
	return -1
}

func newPlainRegistry(cs ...interface{ Collector() prometheus.Collector }) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	for _, c := range cs {
		reg.MustRegister(c.Collector())
	}
	return reg
}
