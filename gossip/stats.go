package gossip

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Rejection reasons, the keys of Stats.Rejected.
const (
	RejectOversize     = "oversize"      // larger than wire.MaxSize
	RejectMalformed    = "malformed"     // does not decode (magic, version, type, truncated, trailing bytes)
	RejectWrongCluster = "wrong_cluster" // another cluster's packet
	RejectUnknownNode  = "unknown_node"  // sender is not a configured member
	RejectBadSignature = "bad_signature" // signature does not verify with the key pinned for the sender
	RejectReplay       = "replay"        // old boot epoch, or sequence already seen / too old for this epoch
	RejectClock        = "clock_skew"    // send time more than MaxClockSkew from the local clock
)

// RejectReasons lists every rejection reason, in a stable order.
var RejectReasons = []string{RejectOversize, RejectMalformed, RejectWrongCluster, RejectUnknownNode,
	RejectBadSignature, RejectReplay, RejectClock}

// MaxClockSkew is the largest accepted distance between a packet's send time
// and the local clock.
const MaxClockSkew = 30 * time.Second

// Stats are the agent's counters since New.
type Stats struct {
	Sent              uint64            // packets sent (a unicast fan-out counts each copy)
	SendErrors        uint64            // transport send failures
	Received          uint64            // packets received, valid or not
	Accepted          uint64            // packets that passed validation
	Stale             uint64            // accepted packets older than the sender's latest: state not applied
	Backlog           uint64            // packets older than the sender's latest by more than an interval: dropped before verification
	Own               uint64            // own packets looped back (ignored, not rejections)
	Rejected          map[string]uint64 // by reason (Reject* constants); every reason present
	Heartbeats        uint64            // heartbeats sent
	ProbesSent        uint64            // direct probes sent
	IndirectSent      uint64            // indirect-probe requests sent
	ProbeAcks         uint64            // probe answers received (direct or relayed)
	Relayed           uint64            // probe answers relayed for others
	Suspicions        uint64            // suspicions started
	VerdictsSent      uint64            // down verdicts broadcast (counting retransmissions once)
	VerdictsReceived  uint64            // down verdicts received about others
	VerdictsAdopted   uint64            // received verdicts this node followed
	EvidenceSent      uint64            // verdicts answered with "I still hear it"
	EvidenceReceived  uint64            // evidence received about members this node declared down
	Refuted           uint64            // verdicts about this node answered with a heartbeat
	ViewChanges       uint64            // view epoch increments
	EventsDropped     uint64            // MemberEvents dropped because the channel was full
	SerfEventsDropped uint64            // SerfEvents dropped because the channel was full
	AdmissionRefused  uint64            // serf members refused by the Merge delegate
	Stalls            uint64            // detector stalls (this process not scheduled) forgiven
	LinkForgiven      uint64            // suspicions restarted, or members taken back on link return, because this node's own link was down
}

type counters struct {
	sent, sendErrors, received, accepted, stale, backlog, own, heartbeats, probes, indirect, probeAcks, relayed,
	suspicions, verdictsSent, verdictsReceived, verdictsAdopted, evidenceSent, evidenceReceived,
	refuted, viewChanges, eventsDropped, serfEventsDropped, admissionRefused, stalls, linkForgiven atomic.Uint64
	rejected [7]atomic.Uint64 // indexed like RejectReasons
}

func (c *counters) reject(reason string) {
	for i, r := range RejectReasons {
		if r == reason {
			c.rejected[i].Add(1)
			return
		}
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Sent: c.sent.Load(), SendErrors: c.sendErrors.Load(), Received: c.received.Load(),
		Accepted: c.accepted.Load(), Stale: c.stale.Load(), Backlog: c.backlog.Load(), Own: c.own.Load(), Heartbeats: c.heartbeats.Load(),
		ProbesSent: c.probes.Load(), IndirectSent: c.indirect.Load(), ProbeAcks: c.probeAcks.Load(),
		Relayed: c.relayed.Load(), Suspicions: c.suspicions.Load(), VerdictsSent: c.verdictsSent.Load(),
		VerdictsReceived: c.verdictsReceived.Load(), VerdictsAdopted: c.verdictsAdopted.Load(),
		EvidenceSent: c.evidenceSent.Load(), EvidenceReceived: c.evidenceReceived.Load(),
		Refuted: c.refuted.Load(), ViewChanges: c.viewChanges.Load(), EventsDropped: c.eventsDropped.Load(),
		SerfEventsDropped: c.serfEventsDropped.Load(), AdmissionRefused: c.admissionRefused.Load(), Stalls: c.stalls.Load(),
		LinkForgiven: c.linkForgiven.Load(),
		Rejected:     make(map[string]uint64, len(RejectReasons)),
	}
	for i, r := range RejectReasons {
		s.Rejected[r] = c.rejected[i].Load()
	}
	return s
}

// logLimiter lets one message per (source, key) through per period.
type logLimiter struct {
	mu     sync.Mutex
	period time.Duration
	last   map[string]time.Time
}

func newLogLimiter(period time.Duration) *logLimiter {
	return &logLimiter{period: period, last: map[string]time.Time{}}
}

func (l *logLimiter) allow(src netip.Addr, key string, now time.Time) bool {
	k := src.String() + "|" + key
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[k]; ok && now.Sub(t) < l.period {
		return false
	}
	if len(l.last) >= 4096 { // bound memory under a flood of sources
		for k2, t := range l.last {
			if now.Sub(t) >= l.period {
				delete(l.last, k2)
			}
		}
		if len(l.last) >= 4096 {
			return false
		}
	}
	l.last[k] = now
	return true
}

// rejectLog logs a rejection at most once per source and reason per minute.
func (a *Agent) rejectLog(from netip.Addr, reason string, now time.Time, err error, node string) {
	a.ctr.reject(reason)
	if a.limiter.allow(from, reason, now) {
		ev := a.log.Warn().Str("from", from.String()).Str("reason", reason)
		if node != "" {
			ev = ev.Str("node", node)
		}
		ev.AnErr("error", err).Msg("heartbeat packet rejected (further rejections of this kind from this source are counted, not logged, for a minute)")
	}
}
