package appliance

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/dataplane"
)

// testCluster builds a cluster config with members a..c and the given
// groups, through the real parser so defaults and slots are filled in.
func testCluster(t *testing.T, groups string) *config.Cluster {
	t.Helper()
	var b strings.Builder
	b.WriteString("[cluster]\nname = \"t\"\n")
	keys := []string{
		"Z1pdJjr9ZkjMER7HxyXHycp/a/IX9acRB+iWaWXlcRA=",
		"dQgdps8Sq4Wc1CGW9QHjSwXuLg7G2IYL6SvfmHs65w0=",
		"Pu2MkFa1hvgRprtwMJfuOYrupefaOeA5D2LRJyHgCIQ=",
	}
	for i, n := range []string{"a", "b", "c"} {
		fmt.Fprintf(&b, "[[member]]\nname = %q\naddress = \"10.99.0.%d\"\npublic_key = \"ed25519:%s\"\n", n, i+1, keys[i])
	}
	b.WriteString(groups)
	c, err := config.Parse("test.toml", []byte(b.String()))
	if err != nil {
		t.Fatalf("parse test config: %v", err)
	}
	return c
}

func testPlanner(t *testing.T, self string, c *config.Cluster, now time.Time) *planner {
	t.Helper()
	plans, err := AllocPlans(c)
	if err != nil {
		t.Fatal(err)
	}
	return newPlanner(self, c, plans, now, time.Second)
}

func heldIPs(d dataplane.Desired) []string {
	var out []string
	for _, a := range d.Addresses {
		out = append(out, a.IP.String())
	}
	slices.Sort(out)
	return out
}

const webGroup = `
[[group]]
name = "web"
ips = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
members = ["a", "b", "c"]
interface = "eth0"
`

// Every node runs the planner on the same view: each IP must be held by
// exactly one node, and a failure must move only the failed node's IPs.
func TestPlannerExactlyOneHolder(t *testing.T) {
	c := testCluster(t, webGroup)
	t0 := time.Unix(1000, 0)
	nodes := map[string]*planner{}
	for _, n := range []string{"a", "b", "c"} {
		nodes[n] = testPlanner(t, n, c, t0)
	}
	holders := func(now time.Time, up []string) map[string][]string {
		out := map[string][]string{}
		for _, n := range []string{"a", "b", "c"} {
			if !slices.Contains(up, n) {
				continue // a down node computes nothing that matters
			}
			d := nodes[n].plan(planInput{now: now, up: up}).desired
			for _, ip := range heldIPs(d) {
				out[ip] = append(out[ip], n)
			}
		}
		return out
	}
	all := holders(t0, []string{"a", "b", "c"})
	if len(all) != 3 {
		t.Fatalf("all up: holders = %v, want 3 IPs held", all)
	}
	for ip, h := range all {
		if len(h) != 1 {
			t.Errorf("all up: %s held by %v, want exactly one", ip, h)
		}
	}
	// Find c's IP, fail c: only that IP moves, and to exactly one node.
	var cIP string
	for ip, h := range all {
		if h[0] == "c" {
			cIP = ip
		}
	}
	after := holders(t0.Add(5*time.Second), []string{"a", "b"})
	for ip, h := range after {
		if len(h) != 1 {
			t.Errorf("c down: %s held by %v, want exactly one", ip, h)
		}
		if ip != cIP && h[0] != all[ip][0] {
			t.Errorf("c down: %s moved from %s to %s although its owner is alive", ip, all[ip][0], h[0])
		}
	}
	if len(after[cIP]) != 1 {
		t.Errorf("c down: c's IP %s held by %v, want one survivor", cIP, after[cIP])
	}
}

// On failback the old holder keeps the IP for the hand-off grace
// (make-before-break) and then drops it.
func TestPlannerHandoffGrace(t *testing.T) {
	c := testCluster(t, webGroup)
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	pc := testPlanner(t, "c", c, t0)
	all := []string{"a", "b", "c"}
	pa.plan(planInput{now: t0, up: all})
	cHeld := heldIPs(pc.plan(planInput{now: t0, up: all}).desired)
	if len(cHeld) != 1 {
		t.Fatalf("c holds %v, want one IP", cHeld)
	}
	// c fails; a or b takes its IP. Find which, and use that planner.
	t1 := t0.Add(10 * time.Second)
	pb := testPlanner(t, "b", c, t0)
	pb.plan(planInput{now: t0, up: all})
	var taker *planner
	for _, p := range []*planner{pa, pb} {
		if slices.Contains(heldIPs(p.plan(planInput{now: t1, up: []string{"a", "b"}}).desired), cHeld[0]) {
			taker = p
		}
	}
	if taker == nil {
		t.Fatalf("nobody took %s after c failed", cHeld[0])
	}
	// c recovers: the taker keeps the IP during the grace, then drops it.
	t2 := t1.Add(10 * time.Second)
	out := taker.plan(planInput{now: t2, up: all})
	if !slices.Contains(heldIPs(out.desired), cHeld[0]) {
		t.Errorf("at failback the old holder dropped %s at once; want it kept for the grace", cHeld[0])
	}
	for _, ad := range out.desired.Addresses {
		if ad.IP.String() == cHeld[0] && !ad.Handoff {
			t.Errorf("kept %s during the grace without Handoff: it would still be announced and pull clients back", ad.IP)
		}
	}
	if want := t2.Add(DefaultHandoffGrace); !out.wakeAt.Equal(want) {
		t.Errorf("wakeAt = %v, want %v (end of grace)", out.wakeAt, want)
	}
	out = taker.plan(planInput{now: t2.Add(DefaultHandoffGrace), up: all})
	if slices.Contains(heldIPs(out.desired), cHeld[0]) {
		t.Errorf("after the grace the old holder still holds %s", cHeld[0])
	}
}

// A node that is not in its own view (self-tests failed) drops everything
// at once: no hand-off grace.
func TestPlannerSelfFailedDropsAtOnce(t *testing.T) {
	c := testCluster(t, webGroup)
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	if got := heldIPs(pa.plan(planInput{now: t0, up: []string{"a", "b", "c"}}).desired); len(got) != 1 {
		t.Fatalf("a holds %v, want one IP", got)
	}
	if got := heldIPs(pa.plan(planInput{now: t0.Add(time.Second), up: []string{"b", "c"}}).desired); len(got) != 0 {
		t.Errorf("failed node still holds %v", got)
	}
}

// failback_delay holds a recovered member back; members present at start
// are not held back.
func TestPlannerFailbackDelay(t *testing.T) {
	c := testCluster(t, strings.Replace(webGroup, "interface", "failback_delay = \"30s\"\ninterface", 1))
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	all := []string{"a", "b", "c"}
	first := pa.plan(planInput{now: t0, up: all})
	if got := first.groups[0].IPs; countOwners(got, "c") != 1 {
		t.Fatalf("at start c owns %d IPs (%v), want 1: members present at start are not held back", countOwners(got, "c"), got)
	}
	t1 := t0.Add(10 * time.Second)
	pa.plan(planInput{now: t1, up: []string{"a", "b"}})
	t2 := t1.Add(10 * time.Second)
	out := pa.plan(planInput{now: t2, up: all})
	if n := countOwners(out.groups[0].IPs, "c"); n != 0 {
		t.Errorf("c owns %d IPs right after recovering; want 0 during failback_delay", n)
	}
	if want := t2.Add(30 * time.Second); !out.wakeAt.Equal(want) {
		t.Errorf("wakeAt = %v, want %v (end of failback_delay)", out.wakeAt, want)
	}
	out = pa.plan(planInput{now: t2.Add(30 * time.Second), up: all})
	if n := countOwners(out.groups[0].IPs, "c"); n != 1 {
		t.Errorf("c owns %d IPs after failback_delay; want 1", n)
	}
}

// A node that starts after its peers counts itself as recovering, exactly
// as its peers count it, so both sides agree during failback_delay.
func TestPlannerSelfRecoveryAgreesWithPeers(t *testing.T) {
	c := testCluster(t, strings.Replace(webGroup, "interface", "failback_delay = \"30s\"\ninterface", 1))
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	pa.plan(planInput{now: t0, up: []string{"a", "b"}})
	t1 := t0.Add(time.Minute)
	pc := testPlanner(t, "c", c, t1) // c starts a minute later
	all := []string{"a", "b", "c"}
	peerStart := map[string]time.Time{"a": t0, "b": t0}
	outA := pa.plan(planInput{now: t1, up: all})
	outC := pc.plan(planInput{now: t1, up: all, peerStart: peerStart})
	if diff := cmp.Diff(outA.groups[0].IPs, outC.groups[0].IPs); diff != "" {
		t.Errorf("a and c disagree on owners during c's failback_delay (-a +c):\n%s", diff)
	}
	if got := heldIPs(outC.desired); len(got) != 0 {
		t.Errorf("c holds %v during its own failback_delay", got)
	}
}

// A peer that reports it cannot serve a group is left out of that group
// only; a group this node cannot serve is dropped by it.
func TestPlannerGroupFailures(t *testing.T) {
	c := testCluster(t, webGroup+`
[[group]]
name = "api"
ips = ["192.0.2.20"]
members = ["a", "b"]
interface = "eth1"
`)
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	all := []string{"a", "b", "c"}
	bFailed := map[string]map[string]bool{"b": {"api": true}}
	// A report is acted on once it has stood for peerGroupFailHold: the
	// first packets of a node whose port flapped still carry the failure
	// it had while down.
	out := pa.plan(planInput{now: t0, up: all, peerFailedGroups: bFailed})
	if owner := out.groups[1].IPs["192.0.2.20"]; owner != "b" {
		t.Errorf("api owner = %q right after b reported api failed, want b until the hold ends", owner)
	}
	if !out.wakeAt.Equal(t0.Add(peerGroupFailHold)) {
		t.Errorf("wakeAt = %v after the report, want %v", out.wakeAt.Sub(t0), peerGroupFailHold)
	}
	// A report that goes away within the hold changes nothing, and a new
	// one starts a new hold.
	pa.plan(planInput{now: t0.Add(100 * time.Millisecond), up: all})
	if owner := pa.plan(planInput{now: t0.Add(peerGroupFailHold), up: all, peerFailedGroups: bFailed}).groups[1].IPs["192.0.2.20"]; owner != "b" {
		t.Errorf("api owner = %q after a report that came, went and came back, want b", owner)
	}
	out = pa.plan(planInput{now: t0.Add(2 * peerGroupFailHold), up: all, peerFailedGroups: bFailed})
	if owner := out.groups[1].IPs["192.0.2.20"]; owner != "a" {
		t.Errorf("api owner = %q with b failed for api for %v, want a", owner, peerGroupFailHold)
	}
	if n := countOwners(out.groups[0].IPs, "b"); n != 1 {
		t.Errorf("b owns %d web IPs, want 1: its api failure must not affect web", n)
	}
	out = pa.plan(planInput{now: t0.Add(2 * time.Second), up: all, selfFailedGroups: map[string]bool{"api": true}})
	for _, ad := range out.desired.Addresses {
		if ad.Group == "api" {
			t.Errorf("a still holds %s of api although it cannot serve api", ad.IP)
		}
	}
}

func TestFailedGroupsOf(t *testing.T) {
	got := failedGroupsOf([]string{"gateway 192.0.2.1 unreachable", GroupFailedPrefix + "web interface eth0 missing", GroupFailedPrefix + "api"})
	if diff := cmp.Diff(map[string]bool{"web": true, "api": true}, got); diff != "" {
		t.Errorf("failedGroupsOf (-want +got):\n%s", diff)
	}
}

// multiFront is one multi-hosted group of three members.
const multiFront = `
[[group]]
name = "front"
mode = "multi"
ips = ["198.51.100.10"]
members = ["a", "b", "c"]
interface = "eth0"
`

func TestPlannerMultiTables(t *testing.T) {
	c := testCluster(t, multiFront)
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	out := pa.plan(planInput{now: t0, up: []string{"a", "b", "c"}})
	if len(out.desired.Multi) != 1 {
		t.Fatalf("desired multi groups = %d, want 1", len(out.desired.Multi))
	}
	m := out.desired.Multi[0]
	if m.MAC.String() != "01:00:5e:4d:53:01" || m.MulticastGroup != netip.MustParseAddr("239.77.83.1") {
		t.Errorf("MAC %s group %s, want 01:00:5e:4d:53:01 from 239.77.83.1", m.MAC, m.MulticastGroup)
	}
	if got := out.groups[0].Shares; got["a"] != 13440 || got["b"] != 13440 || got["c"] != 13440 {
		t.Errorf("shares %v, want 13440 each", got)
	}
	first := m.Owners
	out = pa.plan(planInput{now: t0.Add(time.Second), up: []string{"a", "b"}})
	m = out.desired.Multi[0]
	// c's buckets moved to a and b; c is dead, so no bucket names it as
	// previous owner (nothing of its to leave alone).
	if !slices.Equal(m.Prev, m.Owners) {
		t.Errorf("Prev differs from Owners after c died")
	}
	if slices.Equal(m.Owners, first) {
		t.Errorf("Owners did not change when c died")
	}
	if m.PrevAlive != 0b011 {
		t.Errorf("PrevAlive = %03b, want 011 (slots of a and b)", m.PrevAlive)
	}
}

// TestPlannerMultiPrevSticky: a bucket's previous owner survives later
// passes that do not move the bucket (a node that took buckets back keeps
// leaving the old owner's connections alone), and a cluster start hands
// nothing over.
func TestPlannerMultiPrevSticky(t *testing.T) {
	c := testCluster(t, multiFront)
	t0 := time.Unix(1000, 0)
	pc := testPlanner(t, "c", c, t0)
	all := []string{"a", "b", "c"}
	m := pc.plan(planInput{now: t0, up: all}).desired.Multi[0]
	if !slices.Equal(m.Prev, m.Owners) {
		t.Errorf("cluster start: Prev differs from Owners, want nothing handed over")
	}
	// b leaves: c takes some of b's buckets (their previous owner, b, is
	// dead: not in PrevAlive).
	m = pc.plan(planInput{now: t0.Add(5 * time.Second), up: []string{"a", "c"}}).desired.Multi[0]
	slotB := uint8(c.Groups[0].Slots["b"])
	if m.PrevAlive&(1<<slotB) != 0 {
		t.Errorf("PrevAlive %03b has b's slot while b is down", m.PrevAlive)
	}
	// b returns: the buckets c gives back are b's, c's previous owner of
	// them is c; c is the previous owner of nothing it still owns.
	m = pc.plan(planInput{now: t0.Add(10 * time.Second), up: all}).desired.Multi[0]
	back := m.Prev
	slotC := uint8(c.Groups[0].Slots["c"])
	moved := 0
	for b := range m.Owners {
		if m.Owners[b] == slotB && m.Prev[b] == slotC {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("no bucket moved from c back to b")
	}
	// Later passes with the same view keep every previous owner.
	for i := range 3 {
		m = pc.plan(planInput{now: t0.Add(time.Duration(11+i) * time.Second), up: all}).desired.Multi[0]
		if !slices.Equal(m.Prev, back) {
			t.Fatalf("pass %d with an unchanged view changed Prev", i)
		}
	}
}

// TestPlannerMultiJoinHandover: a node joining a running cluster (its peers
// started long before it) takes its buckets from the alive members, whose
// connections in them it must leave alone: its first table names them as
// previous owners.
func TestPlannerMultiJoinHandover(t *testing.T) {
	c := testCluster(t, multiFront)
	t0 := time.Unix(1000, 0)
	t1 := t0.Add(time.Minute)
	pc := testPlanner(t, "c", c, t1)
	peerStart := map[string]time.Time{"a": t0, "b": t0}
	join := t1.Add(2 * time.Second)
	slotC := uint8(c.Groups[0].Slots["c"])
	// It takes nothing until a and b show, in their heartbeats, the table
	// with c in it (they let go): until then its table is theirs.
	up := []string{"a", "b", "c"}
	out := pc.plan(planInput{now: join, up: up, peerStart: peerStart})
	m := out.desired.Multi[0]
	theirs := testPlanner(t, "a", c, t0).plan(planInput{now: t0, up: []string{"a", "b"}}).desired.Multi[0]
	if !slices.Equal(m.Owners, theirs.Owners) || m.Digest != theirs.Digest {
		t.Errorf("c's table right after it joined differs from a's and b's before it")
	}
	if !out.wakeAt.Equal(join.Add(multiTakeMax)) {
		t.Errorf("wakeAt = %v after the join, want %v", out.wakeAt.Sub(join), multiTakeMax)
	}
	full := testPlanner(t, "a", c, t0).plan(planInput{now: t0, up: up}).desired.Multi[0]
	const mask = 1<<48 - 1
	tables := map[string][]uint64{"a": {theirs.Digest & mask}, "b": {full.Digest & mask}}
	if n := pc.plan(planInput{now: join.Add(time.Millisecond), up: up, peerStart: peerStart, peerTables: tables}).desired.Multi[0].Owners; slices.Contains(n, slotC) {
		t.Errorf("c took buckets while a still showed the table without it")
	}
	tables["a"] = []uint64{full.Digest & mask}
	m = pc.plan(planInput{now: join.Add(2 * time.Millisecond), up: up, peerStart: peerStart, peerTables: tables}).desired.Multi[0]
	if !slices.Equal(m.Owners, full.Owners) || m.Digest != full.Digest {
		t.Fatalf("c did not take its share once a and b showed the table with it")
	}
	mine := 0
	for b := range m.Owners {
		switch {
		case m.Owners[b] == slotC:
			mine++
			if m.Prev[b] == slotC || m.Prev[b] >= 8 {
				t.Fatalf("bucket %d: c owns it, previous owner slot %d, want a's or b's", b, m.Prev[b])
			}
		case m.Prev[b] != m.Owners[b]:
			t.Fatalf("bucket %d: owner %d, previous %d, want unchanged", b, m.Owners[b], m.Prev[b])
		}
	}
	if mine == 0 || m.PrevAlive != 0b111 {
		t.Errorf("c owns %d buckets, PrevAlive %03b; want some, 111", mine, m.PrevAlive)
	}
	// a dies: the buckets c took from a need no handover any more, and
	// when a returns (without connections) they do not get it back.
	slotA := uint8(c.Groups[0].Slots["a"])
	fromA := map[int]bool{}
	for b := range m.Owners {
		if m.Owners[b] == slotC && m.Prev[b] == slotA {
			fromA[b] = true
		}
	}
	if len(fromA) == 0 {
		t.Fatalf("c took no bucket from a")
	}
	pc.plan(planInput{now: t1.Add(5 * time.Second), up: []string{"b", "c"}, peerStart: peerStart})
	m = pc.plan(planInput{now: t1.Add(10 * time.Second), up: []string{"a", "b", "c"}, peerStart: peerStart}).desired.Multi[0]
	for b := range fromA {
		if m.Owners[b] == slotC && m.Prev[b] != slotC {
			t.Fatalf("bucket %d: previous owner %d after a died and returned, want c (%d)", b, m.Prev[b], slotC)
		}
	}
}

// TestPlannerMultiGroupRecoveredHandover: a group that failed on this node
// (its interface went down) and recovers is served again like after a
// join: the others took its buckets meanwhile, so they are their previous
// owners.
func TestPlannerMultiGroupRecoveredHandover(t *testing.T) {
	c := testCluster(t, multiFront)
	t0 := time.Unix(1000, 0)
	pa := testPlanner(t, "a", c, t0)
	all := []string{"a", "b", "c"}
	m := pa.plan(planInput{now: t0, up: all}).desired.Multi[0]
	if !slices.Equal(m.Prev, m.Owners) {
		t.Fatalf("cluster start: Prev differs from Owners")
	}
	out := pa.plan(planInput{now: t0.Add(5 * time.Second), up: all, selfFailedGroups: map[string]bool{"front": true}})
	if len(out.desired.Multi) != 0 {
		t.Fatalf("group failed here but still served")
	}
	slotA := uint8(c.Groups[0].Slots["a"])
	// b and c serve every bucket until they hear that the group is back on
	// a; nothing shows that they let go, so a takes its share multiTakeMax
	// later.
	back := t0.Add(8 * time.Second)
	if m = pa.plan(planInput{now: back, up: all}).desired.Multi[0]; slices.Contains(m.Owners, slotA) {
		t.Fatalf("a took buckets as soon as its group recovered")
	}
	if m = pa.plan(planInput{now: back.Add(multiTakeMax - time.Millisecond), up: all}).desired.Multi[0]; slices.Contains(m.Owners, slotA) {
		t.Fatalf("a took buckets before multiTakeMax with no sign that b and c let go")
	}
	m = pa.plan(planInput{now: back.Add(multiTakeMax), up: all}).desired.Multi[0]
	mine := 0
	for b := range m.Owners {
		if m.Owners[b] != slotA {
			continue
		}
		mine++
		if m.Prev[b] == slotA {
			t.Fatalf("bucket %d: a owns it again, previous owner a; want b or c, who served it meanwhile", b)
		}
	}
	if mine == 0 {
		t.Fatalf("a owns no bucket after recovering")
	}
}

func countOwners(ips map[string]string, who string) int {
	n := 0
	for _, o := range ips {
		if o == who {
			n++
		}
	}
	return n
}

// TestPlannerMultiRelease: a handover from a previous owner ends when that
// owner confirms it holds no connection outside its share of the current
// table, and stays ended while the bucket does not move; a confirmation for
// another table ends nothing.
func TestPlannerMultiRelease(t *testing.T) {
	c := testCluster(t, multiFront)
	g := c.Groups[0]
	pc := testPlanner(t, "c", c, time.Unix(1000, 0))
	plan := pc.plans[0]
	all := allocate.Alive{"a": true, "b": true, "c": true}
	n := len(plan.Buckets(all))
	slotB, slotC := uint8(g.Slots["b"]), uint8(g.Slots["c"])
	table := func(toC int) []uint8 { // b owns all, c the first toC buckets
		t := make([]uint8, n)
		for i := range t {
			t[i] = slotB
			if i < toC {
				t[i] = slotC
			}
		}
		return t
	}
	handover := func(prev []uint8) int {
		k := 0
		for i := range prev {
			if prev[i] == slotB && i < 10 {
				k++
			}
		}
		return k
	}
	step := func(cur []uint8, rel ...string) ([]uint8, string) {
		t.Helper()
		prev, d := pc.multiPrev(g.Name, 7, g.Slots, plan, all, cur, map[string][]string{"b": rel})
		return prev, TableDigestHex(d)
	}
	step(table(0)) // cluster start: no handover
	prev, d := step(table(10))
	if handover(prev) != 10 {
		t.Fatalf("10 buckets moved from b to c: %d in handover, want 10", handover(prev))
	}
	if prev, _ = step(table(10), "000000000000", d+"0"); handover(prev) != 10 {
		t.Fatalf("confirmations for other tables ended %d handovers", 10-handover(prev))
	}
	if prev, _ = step(table(10), d); handover(prev) != 0 {
		t.Fatalf("b confirmed the table: %d buckets still in handover", handover(prev))
	}
	if prev, _ = step(table(10)); handover(prev) != 0 {
		t.Fatalf("a later pass put %d buckets back in handover", handover(prev))
	}
	// The buckets go back to b and come to c again: a new handover.
	step(table(0))
	if prev, _ = step(table(10)); handover(prev) != 10 {
		t.Fatalf("buckets moved again: %d in handover, want 10", handover(prev))
	}
}

// TestOthersLetGo: a member lets go of the share of the node taking over
// when it shows the full table, or, while it is itself waiting to take its
// own share, the table of the others without it; the table from before the
// node came back (its share still owned there), another group's table or
// none at all does not count.
func TestOthersLetGo(t *testing.T) {
	c := testCluster(t, multiFront)
	plans, err := AllocPlans(c)
	if err != nil {
		t.Fatal(err)
	}
	plan, slots := plans[0], c.Groups[0].Slots
	const seed, mask = 7, 1<<48 - 1
	alive := allocate.Alive{"a": true, "b": true, "c": true}
	digest := func(alive allocate.Alive) uint64 { return tableDigest(seed, slots, plan.Buckets(alive)) & mask }
	full := digest(alive)
	withoutC := digest(allocate.Alive{"a": true, "b": true})
	withoutB := digest(allocate.Alive{"a": true, "c": true})
	tests := []struct {
		name   string
		tables map[string][]uint64
		want   bool
	}{
		{"both show the full table", map[string][]uint64{"a": {full}, "b": {99, full}}, true},
		{"b waits to take its own share", map[string][]uint64{"a": {full}, "b": {withoutB}}, true},
		{"b still shows the table without c", map[string][]uint64{"a": {full}, "b": {withoutC}}, false},
		{"b shows nothing", map[string][]uint64{"a": {full}}, false},
		{"b shows another group's table", map[string][]uint64{"a": {full}, "b": {full ^ 1}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := othersLetGo(plan, seed, slots, alive, "c", plan.Buckets(alive), tc.tables); got != tc.want {
				t.Errorf("othersLetGo = %v, want %v", got, tc.want)
			}
		})
	}
}
