package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of Options.
const (
	DefaultResync    = 30 * time.Second
	DefaultRetryMin  = 200 * time.Millisecond
	DefaultRetryMax  = 10 * time.Second
	DefaultFailAfter = 3
)

// Options configures a Manager. The zero value works (no state record, the
// process's network namespace, no multi-hosted groups).
type Options struct {
	// StateDir holds the state record (RecordFile) listing the addresses
	// this node raised, so a restarted agent recognises its own IPv6
	// addresses (which carry no label) and drops the stale ones. Created if
	// missing. Empty = no record: only labelled IPv4 addresses are
	// recognised after a restart.
	StateDir string
	// Logger receives structured logs; a "component=dataplane" field is
	// added.
	Logger zerolog.Logger
	// Multi serves multi-hosted groups; nil = none configured
	// (Desired.Multi is ignored). The Manager owns it and closes it.
	Multi MultiHoster
	// Namespace is the path of the network namespace to manage (e.g.
	// /run/netns/x); empty = the namespace of the thread calling New.
	Namespace string
	// Kernel and Announcer replace the real netlink and packet-socket
	// implementations (for tests; see FakeKernel and FakeAnnouncer). nil =
	// the real ones, in Namespace. The Manager closes only what it made.
	Kernel    Kernel
	Announcer Announcer
	// Resync is the period of the full safety-net resync (the loop is
	// otherwise driven by Apply and netlink notifications). Default 30s.
	Resync time.Duration
	// RetryMin and RetryMax bound the exponential backoff of a failed
	// kernel operation (with up to 20% jitter). Defaults 200ms and 10s.
	RetryMin, RetryMax time.Duration
	// FailAfter is the number of consecutive failed raises of an address
	// after which its group is reported failed. Default 3. (A missing or
	// down interface is reported at once.)
	FailAfter int
	// DetectConflicts watches ARP on every interface holding IPv4 traffic
	// IPs and reports other hosts claiming them (Conflicts). Needs an
	// Announcer that implements ARPWatcher (the real one does).
	DetectConflicts bool
}

// HeldAddress is one traffic IP this node holds in the kernel.
type HeldAddress struct {
	Group     string
	Interface string
	Prefix    netip.Prefix
	// Since is when this node raised (or, after a restart, adopted) it.
	Since time.Time
	// Announcements counts the announcement rounds sent for it and
	// LastAnnounce is the time of the latest.
	Announcements uint64
	LastAnnounce  time.Time
}

// GroupFailure is the state of one watched group: Failed when an interface
// it uses is missing or down, when raising one of its addresses failed
// Options.FailAfter times in a row, or when the MultiHoster keeps failing.
type GroupFailure struct {
	Group     string
	Interface string // the interface concerned; empty for a MultiHoster failure
	Failed    bool
	Reason    string // why it failed; empty when not failed
	Since     time.Time
}

// Status is a snapshot of the Manager.
type Status struct {
	// Held lists the addresses held, sorted by interface and address.
	Held []HeldAddress
	// Groups is the state of every watched group, sorted by name.
	Groups []GroupFailure
	// Announcements and AnnounceErrors count announcement rounds sent and
	// failed; Restored counts traffic IPs re-added after something else
	// removed them (or after DAD failed).
	Announcements  uint64
	AnnounceErrors uint64
	Restored       uint64
	// DesiredGeneration counts the Apply calls taken; AppliedGeneration is
	// the latest generation the kernel was seen to match, and Converged
	// whether it matches now.
	DesiredGeneration uint64
	AppliedGeneration uint64
	Converged         bool
	// Conflicts counts other hosts seen claiming a held IPv4 traffic IP
	// (Options.DetectConflicts); LastConflict is the latest, nil if none.
	Conflicts    uint64
	LastConflict *Conflict
	// Dropped is set once DropAll was called: Apply is ignored from then.
	Dropped     bool
	LastError   string
	LastErrorAt time.Time
}

// Manager is the reconcile loop from desired state to the kernel.
type Manager struct {
	opts      Options
	log       zerolog.Logger
	kernel    Kernel
	announcer Announcer
	ownKernel bool
	ownAnnc   bool

	wake       chan struct{} // cap 1: a new Desired is waiting
	reannounce chan struct{} // cap 1
	dropReq    chan chan error
	failCh     chan GroupFailure
	conflictCh chan Conflict
	closing    chan struct{}
	closeOnce  sync.Once
	closeErr   error
	loopDone   chan struct{}
	started    atomic.Bool

	record []recordEntry // read at New, consumed by the first pass

	annSent   atomic.Uint64
	annErrors atomic.Uint64
	conflicts atomic.Uint64

	mu      sync.Mutex
	next    Desired
	nextGen uint64
	dropped bool
	// loopDropping: the loop has taken the DropAll request.
	loopDropping bool
	pubHeld      []pubHeld
	pubStat      Status
}

// pubHeld is a held address as published to Status readers.
type pubHeld struct {
	HeldAddress
	c *announceCounters
}

type announceCounters struct {
	sent atomic.Uint64
	last atomic.Int64 // unix nanoseconds
}

// New makes a Manager. It opens the kernel handle and reads the state
// record but changes nothing: the loop starts with Run and touches the
// kernel only after the first Apply (or DropAll).
func New(opts Options) (*Manager, error) {
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = DefaultRetryMin
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(DefaultRetryMax, opts.RetryMin)
	}
	if opts.FailAfter <= 0 {
		opts.FailAfter = DefaultFailAfter
	}
	m := &Manager{
		opts:       opts,
		log:        opts.Logger.With().Str("component", "dataplane").Logger(),
		wake:       make(chan struct{}, 1),
		reannounce: make(chan struct{}, 1),
		dropReq:    make(chan chan error),
		failCh:     make(chan GroupFailure),
		conflictCh: make(chan Conflict, 16),
		closing:    make(chan struct{}),
		loopDone:   make(chan struct{}),
	}
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
			return nil, fmt.Errorf("new dataplane: create state dir: %w", err)
		}
		rec, err := readRecord(opts.StateDir)
		if err != nil {
			// Lose nothing: the bad file was moved aside; labelled IPv4
			// addresses are still recognised.
			m.log.Error().Err(err).Msg("state record unreadable; recognising own addresses by label only")
		}
		m.record = rec
	}
	m.kernel, m.announcer = opts.Kernel, opts.Announcer
	if m.kernel == nil {
		k, err := NewNetlinkKernel(opts.Namespace, m.log)
		if err != nil {
			return nil, fmt.Errorf("new dataplane: %w", err)
		}
		m.kernel, m.ownKernel = k, true
	}
	if m.announcer == nil {
		a, err := NewPacketAnnouncer(opts.Namespace)
		if err != nil {
			if m.ownKernel {
				_ = m.kernel.Close()
			}
			return nil, fmt.Errorf("new dataplane: %w", err)
		}
		m.announcer, m.ownAnnc = a, true
	}
	return m, nil
}

// Apply hands the loop a new desired state. It never blocks: the latest
// value wins and the loop is woken. d must not be modified afterwards.
// After DropAll, Apply is ignored.
func (m *Manager) Apply(d Desired) {
	m.mu.Lock()
	if m.dropped {
		m.mu.Unlock()
		m.log.Debug().Msg("apply after drop all ignored")
		return
	}
	m.next = d
	m.nextGen++
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Reannounce asks the loop to send a fresh announcement burst for every
// address held (after a partition heals or the view changes, so neighbours
// that learnt another node's MAC meanwhile are corrected). Never blocks.
func (m *Manager) Reannounce() {
	select {
	case m.reannounce <- struct{}{}:
	default:
	}
}

// Failures delivers group failure transitions (Failed true, then false on
// recovery). The loop offers them without ever blocking on the reader; a
// slow reader gets the latest state of each group (transitions of one group
// may be coalesced). Status().Groups holds the same state. Reading is
// optional.
func (m *Manager) Failures() <-chan GroupFailure { return m.failCh }

// Conflicts delivers the conflicts seen (Options.DetectConflicts): another
// MAC claiming a held IPv4 traffic IP, at most one per IP and MAC every 5s.
// Buffered; when the reader lags, conflicts are only counted in Status.
func (m *Manager) Conflicts() <-chan Conflict { return m.conflictCh }

// LinkUp reports whether the named interface exists and is up (admin up and
// operationally up or unknown). A missing interface is (false, error
// wrapping ErrLinkNotFound).
func (m *Manager) LinkUp(name string) (bool, error) {
	l, err := m.kernel.Link(name)
	if err != nil {
		return false, err
	}
	return l.Up, nil
}

// Status returns a snapshot.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.pubStat
	s.Held = make([]HeldAddress, len(m.pubHeld))
	for i, h := range m.pubHeld {
		s.Held[i] = h.HeldAddress
		s.Held[i].Announcements = h.c.sent.Load()
		if t := h.c.last.Load(); t != 0 {
			s.Held[i].LastAnnounce = time.Unix(0, t)
		}
	}
	s.Groups = slices.Clone(s.Groups)
	s.Announcements = m.annSent.Load()
	s.AnnounceErrors = m.annErrors.Load()
	s.Conflicts = m.conflicts.Load()
	s.DesiredGeneration = m.nextGen
	s.Dropped = m.dropped
	// Converged only if the pass that converged had the latest Apply (after
	// DropAll the generation no longer matters).
	s.Converged = s.Converged && (m.loopDropping || s.AppliedGeneration == m.nextGen)
	return s
}

// DropAll removes every address this node holds (and every stale
// Shoal-marked one) and withdraws the multi-hosted groups, then returns.
// From then on Apply is ignored. It needs Run to be running; it returns an
// error naming what is still held when ctx ends first.
func (m *Manager) DropAll(ctx context.Context) error {
	if !m.started.Load() {
		return fmt.Errorf("drop all: %w", errNotRunning)
	}
	m.mu.Lock()
	m.dropped = true
	m.mu.Unlock()
	reply := make(chan error, 1)
	select {
	case m.dropReq <- reply:
	case <-m.loopDone:
		return fmt.Errorf("drop all: %w", errNotRunning)
	case <-ctx.Done():
		return fmt.Errorf("drop all: %w", ctx.Err())
	}
	select {
	case err := <-reply:
		return err
	case <-m.loopDone:
		return fmt.Errorf("drop all: %w", errNotRunning)
	case <-ctx.Done():
		st := m.Status()
		held := make([]string, 0, len(st.Held))
		for _, h := range st.Held {
			held = append(held, h.Prefix.String()+" on "+h.Interface)
		}
		msg := "still held: " + strings.Join(held, ", ")
		if len(held) == 0 {
			msg = "not converged"
		}
		if st.LastError != "" {
			msg += "; last error: " + st.LastError
		}
		return fmt.Errorf("drop all: %s: %w", msg, ctx.Err())
	}
}

// Close stops the loop without dropping anything (addresses stay raised,
// as after a crash), then releases the kernel handle and closes the
// MultiHoster. Idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		close(m.closing)
		if m.started.Load() {
			<-m.loopDone
		}
		var errs []error
		if m.ownKernel {
			errs = append(errs, m.kernel.Close())
		}
		if m.ownAnnc {
			errs = append(errs, closeAnnouncer(m.announcer))
		}
		if m.opts.Multi != nil {
			if err := m.opts.Multi.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close multi-hosted groups: %w", err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			m.closeErr = fmt.Errorf("close dataplane: %w", err)
		}
	})
	return m.closeErr
}

// Run runs the reconcile loop until ctx ends or Close is called. It returns
// nil on such a stop. Call it once.
func (m *Manager) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("run dataplane: already started")
	}
	defer close(m.loopDone)
	select {
	case <-m.closing:
		return errors.New("run dataplane: manager closed")
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := newLoop(ctx, m)
	l.run()
	return nil
}
