package dataplane

// MultiHoster serves multi-hosted groups (ARP responder with the multicast
// MAC, XDP share of the hash space). dataplane/multihost implements it; the
// Manager's reconcile loop calls it, so the loop stays the only writer of
// kernel state.
//
// The Manager calls Apply from its loop goroutine with the latest
// Desired.Multi whenever it differs from the last successful call (and again
// after a failure, with backoff); nil or empty means serve no group. Apply
// must not keep the slice and must return promptly (it blocks the loop).
// DropAll calls Apply(nil). Manager.Close calls Close once; the Manager owns
// the MultiHoster given to it in Options.
type MultiHoster interface {
	Apply(groups []MultiGroup) error
	Close() error
}
