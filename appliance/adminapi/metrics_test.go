package adminapi

import (
	"bytes"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/bpf"
	"github.com/shoal-project/shoal/dataplane"
	"github.com/shoal-project/shoal/dataplane/multihost"
	"github.com/shoal-project/shoal/gossip"
)

func TestMetricsExposition(t *testing.T) {
	rejected := map[string]uint64{}
	for _, r := range gossip.RejectReasons {
		rejected[r] = 0
	}
	rejected[gossip.RejectBadSignature] = 3
	rejected[gossip.RejectReplay] = 2
	src := &fakeSource{
		status: clusterStatus("a", []string{"a", "b"}, map[string]string{ip1: "a", ip2: "b"}, []string{ip1}, 4),
		metrics: MetricsSnapshot{
			Gossip: gossip.Stats{Heartbeats: 10, Sent: 12, Received: 30, Accepted: 25, Rejected: rejected, ViewChanges: 2, Suspicions: 1},
			Events: events.Stats{Published: 7, Running: 1, Actions: map[string]events.ActionStats{
				"ops-mail": {Type: "email", Runs: 4, Failed: 1, Dropped: 2},
				"hook":     {Type: "webhook", Runs: 9, Failed: 3, TimedOut: 1},
			}},
			Dataplane: dataplane.Status{Announcements: 5, AnnounceErrors: 1, Conflicts: 1, Converged: true},
			Multihost: &multihost.Status{
				Counters:   bpf.Counters{PassedOwner: 100, PassedSocket: 4, DroppedNotOwner: 200, ParseErrors: 1},
				Groups:     []multihost.GroupStatus{{Name: "mh", BucketsOwned: 128}},
				Interfaces: []multihost.InterfaceStatus{{Name: "eth0", Mode: "native"}},
				ARPReplies: 6,
			},
		},
	}
	s := newTestServer(t, src, Options{})
	// One complete failover, so the histogram has samples.
	tl := s.Timelines()
	t0 := time.Unix(1000, 0)
	tl.Suspected("c", t0)
	tl.Confirmed("c", "no heartbeat", t0.Add(1500*time.Millisecond))
	tl.ViewChanged(5, []string{"a", "b"}, t0.Add(1510*time.Millisecond))
	tl.Allocated(t0.Add(1520 * time.Millisecond))
	tl.IPRaised(netip.MustParseAddr(ip2), t0.Add(1600*time.Millisecond))
	tl.FirstARP(netip.MustParseAddr(ip2), t0.Add(1650*time.Millisecond))

	w := do(s.MetricsHandler(), "GET", "/metrics", nil)
	if w.Code != 200 {
		t.Fatalf("GET /metrics: %d", w.Code)
	}
	body := w.Body.String()
	for _, line := range []string{
		`shoal_build_info{cluster="demo",node="a",version="test"} 1`,
		`shoal_heartbeats_sent_total 10`,
		`shoal_heartbeat_packets_received_total 30`,
		`shoal_heartbeat_packets_accepted_total 25`,
		`shoal_heartbeat_packets_rejected_total{reason="bad_signature"} 3`,
		`shoal_heartbeat_packets_rejected_total{reason="replay"} 2`,
		`shoal_heartbeat_packets_rejected_total{reason="clock_skew"} 0`,
		`shoal_view_epoch 2`,
		`shoal_view_changes_total 2`,
		`shoal_members 3`,
		`shoal_members_up 2`,
		`shoal_member_up{member="c"} 0`,
		`shoal_member_up{member="b"} 1`,
		`shoal_health_ok 1`,
		`shoal_config_version 4`,
		`shoal_member_config_version{member="b"} 4`,
		`shoal_traffic_ips_held{group="web"} 1`,
		`shoal_traffic_ips{group="web",owner="b"} 1`,
		`shoal_multihost_share_buckets{group="mh",member="a"} 128`,
		`shoal_multihost_share_buckets{group="mh",member="c"} 0`,
		`shoal_multihost_buckets_owned{group="mh"} 128`,
		`shoal_multihost_xdp_attached{interface="eth0",mode="native"} 1`,
		`shoal_xdp_packets_total{verdict="passed_owner"} 100`,
		`shoal_xdp_packets_total{verdict="dropped_not_owner"} 200`,
		`shoal_xdp_packets_total{verdict="parse_error"} 1`,
		`shoal_multihost_replies_total{proto="arp"} 6`,
		`shoal_announcements_total 5`,
		`shoal_ip_conflicts_total 1`,
		`shoal_dataplane_converged 1`,
		`shoal_events_published_total 7`,
		`shoal_event_action_failures_total{action="hook",type="webhook"} 3`,
		`shoal_event_action_failures_total{action="ops-mail",type="email"} 1`,
		`shoal_event_action_runs_total{action="hook",type="webhook"} 9`,
		`shoal_event_action_timeouts_total{action="hook",type="webhook"} 1`,
		`shoal_event_action_dropped_total{action="ops-mail",type="email"} 2`,
		`shoal_failover_step_seconds_count{step="first_arp"} 1`,
		`shoal_failover_step_seconds_sum{step="first_arp"} 1.65`,
		`shoal_failover_step_seconds_bucket{step="confirmed",le="1.5"} 1`,
		`shoal_failover_step_seconds_bucket{step="confirmed",le="1"} 0`,
		`shoal_admin_auth_failures_total{reason="bad_password"} 0`,
		`shoal_admin_status_error 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("exposition lacks %q", line)
		}
	}
	problems, err := promlint.New(bytes.NewReader(w.Body.Bytes())).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// Behind the API's authentication /metrics needs credentials.
	if c := do(s.Handler(), "GET", "/metrics", nil).Code; c != http.StatusUnauthorized {
		t.Errorf("/metrics on the API without credentials: %d, want 401", c)
	}
	// Without multi-hosted groups the XDP series are absent, not zero.
	src.metrics.Multihost = nil
	if strings.Contains(do(s.MetricsHandler(), "GET", "/metrics", nil).Body.String(), "shoal_xdp_packets_total") {
		t.Error("XDP series present without a multi-hosted dataplane")
	}
}

// Two servers have independent registries (no global state).
func TestMetricsRegistriesIndependent(t *testing.T) {
	s1 := newTestServer(t, &fakeSource{status: clusterStatus("a", names, nil, nil, 1)}, Options{})
	s2 := newTestServer(t, &fakeSource{status: clusterStatus("b", names, nil, nil, 1)}, Options{Node: "b", Key: testKey(2)})
	s1.metrics.forbidden.Inc()
	if metricValue(t, s2.reg, "shoal_admin_forbidden_total") != 0 || metricValue(t, s1.reg, "shoal_admin_forbidden_total") != 1 {
		t.Error("counters shared between servers")
	}
}
