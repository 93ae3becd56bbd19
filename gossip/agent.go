package gossip

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/gossip/wire"
)

// Agent is one node's membership engine: it sends heartbeats, validates
// received ones, runs the failure detector, embeds serf, and publishes the
// View. Create it with New, run it with Run.
type Agent struct {
	cfg     Config
	tim     timings
	log     zerolog.Logger
	tr      Transport
	epoch   uint64 // this process's boot epoch (unix nanos at New)
	ctr     counters
	limiter *logLimiter

	viewCh   chan View
	eventCh  chan MemberEvent
	hbNow    chan struct{}
	changeCh chan struct{} // a peer's reasons or tables changed (coalesced)

	mu       sync.Mutex
	self     Member
	peers    map[string]*peer
	seq      uint64
	health   Health
	cfgVer   uint64
	cfgHash  [32]byte
	tables   []uint64 // partition table digests carried in every packet
	view     View
	leaving  bool
	relays   map[uint64]relay // my relay-probe nonce -> who asked
	verdicts []pendingVerdict // verdict retransmissions
	ran      bool
	lastTick time.Time // detector stall detection
	// linkDownAt is the last tick at which Config.LinkUp said our link was
	// down, linkDownSince the first tick of the current or last outage;
	// linkDown is what it said at the last tick.
	linkDownAt    time.Time
	linkDownSince time.Time
	linkDown      bool

	serf      *serfState // nil when DisableSerf
	closeOnce sync.Once
}

// peer is the detector state of one configured member (not this node).
type peer struct {
	m Member

	heard     bool // any valid packet ever (in the current epoch after restarts)
	epoch     uint64
	seqMax    uint64
	seqWin    uint64 // replay bitmap: bit i = seqMax-i seen
	sentMax   int64  // send time of the packet with seqMax (unix ns)
	lastHeard time.Time
	lastHB    time.Time // last heartbeat (recovery counting)
	lastAck   time.Time // last relayed probe answer
	health    Health
	cfgVer    uint64
	cfgHash   [32]byte
	tables    []uint64
	view      *wire.ViewInfo

	left       bool      // sent a leave in this epoch
	down       bool      // detector declared it down (silence, probes, verdict, monitor timeout)
	downReason string    // why down
	recoverN   int       // consecutive heartbeats seen while down
	downAt     time.Time // when the detector declared it down

	suspect    bool
	probeNonce uint64
	probeStart time.Time
	probeLast  time.Time

	serfStatus string // serf's opinion ("alive", "failed", "left", ...; "" unknown)

	up      bool   // in the view
	upEpoch uint64 // boot epoch in which it was last up (joined vs recovered)
}

type relay struct {
	origin  string
	nonce   uint64
	subject string
	expires time.Time
}

type pendingVerdict struct {
	subject    string
	epoch, seq uint64
	left       int
	next       time.Time
}

// RecoverHeartbeats is how many consecutive heartbeats (each within two
// intervals of the previous) a member that was declared down in its current
// boot epoch must send before it is up again. A new boot epoch is up at once.
const RecoverHeartbeats = 2

// Wire limits for health reasons: longer lists and strings are clipped so a
// heartbeat always fits in wire.MaxSize.
const (
	maxWireReasons   = 6
	maxWireReasonLen = 100
)

// New validates cfg, opens the heartbeat sockets (unless cfg.Transport is
// set) and creates the serf instance (unless cfg.DisableSerf). All sockets
// are created here, so a caller may call New inside a network namespace.
// Nothing is sent until Run.
func New(cfg Config) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:      cfg,
		tim:      newTimings(cfg.Interval, cfg.MonitorTimeout),
		log:      cfg.Logger.With().Str("component", "gossip").Str("node", cfg.Node).Logger(),
		epoch:    uint64(time.Now().UnixNano()),
		limiter:  newLogLimiter(time.Minute),
		viewCh:   make(chan View, 1),
		eventCh:  make(chan MemberEvent, 256),
		hbNow:    make(chan struct{}, 1),
		peers:    map[string]*peer{},
		changeCh: make(chan struct{}, 1),
		health:   Health{OK: true},
		relays:   map[uint64]relay{},
	}
	for _, m := range cfg.Members {
		if m.Name == cfg.Node {
			a.self = m
			continue
		}
		a.peers[m.Name] = &peer{m: m}
	}
	a.view = View{Up: []string{cfg.Node}, Epoch: 1, Digest: ViewDigest([]string{cfg.Node})}
	a.viewCh <- cloneView(a.view)

	a.tr = cfg.Transport
	if a.tr == nil {
		t, err := NewUDPTransport(UDPConfig{Bind: cfg.Bind, Group: cfg.Multicast, Interface: cfg.Interface, Unicast: cfg.Unicast})
		if err != nil {
			return nil, fmt.Errorf("new gossip agent: %w", err)
		}
		a.tr = t
	}
	if !cfg.DisableSerf {
		s, err := newSerf(a)
		if err != nil {
			a.tr.Close()
			return nil, fmt.Errorf("new gossip agent: %w", err)
		}
		a.serf = s
	}
	return a, nil
}

// Run sends heartbeats, receives and validates packets, runs the detector
// and serf, and blocks until ctx is done. Then it shuts serf down (without a
// leave: call Leave first for a clean hand-off) and closes the transport.
// Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.ran {
		a.mu.Unlock()
		return errors.New("gossip run: already running")
	}
	a.ran = true
	a.mu.Unlock()
	defer a.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	start(a.recvLoop)
	start(a.heartbeatLoop)
	start(a.detectLoop)
	if a.serf != nil {
		a.serf.start(ctx, start)
	}
	a.log.Info().Uint64("boot_epoch", a.epoch).Dur("interval", a.cfg.Interval).
		Dur("monitor_timeout", a.cfg.MonitorTimeout).Bool("unicast", a.cfg.Unicast).
		Str("multicast", a.cfg.Multicast.String()).Bool("serf", a.serf != nil).Msg("gossip agent running")
	<-ctx.Done()
	a.tr.Close() // unblocks recvLoop
	if a.serf != nil {
		a.serf.shutdown()
	}
	wg.Wait()
	return nil
}

// Close releases the sockets and serf without running. Run calls it on exit;
// it is safe to call more than once.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		a.tr.Close()
		if a.serf != nil {
			a.serf.shutdown()
		}
	})
	return nil
}

// Views returns the channel of view changes: buffered 1, latest wins (an
// unread older view is replaced), so the detector never blocks on it. It
// holds the initial view at New.
func (a *Agent) Views() <-chan View { return a.viewCh }

// View returns the current view.
func (a *Agent) View() View {
	a.mu.Lock()
	defer a.mu.Unlock()
	return cloneView(a.view)
}

// Events returns member and view events, timestamped. Buffered (256); when
// the reader falls behind, events are dropped and counted
// (Stats.EventsDropped), never blocking the detector.
func (a *Agent) Events() <-chan MemberEvent { return a.eventCh }

// BootEpoch returns this process's boot epoch (unix nanoseconds at New).
func (a *Agent) BootEpoch() uint64 { return a.epoch }

// SetHealth sets this node's health. On change, a heartbeat carrying it is
// sent at once and the view is updated (this node is in its own view only
// while OK).
func (a *Agent) SetHealth(h Health) {
	h.Reasons = slices.Clone(h.Reasons)
	a.mu.Lock()
	changed := h.OK != a.health.OK || !slices.Equal(h.Reasons, a.health.Reasons)
	a.health = h
	if changed {
		a.log.Info().Bool("ok", h.OK).Strs("reasons", h.Reasons).Msg("own health changed")
		a.recompute(time.Now())
	}
	a.mu.Unlock()
	if changed {
		a.kickHeartbeat()
		if a.serf != nil {
			a.serf.kickTags()
		}
	}
}

// SetConfigVersion sets the config version and hash carried in heartbeats
// and serf tags.
func (a *Agent) SetConfigVersion(v uint64, hash [32]byte) {
	a.mu.Lock()
	changed := v != a.cfgVer || hash != a.cfgHash
	a.cfgVer, a.cfgHash = v, hash
	a.mu.Unlock()
	if changed {
		a.kickHeartbeat()
		if a.serf != nil {
			a.serf.kickTags()
		}
	}
}

// SetTables sets the digests of the multi-hosted partition tables this node
// has written into its kernel (at most wire.MaxTables, each under
// 2^wire.TableDigestBits), carried in every packet. On change a heartbeat
// carrying them is sent at once: a peer taking over buckets this node just
// let go waits for it.
func (a *Agent) SetTables(digests []uint64) error {
	if len(digests) > wire.MaxTables {
		return fmt.Errorf("set tables: %d digests, at most %d", len(digests), wire.MaxTables)
	}
	d := slices.Clone(digests)
	slices.Sort(d)
	d = slices.Compact(d)
	for _, x := range d {
		if x>>wire.TableDigestBits != 0 {
			return fmt.Errorf("set tables: digest %#x over %d bits", x, wire.TableDigestBits)
		}
	}
	a.mu.Lock()
	changed := !slices.Equal(d, a.tables)
	a.tables = d
	a.mu.Unlock()
	if changed {
		a.kickHeartbeat()
	}
	return nil
}

// Changes signals (coalesced: one pending signal at most) that a peer's
// health reasons or table digests changed; view changes come on Views.
// Reading is optional.
func (a *Agent) Changes() <-chan struct{} { return a.changeCh }

// UpdateMembers replaces the configured membership (config changed). New
// members start unknown; removed members leave the view; a member whose
// address or key changed starts afresh. This node must stay a member with
// the same key.
func (a *Agent) UpdateMembers(members []Member) error {
	if err := checkMembers(members); err != nil {
		return fmt.Errorf("update members: %w: %v", ErrConfig, err)
	}
	i := slices.IndexFunc(members, func(m Member) bool { return m.Name == a.cfg.Node })
	if i < 0 {
		return fmt.Errorf("update members: %w: node %q is no longer a member", ErrConfig, a.cfg.Node)
	}
	if !members[i].PublicKey.Equal(a.cfg.PrivateKey.Public()) {
		return fmt.Errorf("update members: %w: key pinned for %q changed", ErrConfig, a.cfg.Node)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	keep := map[string]bool{}
	for _, m := range members {
		keep[m.Name] = true
		if m.Name == a.cfg.Node {
			a.self = m
			continue
		}
		p := a.peers[m.Name]
		if p == nil || p.m.Addr != m.Addr || !p.m.PublicKey.Equal(m.PublicKey) {
			a.peers[m.Name] = &peer{m: m}
			a.log.Info().Str("member", m.Name).Str("addr", m.Addr.String()).Msg("member configured")
		}
	}
	for name := range a.peers {
		if !keep[name] {
			delete(a.peers, name)
			a.log.Info().Str("member", name).Msg("member removed from config")
		}
	}
	a.cfg.Members = slices.Clone(members)
	a.recompute(now)
	return nil
}

// MemberStatus is one member as this node sees it.
type MemberStatus struct {
	Name          string
	Addr          netip.Addr
	Self          bool
	Up            bool   // in the view
	State         string // "up", "suspect", "down", "left", "failed" (health), "unknown" (never heard)
	DownReason    string // why not up, when not up
	Health        bool
	Reasons       []string
	LastHeartbeat time.Time // last valid packet (zero if never)
	BootEpoch     uint64
	Seq           uint64
	ConfigVersion uint64
	ConfigHash    [32]byte
	Tables        []uint64 // partition table digests it has applied (SetTables)
	ViewEpoch     uint64   // the member's own view epoch, from its heartbeat
	ViewDigest    [32]byte // the member's own view digest
	SerfStatus    string   // serf's status: "alive", "leaving", "left", "failed", "" (not known to serf)
}

// Members returns every configured member, sorted by name.
func (a *Agent) Members() []MemberStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]MemberStatus, 0, len(a.peers)+1)
	selfUp := a.health.OK && !a.leaving
	st := "up"
	reason := ""
	if !selfUp {
		st, reason = "failed", "health failed"
		if a.leaving {
			st, reason = "left", "left"
		}
	}
	out = append(out, MemberStatus{
		Name: a.self.Name, Addr: a.self.Addr, Self: true, Up: selfUp, State: st, DownReason: reason,
		Health: a.health.OK, Reasons: slices.Clone(a.health.Reasons), LastHeartbeat: time.Now(),
		BootEpoch: a.epoch, Seq: a.seq, ConfigVersion: a.cfgVer, ConfigHash: a.cfgHash, Tables: slices.Clone(a.tables),
		ViewEpoch: a.view.Epoch, ViewDigest: a.view.Digest, SerfStatus: a.serfStatusLocked(a.self.Name),
	})
	for _, p := range a.peers {
		ms := MemberStatus{
			Name: p.m.Name, Addr: p.m.Addr, Up: p.up, State: p.state(), Health: p.health.OK,
			Reasons: slices.Clone(p.health.Reasons), LastHeartbeat: p.lastHeard, BootEpoch: p.epoch,
			Seq: p.seqMax, ConfigVersion: p.cfgVer, ConfigHash: p.cfgHash, Tables: slices.Clone(p.tables), SerfStatus: p.serfStatus,
		}
		if !p.up {
			ms.DownReason = p.whyNotUp()
		}
		if p.view != nil {
			ms.ViewEpoch, ms.ViewDigest = p.view.Epoch, p.view.Digest
		}
		out = append(out, ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats returns the counters.
func (a *Agent) Stats() Stats { return a.ctr.snapshot() }

// Leave announces a clean departure: this node leaves its own view, stops
// heartbeats, sends a signed leave packet three times (peers drop it at
// once), then leaves serf. Run keeps running (answering nothing) until its
// context ends.
func (a *Agent) Leave(ctx context.Context) error {
	if err := a.AnnounceLeave(ctx); err != nil {
		return err
	}
	return a.LeaveSerf(ctx)
}

// AnnounceLeave is the first half of Leave: this node leaves its own view
// and sends its signed leave message (three times), so peers drop it from
// their views at once and raise its traffic IPs. The agent drops its IPs
// after it, then calls LeaveSerf, whose propagation takes longer.
func (a *Agent) AnnounceLeave(ctx context.Context) error {
	a.mu.Lock()
	a.leaving = true
	a.recompute(time.Now())
	a.mu.Unlock()
	for i := range 3 {
		a.mu.Lock()
		b, err := a.packetLocked(wire.TypeLeave, wire.Body{})
		if err == nil {
			a.broadcastLocked(b)
		}
		a.mu.Unlock()
		if err != nil {
			return fmt.Errorf("leave: %w", err)
		}
		if i < 2 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("leave: %w", ctx.Err())
			case <-time.After(a.tim.retransmit):
			}
		}
	}
	a.log.Info().Msg("left: leave sent")
	return nil
}

// LeaveSerf is the second half of Leave: a graceful serf leave.
func (a *Agent) LeaveSerf(ctx context.Context) error {
	if a.serf != nil {
		if err := a.serf.leave(ctx); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
	}
	return nil
}

func (a *Agent) kickHeartbeat() {
	select {
	case a.hbNow <- struct{}{}:
	default:
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		a.sendHeartbeat()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.hbNow:
		}
	}
}

func (a *Agent) sendHeartbeat() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leaving {
		return
	}
	b, err := a.packetLocked(wire.TypeHeartbeat, wire.Body{})
	if err != nil {
		a.log.Error().Err(err).Msg("encode heartbeat")
		return
	}
	a.ctr.heartbeats.Add(1)
	if a.cfg.Verbose {
		a.log.Info().Uint64("seq", a.seq).Bool("ok", a.health.OK).Uint64("view_epoch", a.view.Epoch).Msg("heartbeat sent")
	}
	a.broadcastLocked(b)
}

// packetLocked builds and signs one packet with the next sequence number.
func (a *Agent) packetLocked(t wire.Type, body wire.Body) ([]byte, error) {
	a.seq++
	p := &wire.Packet{
		Type: t, Cluster: a.cfg.Cluster, Node: a.cfg.Node, BootEpoch: a.epoch, Seq: a.seq,
		SendTime: time.Now().UnixNano(), Health: wire.Health{OK: a.health.OK, Reasons: clipReasons(a.health.Reasons)},
		ConfigVersion: a.cfgVer, ConfigHash: a.cfgHash, Tables: a.tables,
		View: &wire.ViewInfo{Epoch: a.view.Epoch, Digest: a.view.Digest}, Body: body,
	}
	return wire.Encode(p, a.cfg.PrivateKey)
}

func clipReasons(rs []string) []string {
	out := make([]string, 0, min(len(rs), maxWireReasons))
	for i, r := range rs {
		if i == maxWireReasons-1 && len(rs) > maxWireReasons {
			out = append(out, fmt.Sprintf("(+%d more)", len(rs)-i))
			break
		}
		if len(r) > maxWireReasonLen {
			r = r[:maxWireReasonLen]
		}
		out = append(out, r)
	}
	return out
}

// broadcastLocked sends to the group, or to every member in unicast mode.
func (a *Agent) broadcastLocked(b []byte) {
	if !a.cfg.Unicast {
		a.sendTo(netip.Addr{}, b)
		return
	}
	for _, p := range a.peers {
		a.sendTo(p.m.Addr, b)
	}
}

func (a *Agent) sendTo(to netip.Addr, b []byte) {
	a.ctr.sent.Add(1)
	if err := a.tr.Send(to, b); err != nil {
		a.ctr.sendErrors.Add(1)
		if a.limiter.allow(to, "send", time.Now()) {
			a.log.Warn().Err(err).Str("to", to.String()).Msg("heartbeat send failed")
		}
	}
}

func (a *Agent) emit(ev MemberEvent) {
	select {
	case a.eventCh <- ev:
	default:
		a.ctr.eventsDropped.Add(1)
	}
}

func cloneView(v View) View {
	v.Up = slices.Clone(v.Up)
	return v
}

func randomNonce() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}
