package confsync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of Options.
const (
	DefaultRetention           = 64
	DefaultAntiEntropyInterval = 5 * time.Second
	DefaultScrubInterval       = time.Minute
	DefaultFetchTimeout        = 5 * time.Second
)

const (
	maxPending     = 256  // announced versions waiting to be fetched
	maxRejected    = 4096 // remembered rejected IDs (never fetched again)
	maxPeersPerAnn = 8    // peers remembered per announced version
	maxAttempts    = 3    // peers tried per fetch round
)

// Options configure a Node.
type Options struct {
	Self string             // this node's member name
	Key  ed25519.PrivateKey // this node's key (signs its edits)
	Dir  string             // data dir (see Store)
	// Bootstrap is the initial configuration, used only when Dir holds no
	// version: it becomes the unsigned genesis version (counter 0). Nodes
	// bootstrapped from identical files share one genesis ID.
	Bootstrap []byte
	// Validate checks a configuration before it is applied or proposed; nil
	// accepts anything. Use ValidateLocations to cover [location.*].
	Validate func(content []byte) error
	// Authority derives membership and pinned keys from a configuration;
	// nil means MembersFromTOML.
	Authority AuthorityFunc
	// Transport fetches versions from peers; nil disables replication.
	Transport Fetcher
	// Pins, if set, is kept equal to the current configuration's members
	// (hand the same PinSet to the TLS transport).
	Pins   *PinSet
	Logger zerolog.Logger
	// Retention is how many versions the data dir keeps (current included);
	// default 64, minimum 2.
	Retention int
	// Events receives events, synchronously from the node's goroutines; it
	// must not block for long and may call the Node's methods.
	Events func(Event)
	// AntiEntropyInterval is the period of asking a random peer for its head
	// and history (jittered ±25%); default 5s.
	AntiEntropyInterval time.Duration
	// ScrubInterval is the period of re-reading stored records to detect
	// corruption on disk; default 1m, negative disables.
	ScrubInterval time.Duration
	// FetchTimeout bounds one request to a peer; default 5s.
	FetchTimeout time.Duration
	// Now is the clock for version times; default time.Now.
	Now func() time.Time
}

// HistoryEntry is one stored version as the CLI shows it.
type HistoryEntry struct {
	Version Version
	ID      ID
	Status  Status
	Reason  string
	Size    int
	Current bool
}

type entry struct {
	rec Record
	id  ID
}

type announce struct {
	id      ID
	counter uint64
	peers   []string
	history bool // learned from a history list, not announced as a head
}

// Node holds this node's versions and replicates them. Create it with New,
// run its loops with Run; every method is safe for concurrent use.
type Node struct {
	o   Options
	log zerolog.Logger
	st  *Store
	pub ed25519.PublicKey

	mu       sync.Mutex
	recs     map[ID]*entry
	head     *entry
	auth     Authority
	clock    uint64
	rejected map[ID]string
	rejOrder []ID
	wants    map[ID]bool // quarantined or missing records to fetch again
	pending  map[ID]*announce
	inflight map[ID]bool
	retryAt  map[ID]time.Time
	subs     map[int]chan Update
	nextSub  int
	outbox   []Event

	evMu sync.Mutex
	snap atomic.Pointer[Update]
	wake chan struct{}
}

// New opens the data dir, checks every stored record (quarantining corrupt
// ones and remembering to fetch them again), recovers from an interrupted
// write and returns the node. Start its loops with Run.
func New(o Options) (*Node, error) {
	if o.Self == "" || len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("new config node: Self and a 64-byte Ed25519 Key are required")
	}
	if o.Authority == nil {
		o.Authority = MembersFromTOML
	}
	if o.Validate == nil {
		o.Validate = func([]byte) error { return nil }
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.Retention < 2 {
		return nil, fmt.Errorf("new config node: retention %d, minimum 2", o.Retention)
	}
	if o.AntiEntropyInterval <= 0 {
		o.AntiEntropyInterval = DefaultAntiEntropyInterval
	}
	if o.ScrubInterval == 0 {
		o.ScrubInterval = DefaultScrubInterval
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	st, err := OpenStore(o.Dir)
	if err != nil {
		return nil, err
	}
	n := &Node{
		o:        o,
		log:      o.Logger.With().Str("component", "confsync").Str("node", o.Self).Logger(),
		st:       st,
		pub:      o.Key.Public().(ed25519.PublicKey),
		recs:     map[ID]*entry{},
		rejected: map[ID]string{},
		wants:    map[ID]bool{},
		pending:  map[ID]*announce{},
		inflight: map[ID]bool{},
		retryAt:  map[ID]time.Time{},
		subs:     map[int]chan Update{},
		wake:     make(chan struct{}, 1),
	}
	n.mu.Lock()
	err = n.loadLocked()
	n.mu.Unlock()
	n.flush()
	if err != nil {
		return nil, err
	}
	return n, nil
}

// loadLocked rebuilds the in-memory state from disk.
func (n *Node) loadLocked() error {
	recs, bad, err := n.st.Load()
	if err != nil {
		return err
	}
	for _, b := range bad {
		n.log.Error().Str("file", b.Name).Str("quarantined", b.Moved).Err(b.Err).Msg("stored config version failed its integrity check; quarantined, will fetch again")
		if !b.ID.IsZero() {
			n.wants[b.ID] = true
		}
		n.outbox = append(n.outbox, Event{Type: EventCorrupt, Err: fmt.Errorf("%s: %w", b.Name, b.Err)})
	}
	for _, r := range recs {
		e := &entry{rec: r, id: r.Version.ID()}
		n.recs[e.id] = e
	}
	// Signatures: each against the config of its parent when we hold it (the
	// config that accepted it), else against its own.
	for _, e := range n.recs {
		if err := n.verifyStoredLocked(e); err != nil {
			n.log.Error().Str("version", e.id.Short()).Err(err).Msg("stored config version failed its signature check; quarantined, will fetch again")
			if _, qerr := n.st.quarantine(recordName(e.rec.Version)); qerr != nil {
				return qerr
			}
			delete(n.recs, e.id)
			n.wants[e.id] = true
			n.outbox = append(n.outbox, Event{Type: EventCorrupt, Version: e.rec.Version, Err: err})
		}
	}
	headID, herr := n.st.ReadHead()
	switch {
	case herr == nil:
		if e := n.recs[headID]; e != nil && e.rec.Status != StatusRejected {
			n.head = e
		} else {
			n.wants[headID] = true
			n.log.Error().Str("version", headID.Short()).Msg("current config version missing or corrupt; using the newest intact one until it is fetched again")
		}
	case errors.Is(herr, ErrNoHead):
	default:
		n.log.Error().Err(herr).Msg("HEAD unreadable; using the newest intact version")
	}
	if n.head == nil {
		n.head = n.fallbackLocked()
	}
	if n.head == nil && len(n.recs) == 0 && n.o.Bootstrap != nil {
		if err := n.genesisLocked(n.o.Bootstrap); err != nil {
			return err
		}
	}
	if n.head == nil {
		n.log.Info().Msg("no config yet: waiting for join or install")
		return nil
	}
	auth, err := n.o.Authority(n.head.rec.Content)
	if err != nil {
		return fmt.Errorf("load config store: members of current version %s: %w", n.head.id.Short(), err)
	}
	n.setHeadLocked(n.head, auth)
	for _, e := range n.recs {
		n.clock = max(n.clock, e.rec.Version.Counter)
	}
	// A crash between writing a record and HEAD leaves a complete record
	// newer than HEAD: run it through acceptance again.
	var redo []*entry
	for _, e := range n.recs {
		if e.rec.Status == StatusApplied && n.head.rec.Version.Less(e.rec.Version) {
			redo = append(redo, e)
		}
	}
	slices.SortFunc(redo, func(a, b *entry) int { return cmpVersion(a.rec.Version, b.rec.Version) })
	for _, e := range redo {
		delete(n.recs, e.id)
		n.log.Info().Str("version", e.id.Short()).Msg("completing interrupted config write")
		_ = n.acceptLocked(e.rec, "", false)
	}
	n.log.Info().Stringer("version", n.head.rec.Version).Int("stored", len(n.recs)).Msg("config loaded")
	return nil
}

func cmpVersion(a, b Version) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

func (n *Node) verifyStoredLocked(e *entry) error {
	v := e.rec.Version
	if v.Genesis() {
		if len(v.Signature) != 0 || !v.Parent.IsZero() {
			return fmt.Errorf("%w: genesis with a signature or parent", ErrCorrupt)
		}
		return nil
	}
	try := [][]byte{}
	if p := n.recs[v.Parent]; p != nil {
		try = append(try, p.rec.Content)
	}
	try = append(try, e.rec.Content)
	for _, c := range try {
		a, err := n.o.Authority(c)
		if err != nil {
			continue
		}
		if m, ok := a.Member(v.Origin); ok && v.VerifySignature(m.PublicKey) {
			return nil
		}
	}
	return ErrBadSignature
}

// fallbackLocked picks the newest stored version that was applied here (or,
// failing that, any not rejected).
func (n *Node) fallbackLocked() *entry {
	var best *entry
	for _, pass := range []func(*entry) bool{
		func(e *entry) bool { return e.rec.Status == StatusApplied },
		func(e *entry) bool { return e.rec.Status != StatusRejected },
	} {
		for _, e := range n.recs {
			if pass(e) && (best == nil || best.rec.Version.Less(e.rec.Version)) {
				best = e
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

func (n *Node) genesisLocked(content []byte) error {
	if err := n.o.Validate(content); err != nil {
		return fmt.Errorf("bootstrap config: %w: %w", ErrInvalid, err)
	}
	v := Version{ContentHash: HashContent(content)}
	r := Record{Version: v, Content: bytes.Clone(content), Status: StatusApplied}
	if err := n.st.Put(r); err != nil {
		return err
	}
	if err := n.st.SetHead(v.ID()); err != nil {
		return err
	}
	e := &entry{rec: r, id: v.ID()}
	n.recs[e.id] = e
	n.head = e
	n.log.Info().Str("version", e.id.Short()).Msg("bootstrapped config from file (genesis)")
	return nil
}

// setHeadLocked makes e current in memory: snapshot, pins, subscribers.
func (n *Node) setHeadLocked(e *entry, auth Authority) {
	n.head, n.auth = e, auth
	u := &Update{Version: e.rec.Version, Content: e.rec.Content}
	n.snap.Store(u)
	if n.o.Pins != nil {
		n.o.Pins.Set(auth)
	}
	for _, ch := range n.subs {
		deliver(ch, *u)
	}
}

// deliver puts u in a one-slot channel, replacing an undelivered older one.
func deliver(ch chan Update, u Update) {
	for {
		select {
		case ch <- u:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

func (n *Node) emitLocked(ev Event) { n.outbox = append(n.outbox, ev) }

// flush delivers queued events outside n.mu, in order.
func (n *Node) flush() {
	n.evMu.Lock()
	defer n.evMu.Unlock()
	n.mu.Lock()
	evs := n.outbox
	n.outbox = nil
	n.mu.Unlock()
	if n.o.Events == nil {
		return
	}
	for _, ev := range evs {
		n.o.Events(ev)
	}
}

// Current returns the current version and its content (zero Version and nil
// if the node has no config yet). Lock-free: cheap enough for every heartbeat.
func (n *Node) Current() (Version, []byte) {
	u := n.snap.Load()
	if u == nil {
		return Version{}, nil
	}
	return u.Version, u.Content
}

// Announcement returns what to put in heartbeats and serf tags: the current
// counter and ID (0 and zero ID if none).
func (n *Node) Announcement() (uint64, ID) {
	u := n.snap.Load()
	if u == nil {
		return 0, ID{}
	}
	return u.Version.Counter, u.Version.ID()
}

// Authority returns the membership of the current config (nil if none).
func (n *Node) Authority() Authority {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.auth
}

// Subscribe returns a channel that receives the current config at once (if
// any) and every later one. The channel holds one update; a slow reader
// skips intermediate versions and sees the latest. cancel releases it.
func (n *Node) Subscribe() (<-chan Update, func()) {
	ch := make(chan Update, 1)
	n.mu.Lock()
	id := n.nextSub
	n.nextSub++
	n.subs[id] = ch
	if u := n.snap.Load(); u != nil {
		deliver(ch, *u)
	}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(n.subs, id)
		n.mu.Unlock()
	}
}

// Propose makes content the new current config: validates it, signs a
// version (counter = highest known + 1, parent = current), stores it and
// makes it current. Peers learn of it from the announcement. It refuses if
// this node is restricted or not a member (peers would refuse it too).
func (n *Node) Propose(content []byte) (Version, error) {
	n.mu.Lock()
	v, err := n.proposeLocked(content)
	n.mu.Unlock()
	n.flush()
	return v, err
}

func (n *Node) proposeLocked(content []byte) (Version, error) {
	if n.head == nil {
		return Version{}, fmt.Errorf("propose config: %w", ErrNoConfig)
	}
	if len(content) > MaxContentSize {
		return Version{}, fmt.Errorf("propose config: %w: %d bytes, limit %d", ErrInvalid, len(content), MaxContentSize)
	}
	m, ok := n.auth.Member(n.o.Self)
	if !ok {
		return Version{}, fmt.Errorf("propose config: %w (%q)", ErrNotMember, n.o.Self)
	}
	if !m.CanUpdate {
		return Version{}, fmt.Errorf("propose config: %w: node %q is restricted, peers refuse its updates; edit the config on an unrestricted member", ErrRestricted, n.o.Self)
	}
	if !bytes.Equal(m.PublicKey, n.pub) {
		return Version{}, fmt.Errorf("propose config: %w (%q)", ErrKeyMismatch, n.o.Self)
	}
	if HashContent(content) == n.head.rec.Version.ContentHash {
		return n.head.rec.Version, fmt.Errorf("propose config: %w", ErrUnchanged)
	}
	if err := n.o.Validate(content); err != nil {
		return Version{}, fmt.Errorf("propose config: %w: %w", ErrInvalid, err)
	}
	auth, err := n.o.Authority(content)
	if err != nil {
		return Version{}, fmt.Errorf("propose config: %w: %w", ErrInvalid, err)
	}
	v := Version{
		Counter:     n.clock + 1,
		Origin:      n.o.Self,
		Parent:      n.head.id,
		ContentHash: HashContent(content),
		Time:        n.o.Now().UTC(),
	}
	v.Sign(n.o.Key)
	e := &entry{rec: Record{Version: v, Content: bytes.Clone(content), Status: StatusApplied}, id: v.ID()}
	if err := n.st.Put(e.rec); err != nil {
		return Version{}, fmt.Errorf("propose config: %w", err)
	}
	if err := n.st.SetHead(e.id); err != nil {
		return Version{}, fmt.Errorf("propose config: %w", err)
	}
	n.recs[e.id] = e
	n.clock = v.Counter
	n.setHeadLocked(e, auth)
	n.emitLocked(Event{Type: EventApplied, Version: v})
	n.log.Info().Stringer("version", v).Msg("config edit applied")
	n.pruneLocked()
	return v, nil
}

// Rollback proposes the content of an earlier version (ref: counter or ID
// prefix, see Find) as a new version.
func (n *Node) Rollback(ref string) (Version, error) {
	r, err := n.Find(ref)
	if err != nil {
		return Version{}, fmt.Errorf("rollback: %w", err)
	}
	v, err := n.Propose(r.Content)
	if err != nil {
		return v, fmt.Errorf("rollback to %s: %w", r.Version, err)
	}
	return v, nil
}

// Get returns a stored version with its content.
func (n *Node) Get(id ID) (Record, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.recs[id]
	if e == nil {
		return Record{}, fmt.Errorf("get version %s: %w", id.Short(), ErrNotFound)
	}
	return e.rec, nil
}

// Find resolves a reference typed by an operator: a decimal counter (the
// applied version with that counter, else any) or a hex ID prefix of at
// least 4 digits; ambiguity is an error.
func (n *Node) Find(ref string) (Record, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var hits []*entry
	if c, err := strconv.ParseUint(ref, 10, 64); err == nil && len(ref) < 20 {
		for _, e := range n.recs {
			if e.rec.Version.Counter == c {
				hits = append(hits, e)
			}
		}
		if len(hits) > 1 {
			applied := hits[:0:0]
			for _, e := range hits {
				if e.rec.Status == StatusApplied {
					applied = append(applied, e)
				}
			}
			if len(applied) == 1 {
				hits = applied
			}
		}
	}
	if len(hits) == 0 && len(ref) >= 4 {
		ref = strings.ToLower(ref)
		for _, e := range n.recs {
			if strings.HasPrefix(e.id.String(), ref) {
				hits = append(hits, e)
			}
		}
	}
	switch len(hits) {
	case 0:
		return Record{}, fmt.Errorf("find version %q: %w", ref, ErrNotFound)
	case 1:
		return hits[0].rec, nil
	}
	return Record{}, fmt.Errorf("find version %q: ambiguous (%d versions match)", ref, len(hits))
}

// History lists the stored versions, oldest first.
func (n *Node) History() []HistoryEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]HistoryEntry, 0, len(n.recs))
	for _, e := range n.recs {
		out = append(out, HistoryEntry{
			Version: e.rec.Version, ID: e.id, Status: e.rec.Status, Reason: e.rec.Reason,
			Size: len(e.rec.Content), Current: e == n.head,
		})
	}
	slices.SortFunc(out, func(a, b HistoryEntry) int { return cmpVersion(a.Version, b.Version) })
	return out
}

// Head implements Source.
func (n *Node) Head() (Version, error) {
	v, c := n.Current()
	if c == nil {
		return Version{}, ErrNoConfig
	}
	return v, nil
}

// Record implements Source: a stored version without local status.
func (n *Node) Record(id ID) (Record, error) {
	r, err := n.Get(id)
	if err != nil {
		return Record{}, err
	}
	return Record{Version: r.Version, Content: r.Content}, nil
}

// Versions implements Source.
func (n *Node) Versions() []Version {
	h := n.History()
	out := make([]Version, len(h))
	for i, e := range h {
		out[i] = e.Version
	}
	return out
}

// Observe tells the node that peer announced (in a heartbeat, serf tag or
// anti-entropy answer) that its current version is (counter, id). Unknown
// versions are queued for fetching from that peer; known, rejected and
// in-flight ones are ignored, so calling this on every heartbeat is cheap.
// It never blocks on the network.
func (n *Node) Observe(peer string, counter uint64, id ID) {
	n.enqueue(peer, counter, id, false)
}

func (n *Node) enqueue(peer string, counter uint64, id ID, fromHistory bool) {
	if peer == n.o.Self || id.IsZero() {
		return
	}
	n.mu.Lock()
	if !n.wantedLocked(id, counter) {
		n.mu.Unlock()
		return
	}
	a := n.pending[id]
	if a == nil {
		if len(n.pending) >= maxPending {
			n.dropLowestPendingLocked()
		}
		a = &announce{id: id, counter: counter, history: fromHistory}
		n.pending[id] = a
	}
	if !fromHistory {
		a.history = false
	}
	if !slices.Contains(a.peers, peer) && len(a.peers) < maxPeersPerAnn {
		a.peers = append(a.peers, peer)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *Node) wantedLocked(id ID, counter uint64) bool {
	if n.recs[id] != nil || n.inflight[id] || n.head == nil {
		return false
	}
	if _, rej := n.rejected[id]; rej {
		return false
	}
	if t, ok := n.retryAt[id]; ok && n.o.Now().Before(t) {
		return false
	}
	if !n.wants[id] && len(n.recs) >= n.o.Retention && counter < n.floorLocked() {
		return false // older than anything we keep: nothing to learn
	}
	return true
}

func (n *Node) floorLocked() uint64 {
	f := uint64(1<<64 - 1)
	for _, e := range n.recs {
		f = min(f, e.rec.Version.Counter)
	}
	return f
}

func (n *Node) dropLowestPendingLocked() {
	var low *announce
	for _, a := range n.pending {
		if low == nil || a.counter < low.counter {
			low = a
		}
	}
	if low != nil {
		delete(n.pending, low.id)
	}
}

// Run runs the fetch worker, anti-entropy and scrubbing until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.antiEntropy(ctx)
	}()
	n.worker(ctx)
	wg.Wait()
	return nil
}

func (n *Node) worker(ctx context.Context) {
	for {
		for {
			a := n.nextPending()
			if a == nil {
				break
			}
			n.process(ctx, a)
			if ctx.Err() != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
	}
}

// nextPending takes the announced version with the highest counter.
func (n *Node) nextPending() *announce {
	n.mu.Lock()
	defer n.mu.Unlock()
	var best *announce
	for _, a := range n.pending {
		if best == nil || a.counter > best.counter {
			best = a
		}
	}
	if best != nil {
		delete(n.pending, best.id)
		n.inflight[best.id] = true
	}
	return best
}

func (n *Node) process(ctx context.Context, a *announce) {
	defer func() {
		n.mu.Lock()
		delete(n.inflight, a.id)
		n.mu.Unlock()
		n.flush()
	}()
	if n.o.Transport == nil {
		return
	}
	peers := slices.Clone(a.peers)
	for _, m := range n.peerMembers() {
		if !slices.Contains(peers, m) {
			peers = append(peers, m)
		}
	}
	if len(peers) > len(a.peers) {
		rest := peers[len(a.peers):]
		rand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	}
	var lastErr error
	for i, peer := range peers {
		if i >= max(maxAttempts, len(a.peers)) {
			break
		}
		chain, err := n.fetchChain(ctx, peer, a.id)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return
			}
			continue
		}
		n.mu.Lock()
		for _, r := range chain {
			_ = n.acceptLocked(r, peer, a.history)
		}
		delete(n.retryAt, a.id)
		n.mu.Unlock()
		return
	}
	n.mu.Lock()
	backoff := 2 * time.Second
	n.retryAt[a.id] = n.o.Now().Add(backoff)
	n.mu.Unlock()
	n.log.Warn().Str("version", a.id.Short()).Strs("peers", a.peers).Err(lastErr).Msg("fetch config version failed; will retry")
}

func (n *Node) peerMembers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.auth == nil {
		return nil
	}
	var out []string
	for _, m := range n.auth.Members() {
		if m.Name != n.o.Self {
			out = append(out, m.Name)
		}
	}
	return out
}

// fetchChain fetches id from peer and then its ancestors until one we hold
// (or have rejected), returning them oldest first.
func (n *Node) fetchChain(ctx context.Context, peer string, id ID) ([]Record, error) {
	var chain []Record
	cur := id
	for len(chain) <= n.o.Retention {
		fctx, cancel := context.WithTimeout(ctx, n.o.FetchTimeout)
		r, err := n.o.Transport.Get(fctx, peer, cur)
		cancel()
		if err != nil {
			if len(chain) > 0 && errors.Is(err, ErrNotFound) {
				break // the peer no longer keeps that ancestor
			}
			return nil, fmt.Errorf("fetch %s from %s: %w", cur.Short(), peer, err)
		}
		if got := r.Version.ID(); got != cur {
			return nil, fmt.Errorf("fetch %s from %s: peer sent %s", cur.Short(), peer, got.Short())
		}
		if HashContent(r.Content) != r.Version.ContentHash {
			return nil, fmt.Errorf("fetch %s from %s: %w", cur.Short(), peer, ErrContentMismatch)
		}
		chain = append(chain, Record{Version: r.Version, Content: r.Content})
		p := r.Version.Parent
		if p.IsZero() {
			break
		}
		n.mu.Lock()
		_, rej := n.rejected[p]
		known := n.recs[p] != nil || rej
		n.mu.Unlock()
		if known {
			break
		}
		cur = p
	}
	slices.Reverse(chain)
	return chain, nil
}

// acceptLocked applies the acceptance rules to a version from peer.
func (n *Node) acceptLocked(r Record, peer string, fromHistory bool) error {
	v := r.Version
	id := v.ID()
	if n.recs[id] != nil {
		return nil
	}
	if _, rej := n.rejected[id]; rej {
		return nil
	}
	if n.head == nil {
		return ErrNoConfig
	}
	if HashContent(r.Content) != v.ContentHash {
		return ErrContentMismatch // transport problem: another peer may do better
	}
	wanted := n.wants[id]
	delete(n.wants, id)
	// Identity: checked against the config this node holds now.
	var why error
	if v.Genesis() {
		why = ErrUnsignedGenesis
	} else if m, ok := n.auth.Member(v.Origin); !ok {
		why = fmt.Errorf("%w (%q)", ErrUnknownOrigin, v.Origin)
	} else if !v.VerifySignature(m.PublicKey) {
		why = fmt.Errorf("%w (origin %q)", ErrBadSignature, v.Origin)
	} else if !m.CanUpdate {
		why = fmt.Errorf("%w (origin %q)", ErrRestricted, v.Origin)
	}
	if why != nil {
		n.rejectLocked(id, why.Error())
		if fromHistory && !wanted {
			n.log.Debug().Str("version", id.Short()).Str("peer", peer).Err(why).Msg("ignoring version from peer history")
			return why
		}
		n.log.Warn().Stringer("version", v).Str("peer", peer).Err(why).Msg("config version rejected; keeping current")
		n.emitLocked(Event{Type: EventRejected, Version: v, Peer: peer, Err: why})
		return why
	}
	n.clock = max(n.clock, v.Counter)
	rec := Record{Version: v, Content: r.Content}
	cur := n.head.rec.Version
	if v.Less(cur) {
		// Older than current: an ancestor we lacked, or a concurrent edit
		// that lost.
		if n.isAncestorLocked(id) {
			rec.Status = StatusHistory
			return n.storeLocked(rec)
		}
		rec.Status = StatusLoser
		rec.Reason = "lost to " + cur.String()
		if err := n.storeLocked(rec); err != nil {
			return err
		}
		n.log.Warn().Stringer("loser", v).Stringer("winner", cur).Msg("concurrent config edit lost; kept in history")
		n.emitLocked(Event{Type: EventConflict, Version: v, Winner: cur, Peer: peer})
		return nil
	}
	// Newer than current: validate here, then apply.
	auth, err := n.o.Authority(r.Content)
	if err == nil {
		err = n.o.Validate(r.Content)
	}
	if err != nil {
		why := fmt.Errorf("%w: %w", ErrInvalid, err)
		rec.Status, rec.Reason = StatusRejected, why.Error()
		if serr := n.storeLocked(rec); serr != nil {
			return serr
		}
		n.rejectLocked(id, why.Error())
		n.log.Error().Stringer("version", v).Str("peer", peer).Err(err).Msg("config version failed validation on this node; not applied")
		n.emitLocked(Event{Type: EventRejected, Version: v, Peer: peer, Err: why})
		return why
	}
	conflict := !n.descendsLocked(v, n.head)
	rec.Status = StatusApplied
	e := &entry{rec: rec, id: id}
	if err := n.st.Put(rec); err != nil {
		n.log.Error().Err(err).Msg("store config version")
		return err
	}
	if err := n.st.SetHead(id); err != nil {
		n.log.Error().Err(err).Msg("store config version")
		return err
	}
	n.recs[id] = e
	old := n.head
	n.setHeadLocked(e, auth)
	if conflict {
		old.rec.Status, old.rec.Reason = StatusLoser, "lost to "+v.String()
		if err := n.st.Put(old.rec); err != nil {
			n.log.Error().Err(err).Msg("mark losing config version")
		}
		n.log.Warn().Stringer("loser", old.rec.Version).Stringer("winner", v).Msg("concurrent config edit lost; kept in history")
		n.emitLocked(Event{Type: EventConflict, Version: old.rec.Version, Winner: v, Peer: peer})
	}
	n.log.Info().Stringer("version", v).Str("peer", peer).Msg("config version applied")
	n.emitLocked(Event{Type: EventApplied, Version: v, Peer: peer})
	n.pruneLocked()
	return nil
}

func (n *Node) storeLocked(r Record) error {
	if err := n.st.Put(r); err != nil {
		n.log.Error().Err(err).Msg("store config version")
		return err
	}
	id := r.Version.ID()
	n.recs[id] = &entry{rec: r, id: id}
	n.pruneLocked()
	return nil
}

func (n *Node) rejectLocked(id ID, why string) {
	if _, ok := n.rejected[id]; ok {
		return
	}
	n.rejected[id] = why
	n.rejOrder = append(n.rejOrder, id)
	if len(n.rejOrder) > maxRejected {
		delete(n.rejected, n.rejOrder[0])
		n.rejOrder = n.rejOrder[1:]
	}
}

// isAncestorLocked reports whether id is a parent along the current chain.
func (n *Node) isAncestorLocked(id ID) bool {
	for e, steps := n.head, 0; e != nil && steps <= len(n.recs); steps++ {
		if e.rec.Version.Parent == id {
			return true
		}
		e = n.recs[e.rec.Version.Parent]
	}
	return false
}

// descendsLocked reports whether v was made on top of target (directly or
// through versions we hold). A chain broken by a version we lack (pruned on
// the peer) counts as descending: we cannot prove a conflict.
func (n *Node) descendsLocked(v Version, target *entry) bool {
	p := v.Parent
	for steps := 0; steps <= len(n.recs)+1; steps++ {
		if p == target.id {
			return true
		}
		if p.IsZero() {
			return false
		}
		e := n.recs[p]
		if e == nil {
			return true
		}
		if e.rec.Version.Counter < target.rec.Version.Counter {
			return false
		}
		p = e.rec.Version.Parent
	}
	return false
}

// pruneLocked keeps the Retention highest versions (and always the current).
func (n *Node) pruneLocked() {
	if len(n.recs) <= n.o.Retention {
		return
	}
	all := make([]*entry, 0, len(n.recs))
	for _, e := range n.recs {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b *entry) int { return -cmpVersion(a.rec.Version, b.rec.Version) })
	kept := 0
	for _, e := range all {
		if e == n.head || kept < n.o.Retention-1 {
			if e != n.head {
				kept++
			}
			continue
		}
		if err := n.st.Remove(e.rec.Version); err != nil {
			n.log.Error().Err(err).Msg("prune config history")
			continue
		}
		delete(n.recs, e.id)
	}
}

// Scrub re-reads every stored record from disk; those that fail their
// integrity check are quarantined, raise config-corrupt and are fetched
// again from peers. If the current version is hit, the node falls back to
// the newest intact version until the fetch succeeds. Returns the number of
// corrupt records found.
func (n *Node) Scrub() int {
	n.mu.Lock()
	var bad int
	for id, e := range n.recs {
		bf, err := n.st.Check(e.rec.Version)
		if err != nil {
			n.log.Error().Err(err).Msg("scrub config store")
			continue
		}
		if bf == nil {
			continue
		}
		bad++
		n.log.Error().Str("file", bf.Name).Str("quarantined", bf.Moved).Err(bf.Err).Msg("stored config version corrupt; quarantined, will fetch again")
		n.emitLocked(Event{Type: EventCorrupt, Version: e.rec.Version, Err: bf.Err})
		n.wants[id] = true
		if e == n.head {
			// Memory still holds the good bytes: rewrite them.
			if err := n.st.Put(e.rec); err == nil {
				delete(n.wants, id)
				continue
			}
		}
		delete(n.recs, id)
	}
	n.mu.Unlock()
	n.flush()
	return bad
}

func (n *Node) antiEntropy(ctx context.Context) {
	lastScrub := time.Now()
	for {
		d := n.o.AntiEntropyInterval
		d = d*3/4 + rand.N(d/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n.o.ScrubInterval > 0 && time.Since(lastScrub) >= n.o.ScrubInterval {
			lastScrub = time.Now()
			n.Scrub()
		}
		n.AntiEntropyOnce(ctx)
	}
}

// AntiEntropyOnce asks one random peer for its head and history and queues
// whatever this node lacks (including versions it wants to fetch again).
func (n *Node) AntiEntropyOnce(ctx context.Context) {
	if n.o.Transport == nil {
		return
	}
	peers := n.peerMembers()
	if len(peers) == 0 {
		return
	}
	peer := peers[rand.N(len(peers))]
	fctx, cancel := context.WithTimeout(ctx, n.o.FetchTimeout)
	defer cancel()
	if v, err := n.o.Transport.Head(fctx, peer); err == nil {
		n.Observe(peer, v.Counter, v.ID())
	} else {
		n.log.Debug().Str("peer", peer).Err(err).Msg("anti-entropy head")
		return
	}
	hist, err := n.o.Transport.History(fctx, peer)
	if err != nil {
		n.log.Debug().Str("peer", peer).Err(err).Msg("anti-entropy history")
		return
	}
	n.mu.Lock()
	wants := make(map[ID]bool, len(n.wants))
	for id := range n.wants {
		wants[id] = true
	}
	n.mu.Unlock()
	for _, v := range hist {
		id := v.ID()
		n.enqueue(peer, v.Counter, id, !wants[id])
	}
}
