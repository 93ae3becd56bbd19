package confsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemNetwork connects Nodes in one process (tests, benchmarks). Each node
// gets a Fetcher from Transport(self); peers are reached by name. Links can
// be cut to simulate partitions or nodes that are down; an optional delay
// models network latency. Records are copied on the way so no node shares
// memory with another.
type MemNetwork struct {
	mu      sync.RWMutex
	sources map[string]Source
	down    map[string]bool
	cut     map[[2]string]bool
	delay   time.Duration
}

var _ Fetcher = memFetcher{}

// ErrUnreachable is returned by MemNetwork for a down node or a cut link.
var ErrUnreachable = errors.New("peer unreachable")

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{sources: map[string]Source{}, down: map[string]bool{}, cut: map[[2]string]bool{}}
}

// Register makes src reachable as name (replacing a previous one).
func (m *MemNetwork) Register(name string, src Source) {
	m.mu.Lock()
	m.sources[name] = src
	m.mu.Unlock()
}

// SetDown makes a node unreachable (true) or reachable again.
func (m *MemNetwork) SetDown(name string, down bool) {
	m.mu.Lock()
	m.down[name] = down
	m.mu.Unlock()
}

// Cut cuts (true) or restores the link between a and b, both ways.
func (m *MemNetwork) Cut(a, b string, cut bool) {
	m.mu.Lock()
	m.cut[[2]string{a, b}] = cut
	m.cut[[2]string{b, a}] = cut
	m.mu.Unlock()
}

// SetDelay sets a delay added to every request.
func (m *MemNetwork) SetDelay(d time.Duration) {
	m.mu.Lock()
	m.delay = d
	m.mu.Unlock()
}

// Reachable reports whether from can reach to.
func (m *MemNetwork) Reachable(from, to string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return !m.down[from] && !m.down[to] && !m.cut[[2]string{from, to}] && m.sources[to] != nil
}

// Transport returns the Fetcher that node self uses.
func (m *MemNetwork) Transport(self string) Fetcher { return memFetcher{m, self} }

type memFetcher struct {
	m    *MemNetwork
	self string
}

func (f memFetcher) source(ctx context.Context, peer string) (Source, error) {
	f.m.mu.RLock()
	d := f.m.delay
	src := f.m.sources[peer]
	f.m.mu.RUnlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	if !f.m.Reachable(f.self, peer) {
		return nil, fmt.Errorf("%s -> %s: %w", f.self, peer, ErrUnreachable)
	}
	return src, nil
}

func (f memFetcher) Head(ctx context.Context, peer string) (Version, error) {
	src, err := f.source(ctx, peer)
	if err != nil {
		return Version{}, err
	}
	v, err := src.Head()
	return copyVersion(v), err
}

func (f memFetcher) Get(ctx context.Context, peer string, id ID) (Record, error) {
	src, err := f.source(ctx, peer)
	if err != nil {
		return Record{}, err
	}
	r, err := src.Record(id)
	if err != nil {
		return Record{}, err
	}
	return Record{Version: copyVersion(r.Version), Content: slices.Clone(r.Content)}, nil
}

func (f memFetcher) History(ctx context.Context, peer string) ([]Version, error) {
	src, err := f.source(ctx, peer)
	if err != nil {
		return nil, err
	}
	vs := src.Versions()
	out := make([]Version, len(vs))
	for i, v := range vs {
		out[i] = copyVersion(v)
	}
	return out, nil
}

func copyVersion(v Version) Version {
	v.Signature = slices.Clone(v.Signature)
	return v
}
