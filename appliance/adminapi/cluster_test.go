package adminapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/appliance/events"
)

// memberRow is the part of a ClusterMember the tests compare.
type memberRow struct {
	Name      string
	Up        bool
	Reachable bool
	Health    string
	Config    uint64
	Holds     []string
}

func rows(v ClusterView) []memberRow {
	var out []memberRow
	for _, m := range v.Members {
		out = append(out, memberRow{m.Name, m.Up, m.Reachable, m.Health, m.ConfigVersion, m.Holds})
	}
	return out
}

type ipRow struct {
	IP, Owner string
	HeldBy    []string
}

func ipRows(v ClusterView) []ipRow {
	var out []ipRow
	for _, i := range v.IPs {
		out = append(out, ipRow{i.IP, i.Owner, i.HeldBy})
	}
	return out
}

func hasWarning(v ClusterView, sub string) bool {
	return slices.ContainsFunc(v.Warnings, func(w string) bool { return strings.Contains(w, sub) })
}

// A three-node cluster of real HTTPS servers on 127.0.0.1, each with its own
// fake node; node a gathers the cluster view from b and c over mutual TLS.
func TestClusterGather(t *testing.T) {
	keys := map[string]ed25519.PrivateKey{"a": testKey(1), "b": testKey(2), "c": testKey(3)}
	lns := map[string]net.Listener{}
	var peers []Peer
	for _, n := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[n] = ln
		peers = append(peers, Peer{Name: n, PublicKey: pub(keys[n]), Addr: ln.Addr().String()})
	}
	owners := map[string]string{ip1: "a", ip2: "b"}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srcs := map[string]*fakeSource{
		"a": {status: clusterStatus("a", names, owners, []string{ip1}, 1),
			events:  []events.Event{{Time: base.Add(1 * time.Second), Type: events.IPRaised, Node: "a", IP: ip1, Severity: "info"}},
			explain: map[string]string{ip1: ip1 + " (group \"web\")\n  1. a active alive", ip2: ip2 + " ..."}},
		"b": {status: clusterStatus("b", names, owners, []string{ip2}, 1),
			events: []events.Event{{Time: base.Add(2 * time.Second), Type: events.IPRaised, Node: "b", IP: ip2, Severity: "info"}}},
		"c": {status: clusterStatus("c", names, owners, nil, 1),
			events: []events.Event{{Time: base.Add(3 * time.Second), Type: events.MemberJoined, Node: "c", Member: "c", Severity: "info"}}},
	}
	servers := map[string]*Server{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range names {
		s := newTestServer(t, srcs[n], Options{Node: n, Key: keys[n], Peers: peers, PeerTimeout: 5 * time.Second,
			Users: []User{{Name: "ops", TokenHash: HashToken("tok"), Role: RoleReadOnly}}})
		s.cacheTTL = 0
		servers[n] = s
		done := make(chan struct{})
		go func() { defer close(done); _ = s.ServeListener(ctx, lns[n]) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	get := func(t *testing.T) ClusterView {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+peers[0].Addr+"/api/v1/cluster", nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := clientTLS(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /api/v1/cluster: %s", resp.Status)
		}
		var v ClusterView
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	t.Run("all up and agreeing", func(t *testing.T) {
		v := get(t)
		want := []memberRow{
			{"a", true, true, "ok", 1, []string{ip1}},
			{"b", true, true, "ok", 1, []string{ip2}},
			{"c", true, true, "ok", 1, nil},
		}
		if diff := cmp.Diff(want, rows(v)); diff != "" {
			t.Errorf("members (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]ipRow{{ip1, "a", []string{"a"}}, {ip2, "b", []string{"b"}}}, ipRows(v)); diff != "" {
			t.Errorf("ips (-want +got):\n%s", diff)
		}
		if len(v.Warnings) != 0 {
			t.Errorf("warnings: %q", v.Warnings)
		}
		var evs []string
		for _, e := range v.Events {
			evs = append(evs, e.Node+":"+string(e.Type))
		}
		if diff := cmp.Diff([]string{"c:member-joined", "b:ip-raised", "a:ip-raised"}, evs); diff != "" {
			t.Errorf("events, newest first (-want +got):\n%s", diff)
		}
		if v.IPs[0].Why == "" || !strings.Contains(v.IPs[0].Why, "1. a active") {
			t.Errorf("why of %s = %q", ip1, v.IPs[0].Why)
		}
		mh := v.Groups[1]
		if diff := cmp.Diff(map[string]int{"a": 86, "b": 85, "c": 85}, mh.Reported); mh.Name != "mh" || diff != "" {
			t.Errorf("group %s reported shares (-want +got):\n%s", mh.Name, diff)
		}
	})

	t.Run("c down, ip1 held twice, config versions differ", func(t *testing.T) {
		up := []string{"a", "b"}
		o := map[string]string{ip1: "a", ip2: "b"}
		srcs["a"].set(func(st *NodeStatus) { *st = clusterStatus("a", up, o, []string{ip1}, 1) })
		srcs["b"].set(func(st *NodeStatus) { *st = clusterStatus("b", up, o, []string{ip1, ip2}, 2) })
		before := srcs["c"].calls()
		v := get(t)
		want := []memberRow{
			{"a", true, true, "ok", 1, []string{ip1}},
			{"b", true, true, "ok", 2, []string{ip1, ip2}},
			{"c", false, false, "unknown", 1, nil},
		}
		if diff := cmp.Diff(want, rows(v)); diff != "" {
			t.Errorf("members (-want +got):\n%s", diff)
		}
		if srcs["c"].calls() != before {
			t.Error("a member down in the view was asked for its status")
		}
		for _, w := range []string{ip1 + " (group web) is held by a and b", "config versions differ: a=1, b=2"} {
			if !hasWarning(v, w) {
				t.Errorf("no warning %q in %q", w, v.Warnings)
			}
		}
	})

	t.Run("unpinned peer key: unreachable and counted", func(t *testing.T) {
		o := map[string]string{ip1: "a", ip2: "b"}
		srcs["a"].set(func(st *NodeStatus) { *st = clusterStatus("a", names, o, []string{ip1}, 1) })
		srcs["b"].set(func(st *NodeStatus) { *st = clusterStatus("b", names, o, []string{ip2}, 1) })
		bad := slices.Clone(peers)
		bad[1].PublicKey = pub(testKey(9)) // a pins the wrong key for b
		if err := servers["a"].Reconfigure([]User{{Name: "ops", TokenHash: HashToken("tok"), Role: RoleReadOnly}}, bad, false); err != nil {
			t.Fatal(err)
		}
		v := get(t)
		b := v.Members[1]
		if b.Reachable || !strings.Contains(b.Error, "not the one pinned") {
			t.Errorf("b reachable=%v error=%q, want unreachable for its pin", b.Reachable, b.Error)
		}
		if !hasWarning(v, "b is up but its admin API did not answer") {
			t.Errorf("no unreachable warning in %q", v.Warnings)
		}
		if got := metricValue(t, servers["a"].reg, "shoal_admin_peer_errors_total", "member", "b"); got < 1 {
			t.Errorf("shoal_admin_peer_errors_total{member=b} = %v, want >= 1", got)
		}
	})
}

func TestMergeCluster(t *testing.T) {
	now := time.Unix(100, 0)
	st := func(self string, up []string, held []string, mut func(*NodeStatus)) NodeStatus {
		s := clusterStatus(self, up, map[string]string{ip1: "a", ip2: "b"}, held, 1)
		if mut != nil {
			mut(&s)
		}
		return s
	}
	tests := []struct {
		name     string
		reports  map[string]nodeReport
		warnings []string
	}{
		{
			name: "agreeing",
			reports: map[string]nodeReport{"a": {status: st("a", names, []string{ip1}, nil)},
				"b": {status: st("b", names, []string{ip2}, nil)}, "c": {status: st("c", names, nil, nil)}},
			warnings: []string{},
		},
		{
			name: "owner does not hold, views and shares differ",
			reports: map[string]nodeReport{"a": {status: st("a", names, []string{ip1}, nil)},
				"b": {status: st("b", []string{"a", "b"}, nil, nil)}, "c": {status: st("c", names, nil, nil)}},
			warnings: []string{
				"views differ: a sees [a,b,c] (epoch 3); b sees [a,b] (epoch 2); c sees [a,b,c] (epoch 3)",
				ip2 + " (group web): b should hold it but does not report it (yet)",
				"group mh: b computes its share as 128 buckets, a computes 85",
			},
		},
		{
			name: "nobody alive for an IP, unhealthy member, group error",
			reports: map[string]nodeReport{
				"a": {status: st("a", names, []string{ip1}, func(s *NodeStatus) {
					s.Groups[0].IPs[ip2] = ""
					s.Groups[1].Error = "interface eth9 missing"
				})},
				"b": {status: st("b", names, nil, func(s *NodeStatus) { s.Health = NodeHealth{OK: false, Reasons: []string{"gateway"}} })},
				"c": {err: context.DeadlineExceeded},
			},
			warnings: []string{
				"c is up but its admin API did not answer: context deadline exceeded",
				ip2 + " (group web) has no owner: no member of the group is up",
				"group mh: interface eth9 missing",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self := tt.reports["a"].status
			v := mergeCluster(self, tt.reports, nil, 10, now)
			if diff := cmp.Diff(tt.warnings, v.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if v.GatheredBy != "a" || len(v.Members) != 3 || !v.Time.Equal(now) {
				t.Errorf("view header: %+v", v)
			}
		})
	}
}
