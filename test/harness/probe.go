package harness

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Probe limits.
const (
	DefaultProbeInterval = 5 * time.Millisecond
	DefaultProbeTimeout  = 500 * time.Millisecond
	DefaultProbeDuration = 60 * time.Second
	MaxProbeDuration     = 15 * time.Minute
)

// ProbeOptions configure a TCP connect probe.
type ProbeOptions struct {
	// Target is the IP:port to connect to.
	Target netip.AddrPort
	// Interval between connection attempts (attempts overlap when slower).
	// Default 5ms.
	Interval time.Duration
	// Timeout bounds each attempt (connect plus optional read). Default
	// 500ms: below the kernel's 1s initial SYN retransmission timeout, so
	// every attempt is a single SYN and a success time is a true sample.
	Timeout time.Duration
	// Duration bounds the whole probe; it stops launching attempts after
	// it. Default 60s, at most 15min.
	Duration time.Duration
	// ReadServer reads the first line the server sends (its node name)
	// into Attempt.Server.
	ReadServer bool
}

// Attempt is one connection attempt.
type Attempt struct {
	Start  time.Time // before the socket was created
	End    time.Time // connected (OK) or failed/timed out
	OK     bool      // the TCP handshake completed
	Server string    // first line the server sent, if ReadServer and read in time
	Err    string    // why it failed
}

// Probe connects to a target repeatedly from inside a namespace. Sockets are
// created by a thread locked into that namespace; connects and reads run on
// ordinary goroutines (a socket keeps its namespace for life).
type Probe struct {
	opts    ProbeOptions
	w       *nsWorker
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	started time.Time

	mu       sync.Mutex
	attempts []Attempt
	okTimes  []time.Time // End of successful attempts, in completion order
	stopped  time.Time
}

// StartProbe starts a probe from the client namespace. Close of the
// topology stops it.
func (n *Net) StartProbe(opts ProbeOptions) (*Probe, error) {
	if !n.opts.Client {
		return nil, errors.New("start probe: topology has no client")
	}
	return n.StartProbeIn(n.Client(), opts)
}

// StartProbeIn starts a probe from namespace ns (e.g. a node's). Close of
// the topology stops it.
func (n *Net) StartProbeIn(ns string, opts ProbeOptions) (*Probe, error) {
	p, err := StartProbe(ns, opts)
	if err != nil {
		return nil, err
	}
	n.onClose(func() { p.Stop() })
	return p, nil
}

// StartProbe starts a probe from namespace ns. The caller must Stop it.
func StartProbe(ns string, opts ProbeOptions) (*Probe, error) {
	if !opts.Target.IsValid() || opts.Target.Port() == 0 {
		return nil, fmt.Errorf("start probe: invalid target %v", opts.Target)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultProbeInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultProbeTimeout
	}
	if opts.Duration <= 0 {
		opts.Duration = DefaultProbeDuration
	}
	if opts.Duration > MaxProbeDuration {
		return nil, fmt.Errorf("start probe: duration %v above %v", opts.Duration, MaxProbeDuration)
	}
	w, err := newNSWorker(ns)
	if err != nil {
		return nil, fmt.Errorf("start probe: %w", err)
	}
	p := &Probe{opts: opts, w: w, stop: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
	go p.run()
	return p, nil
}

func (p *Probe) run() {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		p.w.Close()
		p.mu.Lock()
		p.stopped = time.Now()
		p.mu.Unlock()
		close(p.done)
	}()
	end := time.NewTimer(p.opts.Duration)
	defer end.Stop()
	tick := time.NewTicker(p.opts.Interval)
	defer tick.Stop()
	for {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := p.attempt()
			p.mu.Lock()
			p.attempts = append(p.attempts, a)
			if a.OK {
				p.okTimes = append(p.okTimes, a.End)
			}
			p.mu.Unlock()
		}()
		select {
		case <-p.stop:
			return
		case <-end.C:
			return
		case <-tick.C:
		}
	}
}

// attempt makes one connection attempt.
func (p *Probe) attempt() Attempt {
	a := Attempt{Start: time.Now()}
	deadline := a.Start.Add(p.opts.Timeout)
	fail := func(op string, err error) Attempt {
		a.End = time.Now()
		a.Err = op + ": " + err.Error()
		return a
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	ip := p.opts.Target.Addr().Unmap()
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Port: int(p.opts.Target.Port()), Addr: ip.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(p.opts.Target.Port()), Addr: ip.As16()}
	}
	fd, err := p.w.socket(family, unix.SOCK_STREAM)
	if err != nil {
		return fail("socket", err)
	}
	// Linger 0: close sends RST, so no TIME_WAIT sockets pile up in the
	// probing namespace at 200 connections a second.
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return fail("connect", err)
	}
	f := os.NewFile(uintptr(fd), "probe")
	defer f.Close()
	if err := f.SetDeadline(deadline); err != nil {
		return fail("set deadline", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fail("syscall conn", err)
	}
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		if _, err := unix.Getpeername(int(fd)); err == nil {
			return true
		}
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = err
		case v != 0:
			cerr = syscall.Errno(v)
		default:
			return false // still connecting: wait for writability
		}
		return true
	})
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return fail("connect", errors.New("timeout"))
		}
		return fail("connect", werr)
	}
	if cerr != nil {
		return fail("connect", cerr)
	}
	a.End = time.Now()
	a.OK = true
	if p.opts.ReadServer {
		var buf [128]byte
		got := 0
		for got < len(buf) {
			k, err := f.Read(buf[got:])
			got += k
			if err != nil || bytes.IndexByte(buf[:got], '\n') >= 0 {
				break
			}
		}
		line, _, _ := bytes.Cut(buf[:got], []byte("\n"))
		a.Server = strings.TrimSpace(string(line))
	}
	return a
}

// Stop stops launching attempts, waits for those in flight (at most
// Timeout) and returns the result. It may be called more than once.
func (p *Probe) Stop() *Result {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return p.Result()
}

// Done is closed when the probe has finished (Duration reached or Stop).
func (p *Probe) Done() <-chan struct{} { return p.done }

// Result returns a snapshot of the attempts so far.
func (p *Probe) Result() *Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &Result{Started: p.started, Stopped: p.stopped, Attempts: append([]Attempt(nil), p.attempts...)}
	if r.Stopped.IsZero() {
		r.Stopped = time.Now()
	}
	sort.Slice(r.Attempts, func(i, j int) bool { return r.Attempts[i].Start.Before(r.Attempts[j].Start) })
	return r
}

// LastSuccess is the completion time of the latest successful attempt
// (zero if none yet).
func (p *Probe) LastSuccess() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for i := len(p.okTimes) - 1; i >= 0 && i >= len(p.okTimes)-64; i-- {
		if p.okTimes[i].After(last) {
			last = p.okTimes[i]
		}
	}
	return last
}

// FirstSuccessAfter returns the earliest completion time of a successful
// attempt completed after t, while the probe runs.
func (p *Probe) FirstSuccessAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for i := len(p.okTimes) - 1; i >= 0; i-- {
		ts := p.okTimes[i]
		if ts.After(t) {
			if first.IsZero() || ts.Before(first) {
				first = ts
			}
		} else if ts.Before(t.Add(-p.opts.Timeout)) {
			break
		}
	}
	return first, !first.IsZero()
}

// SuccessesSince counts successful attempts that completed after t.
func (p *Probe) SuccessesSince(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := 0
	for i := len(p.okTimes) - 1; i >= 0; i-- {
		if p.okTimes[i].After(t) {
			c++
		} else if p.okTimes[i].Before(t.Add(-p.opts.Timeout)) {
			break // completion order is start order within Timeout
		}
	}
	return c
}

// Result is the record of a probe run.
type Result struct {
	Started, Stopped time.Time
	Attempts         []Attempt // sorted by Start
}

// Gap is an interval without successful connections: from the completion
// of one success (or the probe start) to the completion of the next (or the
// probe stop, then Open is true).
type Gap struct {
	Start, End time.Time
	Duration   time.Duration
	Open       bool // no success ended it before the probe stopped
}

func newGap(s, e time.Time, open bool) Gap {
	return Gap{Start: s, End: e, Duration: e.Sub(s), Open: open}
}

// Counts returns the number of successful and failed attempts.
func (r *Result) Counts() (ok, failed int) {
	for _, a := range r.Attempts {
		if a.OK {
			ok++
		} else {
			failed++
		}
	}
	return ok, failed
}

// Servers counts successful attempts per answering server name ("" when
// not read).
func (r *Result) Servers() map[string]int {
	m := map[string]int{}
	for _, a := range r.Attempts {
		if a.OK {
			m[a.Server]++
		}
	}
	return m
}

// successTimes returns the completion times of successes, sorted.
func (r *Result) successTimes() []time.Time {
	var ts []time.Time
	for _, a := range r.Attempts {
		if a.OK {
			ts = append(ts, a.End)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts
}

// intervals returns every interval between consecutive successes, plus the
// leading interval from the probe start and the trailing open one to the
// probe stop (the whole run when nothing succeeded).
func (r *Result) intervals() []Gap {
	ts := r.successTimes()
	if len(ts) == 0 {
		return []Gap{newGap(r.Started, r.Stopped, true)}
	}
	gs := []Gap{newGap(r.Started, ts[0], false)}
	for i := 1; i < len(ts); i++ {
		gs = append(gs, newGap(ts[i-1], ts[i], false))
	}
	return append(gs, newGap(ts[len(ts)-1], r.Stopped, true))
}

// Gaps returns the intervals without success longer than threshold, in
// time order.
func (r *Result) Gaps(threshold time.Duration) []Gap {
	var res []Gap
	for _, g := range r.intervals() {
		if g.Duration > threshold {
			res = append(res, g)
		}
	}
	return res
}

// LongestGap returns the longest interval without success.
func (r *Result) LongestGap() Gap {
	return longest(r.intervals())
}

// LongestGapIn returns the longest interval without success that overlaps
// [from, to] (zero Gap when none does).
func (r *Result) LongestGapIn(from, to time.Time) Gap {
	var in []Gap
	for _, g := range r.intervals() {
		if g.End.After(from) && g.Start.Before(to) {
			in = append(in, g)
		}
	}
	return longest(in)
}

// GapAt returns the interval without success that contains instant t: from
// the last success completed at or before t to the first completed after
// it (Open when none came).
func (r *Result) GapAt(t time.Time) Gap {
	for _, g := range r.intervals() {
		if !g.Start.After(t) && (g.End.After(t) || g.Open) {
			return g
		}
	}
	return Gap{}
}

// FirstSuccessAfter returns the first successful attempt completed after t.
func (r *Result) FirstSuccessAfter(t time.Time) (Attempt, bool) {
	var best Attempt
	found := false
	for _, a := range r.Attempts {
		if a.OK && a.End.After(t) && (!found || a.End.Before(best.End)) {
			best, found = a, true
		}
	}
	return best, found
}

func longest(gs []Gap) Gap {
	var best Gap
	for _, g := range gs {
		if g.Duration > best.Duration {
			best = g
		}
	}
	return best
}
