package confsync

import (
	"context"
	"errors"
)

// EventType names an event a Node raises. The strings are the event names
// used by the event system (appliance/events).
type EventType string

// Events raised by a Node.
const (
	// EventApplied: a version became this node's current configuration.
	EventApplied EventType = "config-applied"
	// EventRejected: a version was refused (bad signature, unknown or
	// restricted origin, or failed validation here). The current version is
	// kept. Raised once per version ID.
	EventRejected EventType = "config-rejected"
	// EventConflict: two concurrent edits; Loser lost to Winner by
	// (counter, origin). The loser is kept in history.
	EventConflict EventType = "config-conflict"
	// EventCorrupt: a stored record failed its integrity check; it was
	// quarantined and will be fetched again from peers.
	EventCorrupt EventType = "config-corrupt"
)

// Event is something a Node reports. Fields not relevant to Type are zero.
type Event struct {
	Type    EventType
	Version Version // applied, rejected or corrupt version; the loser for a conflict
	Winner  Version // conflict only: the version that won
	Peer    string  // node it came from; "" for a local edit or local disk
	Err     error   // rejected/corrupt: why (errors.Is against the Err* values)
}

// Reasons for rejecting a version (Event.Err wraps one of these), and errors
// of the Node API.
var (
	ErrUnknownOrigin   = errors.New("origin is not a member of the current config")
	ErrBadSignature    = errors.New("signature does not match the key pinned in the current config")
	ErrRestricted      = errors.New("origin is restricted (can_update = false)")
	ErrUnsignedGenesis = errors.New("unsigned genesis version from a peer (nodes bootstrapped from different files?)")
	ErrInvalid         = errors.New("config failed validation")
	ErrNotMember       = errors.New("this node is not a member of the current config")
	ErrKeyMismatch     = errors.New("this node's key is not the key pinned for it in the current config")
	ErrUnchanged       = errors.New("config unchanged")
	ErrNoConfig        = errors.New("no current config")
	ErrNotFound        = errors.New("version not found")
)

// Update is a configuration to apply: delivered to subscribers.
type Update struct {
	Version Version
	Content []byte // shared: do not modify
}

// Source is what a node serves to its peers.
type Source interface {
	// Head returns the current version (ErrNoConfig if none).
	Head() (Version, error)
	// Record returns a stored version with its content (ErrNotFound).
	Record(id ID) (Record, error)
	// Versions lists the stored version headers, oldest first.
	Versions() []Version
}

// Fetcher asks a named peer for versions over an authenticated channel.
// Implementations: TLSTransport (the network) and MemNetwork (tests).
type Fetcher interface {
	Head(ctx context.Context, peer string) (Version, error)
	Get(ctx context.Context, peer string, id ID) (Record, error)
	History(ctx context.Context, peer string) ([]Version, error)
}
