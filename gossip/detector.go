package gossip

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/shoal-project/shoal/gossip/wire"
)

func (a *Agent) recvLoop(ctx context.Context) {
	ch := a.tr.Recv()
	for {
		select {
		case <-ctx.Done():
			return
		case pkt, ok := <-ch:
			if !ok {
				return
			}
			a.handle(pkt, time.Now())
		}
	}
}

// handle validates one packet and feeds it to the detector. It never panics
// on bad input: every rejection is counted and rate-limit logged.
func (a *Agent) handle(pkt Packet, now time.Time) {
	a.ctr.received.Add(1)
	if len(pkt.Data) > wire.MaxSize {
		a.rejectLog(pkt.From, RejectOversize, now, wire.ErrTooLarge, "")
		return
	}
	p, err := wire.Decode(pkt.Data)
	if err != nil {
		reason := RejectMalformed
		if errors.Is(err, wire.ErrTooLarge) {
			reason = RejectOversize
		}
		a.rejectLog(pkt.From, reason, now, err, "")
		return
	}
	if p.Cluster != a.cfg.Cluster {
		a.rejectLog(pkt.From, RejectWrongCluster, now, errors.New("cluster "+p.Cluster), p.Node)
		return
	}
	if p.Node == a.cfg.Node {
		a.ctr.own.Add(1) // our own multicast looped back
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	pr := a.peers[p.Node]
	if pr == nil {
		a.rejectLog(pkt.From, RejectUnknownNode, now, errors.New("not a configured member"), p.Node)
		return
	}
	// Cheap checks before the signature (tens of microseconds): rejecting
	// changes no state, so a forged packet gains nothing from them. A
	// replayed or too old sequence is refused; a packet older than the
	// sender's latest by more than an interval is a backlog (queued in
	// the sender's kernel while its link was cut, flushed when it came
	// back, dozens at once) and too old to answer or match a probe.
	if _, ok := pr.checkReplay(p.BootEpoch, p.Seq); !ok {
		a.rejectLog(pkt.From, RejectReplay, now, errors.New("old epoch or sequence"), p.Node)
		return
	}
	if pr.heard && p.BootEpoch == pr.epoch && p.Seq < pr.seqMax && p.SendTime < pr.sentMax-int64(a.tim.interval) {
		a.ctr.backlog.Add(1)
		return
	}
	if err := p.Verify(pr.m.PublicKey); err != nil {
		a.rejectLog(pkt.From, RejectBadSignature, now, err, p.Node)
		return
	}
	sent := time.Unix(0, p.SendTime)
	if d := now.Sub(sent); d > MaxClockSkew || d < -MaxClockSkew {
		a.rejectLog(pkt.From, RejectClock, now, errors.New("send time "+sent.UTC().Format(time.RFC3339Nano)), p.Node)
		return
	}
	if p.BootEpoch > uint64(p.SendTime) {
		a.rejectLog(pkt.From, RejectReplay, now, errors.New("boot epoch after send time"), p.Node)
		return
	}
	newEpoch, ok := pr.checkReplay(p.BootEpoch, p.Seq)
	if !ok {
		a.rejectLog(pkt.From, RejectReplay, now, errors.New("old epoch or sequence"), p.Node)
		return
	}
	// Only the newest packet of a sender carries its current state. An
	// older one (reordered, or queued for seconds behind an unresolved
	// neighbour entry while the sender's link was cut and flushed when it
	// came back) is authentic but stale: it must not bring back the
	// health, view or config version the sender had then.
	latest := newEpoch || p.Seq > pr.seqMax
	pr.commitReplay(p.BootEpoch, p.Seq, newEpoch)
	if latest {
		pr.sentMax = p.SendTime
	}
	a.ctr.accepted.Add(1)
	if !latest {
		a.ctr.stale.Add(1)
	}
	a.onValid(pr, p, newEpoch, latest, now)
}

// checkReplay accepts a packet of a newer boot epoch, or of the current epoch
// with a sequence above the highest seen or within the last 64 and unseen
// (packets of two sockets may be processed out of order).
func (p *peer) checkReplay(epoch, seq uint64) (newEpoch, ok bool) {
	if !p.heard || epoch > p.epoch {
		return true, true
	}
	if epoch < p.epoch {
		return false, false
	}
	if seq > p.seqMax {
		return false, true
	}
	d := p.seqMax - seq
	if d >= 64 || p.seqWin&(1<<d) != 0 {
		return false, false
	}
	return false, true
}

func (p *peer) commitReplay(epoch, seq uint64, newEpoch bool) {
	switch {
	case newEpoch:
		p.epoch, p.seqMax, p.seqWin = epoch, seq, 1
	case seq > p.seqMax:
		if s := seq - p.seqMax; s >= 64 {
			p.seqWin = 1
		} else {
			p.seqWin = p.seqWin<<s | 1
		}
		p.seqMax = seq
	default:
		p.seqWin |= 1 << (p.seqMax - seq)
	}
}

// onValid applies one authenticated, fresh packet from pr. A packet that is
// not the sender's latest (latest false) is answered and matched like any
// other but changes neither the sender's state nor its liveness.
func (a *Agent) onValid(pr *peer, p *wire.Packet, newEpoch, latest bool, now time.Time) {
	if newEpoch && pr.heard {
		a.log.Info().Str("member", pr.m.Name).Uint64("boot_epoch", p.BootEpoch).Msg("member restarted (new boot epoch)")
	}
	if newEpoch {
		pr.left, pr.down, pr.downReason, pr.recoverN = false, false, "", 0
		pr.suspect = false
	}
	pr.heard = true
	if !latest {
		a.onMessage(pr, p, now)
		return
	}
	pr.lastHeard = now
	if pr.suspect {
		pr.suspect = false
		a.emit(MemberEvent{Time: now, Type: EventCleared, Member: pr.m.Name, Reason: "heard " + p.Type.String()})
	}
	if pr.health.OK != p.Health.OK {
		a.emit(MemberEvent{Time: now, Type: EventHealth, Member: pr.m.Name, Reason: healthString(Health(p.Health))})
	}
	if !slices.Equal(pr.health.Reasons, p.Health.Reasons) || !slices.Equal(pr.tables, p.Tables) {
		pr.tables = slices.Clone(p.Tables)
		select {
		case a.changeCh <- struct{}{}:
		default:
		}
	}
	pr.health = Health{OK: p.Health.OK, Reasons: slices.Clone(p.Health.Reasons)}
	pr.cfgVer, pr.cfgHash = p.ConfigVersion, p.ConfigHash
	if p.View != nil {
		v := *p.View
		pr.view = &v
	}
	if p.Type == wire.TypeHeartbeat {
		if pr.down && !newEpoch {
			if !pr.lastHB.IsZero() && now.Sub(pr.lastHB) <= a.tim.recoverGap {
				pr.recoverN++
			} else {
				pr.recoverN = 1
			}
			if pr.recoverN >= RecoverHeartbeats {
				a.log.Info().Str("member", pr.m.Name).Str("was", pr.downReason).Int("heartbeats", pr.recoverN).Msg("member heard again")
				pr.down, pr.downReason, pr.recoverN = false, "", 0
			}
		}
		pr.lastHB = now
		if a.cfg.Verbose {
			ev := a.log.Info().Str("member", pr.m.Name).Uint64("seq", p.Seq).Bool("ok", p.Health.OK)
			if p.View != nil {
				ev = ev.Uint64("view_epoch", p.View.Epoch).Bool("same_view", p.View.Digest == a.view.Digest)
			}
			ev.Msg("heartbeat received")
		}
	}
	a.onMessage(pr, p, now)
}

// onMessage handles what a packet asks or answers (leave, probes, verdicts)
// and recomputes the view.
func (a *Agent) onMessage(pr *peer, p *wire.Packet, now time.Time) {
	switch p.Type {
	case wire.TypeLeave:
		if !pr.left {
			pr.left = true
			a.log.Info().Str("member", pr.m.Name).Msg("member left")
		}
	case wire.TypeProbe:
		if p.Body.Subject == a.cfg.Node {
			a.replyLocked(pr, wire.TypeProbeAck, wire.Body{Nonce: p.Body.Nonce, Subject: a.cfg.Node,
				SubjectEpoch: a.epoch, SubjectSeq: a.seq + 1})
		}
	case wire.TypeProbeAck:
		a.onProbeAck(pr, p, now)
	case wire.TypeIndirectProbe:
		a.onIndirect(pr, p, now)
	case wire.TypeVerdict:
		a.onVerdict(pr, p, now)
	}
	a.recompute(now)
}

func (a *Agent) onProbeAck(from *peer, p *wire.Packet, now time.Time) {
	// An answer to a probe we sent as a relay: pass it on to the origin.
	if r, ok := a.relays[p.Body.Nonce]; ok && r.subject == p.Body.Subject && from.m.Name == r.subject {
		delete(a.relays, p.Body.Nonce)
		if origin := a.peers[r.origin]; origin != nil {
			a.ctr.relayed.Add(1)
			a.replyLocked(origin, wire.TypeProbeAck, wire.Body{Nonce: r.nonce, Subject: r.subject,
				SubjectEpoch: p.BootEpoch, SubjectSeq: p.Seq})
		}
		return
	}
	subj := a.peers[p.Body.Subject]
	if subj == nil || subj.probeNonce != p.Body.Nonce || !subj.suspect {
		return // late or unsolicited; a direct answer already refreshed lastHeard
	}
	a.ctr.probeAcks.Add(1)
	if from == subj {
		return // direct answer: onValid cleared the suspicion
	}
	if p.Body.SubjectEpoch < subj.epoch {
		return // about an older incarnation
	}
	subj.suspect = false
	subj.lastAck = now
	a.emit(MemberEvent{Time: now, Type: EventCleared, Member: subj.m.Name, Reason: "indirect probe answered via " + from.m.Name})
}

func (a *Agent) onIndirect(from *peer, p *wire.Packet, now time.Time) {
	x := p.Body.Subject
	if x == a.cfg.Node {
		a.replyLocked(from, wire.TypeProbeAck, wire.Body{Nonce: p.Body.Nonce, Subject: x, SubjectEpoch: a.epoch, SubjectSeq: a.seq + 1})
		return
	}
	subj := a.peers[x]
	if subj == nil || !subj.heard {
		return
	}
	if now.Sub(subj.lastHeard) <= a.tim.fresh {
		// We heard it recently: that is the answer.
		a.ctr.relayed.Add(1)
		a.replyLocked(from, wire.TypeProbeAck, wire.Body{Nonce: p.Body.Nonce, Subject: x, SubjectEpoch: subj.epoch, SubjectSeq: subj.seqMax})
		return
	}
	n := randomNonce()
	a.relays[n] = relay{origin: from.m.Name, nonce: p.Body.Nonce, subject: x, expires: now.Add(2 * a.tim.window)}
	a.replyLocked(subj, wire.TypeProbe, wire.Body{Nonce: n, Subject: x})
}

func (a *Agent) onVerdict(from *peer, p *wire.Packet, now time.Time) {
	x := p.Body.Subject
	if p.Body.Status == wire.StatusAlive {
		subj := a.peers[x]
		if subj != nil && subj.down {
			a.ctr.evidenceReceived.Add(1)
			a.emit(MemberEvent{Time: now, Type: EventEvidence, Member: x, Reason: from.m.Name + " still hears it (asymmetric reachability)"})
			if a.limiter.allow(from.m.Addr, "evidence:"+x, now) {
				a.log.Warn().Str("member", x).Str("witness", from.m.Name).Msg("a peer still hears a member this node declared down")
			}
		}
		return
	}
	if x == a.cfg.Node {
		a.ctr.refuted.Add(1)
		a.emit(MemberEvent{Time: now, Type: EventRefuted, Member: from.m.Name, Reason: "declared this node down"})
		a.log.Warn().Str("accuser", from.m.Name).Msg("a peer declared this node down; answering with a heartbeat")
		a.kickHeartbeat()
		return
	}
	a.ctr.verdictsReceived.Add(1)
	subj := a.peers[x]
	if subj == nil || !subj.heard || subj.down || subj.left {
		return
	}
	if p.Body.SubjectEpoch < subj.epoch || now.Sub(subj.lastHeard) <= a.tim.fresh {
		a.ctr.evidenceSent.Add(1)
		a.replyLocked(from, wire.TypeVerdict, wire.Body{Subject: x, SubjectEpoch: subj.epoch, SubjectSeq: subj.seqMax, Status: wire.StatusAlive})
		return
	}
	a.ctr.verdictsAdopted.Add(1)
	a.markDownLocked(subj, "verdict from "+from.m.Name, now)
}

// replyLocked sends one signed packet to one member's address.
func (a *Agent) replyLocked(to *peer, t wire.Type, body wire.Body) {
	b, err := a.packetLocked(t, body)
	if err != nil {
		a.log.Error().Err(err).Str("type", t.String()).Msg("encode packet")
		return
	}
	a.sendTo(to.m.Addr, b)
}

func (a *Agent) markDownLocked(p *peer, reason string, now time.Time) {
	p.down, p.downReason, p.recoverN, p.suspect, p.downAt = true, reason, 0, false, now
	a.log.Warn().Str("member", p.m.Name).Str("reason", reason).Time("last_heard", p.lastHeard).Msg("member declared down")
}

func (a *Agent) detectLoop(ctx context.Context) {
	t := time.NewTicker(a.tim.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The ticker's timestamp may be stale after a stall: use the
			// clock, forgive our own stall, and read what is already queued
			// before blaming anyone for silence.
			a.compensateStall(time.Now())
			a.drain()
			a.tick(time.Now())
		}
	}
}

// drain handles packets already queued on the transport.
func (a *Agent) drain() {
	ch := a.tr.Recv()
	for range 1024 {
		select {
		case pkt, ok := <-ch:
			if !ok {
				return
			}
			a.handle(pkt, time.Now())
		default:
			return
		}
	}
}

// compensateStall shifts every silence clock forward by the time this
// process did not run the detector (GC pause, CPU starvation): a peer is
// not blamed for our own stall.
func (a *Agent) compensateStall(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	last := a.lastTick
	a.lastTick = now
	if last.IsZero() {
		return
	}
	gap := now.Sub(last)
	if gap <= 4*a.tim.tick {
		return
	}
	shift := gap - a.tim.tick
	a.ctr.stalls.Add(1)
	if a.limiter.allow(netip.Addr{}, "stall", now) {
		a.log.Warn().Dur("stall", gap).Msg("detector stalled (CPU starvation or pause); silence clocks shifted")
	}
	fwd := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		if t = t.Add(shift); t.After(now) {
			return now
		}
		return t
	}
	for _, p := range a.peers {
		p.lastHeard, p.lastAck = fwd(p.lastHeard), fwd(p.lastAck)
		p.probeStart, p.probeLast = fwd(p.probeStart), fwd(p.probeLast)
	}
}

// tick runs the detector: suspicion, probes, verdicts, monitor timeout.
func (a *Agent) tick(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leaving {
		return
	}
	// Every tick: a flap shorter than the suspicion delay still costs the
	// heartbeats and probe answers sent during it.
	down := a.cfg.LinkUp != nil && !a.cfg.LinkUp()
	switch {
	case down && !a.linkDown:
		a.linkDownSince = now
	case !down && a.linkDown:
		a.linkReturnedLocked(now)
	}
	a.linkDown = down
	if down {
		a.linkDownAt = now
	}
	for _, p := range a.peers {
		if !p.heard || p.down || p.left {
			continue
		}
		if now.Sub(p.lastHeard) >= a.tim.monitor {
			a.markDownLocked(p, "monitor timeout: no heartbeat for "+now.Sub(p.lastHeard).Round(time.Millisecond).String(), now)
			continue
		}
		last := p.lastHeard
		if p.lastAck.After(last) {
			last = p.lastAck
		}
		switch {
		case !p.suspect && now.Sub(last) > a.tim.suspectAfter:
			p.suspect = true
			p.probeNonce = randomNonce()
			p.probeStart = now
			a.ctr.suspicions.Add(1)
			a.emit(MemberEvent{Time: now, Type: EventSuspected, Member: p.m.Name, Reason: "no heartbeat for " + now.Sub(p.lastHeard).Round(time.Millisecond).String()})
			if a.cfg.Verbose {
				a.log.Info().Str("member", p.m.Name).Dur("silent", now.Sub(p.lastHeard)).Msg("member suspected: probing")
			}
			a.probeLocked(p, now)
		case p.suspect && now.Sub(p.probeStart) >= a.tim.window && !a.linkDownAt.Before(last):
			// Our own link was down since we last heard p: its
			// heartbeats, our probes or their answers were lost here
			// (and a returning link starts with empty neighbour
			// tables). Probe afresh; the monitor timeout, counted from
			// the link's return, bounds how long this goes on.
			a.ctr.linkForgiven.Add(1)
			if a.limiter.allow(netip.Addr{}, "link-down", now) {
				a.log.Warn().Str("member", p.m.Name).Msg("own link was down while probing: suspicion restarted")
			}
			p.probeNonce = randomNonce()
			p.probeStart = now
			a.probeLocked(p, now)
		case p.suspect && now.Sub(p.probeStart) >= a.tim.window:
			a.markDownLocked(p, "no answer to probes", now)
			a.verdicts = append(a.verdicts, pendingVerdict{subject: p.m.Name, epoch: p.epoch, seq: p.seqMax, left: 3, next: now})
		case p.suspect && now.Sub(p.probeLast) >= a.tim.retransmit:
			a.probeLocked(p, now)
		}
	}
	// Verdict broadcasts: now and twice more, one retransmit period apart.
	kept := a.verdicts[:0]
	for _, v := range a.verdicts {
		if now.Before(v.next) {
			kept = append(kept, v)
			continue
		}
		if b, err := a.packetLocked(wire.TypeVerdict, wire.Body{Subject: v.subject, SubjectEpoch: v.epoch, SubjectSeq: v.seq, Status: wire.StatusDown}); err == nil {
			if v.left == 3 {
				a.ctr.verdictsSent.Add(1)
			}
			a.broadcastLocked(b)
		}
		v.left--
		v.next = now.Add(a.tim.retransmit)
		if v.left > 0 {
			kept = append(kept, v)
		}
	}
	a.verdicts = kept
	for n, r := range a.relays {
		if now.After(r.expires) {
			delete(a.relays, n)
		}
	}
	a.recompute(now)
}

// linkReturnedLocked runs when this node's own link comes back. Members it
// declared down during the outage (or within one confirmation window before
// it was noticed) were judged by a silence that was ours: they are taken
// back as they were before it, with a fresh silence clock, so the node does
// not find itself alone and raise every traffic IP while it waits for
// their heartbeats. One that really died is suspected, probed and declared
// again within a suspicion delay and a window.
func (a *Agent) linkReturnedLocked(now time.Time) {
	since := a.linkDownSince.Add(-a.tim.window)
	var back []string
	for _, p := range a.peers {
		if !p.down || p.left || p.downAt.Before(since) {
			continue
		}
		p.down, p.downReason, p.recoverN, p.suspect = false, "", 0, false
		p.lastHeard = now
		back = append(back, p.m.Name)
	}
	if len(back) > 0 {
		a.ctr.linkForgiven.Add(uint64(len(back)))
		a.log.Info().Strs("members", back).Dur("outage", now.Sub(a.linkDownSince)).
			Msg("own link back: members declared down during the outage taken back until heard or timed out")
	}
}

// probeLocked sends a direct probe to p and indirect-probe requests to up to
// three other up members, chosen at random each round.
func (a *Agent) probeLocked(p *peer, now time.Time) {
	p.probeLast = now
	if a.linkDown {
		// Nothing gets out: a unicast probe would wait in the kernel
		// behind an unresolved neighbour and reach p as a stale burst
		// when the link returns. The window restarts anyway.
		return
	}
	a.ctr.probes.Add(1)
	a.replyLocked(p, wire.TypeProbe, wire.Body{Nonce: p.probeNonce, Subject: p.m.Name})
	helpers := make([]*peer, 0, len(a.peers))
	for _, h := range a.peers {
		if h != p && h.up && !h.suspect {
			helpers = append(helpers, h)
		}
	}
	rand.Shuffle(len(helpers), func(i, j int) { helpers[i], helpers[j] = helpers[j], helpers[i] })
	for _, h := range helpers[:min(3, len(helpers))] {
		a.ctr.indirect.Add(1)
		a.replyLocked(h, wire.TypeIndirectProbe, wire.Body{Nonce: p.probeNonce, Subject: p.m.Name})
	}
}

// isUp is the membership rule: heard in this epoch, healthy, not left, not
// declared down by the detector, not down in serf (see serfDown).
func (p *peer) isUp() bool {
	return p.heard && p.health.OK && !p.left && !p.down && !p.serfDown()
}

// serfDown reports serf's verdict as far as the view takes it: "left" (a
// deliberate leave) always; "failed" only while the heartbeat detector does
// not hear the member either (suspect). memberlist judges over another path
// (unicast on gossip_port, its own timers) and can fail a member whose
// signed heartbeats arrive every interval; that member still serves.
func (p *peer) serfDown() bool {
	return p.serfStatus == "left" || (p.serfStatus == "failed" && (p.suspect || p.down))
}

func (p *peer) whyNotUp() string {
	switch {
	case !p.heard:
		return "never heard"
	case p.left:
		return "left"
	case p.down:
		return p.downReason
	case p.serfDown():
		return "serf: " + p.serfStatus
	case !p.health.OK:
		return healthString(p.health)
	}
	return ""
}

func (p *peer) state() string {
	switch {
	case !p.heard:
		return "unknown"
	case p.left:
		return "left"
	case p.down || p.serfDown():
		return "down"
	case !p.health.OK:
		return "failed"
	case p.suspect:
		return "suspect"
	}
	return "up"
}

func healthString(h Health) string {
	if h.OK {
		return "health ok"
	}
	if len(h.Reasons) == 0 {
		return "health failed"
	}
	return "health failed: " + strings.Join(h.Reasons, "; ")
}

// recompute derives the view from member state; on change it bumps the
// epoch, publishes the view (latest wins) and emits events.
func (a *Agent) recompute(now time.Time) {
	up := make([]string, 0, len(a.peers)+1)
	if a.health.OK && !a.leaving {
		up = append(up, a.cfg.Node)
	}
	for _, p := range a.peers {
		isUp := p.isUp()
		if isUp != p.up {
			p.up = isUp
			switch {
			case isUp && p.upEpoch != p.epoch:
				a.emit(MemberEvent{Time: now, Type: EventJoined, Member: p.m.Name, Reason: "boot epoch " + itoa(p.epoch)})
			case isUp:
				a.emit(MemberEvent{Time: now, Type: EventRecovered, Member: p.m.Name})
			case p.left:
				a.emit(MemberEvent{Time: now, Type: EventLeft, Member: p.m.Name, Reason: "leave message"})
			default:
				a.emit(MemberEvent{Time: now, Type: EventFailed, Member: p.m.Name, Reason: p.whyNotUp()})
			}
			if isUp {
				p.upEpoch = p.epoch
			}
		}
		if isUp {
			up = append(up, p.m.Name)
		}
	}
	slices.Sort(up)
	if slices.Equal(up, a.view.Up) {
		return
	}
	a.view = View{Up: up, Epoch: a.view.Epoch + 1, Digest: ViewDigest(up)}
	a.ctr.viewChanges.Add(1)
	v := cloneView(a.view)
	select {
	case <-a.viewCh:
	default:
	}
	select {
	case a.viewCh <- v:
	default:
	}
	a.emit(MemberEvent{Time: now, Type: EventViewChange, View: &v})
	a.log.Info().Uint64("epoch", v.Epoch).Strs("up", v.Up).Msg("view changed")
	a.kickHeartbeat() // peers learn the new view digest at once
}
