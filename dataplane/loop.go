package dataplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// addrKey names a traffic IP on an interface.
type addrKey struct {
	Iface string
	IP    netip.Addr
}

func (k addrKey) String() string { return k.IP.String() + "%" + k.Iface }

// heldAddr is an address the loop holds in the kernel.
type heldAddr struct {
	addr   Address // the desired spec it was raised with
	prefix netip.Prefix
	since  time.Time
	link   LinkInfo
	cancel context.CancelFunc // stops its announcer
	c      *announceCounters
}

// staleAddr is a Shoal-marked address (label or state record) left from an
// earlier run and not desired: to be deleted.
type staleAddr struct {
	entry recordEntry
}

// backoff tracks retries of one operation.
type backoff struct {
	attempts int
	next     time.Time
	last     time.Time
}

// groupState is the failure state of one watched group.
type groupState struct {
	GroupFailure
}

// loop is the state of the reconcile loop; only its goroutine touches it.
type loop struct {
	ctx context.Context
	m   *Manager

	desired  Desired
	gen      uint64
	have     bool // a first Desired (or DropAll) arrived
	scanned  bool // the start-up stale scan ran
	dropping bool
	waiters  []chan error

	held      map[addrKey]*heldAddr
	stale     map[addrKey]staleAddr
	recSince  map[addrKey]time.Time // since-times from the record, for adoption
	retry     map[string]*backoff
	addFails  map[addrKey]error // latest error of consecutive failed raises
	links     map[string]bool   // last seen up state per interface
	groups    map[string]*groupState
	pending   []GroupFailure
	written   []recordEntry // last state record written
	wroteOnce bool

	multiDone bool // lastMulti applied successfully
	lastMulti []MultiGroup
	multiErr  error

	restored uint64
	applied  uint64
	lastErr  error
	lastAt   time.Time

	wg sync.WaitGroup // announcers

	conflicts *conflictWatch // nil: conflict detection off
}

func newLoop(ctx context.Context, m *Manager) *loop {
	l := &loop{
		ctx:      ctx,
		m:        m,
		held:     map[addrKey]*heldAddr{},
		stale:    map[addrKey]staleAddr{},
		recSince: map[addrKey]time.Time{},
		retry:    map[string]*backoff{},
		addFails: map[addrKey]error{},
		links:    map[string]bool{},
		groups:   map[string]*groupState{},
	}
	if w, ok := m.announcer.(ARPWatcher); ok && m.opts.DetectConflicts {
		l.conflicts = newConflictWatch(m, w)
	} else if m.opts.DetectConflicts {
		m.log.Warn().Msg("conflict detection asked for but the announcer cannot watch arp")
	}
	return l
}

func (l *loop) run() {
	m := l.m
	defer func() {
		for _, h := range l.held {
			if h.cancel != nil {
				h.cancel()
			}
		}
		l.wg.Wait()
		if l.conflicts != nil {
			l.conflicts.stop()
		}
		for _, w := range l.waiters {
			w <- fmt.Errorf("drop all: %w", errNotRunning)
		}
	}()

	resync := time.NewTicker(m.opts.Resync)
	defer resync.Stop()
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()

	var (
		events    <-chan struct{}
		watchStop chan struct{}
		dirty     bool
	)
	defer func() {
		if watchStop != nil {
			close(watchStop)
		}
	}()
	subscribe := func(now time.Time) {
		if !l.due("watch", now) {
			return
		}
		stop := make(chan struct{})
		ch, err := m.kernel.Watch(stop)
		if err != nil {
			close(stop)
			l.fail("watch", now, err)
			return
		}
		l.succeed("watch")
		events, watchStop = ch, stop
		dirty = true // anything may have changed while unsubscribed
	}
	subscribe(time.Now())

	var passWake time.Time // when the last pass wants a retry (zero: none)
	reannounce := false    // a Reannounce waits for the pass on the latest desired state
	for {
		now := time.Now()
		if events == nil {
			subscribe(now)
		}
		if dirty && l.have {
			dirty = false
			passWake = l.pass(now)
			if l.conflicts != nil {
				l.conflicts.update(l.ctx, l.held)
			}
		}
		if reannounce {
			reannounce = false
			l.reannounceAll()
		}
		wakeAt := passWake
		if b := l.retry["watch"]; events == nil && b != nil && (wakeAt.IsZero() || b.next.Before(wakeAt)) {
			wakeAt = b.next
		}
		retryTimer.Stop()
		if !wakeAt.IsZero() {
			retryTimer.Reset(max(time.Until(wakeAt), time.Millisecond))
		}
		var failCh chan GroupFailure
		var next GroupFailure
		if len(l.pending) > 0 {
			failCh, next = m.failCh, l.pending[0]
		}
		select {
		case <-l.ctx.Done():
			return
		case <-m.closing:
			return
		case <-m.wake:
			m.mu.Lock()
			d, gen := m.next, m.nextGen
			m.mu.Unlock()
			if !l.dropping {
				l.desired, l.gen, l.have = d, gen, true
				dirty = true
			}
		case _, ok := <-events:
			if !ok {
				events = nil
				close(watchStop)
				watchStop = nil
				l.setErr(time.Now(), errors.New("netlink subscription ended; resubscribing"))
			}
			dirty = true
		case <-retryTimer.C:
			dirty = true
		case <-resync.C:
			dirty = true
		case <-m.reannounce:
			// Re-announce what the latest desired state holds (an Apply
			// made just before may have put addresses into hand-off).
			m.mu.Lock()
			d, gen := m.next, m.nextGen
			m.mu.Unlock()
			if !l.dropping && gen != l.gen {
				l.desired, l.gen, l.have = d, gen, true
				dirty = true
			}
			reannounce = true
		case w := <-m.dropReq:
			l.dropping, l.have = true, true
			l.desired = Desired{}
			l.waiters = append(l.waiters, w)
			dirty = true
		case failCh <- next:
			l.pending = l.pending[1:]
		}
	}
}

// due reports whether op may be tried now.
func (l *loop) due(op string, now time.Time) bool {
	b := l.retry[op]
	return b == nil || !now.Before(b.next)
}

// fail records a failed op and schedules its retry.
func (l *loop) fail(op string, now time.Time, err error) {
	b := l.retry[op]
	if b == nil {
		b = &backoff{}
		l.retry[op] = b
	}
	b.attempts++
	b.last = now
	b.next = now.Add(l.delay(b.attempts))
	l.setErr(now, err)
	l.m.log.Warn().Err(err).Str("op", op).Int("attempt", b.attempts).
		Dur("retry_in", b.next.Sub(now)).Msg("dataplane operation failed")
}

func (l *loop) succeed(op string) { delete(l.retry, op) }

// delay is the backoff before attempt n+1: RetryMin doubling to RetryMax,
// plus up to 20% jitter.
func (l *loop) delay(n int) time.Duration {
	d := l.m.opts.RetryMin
	for i := 1; i < n && d < l.m.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, l.m.opts.RetryMax)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

func (l *loop) setErr(now time.Time, err error) {
	l.lastErr, l.lastAt = err, now
}

// pass is one reconcile pass: it reads the kernel, drops what is not
// desired, raises what is missing, calls the MultiHoster, updates group
// failures, the state record and the published status. It returns when the
// next pass should run for a pending retry (zero: none pending).
func (l *loop) pass(now time.Time) (wakeAt time.Time) {
	m := l.m
	converged := true
	later := func(t time.Time) {
		converged = false
		if wakeAt.IsZero() || t.Before(wakeAt) {
			wakeAt = t
		}
	}
	defer func() { l.publish(converged) }()

	if !l.due("list", now) {
		later(l.retry["list"].next)
		return wakeAt
	}
	kaddrs, err := m.kernel.Addrs()
	if err != nil {
		l.fail("list", now, err)
		later(l.retry["list"].next)
		return wakeAt
	}
	l.succeed("list")

	// Links, looked up once per pass.
	type linkRes struct {
		info LinkInfo
		err  error
	}
	linkCache := map[string]linkRes{}
	link := func(name string) (LinkInfo, error) {
		if r, ok := linkCache[name]; ok {
			return r.info, r.err
		}
		info, err := m.kernel.Link(name)
		linkCache[name] = linkRes{info, err}
		return info, err
	}
	type kkey struct {
		index int
		ip    netip.Addr
	}
	inKernel := make(map[kkey]KernelAddr, len(kaddrs))
	for _, a := range kaddrs {
		inKernel[kkey{a.LinkIndex, a.Prefix.Addr()}] = a
	}
	find := func(iface string, ip netip.Addr) (KernelAddr, LinkInfo, bool, error) {
		li, err := link(iface)
		if err != nil {
			return KernelAddr{}, li, false, err
		}
		ka, ok := inKernel[kkey{li.Index, ip}]
		return ka, li, ok, nil
	}

	// Desired addresses by key (the first of duplicates wins).
	want := map[addrKey]Address{}
	var order []addrKey
	for _, a := range l.desired.Addresses {
		k := addrKey{a.Interface, a.IP.Unmap()}
		if _, dup := want[k]; dup || !k.IP.IsValid() || a.Interface == "" {
			continue
		}
		a.IP = k.IP
		want[k] = a
		order = append(order, k)
	}
	slices.SortFunc(order, compareKeys)

	// Start-up: Shoal-marked addresses not desired are stale.
	if !l.scanned {
		l.scanned = true
		l.scanStale(kaddrs, want, link)
	}

	// Group failure reasons found in this pass.
	reasons := map[string][]string{}
	ifaceOf := map[string]string{}
	watch := func(group, iface string) {
		if _, ok := reasons[group]; !ok {
			reasons[group] = nil
			ifaceOf[group] = iface
		}
	}
	failGroup := func(group, iface, reason string) {
		watch(group, iface)
		if len(reasons[group]) == 0 {
			ifaceOf[group] = iface
		}
		if !slices.Contains(reasons[group], reason) {
			reasons[group] = append(reasons[group], reason)
		}
	}

	// 1. Drop held addresses no longer desired, and stale ones.
	for _, k := range sortedKeys(l.held) {
		if _, ok := want[k]; ok {
			continue
		}
		if l.dropOne(now, k, find, later) {
			l.stopAnnouncer(k)
			delete(l.held, k)
			m.log.Info().Str("ip", k.IP.String()).Str("interface", k.Iface).Msg("traffic ip dropped")
		}
	}
	for _, k := range sortedKeys(l.stale) {
		if _, ok := want[k]; ok {
			delete(l.stale, k) // desired again: adopted below
			continue
		}
		if l.dropOne(now, k, find, later) {
			delete(l.stale, k)
			m.log.Info().Str("ip", k.IP.String()).Str("interface", k.Iface).Msg("stale traffic ip dropped")
		}
	}

	// Write ahead: the record lists what is about to be raised before it
	// is, so a crash between the two leaves nothing unrecognised.
	l.writeRecord(now, want, order)

	// 2. Raise what is desired and missing; adopt what is already there.
	linkUpNow := map[string]bool{}
	for _, k := range order {
		a := want[k]
		watch(a.Group, a.Interface)
		ka, li, present, err := find(a.Interface, k.IP)
		if err != nil {
			reason := fmt.Sprintf("interface %s: %v", a.Interface, err)
			if errors.Is(err, ErrLinkNotFound) {
				reason = fmt.Sprintf("interface %s not found", a.Interface)
			}
			failGroup(a.Group, a.Interface, reason)
			if h := l.held[k]; h != nil {
				// The address went with the interface.
				l.stopAnnouncer(k)
				delete(l.held, k)
			}
			converged = false
			continue
		}
		linkUpNow[a.Interface] = li.Up
		if !li.Up {
			failGroup(a.Group, a.Interface, fmt.Sprintf("interface %s is down", a.Interface))
		}
		prefix := hostPrefix(a)
		flags := addrFlags(a)
		if present {
			switch {
			case ka.Flags&FlagDADFailed != 0:
				m.log.Warn().Str("ip", k.IP.String()).Str("interface", k.Iface).Msg("duplicate address detection failed; re-raising")
			case ka.Prefix.Bits() != prefix.Bits() || ka.Flags&FlagNoPrefixRoute != flags&FlagNoPrefixRoute:
				m.log.Info().Str("ip", k.IP.String()).Str("interface", k.Iface).Str("have", ka.Prefix.String()).
					Str("want", prefix.String()).Msg("traffic ip has other prefix or flags; re-raising")
			default:
				l.keep(now, k, a, li)
				continue
			}
			// Re-raise: delete, then add below.
			op := "readd " + k.String()
			if !l.due(op, now) {
				later(l.retry[op].next)
				continue
			}
			if err := m.kernel.AddrDel(ka); err != nil && !errors.Is(err, ErrAddrNotFound) {
				l.fail(op, now, err)
				later(l.retry[op].next)
				continue
			}
			l.rateLimit(op, now)
			if l.held[k] != nil {
				l.restored++
			}
		} else if h := l.held[k]; h != nil {
			// Held, gone from the kernel: something else removed it.
			op := "restore " + k.String()
			if !l.due(op, now) {
				later(l.retry[op].next)
				continue
			}
			m.log.Warn().Str("ip", k.IP.String()).Str("interface", k.Iface).Msg("traffic ip removed by something else; restoring")
			l.rateLimit(op, now)
			l.restored++
		}
		l.stopAnnouncer(k)
		delete(l.held, k)
		op := "add " + k.String()
		if !l.due(op, now) {
			later(l.retry[op].next)
			if e := l.addFails[k]; e != nil && l.retry[op].attempts >= m.opts.FailAfter {
				failGroup(a.Group, a.Interface, fmt.Sprintf("raise %s: %v", k.IP, e))
			}
			continue
		}
		label := ""
		if k.IP.Is4() {
			label = Label(a.Interface)
		}
		err = m.kernel.AddrAdd(KernelAddr{LinkIndex: li.Index, Prefix: prefix, Label: label, Flags: flags})
		if err != nil {
			l.fail(op, now, err)
			l.addFails[k] = err
			later(l.retry[op].next)
			if l.retry[op].attempts >= m.opts.FailAfter {
				failGroup(a.Group, a.Interface, fmt.Sprintf("raise %s: %v", k.IP, err))
			}
			continue
		}
		l.succeed(op)
		delete(l.addFails, k)
		h := &heldAddr{addr: a, prefix: prefix, since: now, link: li, c: &announceCounters{}}
		l.held[k] = h
		m.log.Info().Str("ip", k.IP.String()).Str("interface", k.Iface).Str("group", a.Group).Msg("traffic ip raised")
		if !a.Handoff {
			l.startAnnouncer(h, true)
		}
	}

	// Forget retry state of operations on addresses no longer desired.
	for op, b := range l.retry {
		if i := strings.IndexByte(op, ' '); i > 0 {
			if !slices.ContainsFunc(order, func(k addrKey) bool { return k.String() == op[i+1:] }) &&
				!l.isStaleOrHeld(op[i+1:]) && now.After(b.next) {
				delete(l.retry, op)
			}
		}
	}
	for k := range l.addFails {
		if _, ok := want[k]; !ok {
			delete(l.addFails, k)
		}
	}

	// Links watched for groups holding no address here.
	for _, gl := range l.desired.Links {
		watch(gl.Group, gl.Interface)
		l.checkLink(gl.Group, gl.Interface, link, failGroup, linkUpNow)
	}

	// 3. Multi-hosted groups.
	if m.opts.Multi != nil {
		for _, g := range l.desired.Multi {
			watch(g.Name, g.Interface)
			l.checkLink(g.Name, g.Interface, link, failGroup, linkUpNow)
		}
		if !l.multiDone || !reflect.DeepEqual(l.lastMulti, l.desired.Multi) {
			if !l.due("multi", now) {
				later(l.retry["multi"].next)
			} else if err := m.opts.Multi.Apply(l.desired.Multi); err != nil {
				l.multiErr = err
				l.multiDone = false
				l.fail("multi", now, fmt.Errorf("apply multi-hosted groups: %w", err))
				later(l.retry["multi"].next)
			} else {
				l.succeed("multi")
				l.multiErr = nil
				l.multiDone, l.lastMulti = true, l.desired.Multi
			}
		}
		if l.multiErr != nil && l.retry["multi"] != nil && l.retry["multi"].attempts >= m.opts.FailAfter {
			for _, g := range l.desired.Multi {
				failGroup(g.Name, "", fmt.Sprintf("apply multi-hosted groups: %v", l.multiErr))
			}
		}
	}

	// An interface that came (back) up: neighbours may have missed the
	// earlier announcements.
	for name, up := range linkUpNow {
		if was, ok := l.links[name]; ok && up && !was {
			m.log.Info().Str("interface", name).Msg("interface up; re-announcing")
			for k, h := range l.held {
				if k.Iface == name && !h.addr.Handoff {
					l.startAnnouncer(h, true)
				}
			}
		}
		l.links[name] = up
	}
	for name := range l.links {
		if _, ok := linkUpNow[name]; !ok {
			delete(l.links, name)
		}
	}

	l.updateGroups(now, reasons, ifaceOf)
	l.writeRecord(now, nil, nil)
	if len(l.stale) > 0 || len(l.held) != len(want) {
		converged = false
	}
	if converged && !l.dropping {
		l.applied = l.gen
	}
	if converged && l.dropping {
		for _, w := range l.waiters {
			w <- nil
		}
		l.waiters = nil
	}
	return wakeAt
}

func (l *loop) isStaleOrHeld(key string) bool {
	for k := range l.held {
		if k.String() == key {
			return true
		}
	}
	for k := range l.stale {
		if k.String() == key {
			return true
		}
	}
	return false
}

// rateLimit counts a restoration or re-raise of op: the first in a while
// goes at once, repeated ones (something keeps removing the address) wait
// with exponential backoff; quiet for a minute resets it.
func (l *loop) rateLimit(op string, now time.Time) {
	b := l.retry[op]
	if b == nil || now.Sub(b.last) > time.Minute {
		b = &backoff{}
		l.retry[op] = b
	}
	b.attempts++
	b.last = now
	if b.attempts > 1 {
		b.next = now.Add(l.delay(b.attempts - 1))
	}
}

// checkLink reports a failure for group when iface is missing or down.
func (l *loop) checkLink(group, iface string, link func(string) (LinkInfo, error),
	failGroup func(group, iface, reason string), upNow map[string]bool) {
	if iface == "" {
		return
	}
	li, err := link(iface)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		failGroup(group, iface, fmt.Sprintf("interface %s not found", iface))
	case err != nil:
		failGroup(group, iface, fmt.Sprintf("interface %s: %v", iface, err))
	case !li.Up:
		upNow[iface] = false
		failGroup(group, iface, fmt.Sprintf("interface %s is down", iface))
	default:
		upNow[iface] = true
	}
}

// dropOne deletes the address k from the kernel; it reports whether the
// address is gone.
func (l *loop) dropOne(now time.Time, k addrKey,
	find func(string, netip.Addr) (KernelAddr, LinkInfo, bool, error), later func(time.Time)) bool {
	ka, _, present, err := find(k.Iface, k.IP)
	if errors.Is(err, ErrLinkNotFound) || (err == nil && !present) {
		return true // gone with its interface, or already gone
	}
	op := "del " + k.String()
	if !l.due(op, now) {
		later(l.retry[op].next)
		return false
	}
	if err == nil {
		err = l.m.kernel.AddrDel(ka)
		if err == nil || errors.Is(err, ErrAddrNotFound) {
			l.succeed(op)
			return true
		}
	}
	l.fail(op, now, err)
	later(l.retry[op].next)
	return false
}

// keep records that k is in the kernel as desired: adopt it if not held yet
// (restart, or raised by hand), or refresh its announcer when the spec or
// link changed.
func (l *loop) keep(now time.Time, k addrKey, a Address, li LinkInfo) {
	h := l.held[k]
	if h == nil {
		since := now
		if s, ok := l.recSince[k]; ok {
			since = s
		}
		h = &heldAddr{addr: a, prefix: hostPrefix(a), since: since, link: li, c: &announceCounters{}}
		l.held[k] = h
		l.m.log.Info().Str("ip", k.IP.String()).Str("interface", k.Iface).Str("group", a.Group).Msg("traffic ip adopted")
		if !a.Handoff {
			l.startAnnouncer(h, true)
		}
		return
	}
	switch {
	case a.Handoff:
		if !h.addr.Handoff {
			l.m.log.Info().Str("ip", k.IP.String()).Str("interface", k.Iface).Str("group", a.Group).Msg("traffic ip handed off: kept until the new owner has announced it, no longer announced here")
		}
		h.addr, h.link = a, li
		l.stopAnnouncer(k)
	case h.addr.Handoff:
		// Hand-off called off (the new owner is gone): neighbours may
		// have moved to it, so announce afresh.
		h.addr, h.link = a, li
		l.startAnnouncer(h, true)
	case h.link.Index != li.Index || !slices.Equal(h.link.MAC, li.MAC):
		h.link, h.addr = li, a
		l.startAnnouncer(h, true)
	case h.addr.Announce != a.Announce:
		h.addr = a
		l.startAnnouncer(h, false)
	default:
		h.addr, h.link = a, li
	}
	delete(l.recSince, k)
}

// scanStale marks as stale every Shoal-marked address (label, or state
// record) that the first desired state does not contain.
func (l *loop) scanStale(kaddrs []KernelAddr, want map[addrKey]Address, link func(string) (LinkInfo, error)) {
	for _, e := range l.m.record {
		k := addrKey{e.Interface, e.Prefix.Addr()}
		if _, ok := want[k]; ok {
			l.recSince[k] = e.Since
			continue
		}
		l.stale[k] = staleAddr{entry: e}
	}
	l.m.record = nil
	for _, a := range kaddrs {
		if !isShoalLabel(a.Label) {
			continue
		}
		name := strings.TrimSuffix(a.Label, labelSuffix)
		li, err := link(name)
		if err != nil || li.Index != a.LinkIndex {
			continue // a label not made by Label for this interface
		}
		k := addrKey{name, a.Prefix.Addr()}
		if _, ok := want[k]; ok {
			continue
		}
		if _, ok := l.stale[k]; !ok {
			l.stale[k] = staleAddr{entry: recordEntry{Interface: name, Prefix: a.Prefix}}
		}
	}
	if len(l.stale) > 0 {
		l.m.log.Info().Int("count", len(l.stale)).Msg("stale traffic ips from an earlier run will be dropped")
	}
}

// writeRecord writes the state record when its content changed: held and
// stale addresses, plus (write-ahead) the desired ones about to be raised.
func (l *loop) writeRecord(now time.Time, want map[addrKey]Address, order []addrKey) {
	dir := l.m.opts.StateDir
	if dir == "" {
		return
	}
	var entries []recordEntry
	seen := map[addrKey]bool{}
	for k, h := range l.held {
		seen[k] = true
		entries = append(entries, recordEntry{Group: h.addr.Group, Interface: k.Iface, Prefix: h.prefix, Since: h.since})
	}
	for k, s := range l.stale {
		seen[k] = true
		entries = append(entries, s.entry)
	}
	for _, k := range order {
		if !seen[k] {
			a := want[k]
			since := now
			if s, ok := l.recSince[k]; ok {
				since = s
			}
			entries = append(entries, recordEntry{Group: a.Group, Interface: k.Iface, Prefix: hostPrefix(a), Since: since})
		}
	}
	slices.SortFunc(entries, func(a, b recordEntry) int {
		return cmp.Or(strings.Compare(a.Interface, b.Interface), a.Prefix.Addr().Compare(b.Prefix.Addr()))
	})
	if l.wroteOnce && slices.EqualFunc(entries, l.written, func(a, b recordEntry) bool {
		return a.Group == b.Group && a.Interface == b.Interface && a.Prefix == b.Prefix && a.Since.Equal(b.Since)
	}) {
		return
	}
	if err := writeRecord(dir, entries); err != nil {
		l.setErr(now, err)
		l.m.log.Error().Err(err).Msg("state record not written")
		return
	}
	l.written, l.wroteOnce = entries, true
}

// updateGroups turns this pass's reasons into group states and queues the
// transitions for Failures.
func (l *loop) updateGroups(now time.Time, reasons map[string][]string, ifaceOf map[string]string) {
	for name := range l.groups {
		if _, ok := reasons[name]; !ok {
			delete(l.groups, name) // no longer watched
		}
	}
	for name, rs := range reasons {
		failed := len(rs) > 0
		reason := strings.Join(rs, "; ")
		g := l.groups[name]
		if g == nil {
			g = &groupState{GroupFailure{Group: name, Interface: ifaceOf[name], Since: now}}
			l.groups[name] = g
			if !failed {
				continue // a new healthy group is not news
			}
		}
		changed := g.Failed != failed
		g.Interface, g.Reason = ifaceOf[name], reason
		if changed {
			g.Failed, g.Since = failed, now
			if failed {
				l.m.log.Warn().Str("group", name).Str("reason", reason).Msg("group failed on this node")
			} else {
				l.m.log.Info().Str("group", name).Msg("group recovered on this node")
			}
			l.queue(g.GroupFailure)
		}
	}
}

// queue adds a transition for Failures, replacing a pending one of the same
// group.
func (l *loop) queue(f GroupFailure) {
	for i, p := range l.pending {
		if p.Group == f.Group {
			l.pending[i] = f
			return
		}
	}
	l.pending = append(l.pending, f)
}

// publish copies the loop's state for Status.
func (l *loop) publish(converged bool) {
	held := make([]pubHeld, 0, len(l.held))
	for k, h := range l.held {
		held = append(held, pubHeld{
			HeldAddress: HeldAddress{Group: h.addr.Group, Interface: k.Iface, Prefix: h.prefix, Since: h.since},
			c:           h.c,
		})
	}
	slices.SortFunc(held, func(a, b pubHeld) int {
		return cmp.Or(strings.Compare(a.Interface, b.Interface), a.Prefix.Addr().Compare(b.Prefix.Addr()))
	})
	groups := make([]GroupFailure, 0, len(l.groups))
	for _, g := range l.groups {
		groups = append(groups, g.GroupFailure)
	}
	slices.SortFunc(groups, func(a, b GroupFailure) int { return strings.Compare(a.Group, b.Group) })
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pubHeld = held
	m.pubStat.Groups = groups
	m.pubStat.Restored = l.restored
	m.pubStat.AppliedGeneration = l.applied
	m.pubStat.Converged = converged // Status also checks the generation
	m.loopDropping = l.dropping
	if l.lastErr != nil {
		m.pubStat.LastError, m.pubStat.LastErrorAt = l.lastErr.Error(), l.lastAt
	}
}

// hostPrefix is the prefix an address is raised with.
func hostPrefix(a Address) netip.Prefix {
	bits := a.PrefixLen
	if bits <= 0 || bits > a.IP.BitLen() {
		bits = a.IP.BitLen()
	}
	return netip.PrefixFrom(a.IP.Unmap(), bits)
}

// addrFlags are the IFA_F_* flags an address is raised with: no prefix
// route unless asked, and for IPv6 no DAD (the cluster already decided this
// node owns the address; see doc.go).
func addrFlags(a Address) int {
	f := 0
	if !a.PrefixRoute {
		f |= FlagNoPrefixRoute
	}
	if a.IP.Is6() && !a.IP.Is4In6() {
		f |= FlagNoDAD
	}
	return f
}

func compareKeys(a, b addrKey) int {
	return cmp.Or(strings.Compare(a.Iface, b.Iface), a.IP.Compare(b.IP))
}

func sortedKeys[V any](m map[addrKey]V) []addrKey {
	keys := make([]addrKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// startAnnouncer (re)starts the announcer of h: a burst (when burst) and
// then the periodic refresh.
func (l *loop) startAnnouncer(h *heldAddr, burst bool) {
	if h.cancel != nil {
		h.cancel()
	}
	ctx, cancel := context.WithCancel(l.ctx)
	h.cancel = cancel
	cfg, li, ip := h.addr.Announce, h.link, h.prefix.Addr()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.m.announce(ctx, li, ip, cfg, burst, h.c)
	}()
}

func (l *loop) stopAnnouncer(k addrKey) {
	if h := l.held[k]; h != nil && h.cancel != nil {
		h.cancel()
		h.cancel = nil
	}
}

func (l *loop) reannounceAll() {
	n := 0
	for _, h := range l.held {
		if !h.addr.Handoff {
			l.startAnnouncer(h, true)
			n++
		}
	}
	l.m.log.Info().Int("count", n).Msg("re-announcing held traffic ips")
}

// announce sends the burst and the refreshes for one address until ctx
// ends.
func (m *Manager) announce(ctx context.Context, li LinkInfo, ip netip.Addr, cfg Announce, burst bool, c *announceCounters) {
	send := func() bool {
		if err := m.announcer.Announce(li, ip); err != nil {
			m.annErrors.Add(1)
			m.log.Warn().Err(err).Str("ip", ip.String()).Str("interface", li.Name).Msg("announcement failed")
			return false
		}
		m.annSent.Add(1)
		c.sent.Add(1)
		c.last.Store(time.Now().UnixNano())
		return true
	}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	count, spread := cfg.Count, cfg.Spread
	if count == 0 {
		count = DefaultAnnounceCount
	}
	if spread <= 0 {
		spread = DefaultAnnounceSpread
	}
	if burst && count > 0 {
		gap := spread
		if count > 1 {
			gap = spread / time.Duration(count-1)
		}
		// The burst is count successful rounds: a failed round (a fresh
		// IPv6 address still tentative while the carrier comes up, a
		// socket error) is tried again a gap later, up to
		// burstExtraTries more times.
		for sent, tries := 0, 0; sent < count && tries < count+burstExtraTries; tries++ {
			if tries > 0 && !wait(gap) {
				return
			}
			if send() {
				sent++
			}
		}
	}
	if cfg.Refresh <= 0 {
		return
	}
	for wait(cfg.Refresh) {
		send()
	}
}

// burstExtraTries bounds the retries of failed rounds in a burst.
const burstExtraTries = 10
