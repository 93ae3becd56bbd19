package crashsafe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/chaos"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

var (
	singleIPs = []netip.Addr{netip.MustParseAddr("192.0.2.30"), netip.MustParseAddr("192.0.2.31"), netip.MustParseAddr("2001:db8::30")}
	multiIP   = netip.MustParseAddr("203.0.113.30")
)

// shoalBinary is the binary under test: $SHOAL_BIN or a fresh build.
func shoalBinary(t *testing.T) string { return e2ekit.Binary(t) }

type rig struct {
	net    *harness.Net
	agents *chaos.Agents
	sopts  shoalrun.Options
}

func newRig(t *testing.T) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, XDP and real agents for crash-safety tests")
	}
	bin := shoalBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := harness.New(ctx, harness.Options{Nodes: 3, Client: true, Prefix: "shk-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	// Members and Nodes are explicit: new config versions are rendered
	// from these options with shoalrun.RenderCluster.
	all := []int{0, 1, 2}
	sopts := shoalrun.Options{Binary: bin, ClusterName: "crashsafe", Nodes: all, Groups: []shoalrun.Group{
		{Name: "web", Mode: "single", IPs: singleIPs, Members: all},
		{Name: "mh", Mode: "multi", IPs: []netip.Addr{multiIP}, Members: all},
	}}
	a, err := chaos.NewAgents(n, sopts, nil)
	if err != nil {
		t.Fatal(err)
	}
	sopts.Binary, _ = filepath.Abs(bin)
	t.Cleanup(func() { _ = a.StopAll(2 * time.Second) })
	for i := range 3 {
		if err := a.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	r := &rig{net: n, agents: a, sopts: sopts}
	r.waitClean(t, "start")
	return r
}

// ipLink is the part of `ip -j -d link show` read here.
type ipLink struct {
	XDP *struct {
		Mode     int             `json:"mode"`
		Prog     json.RawMessage `json:"prog"`
		Attached []any           `json:"attached"`
	} `json:"xdp"`
}

// xdpPrograms counts the XDP programs attached to node's eth0 as
// `ip -j -d link` reports them.
func (r *rig) xdpPrograms(node int) (int, error) {
	out, err := r.net.Exec(r.net.Node(node), "ip", "-j", "-d", "link", "show", "dev", harness.IfName)
	if err != nil {
		return 0, err
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		return 0, fmt.Errorf("decode ip link: %w", err)
	}
	if len(links) != 1 || links[0].XDP == nil {
		return 0, nil
	}
	if n := len(links[0].XDP.Attached); n > 0 {
		return n, nil
	}
	if len(links[0].XDP.Prog) > 0 {
		return 1, nil
	}
	return 0, nil
}

// loCopies counts the copies of ip on node's lo (multi-hosted IPs live
// there).
func (r *rig) loCopies(node int, ip netip.Addr) (int, error) {
	out, err := r.net.Exec(r.net.Node(node), "ip", "-j", "addr", "show", "dev", "lo")
	if err != nil {
		return 0, err
	}
	return strings.Count(string(out), `"local":"`+ip.String()+`"`), nil
}

// clean checks the settled state: every agent runs and sees all three up
// with one config; each single-hosted IP is on exactly one node, the one
// whose status says it holds it; every node has exactly one XDP program
// and one copy of the multi-hosted IP on lo.
func (r *rig) clean(ctx context.Context) error {
	held := map[netip.Addr][]int{}
	var hash string
	for i := range 3 {
		if !r.agents.Running(i) {
			return harness.Abort(fmt.Errorf("agent on node%d not running:\n%s", i, shoalrun.Tail(r.agents.Logs(i), 2000)))
		}
		st, err := r.agents.Status(ctx, i)
		if err != nil {
			return err
		}
		if len(st.View.Up) != 3 {
			return fmt.Errorf("node%d view %v", i, st.View.Up)
		}
		if i == 0 {
			hash = st.ConfigHash
		} else if st.ConfigHash != hash {
			return fmt.Errorf("node%d config %s, node0 %s", i, st.ConfigHash, hash)
		}
		addrs, err := r.net.Addrs(i)
		if err != nil {
			return err
		}
		var onNode, says []string
		for _, p := range addrs {
			if slices.Contains(singleIPs, p.Addr()) {
				onNode = append(onNode, p.Addr().String())
				held[p.Addr()] = append(held[p.Addr()], i)
			}
		}
		for _, g := range st.Groups {
			says = append(says, g.Held...)
		}
		slices.Sort(onNode)
		slices.Sort(says)
		if !slices.Equal(onNode, says) {
			return fmt.Errorf("node%d carries %v but holds %v by its status (stale traffic IP?)", i, onNode, says)
		}
		if n, err := r.xdpPrograms(i); err != nil || n != 1 {
			return fmt.Errorf("node%d: %d XDP programs on eth0 (%v)", i, n, err)
		}
		if n, err := r.loCopies(i, multiIP); err != nil || n != 1 {
			return fmt.Errorf("node%d: %d copies of %s on lo (%v)", i, n, multiIP, err)
		}
	}
	for _, ip := range singleIPs {
		if len(held[ip]) != 1 {
			return fmt.Errorf("%s on nodes %v", ip, held[ip])
		}
	}
	return nil
}

func (r *rig) waitClean(t *testing.T, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := harness.Wait(ctx, "clean rejoin "+when, func() (bool, error) {
		err := r.clean(ctx)
		return err == nil, err
	}); err != nil {
		t.Fatalf("%v\nlogs:\n%s", err, r.tails())
	}
}

func (r *rig) tails() string {
	var b strings.Builder
	for i := range 3 {
		fmt.Fprintf(&b, "--- node%d ---\n%s\n", i, shoalrun.Tail(r.agents.Logs(i), 1500))
	}
	return b.String()
}

// TestKillDuringDataplaneChange SIGKILLs an agent while it raises traffic
// IPs and attaches XDP: during its start-up apply, and while it takes over
// a crashed peer's IPs. After each restart the node must carry exactly what
// its status says, one XDP program, and rejoin.
func TestKillDuringDataplaneChange(t *testing.T) {
	r := newRig(t)
	rng := rand.New(rand.NewPCG(9, 9))
	for round := range 4 {
		victim := round % 3
		// Start-up apply: the agent raises its IPs and attaches XDP about
		// 0.5-1.3 s after it starts (start-up hold).
		for range 2 {
			if err := r.agents.Kill(victim); err != nil {
				t.Fatal(err)
			}
			if err := r.agents.Start(victim); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond))))
		}
		// Take-over: crash a peer, kill the victim as it takes the peer's
		// share (detection ~0.8-1.1 s after the crash).
		peer := (victim + 1) % 3
		if err := r.agents.Kill(peer); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond))))
		if err := r.agents.Kill(victim); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{victim, peer} {
			if err := r.agents.Start(i); err != nil {
				t.Fatal(err)
			}
		}
		r.waitClean(t, fmt.Sprintf("round %d (victim node%d, peer node%d)", round, victim, peer))
	}
	if ex := r.agents.Exits(); len(ex) > 0 {
		t.Errorf("agents exited on their own: %+v", ex)
	}
}

// TestKillDuringConfigWrite posts a new config version to an agent and
// SIGKILLs it 0-40 ms later, repeatedly. On restart the agent must come up
// with a config version not older than before (the previous one intact, or
// the new one complete) and the cluster must converge on one config.
func TestKillDuringConfigWrite(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := r.agents.Status(ctx, 0); err != nil {
		t.Fatal(err)
	}
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.agents.Files.Sockets[0])
		}}}
	probe, err := cl.Get("http://shoal/v1/config")
	if err != nil {
		t.Fatal(err)
	}
	probe.Body.Close()
	if probe.StatusCode != http.StatusOK {
		t.Skipf("agent serves no config API (GET /v1/config: %s)", probe.Status)
	}
	rng := rand.New(rand.NewPCG(11, 11))
	advanced := 0
	for round := range 6 {
		st, err := r.agents.Status(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		before := st.ConfigVersion
		o := r.sopts
		o.Groups = slices.Clone(o.Groups)
		o.Groups[0].GARPCount = 2 + round
		body := shoalrun.RenderCluster(r.net, o, r.agents.Files.PublicKeys)
		done := make(chan string, 1)
		go func() {
			resp, err := cl.Post("http://shoal/v1/config", "application/toml", bytes.NewReader([]byte(body)))
			if err != nil {
				done <- err.Error()
				return
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			done <- resp.Status + " " + strings.TrimSpace(string(b))
		}()
		// Early rounds kill within the write, later ones after it may
		// have completed, so both outcomes are exercised.
		delay := time.Duration(rng.Int64N(int64(8 * time.Millisecond)))
		if round >= 4 {
			delay += 60 * time.Millisecond
		}
		time.Sleep(delay)
		if err := r.agents.Kill(0); err != nil {
			t.Fatal(err)
		}
		answer := <-done
		if err := r.agents.Start(0); err != nil {
			t.Fatal(err)
		}
		r.waitClean(t, fmt.Sprintf("config round %d", round))
		st, err = r.agents.Status(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.ConfigVersion < before {
			t.Errorf("round %d: node0 restarted with config version %d, had %d before the kill", round, st.ConfigVersion, before)
		}
		if st.ConfigVersion > before {
			advanced++
		}
		var acked struct {
			Version uint64 `json:"version"`
		}
		if ok, js, _ := strings.Cut(answer, "200 OK "); ok == "" && js != "" && json.Unmarshal([]byte(js), &acked) == nil && st.ConfigVersion < acked.Version {
			t.Errorf("round %d: the agent acknowledged version %d before the kill but restarted with %d", round, acked.Version, st.ConfigVersion)
		}
		t.Logf("round %d: killed %v after the POST (answer: %.120s); config version %d -> %d", round, delay.Round(time.Millisecond), answer, before, st.ConfigVersion)
	}
	if advanced == 0 {
		t.Errorf("no config write took effect in 6 rounds: the kill never came after a completed write, so this test checked nothing")
	}
	if ex := r.agents.Exits(); len(ex) > 0 {
		t.Errorf("agents exited on their own: %+v", ex)
	}
}
