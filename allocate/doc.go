// Package allocate computes which cluster member holds which traffic IP. It
// is a pure function of (group configuration, set of alive members): every
// node computes the same answer from the same inputs, so nodes never
// negotiate.
//
// Single-hosted groups: every IP has a preference list (a permutation of the
// group's members, fixed by the configuration alone); its owner is the first
// alive member in that list. The first entry is always an active member, so
// passive members hold nothing while every active member is up, and a change
// of the alive set moves only the IPs of the member that failed or returned.
//
// Multi-hosted groups: the hash space is NumBuckets (8! = 40320) buckets;
// bucket b carries the b-th permutation of the 8 slots and belongs to the
// first alive active slot in it (or, when no active member is alive, the
// first alive passive slot). Every alive member therefore owns exactly
// NumBuckets/|alive| buckets and a change moves only the changed member's
// buckets.
//
// See docs/ALLOCATION.md for the guarantees and the measured figures.
//
// This package owns the allocation only. It must not import anything but the
// standard library's pure packages: no os, no net I/O, no time, no logging,
// and nothing else of this module.
package allocate
