package confsync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkConfigReplication64 (make bench-config): 64 in-process nodes on a
// MemNetwork, each announcing its current version in a heartbeat every
// 500 ms (random phase), as the agent does. A trial proposes an edit on a
// random node and measures the time until every node has applied it.
// Reports p50/p99/max over the trials; goal p99 <= 2 s.
func BenchmarkConfigReplication64(b *testing.B) {
	const (
		nodes     = 64
		trials    = 30
		heartbeat = 500 * time.Millisecond
		goal      = 2 * time.Second
	)
	ns := names(nodes)
	boot := testConfig("rev = 0", members(ns)...)
	net := NewMemNetwork()
	var mu sync.Mutex
	applied := map[ID]map[string]time.Time{}
	all := make([]*Node, nodes)
	for i, n := range ns {
		node, err := New(Options{
			Self: n, Key: testKey(n), Dir: b.TempDir(), Bootstrap: boot, Transport: net.Transport(n),
			Logger: zerolog.Nop(),
			Events: func(ev Event) {
				if ev.Type != EventApplied {
					return
				}
				mu.Lock()
				id := ev.Version.ID()
				if applied[id] == nil {
					applied[id] = map[string]time.Time{}
				}
				applied[id][n] = time.Now()
				mu.Unlock()
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		net.Register(n, node)
		all[i] = node
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, node := range all {
		wg.Add(2)
		go func() { defer wg.Done(); _ = node.Run(ctx) }()
		go func() { // this node's heartbeats
			defer wg.Done()
			select {
			case <-time.After(rand.N(heartbeat)):
			case <-ctx.Done():
				return
			}
			t := time.NewTicker(heartbeat)
			defer t.Stop()
			for {
				c, id := node.Announcement()
				for j, peer := range all {
					if j != i {
						peer.Observe(ns[i], c, id)
					}
				}
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()

	b.ResetTimer()
	var lat []time.Duration
	for trial := range trials {
		origin := all[rand.N(nodes)]
		start := time.Now()
		v, err := origin.Propose(testConfig(fmt.Sprintf("rev = %d", trial+1), members(ns)...))
		if err != nil {
			b.Fatal(err)
		}
		id := v.ID()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			done := len(applied[id]) == nodes
			var last time.Time
			for _, at := range applied[id] {
				if at.After(last) {
					last = at
				}
			}
			mu.Unlock()
			if done {
				lat = append(lat, last.Sub(start))
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("trial %d: only %d/%d nodes applied %s within 30s", trial, len(applied[id]), nodes, v)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	p50, p99 := pct(0.50), pct(0.99)
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(p99.Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
	verdict := "MET"
	if p99 > goal {
		verdict = "MISSED"
	}
	fmt.Printf("config replication, %d in-process nodes, heartbeat %v, %d trials: p50 %v  p99 %v  max %v  (goal p99 <= %v: %s)\n",
		nodes, heartbeat, trials, p50.Round(time.Millisecond), p99.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), goal, verdict)
}
