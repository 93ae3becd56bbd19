package harness_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/shoal-project/shoal/test/harness"
)

// Example measures how long a traffic IP is unreachable when its holder's
// switch port is cut (needs root; compiled, not run).
func Example() {
	ctx := context.Background()
	n, err := harness.New(ctx, harness.Options{Nodes: 3, Client: true, Prefix: "shx-"})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	if _, err := n.ServeAll(8080); err != nil { // every node answers its name
		panic(err)
	}
	vip := netip.MustParseAddr("192.0.2.10")
	// ... start the peers under test with n.Start(i, name, argv, env) ...
	owner, err := n.WaitSingleHolder(ctx, vip)
	if err != nil {
		panic(err)
	}
	p, err := n.StartProbe(harness.ProbeOptions{Target: netip.AddrPortFrom(vip, 8080), Duration: 30 * time.Second, ReadServer: true})
	if err != nil {
		panic(err)
	}
	if err := n.CutPort(owner); err != nil {
		panic(err)
	}
	cut := time.Now()
	_ = harness.Wait(ctx, "failover", func() (bool, error) { return p.SuccessesSince(cut) > 0, nil })
	r := p.Stop()
	first, _ := r.FirstSuccessAfter(cut)
	fmt.Printf("gap %v, now served by %s\n", r.GapAt(cut).Duration, first.Server)
}
