package confsync

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// testKey returns a deterministic key for a member name.
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("confsync-test-key:" + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

type testMember struct {
	name      string
	key       ed25519.PublicKey
	canUpdate bool
	location  string
}

// testConfig renders a cluster config with the given members and a body
// that makes each edit distinct.
func testConfig(body string, members ...testMember) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "[cluster]\nname = \"test\"\n%s\n", body)
	for i, m := range members {
		key := m.key
		if key == nil {
			key = testKey(m.name).Public().(ed25519.PublicKey)
		}
		fmt.Fprintf(&b, "\n[[member]]\nname = %q\naddress = \"10.99.0.%d\"\npublic_key = %q\ncan_update = %v\n", m.name, i+1, FormatPublicKey(key), m.canUpdate)
		if m.location != "" {
			fmt.Fprintf(&b, "location = %q\n", m.location)
		}
	}
	return []byte(b.String())
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("n%02d", i)
	}
	return out
}

func members(ns []string, restricted ...string) []testMember {
	out := make([]testMember, len(ns))
	for i, n := range ns {
		out[i] = testMember{name: n, canUpdate: true}
		for _, r := range restricted {
			if r == n {
				out[i].canUpdate = false
			}
		}
	}
	return out
}

// testValidate rejects content containing the marker INVALID; real
// validation is confsync/config's job.
func testValidate(content []byte) error {
	if strings.Contains(string(content), "INVALID") {
		return errors.New("contains INVALID")
	}
	return nil
}

type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) of(t EventType) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.evs {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

// cluster is N in-process nodes on a MemNetwork with simulated heartbeats:
// every hb each reachable pair exchanges (counter, id) through Observe.
type cluster struct {
	t     testing.TB
	net   *MemNetwork
	names []string
	dirs  map[string]string
	nodes map[string]*Node
	stop  map[string]func()
	evs   map[string]*eventLog
	opts  func(*Options)
	mu    sync.Mutex
	noHB  map[string]bool // nodes that hear no heartbeats
	hb    time.Duration
}

func newCluster(t testing.TB, ns []string, bootstrap []byte, opts func(*Options)) *cluster {
	c := &cluster{
		t: t, net: NewMemNetwork(), names: ns, dirs: map[string]string{},
		nodes: map[string]*Node{}, stop: map[string]func(){}, evs: map[string]*eventLog{},
		opts: opts, hb: 50 * time.Millisecond, noHB: map[string]bool{},
	}
	for _, n := range ns {
		c.dirs[n] = t.TempDir()
		c.start(n, bootstrap)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.heartbeats(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.mu.Lock()
		stops := c.stop
		c.stop = map[string]func(){}
		c.mu.Unlock()
		for _, s := range stops {
			s()
		}
	})
	return c
}

// start (re)creates node n from its data dir and runs it.
func (c *cluster) start(n string, bootstrap []byte) *Node {
	c.t.Helper()
	el := &eventLog{}
	o := Options{
		Self: n, Key: testKey(n), Dir: c.dirs[n], Bootstrap: bootstrap,
		Validate: testValidate, Transport: c.net.Transport(n), Logger: zerolog.Nop(),
		Events: el.add, AntiEntropyInterval: 300 * time.Millisecond, FetchTimeout: 2 * time.Second,
	}
	if c.opts != nil {
		c.opts(&o)
	}
	node, err := New(o)
	if err != nil {
		c.t.Fatalf("New(%s): %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = node.Run(ctx)
	}()
	c.mu.Lock()
	c.nodes[n], c.evs[n] = node, el
	c.stop[n] = func() { cancel(); <-done }
	c.mu.Unlock()
	c.net.Register(n, node)
	c.net.SetDown(n, false)
	return node
}

// kill stops node n's loops and makes it unreachable.
func (c *cluster) kill(n string) {
	c.net.SetDown(n, true)
	c.mu.Lock()
	s := c.stop[n]
	delete(c.stop, n)
	delete(c.nodes, n)
	c.mu.Unlock()
	if s != nil {
		s()
	}
}

// deaf stops heartbeats reaching n (anti-entropy still works).
func (c *cluster) deaf(n string) {
	c.mu.Lock()
	c.noHB[n] = true
	c.mu.Unlock()
}

func (c *cluster) isDeaf(n string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.noHB[n]
}

func (c *cluster) node(n string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[n]
}

func (c *cluster) live() map[string]*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]*Node, len(c.nodes))
	for k, v := range c.nodes {
		out[k] = v
	}
	return out
}

func (c *cluster) heartbeats(ctx context.Context) {
	t := time.NewTicker(c.hb)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		live := c.live()
		for from, fn := range live {
			counter, id := fn.Announcement()
			for to, tn := range live {
				if to != from && c.net.Reachable(from, to) && !c.isDeaf(to) {
					tn.Observe(from, counter, id)
				}
			}
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, last)
}

// waitHead waits until every live node's current version is id.
func (c *cluster) waitHead(id ID, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "every node at "+id.Short(), func() (bool, string) {
		var bad []string
		for n, node := range c.live() {
			v, _ := node.Current()
			if v.ID() != id {
				bad = append(bad, fmt.Sprintf("%s@%s", n, v))
			}
		}
		return len(bad) == 0, strings.Join(bad, ", ")
	})
}
