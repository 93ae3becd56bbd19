package bpf

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// TestXDPCost is `make bench-xdp` part (a): the per-packet cost of the
// program against a bare XDP_PASS program in the same run, measured with
// BPF_PROG_TEST_RUN and a large repeat count. It is a benchmark, not a
// test: it runs only with SHOAL_BENCH=1 and asserts nothing about time.
func TestXDPCost(t *testing.T) {
	if os.Getenv("SHOAL_BENCH") != "1" {
		t.Skip("benchmark: set SHOAL_BENCH=1 (make bench-xdp)")
	}
	o := load(t)
	bare, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bare_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load bare program: %v", err)
	}
	defer bare.Close()
	owners := make([]uint8, NumBuckets)
	for i := range owners {
		owners[i] = uint8(i % 3) // this node (slot 0) owns a third
	}
	setGroup(t, o, group(owners, nil, 7, false))

	// A flow owned by this node and one owned by another.
	var owned, notOwned, notOwnedSyn []byte
	for port := uint16(1024); owned == nil || notOwned == nil; port++ {
		f := ether(testMcastMAC, 0, ipv4(client4, vip4, 0, tcpSeg(port, 443, tcpACK)))
		if owners[Bucket(client4, vip4, port, 443, testSeed, false)] == 0 {
			owned = f
		} else {
			notOwned = f
			notOwnedSyn = ether(testMcastMAC, 0, ipv4(client4, vip4, 0, tcpSeg(port, 443, tcpSYN)))
		}
	}
	frames := []struct {
		name  string
		frame []byte
		held  bool // measured while every bucket is held (before the first prune)
	}{
		{"not owned tcp ack, held (lookup, drop)", notOwned, true},
		{"owned tcp ack (pass, owner)", owned, false},
		{"not owned tcp ack (drop)", notOwned, false},
		{"not owned tcp syn (drop)", notOwnedSyn, false},
		{"owned tcp6 syn (pass, owner)", ether(testMcastMAC, 0, ipv6(client6, vip6, nil, tcpSeg(1, 443, tcpSYN))), false},
		{"not multi-hosted (pass untouched)", ether(testMcastMAC, 0, ipv4(client4, other4, 0, tcpSeg(1, 443, tcpACK))), false},
	}
	// Paired rounds: bare and shoal run alternately on the same frame, so
	// that a slow stretch of the (shared, virtual) machine slows both; the
	// figure is the median over the rounds, and the difference is the
	// median of the per-round differences.
	const repeat, rounds = 1_000_000, 15
	run := func(p *ebpf.Program, frame []byte) float64 {
		_, d, err := p.Benchmark(frame, repeat, nil)
		if err != nil {
			t.Fatalf("benchmark: %v", err)
		}
		return float64(d.Nanoseconds())
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	fmt.Printf("XDP per-packet cost (BPF_PROG_TEST_RUN, %d repeats, %d paired rounds against the bare program, medians)\n", repeat, rounds)
	fmt.Printf("%-42s %9s %9s %9s %9s  %s\n", "frame", "bare", "shoal", "diff", "min diff", "goal <= 30 ns over bare")
	pruned := false
	for _, f := range frames {
		if !f.held && !pruned {
			// Steady state: a prune finds no socket in buckets owned
			// elsewhere, so not-owned packets skip the socket lookup.
			if _, err := o.Prune(0, func() ([]Conn, error) { return nil, nil }); err != nil {
				t.Fatalf("Prune() = %v", err)
			}
			pruned = true
		}
		var bs, ss, ds []float64
		for range rounds {
			b, s := run(bare, f.frame), run(o.objs.ShoalXdp, f.frame)
			bs, ss, ds = append(bs, b), append(ss, s), append(ds, s-b)
		}
		diff := median(ds)
		verdict := "ok"
		if diff > 30 {
			verdict = "over goal"
		}
		fmt.Printf("%-42s %6.1f ns %6.1f ns %6.1f ns %6.1f ns  %s\n", f.name, median(bs), median(ss), diff, slices.Min(ds), verdict)
	}
}
