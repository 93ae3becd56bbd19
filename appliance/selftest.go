package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// SelfTestConfig configures the node's self-tests (the [selftest] section of
// the cluster config, converted by the agent).
type SelfTestConfig struct {
	Gateway      netip.Addr    // pinged every round when valid
	CheckIPs     []netip.Addr  // more addresses that must answer
	Interval     time.Duration // time between rounds (default 1s)
	Timeout      time.Duration // per-probe timeout (default 500ms)
	FailAfter    int           // consecutive failed rounds before reporting failed (default 2)
	RecoverAfter int           // consecutive passed rounds before recovering (default 3)
	Links        []string      // traffic interfaces that must be up
	LoopMaxAge   time.Duration // the agent loop must have ticked within this (default 5s)
}

func (c *SelfTestConfig) defaults() {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 500 * time.Millisecond
	}
	if c.FailAfter <= 0 {
		c.FailAfter = 2
	}
	if c.RecoverAfter <= 0 {
		c.RecoverAfter = 3
	}
	if c.LoopMaxAge <= 0 {
		c.LoopMaxAge = 5 * time.Second
	}
}

// SelfTestResult is the verdict of the self-tests.
type SelfTestResult struct {
	OK      bool
	Reasons []string // why the node is failed (empty when OK)
}

// selfTester runs rounds of checks and debounces the verdict: a node reports
// failed only after FailAfter failed rounds in a row, and recovers only after
// RecoverAfter passed rounds in a row.
type selfTester struct {
	cfg      SelfTestConfig
	linkUp   func(name string) (bool, error)
	pinger   func(ctx context.Context, ip netip.Addr, timeout time.Duration) error
	loopTick func() time.Time

	mu        sync.Mutex
	result    SelfTestResult
	failRun   int
	passRun   int
	lastFails []string
	// upSeen marks the links pollLinks saw up since the last round; a link
	// down in a round but seen up since the one before has not been down
	// for a whole interval, so that round starts a new failure run.
	upSeen     map[string]bool
	restartRun bool
}

// linkPollInterval is how often the links are checked between rounds, so
// that a link that flaps (down in two rounds, up in between) does not count
// as down for two rounds in a row.
const linkPollInterval = 100 * time.Millisecond

func newSelfTester(cfg SelfTestConfig, linkUp func(string) (bool, error), loopTick func() time.Time) *selfTester {
	cfg.defaults()
	return &selfTester{cfg: cfg, linkUp: linkUp, pinger: ping, loopTick: loopTick, result: SelfTestResult{OK: true}, upSeen: map[string]bool{}}
}

// pollLinks notes the links that are up (between rounds).
func (s *selfTester) pollLinks() {
	if s.linkUp == nil {
		return
	}
	for _, l := range s.cfg.Links {
		if up, err := s.linkUp(l); err == nil && up {
			s.mu.Lock()
			s.upSeen[l] = true
			s.mu.Unlock()
		}
	}
}

// round runs every check once and returns the reasons for failure.
func (s *selfTester) round(ctx context.Context) []string {
	var reasons []string
	s.mu.Lock()
	upSeen := s.upSeen
	s.upSeen = map[string]bool{}
	s.mu.Unlock()
	for _, l := range s.cfg.Links {
		if s.linkUp == nil {
			break
		}
		up, err := s.linkUp(l)
		switch {
		case err != nil:
			reasons = append(reasons, fmt.Sprintf("link %s: %v", l, err))
		case !up:
			reasons = append(reasons, fmt.Sprintf("link %s is down", l))
			if upSeen[l] {
				s.mu.Lock()
				s.restartRun = true
				s.mu.Unlock()
			}
		}
	}
	targets := append([]netip.Addr(nil), s.cfg.CheckIPs...)
	if s.cfg.Gateway.IsValid() {
		targets = append([]netip.Addr{s.cfg.Gateway}, targets...)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	for i, ip := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.pinger(ctx, ip, s.cfg.Timeout)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			what := "check ip"
			if s.cfg.Gateway.IsValid() && i == 0 {
				what = "gateway"
			}
			reasons = append(reasons, fmt.Sprintf("%s %s unreachable: %v", what, targets[i], err))
		}
	}
	if s.loopTick != nil {
		if age := time.Since(s.loopTick()); age > s.cfg.LoopMaxAge {
			reasons = append(reasons, fmt.Sprintf("agent loop stalled for %s", age.Round(time.Millisecond)))
		}
	}
	sort.Strings(reasons)
	return reasons
}

// record folds one round into the debounced verdict and reports whether the
// verdict changed.
func (s *selfTester) record(reasons []string) (SelfTestResult, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restartRun {
		// A link was up between the last round and this one.
		s.failRun, s.restartRun = 0, false
	}
	if len(reasons) > 0 {
		s.failRun++
		s.passRun = 0
		s.lastFails = reasons
	} else {
		s.passRun++
		s.failRun = 0
	}
	changed := false
	switch {
	case s.result.OK && s.failRun >= s.cfg.FailAfter:
		s.result = SelfTestResult{OK: false, Reasons: reasons}
		changed = true
	case !s.result.OK && len(reasons) > 0 && !equalStrings(s.result.Reasons, reasons):
		s.result = SelfTestResult{OK: false, Reasons: reasons}
		changed = true
	case !s.result.OK && s.passRun >= s.cfg.RecoverAfter:
		s.result = SelfTestResult{OK: true}
		changed = true
	}
	return s.result, changed
}

// run runs rounds until ctx is done, calling onChange with each new verdict.
func (s *selfTester) run(ctx context.Context, onChange func(SelfTestResult)) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	poll := time.NewTicker(linkPollInterval)
	defer poll.Stop()
	for {
		if res, changed := s.record(s.round(ctx)); changed {
			onChange(res)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-poll.C:
				s.pollLinks()
			case <-t.C:
				break wait
			}
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ping checks that ip answers: an ICMP echo when this process may open an
// ICMP socket, otherwise a TCP connect (an answer of any kind, including a
// refused connection, proves the host is reachable).
func ping(ctx context.Context, ip netip.Addr, timeout time.Duration) error {
	err := icmpEcho(ip, timeout)
	if err == nil {
		return nil
	}
	if !errors.Is(err, errNoICMP) {
		return err
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, 7).String())
	if err == nil {
		c.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("tcp probe: %w", err)
}

var errNoICMP = errors.New("icmp socket not permitted")

var pingSeq struct {
	sync.Mutex
	n int
}

func icmpEcho(ip netip.Addr, timeout time.Duration) error {
	network, proto := "ip4:icmp", 1
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if ip.Is6() && !ip.Is4In6() {
		network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return errNoICMP
		}
		return fmt.Errorf("open icmp socket: %w", err)
	}
	defer c.Close()
	pingSeq.Lock()
	pingSeq.n++
	seq := pingSeq.n & 0xffff
	pingSeq.Unlock()
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("shoal-selftest")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("marshal echo: %w", err)
	}
	deadline := time.Now().Add(timeout)
	_ = c.SetDeadline(deadline)
	if _, err := c.WriteTo(b, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply within %s", timeout)
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(ip.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) && e.Seq == seq {
			return nil
		}
	}
}
