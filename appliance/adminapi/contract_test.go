package adminapi_test

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/appliance/adminapi"
	"github.com/shoal-project/shoal/appliance/events"
)

// NodeStatus reads appliance.Status through its JSON form: every field the
// admin API uses must survive (a renamed JSON field breaks this test).
func TestNodeStatusMatchesApplianceStatus(t *testing.T) {
	in := appliance.Status{
		Node: "a", Cluster: "demo", Version: "1.2.3", Configured: true,
		Health:        appliance.HealthStatus{OK: false, Reasons: []string{"gateway 192.0.2.1 unreachable"}},
		View:          appliance.ViewStatus{Epoch: 9, Up: []string{"a", "b"}, Digest: "abcd"},
		ConfigVersion: 4, ConfigHash: "0123",
		Members: []appliance.MemberStatus{{Name: "b", Address: "198.51.100.2", Self: false, Up: true, Health: "ok",
			Reasons: []string{"r"}, LastHeartbeatMS: 321, ConfigVersion: 4, Gossip: "alive"}},
		Groups: []appliance.GroupStatus{{Name: "web", Mode: "single", Members: []string{"a", "b"}, Passive: []string{"b"},
			IPs: map[string]string{"192.0.2.10": "a"}, Held: []string{"192.0.2.10"}, Shares: map[string]int{"a": 1}, Error: "e"}},
		Dataplane: map[string]int{"x": 1},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := adminapi.DecodeNodeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	want := adminapi.NodeStatus{
		Node: "a", Cluster: "demo", Version: "1.2.3", Configured: true,
		Health:        adminapi.NodeHealth{OK: false, Reasons: []string{"gateway 192.0.2.1 unreachable"}},
		View:          adminapi.NodeView{Epoch: 9, Up: []string{"a", "b"}, Digest: "abcd"},
		ConfigVersion: 4, ConfigHash: "0123",
		Members: []adminapi.NodeMember{{Name: "b", Address: "198.51.100.2", Self: false, Up: true, Health: "ok",
			Reasons: []string{"r"}, LastHeartbeatMS: 321, ConfigVersion: 4, Gossip: "alive"}},
		Groups: []adminapi.NodeGroup{{Name: "web", Mode: "single", Members: []string{"a", "b"}, Passive: []string{"b"},
			IPs: map[string]string{"192.0.2.10": "a"}, Held: []string{"192.0.2.10"}, Shares: map[string]int{"a": 1}, Error: "e"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NodeStatus from appliance.Status (-want +got):\n%s", diff)
	}
}

// The agent's parts plug into SourceFuncs as they are.
func TestSourceFuncsFitTheAgent(t *testing.T) {
	var d *events.Dispatcher
	var explain func(netip.Addr) (any, error)
	_ = adminapi.SourceFuncs{EventsFunc: d.Recent, SubscribeFunc: d.Subscribe, ExplainFunc: explain,
		StatusFunc: func() any { return appliance.Status{} }}
}
