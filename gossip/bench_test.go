package gossip

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkDetection measures failure detection at the default 500 ms
// interval over the in-memory transport: a member crashes (stops sending, no
// leave) at a random phase of its heartbeat cycle; the time until the
// survivor's view drops it is one sample. Reports p50 and p99 in ms (goal:
// p50 <= 900, p99 <= 1200). Run with:
//
//	go test -run '^$' -bench Detection -benchtime 40x ./gossip/
func BenchmarkDetection(b *testing.B) {
	c := newTestCluster(b, 3, DefaultInterval)
	all := seq(3)
	c.waitViews(all, names(all...), 10*time.Second)
	var samples, phase []time.Duration
	for b.Loop() {
		time.Sleep(DefaultInterval + time.Duration(rand.Int64N(int64(DefaultInterval))))
		last := c.agent(0).Members()[2].LastHeartbeat
		stopped := time.Now()
		c.stop(2)
		phase = append(phase, stopped.Sub(last))
		var detected time.Time
		waitFor(b, 10*time.Second, "n1 to drop n3", func() (bool, string) {
			for _, ev := range c.eventsOf(0) {
				if ev.Type == EventFailed && ev.Member == "n3" && ev.Time.After(stopped) {
					detected = ev.Time
					return true, ""
				}
			}
			return false, "not yet"
		})
		samples = append(samples, detected.Sub(stopped))
		c.start(2)
		c.waitViews(all, names(all...), 10*time.Second)
	}
	slices.Sort(samples)
	slices.Sort(phase)
	b.Logf("crash phase after the last heartbeat heard: min %v median %v max %v", phase[0], phase[len(phase)/2], phase[len(phase)-1])
	pct := func(p float64) float64 {
		return float64(samples[min(len(samples)-1, int(p*float64(len(samples))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
}
