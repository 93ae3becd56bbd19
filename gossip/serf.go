package gossip

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Serf tag keys published by every node.
const (
	TagVersion       = "v"   // build version
	TagConfigVersion = "cv"  // config version (decimal)
	TagConfigHash    = "ch"  // first 8 bytes of the config hash (hex)
	TagHealth        = "h"   // "ok" or "failed"
	TagBootEpoch     = "be"  // boot epoch (decimal unix nanos), covered by the token
	TagToken         = "tok" // admission token (base64 Ed25519 signature)
)

// admissionMessage is what the admission token signs.
func admissionMessage(cluster, node string, bootEpoch uint64) []byte {
	b := []byte("shoal admission v1\x00" + cluster + "\x00" + node + "\x00")
	return binary.BigEndian.AppendUint64(b, bootEpoch)
}

// AdmissionToken signs (cluster, node, boot epoch) with the node's key.
func AdmissionToken(key ed25519.PrivateKey, cluster, node string, bootEpoch uint64) string {
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, admissionMessage(cluster, node, bootEpoch)))
}

// ErrAdmission is wrapped by every refusal of the serf Merge delegate.
var ErrAdmission = errors.New("serf admission refused")

// verifyAdmission checks a serf member's name and token against the pinned
// key of that name.
func verifyAdmission(cluster string, key ed25519.PublicKey, name string, tags map[string]string) error {
	if key == nil {
		return fmt.Errorf("%w: %q is not a configured member", ErrAdmission, name)
	}
	be, err := strconv.ParseUint(tags[TagBootEpoch], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q has no boot epoch tag", ErrAdmission, name)
	}
	sig, err := base64.RawStdEncoding.DecodeString(tags[TagToken])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %q has no valid token tag", ErrAdmission, name)
	}
	if !ed25519.Verify(key, admissionMessage(cluster, name, be), sig) {
		return fmt.Errorf("%w: %q token does not verify with its pinned key", ErrAdmission, name)
	}
	return nil
}

// verifyObserver checks a serf observer (a configured name admitted without
// a token) against the address configured for it (want; the zero Addr
// accepts any).
func verifyObserver(name string, want, got netip.Addr) error {
	if want.IsValid() && want != got {
		return fmt.Errorf("%w: observer %q advertises %s, configured for %s", ErrAdmission, name, got, want)
	}
	return nil
}

// SerfMember is a serf member as carried in SerfEvent.
type SerfMember struct {
	Name   string
	Addr   netip.Addr
	Port   uint16
	Tags   map[string]string
	Status string // "alive", "leaving", "left", "failed", "none"
}

// SerfQuery is an incoming serf query; answer it with Respond before
// Deadline.
type SerfQuery struct {
	SourceNode string
	Deadline   time.Time
	q          *serf.Query
}

// Respond sends the answer to the query's origin.
func (q *SerfQuery) Respond(b []byte) error {
	if err := q.q.Respond(b); err != nil {
		return fmt.Errorf("respond to query %q: %w", q.q.Name, err)
	}
	return nil
}

// SerfEvent is a serf event with serf's fields, for serf-handler
// compatibility (appliance/events).
type SerfEvent struct {
	Type     string // "member-join", "member-leave", "member-failed", "member-update", "member-reap", "user", "query"
	Time     time.Time
	Members  []SerfMember // member events
	LTime    uint64       // user events and queries
	Name     string       // user events and queries
	Payload  []byte       // user events and queries
	Coalesce bool         // user events
	Query    *SerfQuery   // queries: the responder
}

// serfState is the embedded serf instance and its loops.
type serfState struct {
	a        *Agent
	s        *serf.Serf
	kr       *memberlist.Keyring
	in       chan serf.Event
	out      chan SerfEvent
	tagsKick chan struct{}
	token    string
	stop     sync.Once

	mu       sync.Mutex
	selfStat string
	inflight map[string]bool // rejoin attempts in progress
}

// nsTransport makes memberlist's outgoing TCP connections through a custom
// dial function (agents running inside network namespaces).
type nsTransport struct {
	*memberlist.NetTransport
	dial func(network, address string, timeout time.Duration) (net.Conn, error)
}

var _ memberlist.NodeAwareTransport = (*nsTransport)(nil)

// DialTimeout overrides NetTransport's dialer.
func (t *nsTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dial("tcp", addr, timeout)
}

// DialAddressTimeout overrides NetTransport's dialer (memberlist prefers this
// NodeAwareTransport method: without it the embedded one would dial from the
// caller's namespace).
func (t *nsTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dial("tcp", a.Addr, timeout)
}

func newSerf(a *Agent) (*serfState, error) {
	keys, path, err := loadOrCreateKeyring(a.cfg.DataDir, a.cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("serf keyring: %w", err)
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("serf keyring: %w", err)
	}
	st := &serfState{
		a:        a,
		kr:       kr,
		in:       make(chan serf.Event, 1024),
		out:      make(chan SerfEvent, 1024),
		tagsKick: make(chan struct{}, 1),
		token:    AdmissionToken(a.cfg.PrivateKey, a.cfg.Cluster, a.cfg.Node, a.epoch),
		inflight: map[string]bool{},
	}
	lg := newStdLogger(a.cfg.Logger.With().Str("component", "serf").Str("node", a.cfg.Node).Logger())

	mlc := memberlist.DefaultLANConfig()
	mlc.BindAddr = a.cfg.Bind.String()
	mlc.BindPort = a.cfg.GossipPort
	mlc.AdvertiseAddr = a.cfg.Bind.String()
	mlc.AdvertisePort = a.cfg.GossipPort
	mlc.Keyring = kr
	mlc.GossipVerifyIncoming, mlc.GossipVerifyOutgoing = true, true
	mlc.TCPTimeout = 2 * time.Second
	mlc.Logger = lg
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{a.cfg.Bind.String()}, BindPort: a.cfg.GossipPort, Logger: lg,
	})
	if err != nil {
		return nil, fmt.Errorf("serf transport %s:%d: %w", a.cfg.Bind, a.cfg.GossipPort, err)
	}
	if a.cfg.Dial != nil {
		mlc.Transport = &nsTransport{NetTransport: nt, dial: a.cfg.Dial}
	} else {
		mlc.Transport = nt
	}

	sc := serf.DefaultConfig()
	sc.NodeName = a.cfg.Node
	sc.Tags = st.tags()
	sc.EventCh = st.in
	sc.MemberlistConfig = mlc
	sc.Logger = lg
	sc.Merge = &mergeDelegate{a: a}
	sc.KeyringFile = path
	sc.EnableNameConflictResolution = false // names are pinned identities: refuse, don't negotiate
	s, err := serf.Create(sc)
	if err != nil {
		_ = nt.Shutdown() // best effort: the serf setup already failed
		return nil, fmt.Errorf("serf create: %w", err)
	}
	st.s = s
	return st, nil
}

func (st *serfState) tags() map[string]string {
	a := st.a
	a.mu.Lock()
	defer a.mu.Unlock()
	h := "ok"
	if !a.health.OK {
		h = "failed"
	}
	return map[string]string{
		TagVersion: a.cfg.Version, TagConfigVersion: strconv.FormatUint(a.cfgVer, 10),
		TagConfigHash: hex.EncodeToString(a.cfgHash[:8]), TagHealth: h,
		TagBootEpoch: strconv.FormatUint(a.epoch, 10), TagToken: st.token,
	}
}

func (st *serfState) kickTags() {
	select {
	case st.tagsKick <- struct{}{}:
	default:
	}
}

func (st *serfState) start(ctx context.Context, start func(func(context.Context))) {
	start(st.eventLoop)
	start(st.rejoinLoop)
	start(st.tagsLoop)
}

func (st *serfState) shutdown() {
	st.stop.Do(func() {
		if err := st.s.Shutdown(); err != nil {
			st.a.log.Warn().Err(err).Msg("serf shutdown")
		}
	})
}

func (st *serfState) leave(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- st.s.Leave() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("serf leave: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("serf leave: %w", ctx.Err())
	}
}

func (st *serfState) tagsLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.tagsKick:
			if err := st.s.SetTags(st.tags()); err != nil {
				st.a.log.Warn().Err(err).Msg("update serf tags")
			}
		}
	}
}

// rejoinLoop joins every configured member that serf does not list as
// alive, now and every RejoinInterval: memberlist never re-merges a healed
// partition by itself (hashicorp/memberlist#222).
func (st *serfState) rejoinLoop(ctx context.Context) {
	t := time.NewTicker(st.a.cfg.RejoinInterval)
	defer t.Stop()
	for {
		st.rejoin(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (st *serfState) rejoin(ctx context.Context) {
	alive := map[string]bool{}
	for _, m := range st.s.Members() {
		if m.Status == serf.StatusAlive {
			alive[m.Name] = true
		}
	}
	a := st.a
	a.mu.Lock()
	var targets []Member
	for _, p := range a.peers {
		if !alive[p.m.Name] {
			targets = append(targets, p.m)
		}
	}
	a.mu.Unlock()
	for _, m := range targets {
		st.mu.Lock()
		busy := st.inflight[m.Name]
		st.inflight[m.Name] = true
		st.mu.Unlock()
		if busy {
			continue
		}
		go func() {
			defer func() { st.mu.Lock(); delete(st.inflight, m.Name); st.mu.Unlock() }()
			addr := netip.AddrPortFrom(m.Addr, uint16(a.cfg.GossipPort)).String()
			if ctx.Err() != nil {
				return
			}
			if n, err := st.s.Join([]string{addr}, true); err != nil || n == 0 {
				a.log.Debug().Err(err).Str("member", m.Name).Str("addr", addr).Msg("serf join failed")
			} else {
				a.log.Info().Str("member", m.Name).Str("addr", addr).Msg("serf joined member")
			}
		}()
	}
}

func (st *serfState) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-st.in:
			st.handle(ev)
		}
	}
}

func (st *serfState) handle(ev serf.Event) {
	now := time.Now()
	out := SerfEvent{Type: ev.EventType().String(), Time: now}
	switch e := ev.(type) {
	case serf.MemberEvent:
		a := st.a
		a.mu.Lock()
		for _, m := range e.Members {
			status := m.Status.String()
			if e.Type == serf.EventMemberReap {
				status = ""
			}
			addr, _ := netip.AddrFromSlice(m.Addr)
			out.Members = append(out.Members, SerfMember{Name: m.Name, Addr: addr.Unmap(), Port: m.Port, Tags: m.Tags, Status: m.Status.String()})
			if m.Name == a.cfg.Node {
				st.mu.Lock()
				st.selfStat = status
				st.mu.Unlock()
				continue
			}
			if p := a.peers[m.Name]; p != nil && p.serfStatus != status {
				p.serfStatus = status
				a.emit(MemberEvent{Time: now, Type: EventSerf, Member: m.Name, Reason: out.Type + ": " + status})
				a.log.Info().Str("member", m.Name).Str("serf_event", out.Type).Str("serf_status", status).Msg("serf membership change")
			} else if _, obs := a.cfg.Observers[m.Name]; p == nil && obs {
				a.log.Info().Str("observer", m.Name).Str("addr", addr.Unmap().String()).Str("serf_event", out.Type).Msg("serf observer change")
			}
		}
		a.recompute(now)
		a.mu.Unlock()
	case serf.UserEvent:
		out.LTime, out.Name, out.Payload, out.Coalesce = uint64(e.LTime), e.Name, e.Payload, e.Coalesce
	case *serf.Query:
		out.LTime, out.Name, out.Payload = uint64(e.LTime), e.Name, e.Payload
		out.Query = &SerfQuery{SourceNode: e.SourceNode(), Deadline: e.Deadline(), q: e}
	}
	select {
	case st.out <- out:
	default:
		st.a.ctr.serfEventsDropped.Add(1)
	}
}

// mergeDelegate refuses serf members whose name is not configured or whose
// admission token does not verify with the key pinned for that name.
// Configured observers (Config.Observers) are admitted without a token, from
// their configured address if one is set.
type mergeDelegate struct{ a *Agent }

func (d *mergeDelegate) NotifyMerge(members []*serf.Member) error {
	a := d.a
	for _, m := range members {
		addr, _ := netip.AddrFromSlice(m.Addr)
		addr = addr.Unmap()
		a.mu.Lock()
		var key ed25519.PublicKey
		var obsAddr netip.Addr
		isObs := false
		if m.Name == a.cfg.Node {
			key = a.self.PublicKey
		} else if p := a.peers[m.Name]; p != nil {
			key = p.m.PublicKey
		} else {
			obsAddr, isObs = a.cfg.Observers[m.Name]
		}
		a.mu.Unlock()
		var err error
		if isObs {
			err = verifyObserver(m.Name, obsAddr, addr)
		} else {
			err = verifyAdmission(a.cfg.Cluster, key, m.Name, m.Tags)
		}
		if err != nil {
			a.ctr.admissionRefused.Add(1)
			if a.limiter.allow(addr, "admission:"+m.Name, time.Now()) {
				a.log.Warn().Err(err).Str("member", m.Name).Str("addr", addr.String()).Msg("serf member refused")
			}
			return err
		}
	}
	return nil
}

// UpdateObservers replaces the serf observers admitted without a token
// (config changed; see Config.Observers). It applies to every later merge:
// an observer removed from the list while it is in the pool stays until it
// leaves, fails or re-joins (rotate the gossip key to lock it out at once).
func (a *Agent) UpdateObservers(observers map[string]netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := checkObservers(observers, a.cfg.Members); err != nil {
		return fmt.Errorf("update observers: %w: %v", ErrConfig, err)
	}
	a.cfg.Observers = maps.Clone(observers)
	return nil
}

func (a *Agent) serfStatusLocked(name string) string {
	if a.serf == nil {
		return ""
	}
	a.serf.mu.Lock()
	defer a.serf.mu.Unlock()
	return a.serf.selfStat
}

// errNoSerf is returned by serf methods when DisableSerf is set.
var errNoSerf = errors.New("serf disabled")

// SerfEvents returns serf's member, user and query events (buffered 1024;
// dropped and counted when the reader falls behind). Nil channel when serf
// is disabled.
func (a *Agent) SerfEvents() <-chan SerfEvent {
	if a.serf == nil {
		return nil
	}
	return a.serf.out
}

// SerfMembers returns serf's member list.
func (a *Agent) SerfMembers() []SerfMember {
	if a.serf == nil {
		return nil
	}
	var out []SerfMember
	for _, m := range a.serf.s.Members() {
		addr, _ := netip.AddrFromSlice(m.Addr)
		out = append(out, SerfMember{Name: m.Name, Addr: addr.Unmap(), Port: m.Port, Tags: m.Tags, Status: m.Status.String()})
	}
	return out
}

// UserEvent broadcasts a serf user event.
func (a *Agent) UserEvent(name string, payload []byte, coalesce bool) error {
	if a.serf == nil {
		return fmt.Errorf("user event %q: %w", name, errNoSerf)
	}
	if err := a.serf.s.UserEvent(name, payload, coalesce); err != nil {
		return fmt.Errorf("user event %q: %w", name, err)
	}
	return nil
}

// Query sends a serf query and collects the answers until timeout (0 =
// serf's default), keyed by responding node.
func (a *Agent) Query(name string, payload []byte, timeout time.Duration) (map[string][]byte, error) {
	if a.serf == nil {
		return nil, fmt.Errorf("query %q: %w", name, errNoSerf)
	}
	params := a.serf.s.DefaultQueryParams()
	if timeout > 0 {
		params.Timeout = timeout
	}
	resp, err := a.serf.s.Query(name, payload, params)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", name, err)
	}
	out := map[string][]byte{}
	for r := range resp.ResponseCh() {
		out[r.From] = r.Payload
	}
	return out, nil
}

func keyringStatus(r *serf.KeyResponse) KeyringStatus {
	if r == nil {
		return KeyringStatus{}
	}
	return KeyringStatus{Keys: r.Keys, PrimaryKeys: r.PrimaryKeys, NumNodes: r.NumNodes,
		NumResp: r.NumResp, NumErr: r.NumErr, Messages: r.Messages}
}

func (a *Agent) keyOp(op string, f func(*serf.KeyManager) (*serf.KeyResponse, error)) (KeyringStatus, error) {
	if a.serf == nil {
		return KeyringStatus{}, fmt.Errorf("%s: %w", op, errNoSerf)
	}
	r, err := f(a.serf.s.KeyManager())
	st := keyringStatus(r)
	if err != nil {
		return st, fmt.Errorf("%s: %w", op, err)
	}
	if st.NumErr > 0 {
		return st, fmt.Errorf("%s: %d of %d nodes failed: %v", op, st.NumErr, st.NumNodes, st.Messages)
	}
	return st, nil
}

// InstallKey adds a base64 gossip key to every node's keyring (rotation
// step 1: install, 2: use, 3: remove the old one). Each node persists its
// keyring file.
func (a *Agent) InstallKey(key string) (KeyringStatus, error) {
	return a.keyOp("install gossip key", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.InstallKey(key) })
}

// UseKey makes an installed key the primary (encrypting) key everywhere.
func (a *Agent) UseKey(key string) (KeyringStatus, error) {
	return a.keyOp("use gossip key", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.UseKey(key) })
}

// RemoveKey removes a non-primary key everywhere.
func (a *Agent) RemoveKey(key string) (KeyringStatus, error) {
	return a.keyOp("remove gossip key", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.RemoveKey(key) })
}

// ListKeys asks every node for its keys.
func (a *Agent) ListKeys() (KeyringStatus, error) {
	return a.keyOp("list gossip keys", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.ListKeys() })
}

// LocalKeys returns this node's keyring, primary first, base64.
func (a *Agent) LocalKeys() []string {
	if a.serf == nil {
		return nil
	}
	var out []string
	for _, k := range a.serf.kr.GetKeys() {
		out = append(out, base64.StdEncoding.EncodeToString(k))
	}
	return out
}
