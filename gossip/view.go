package gossip

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"time"
)

// View is one node's opinion of which members are up.
type View struct {
	Up     []string // names of up members, sorted; includes this node while its health is ok
	Epoch  uint64   // +1 on every change of Up; monotonic for the process lifetime
	Digest [32]byte // ViewDigest(Up): equal digests mean equal Up sets
}

// ViewDigest is SHA-256 over "shoal view v1\n" followed by each sorted
// name and a newline. Nodes compare digests carried in heartbeats.
func ViewDigest(up []string) [32]byte {
	s := slices.Clone(up)
	slices.Sort(s)
	h := sha256.New()
	h.Write([]byte("shoal view v1\n"))
	for _, n := range s {
		h.Write([]byte(n))
		h.Write([]byte{'\n'})
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Contains reports whether name is up in v.
func (v View) Contains(name string) bool {
	_, ok := slices.BinarySearch(v.Up, name)
	return ok
}

// String is "epoch 7 [a b c] 1a2b3c4d".
func (v View) String() string {
	return "epoch " + itoa(v.Epoch) + " [" + strings.Join(v.Up, " ") + "] " + hex.EncodeToString(v.Digest[:4])
}

func itoa(u uint64) string {
	if u == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for u > 0 {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
	}
	return string(b[i:])
}

// Health is this node's (or a peer's) self-reported health.
type Health struct {
	OK      bool
	Reasons []string // why not OK (self-test names and details); may be set when OK
}

// EventType is the kind of a MemberEvent.
type EventType string

// Member event types.
const (
	EventJoined     EventType = "joined"    // first valid ok heartbeat of a new boot epoch: member up
	EventRecovered  EventType = "recovered" // member up again after being down (same epoch, or health ok again)
	EventSuspected  EventType = "suspected" // silence: probing started
	EventCleared    EventType = "cleared"   // suspicion cleared by a heartbeat or probe answer
	EventFailed     EventType = "failed"    // member down (reason says why)
	EventLeft       EventType = "left"      // member sent a leave
	EventViewChange EventType = "view"      // View changed (View field set)
	EventRefuted    EventType = "refuted"   // a verdict about this node was answered
	EventSerf       EventType = "serf"      // serf membership status change (Reason = serf status)
	EventEvidence   EventType = "evidence"  // a peer still hears a member this node declared down
	EventHealth     EventType = "health"    // member's health changed (up or not)
)

// MemberEvent is one state change, timestamped, for event actions and
// failover timelines.
type MemberEvent struct {
	Time   time.Time
	Type   EventType
	Member string // empty for view changes
	Reason string
	View   *View // EventViewChange only
}
