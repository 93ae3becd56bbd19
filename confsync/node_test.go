package confsync

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
)

const converge = 20 * time.Second // generous: loaded 2-core machines

func TestPropagation(t *testing.T) {
	ns := names(5)
	boot := testConfig("rev = 0", members(ns)...)
	c := newCluster(t, ns, boot, nil)
	gen, _ := c.node("n00").Current()
	c.waitHead(gen.ID(), converge) // identical bootstrap => identical genesis

	for i, origin := range []string{"n00", "n03", "n01"} {
		content := testConfig(fmt.Sprintf("rev = %d", i+1), members(ns)...)
		v, err := c.node(origin).Propose(content)
		if err != nil {
			t.Fatalf("Propose on %s: %v", origin, err)
		}
		if v.Counter != uint64(i+1) {
			t.Errorf("Propose on %s: counter = %d, want %d", origin, v.Counter, i+1)
		}
		c.waitHead(v.ID(), converge)
		for n, node := range c.live() {
			_, got := node.Current()
			if !bytes.Equal(got, content) {
				t.Errorf("%s: content differs after %s", n, v)
			}
		}
	}
	// Every node applied each version once, in order, and no conflicts.
	for n, el := range c.evs {
		if got := len(el.of(EventConflict)); got != 0 {
			t.Errorf("%s: %d conflict events, want 0", n, got)
		}
		if got := len(el.of(EventRejected)); got != 0 {
			t.Errorf("%s: %d rejected events, want 0", n, got)
		}
	}
	// Subscribers see the current version.
	ch, cancel := c.node("n04").Subscribe()
	defer cancel()
	select {
	case u := <-ch:
		want, _ := c.node("n04").Current()
		if u.Version.ID() != want.ID() {
			t.Errorf("Subscribe: got %s, want %s", u.Version, want)
		}
	case <-time.After(time.Second):
		t.Fatal("Subscribe: no initial update")
	}
}

// rogue is a peer that serves one fixed record and counts fetches.
type rogue struct {
	rec     Record
	fetches atomic.Int64
}

func (r *rogue) Head() (Version, error) { return r.rec.Version, nil }
func (r *rogue) Record(id ID) (Record, error) {
	r.fetches.Add(1)
	if id != r.rec.Version.ID() {
		return Record{}, ErrNotFound
	}
	return r.rec, nil
}
func (r *rogue) Versions() []Version { return []Version{r.rec.Version} }

func TestRejectedOrigins(t *testing.T) {
	ns := names(4)
	// n03 is restricted; "ghost" is no member at all.
	boot := testConfig("rev = 0", members(ns, "n03")...)
	evil := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

	tests := []struct {
		name    string
		origin  string // claimed origin
		key     ed25519.PrivateKey
		counter uint64
		want    error
	}{
		{"restricted origin", "n03", testKey("n03"), 5, ErrRestricted},
		{"forged signature", "n00", evil, 5, ErrBadSignature},
		{"unknown origin", "ghost", testKey("ghost"), 5, ErrUnknownOrigin},
		{"restricted, tiny counter", "n03", testKey("n03"), 1, ErrRestricted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, ns[:3], boot, nil)
			gen, _ := c.node("n00").Current()
			content := testConfig("rev = 666", members(ns)...)
			v := Version{Counter: tt.counter, Origin: tt.origin, Parent: gen.ID(), ContentHash: HashContent(content), Time: time.Now()}
			v.Sign(tt.key)
			rg := &rogue{rec: Record{Version: v, Content: content}}
			c.net.Register("n03", rg)

			// Announce it repeatedly, as heartbeats would.
			for range 20 {
				for _, node := range c.live() {
					node.Observe("n03", v.Counter, v.ID())
				}
				time.Sleep(10 * time.Millisecond)
			}
			waitFor(t, converge, "a rejection on every node", func() (bool, string) {
				var missing []string
				for _, n := range ns[:3] {
					if len(c.evs[n].of(EventRejected)) == 0 {
						missing = append(missing, n)
					}
				}
				return len(missing) == 0, fmt.Sprint(missing)
			})
			// A few more announcements must not cause more fetches.
			before := rg.fetches.Load()
			for range 10 {
				for _, node := range c.live() {
					node.Observe("n03", v.Counter, v.ID())
				}
			}
			time.Sleep(100 * time.Millisecond) // give a wrong retry a chance to show
			if after := rg.fetches.Load(); after != before {
				t.Errorf("rejected version fetched again: %d fetches, then %d", before, after)
			}
			for _, n := range ns[:3] {
				evs := c.evs[n].of(EventRejected)
				if len(evs) != 1 {
					t.Errorf("%s: %d rejected events, want exactly 1", n, len(evs))
				}
				if !errors.Is(evs[0].Err, tt.want) {
					t.Errorf("%s: rejected because %v, want %v", n, evs[0].Err, tt.want)
				}
				if evs[0].Version.ID() != v.ID() || evs[0].Peer != "n03" {
					t.Errorf("%s: event names %s from %q, want %s from n03", n, evs[0].Version, evs[0].Peer, v)
				}
				cur, _ := c.node(n).Current()
				if cur.ID() != gen.ID() {
					t.Errorf("%s: current = %s, want genesis kept", n, cur)
				}
			}
		})
	}
}

func TestRestrictedNodeCannotPropose(t *testing.T) {
	ns := names(2)
	c := newCluster(t, ns, testConfig("rev = 0", members(ns, "n01")...), nil)
	_, err := c.node("n01").Propose(testConfig("rev = 1", members(ns)...))
	if !errors.Is(err, ErrRestricted) {
		t.Fatalf("Propose on restricted node: err = %v, want ErrRestricted", err)
	}
	// Unchanged content and invalid content are refused too.
	cur, content := c.node("n00").Current()
	if _, err := c.node("n00").Propose(content); !errors.Is(err, ErrUnchanged) {
		t.Errorf("Propose(same content): err = %v, want ErrUnchanged", err)
	}
	if _, err := c.node("n00").Propose(append(bytes.Clone(content), "# INVALID\n"...)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Propose(invalid): err = %v, want ErrInvalid", err)
	}
	if now, _ := c.node("n00").Current(); now.ID() != cur.ID() {
		t.Errorf("refused proposals changed the current version to %s", now)
	}
}

func TestConcurrentEdits(t *testing.T) {
	ns := names(6)
	boot := testConfig("rev = 0", members(ns)...)
	c := newCluster(t, ns, boot, nil)
	gen, _ := c.node("n00").Current()
	c.waitHead(gen.ID(), converge)

	// Partition n01 and n04 from everyone, edit on both, heal.
	for _, n := range ns {
		for _, m := range []string{"n01", "n04"} {
			if n != m {
				c.net.Cut(n, m, true)
			}
		}
	}
	va, err := c.node("n01").Propose(testConfig("rev = 100 # from n01", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	vb, err := c.node("n04").Propose(testConfig("rev = 200 # from n04", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	if va.Counter != vb.Counter {
		t.Fatalf("counters %d and %d: want a true tie on counter", va.Counter, vb.Counter)
	}
	for _, n := range ns {
		for _, m := range []string{"n01", "n04"} {
			c.net.Cut(n, m, false)
		}
	}
	winner, loser := vb, va // same counter: higher origin name wins
	c.waitHead(winner.ID(), converge)
	waitFor(t, converge, "loser in every node's history", func() (bool, string) {
		var missing []string
		for n, node := range c.live() {
			r, err := node.Get(loser.ID())
			if err != nil || r.Status != StatusLoser {
				missing = append(missing, fmt.Sprintf("%s(%v %s)", n, err, r.Status))
			}
		}
		return len(missing) == 0, fmt.Sprint(missing)
	})
	for _, n := range ns {
		evs := c.evs[n].of(EventConflict)
		if len(evs) == 0 {
			t.Errorf("%s: no config-conflict event", n)
			continue
		}
		got := [2]ID{evs[0].Version.ID(), evs[0].Winner.ID()}
		if diff := cmp.Diff([2]ID{loser.ID(), winner.ID()}, got); diff != "" {
			t.Errorf("%s: conflict event (loser, winner) (-want +got):\n%s", n, diff)
		}
	}
	// The next edit anywhere builds on the winner.
	v, err := c.node("n02").Propose(testConfig("rev = 300", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	if v.Parent != winner.ID() || v.Counter != winner.Counter+1 {
		t.Errorf("next edit: parent %s counter %d, want %s %d", v.Parent.Short(), v.Counter, winner.ID().Short(), winner.Counter+1)
	}
	c.waitHead(v.ID(), converge)
}

// TestAcceptOrderIndependent feeds three concurrent edits to fresh nodes in
// every order and expects the same current version and the same losers.
func TestAcceptOrderIndependent(t *testing.T) {
	ns := names(3)
	boot := testConfig("rev = 0", members(ns)...)
	gen := Version{ContentHash: HashContent(boot)}
	var edits []Record
	for i, n := range ns {
		content := testConfig(fmt.Sprintf("rev = %d", 10+i), members(ns)...)
		v := Version{Counter: 1, Origin: n, Parent: gen.ID(), ContentHash: HashContent(content)}
		if n == "n00" {
			v.Counter = 2 // n00 had seen more: wins despite the lower name
		}
		v.Sign(testKey(n))
		edits = append(edits, Record{Version: v, Content: content})
	}
	want := edits[0].Version.ID()
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for _, p := range perms {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			node, err := New(Options{Self: "n00", Key: testKey("n00"), Dir: t.TempDir(), Bootstrap: boot, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range p {
				node.mu.Lock()
				if err := node.acceptLocked(edits[i], edits[i].Version.Origin, false); err != nil {
					t.Errorf("accept %s: %v", edits[i].Version, err)
				}
				node.mu.Unlock()
			}
			cur, _ := node.Current()
			if cur.ID() != want {
				t.Errorf("current = %s, want %s", cur, edits[0].Version)
			}
			var got []string
			for _, h := range node.History() {
				got = append(got, fmt.Sprintf("%s:%s", h.Version.Origin, h.Status))
			}
			// Whatever was applied first and then lost is marked a loser.
			wantH := []string{":applied", "n01:conflict-loser", "n02:conflict-loser", "n00:applied"}
			if diff := cmp.Diff(wantH, got); diff != "" {
				t.Errorf("history (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNodeDownCatchesUp(t *testing.T) {
	ns := names(4)
	boot := testConfig("rev = 0", members(ns)...)
	c := newCluster(t, ns, boot, nil)
	gen, _ := c.node("n00").Current()
	c.waitHead(gen.ID(), converge)
	c.kill("n03")

	// Edits while n03 is down, including a membership change: "late" joins
	// (added by n00), then makes an edit of its own. n03 can verify late's
	// edit only by applying the versions in order.
	withLate := append(members(ns), testMember{name: "late", canUpdate: true})
	v1, err := c.node("n00").Propose(testConfig("rev = 1", withLate...))
	if err != nil {
		t.Fatal(err)
	}
	c.waitHead(v1.ID(), converge)
	_, content := c.node("n00").Current()
	c.dirs["late"] = t.TempDir()
	if err := Install(c.dirs["late"], v1, content); err != nil {
		t.Fatal(err)
	}
	late := c.start("late", nil)
	v2, err := late.Propose(testConfig("rev = 2", withLate...))
	if err != nil {
		t.Fatalf("Propose on late: %v", err)
	}
	c.waitHead(v2.ID(), converge)
	v3, err := c.node("n01").Propose(testConfig("rev = 3", withLate...))
	if err != nil {
		t.Fatal(err)
	}
	c.waitHead(v3.ID(), converge)

	// n03 comes back with its old data dir and hears no heartbeats:
	// anti-entropy alone must bring it up to date.
	c.deaf("n03")
	n3 := c.start("n03", nil)
	c.waitHead(v3.ID(), converge)
	var got []uint64
	for _, h := range n3.History() {
		got = append(got, h.Version.Counter)
	}
	if diff := cmp.Diff([]uint64{0, 1, 2, 3}, got); diff != "" {
		t.Errorf("n03 history counters (-want +got):\n%s", diff)
	}
	if evs := c.evs["n03"].of(EventRejected); len(evs) != 0 {
		t.Errorf("n03 rejected %d versions while catching up: %v", len(evs), evs[0].Err)
	}
}

func TestValidationFailureNotRetried(t *testing.T) {
	ns := names(3)
	boot := testConfig("rev = 0", members(ns)...)
	// n02 validates more strictly than the others (e.g. an older build).
	strict := func(o *Options) {
		if o.Self == "n02" {
			o.Validate = func(c []byte) error {
				if bytes.Contains(c, []byte("feature_x")) {
					return errors.New("unknown key feature_x")
				}
				return nil
			}
		}
	}
	c := newCluster(t, ns, boot, strict)
	gen, _ := c.node("n00").Current()
	c.waitHead(gen.ID(), converge)
	bad, err := c.node("n00").Propose(testConfig("feature_x = 1", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, converge, "n02 to reject", func() (bool, string) {
		return len(c.evs["n02"].of(EventRejected)) > 0, ""
	})
	// Heartbeats keep announcing it; n02 must not re-fetch or re-report.
	time.Sleep(600 * time.Millisecond) // a dozen heartbeats and an anti-entropy round
	if evs := c.evs["n02"].of(EventRejected); len(evs) != 1 || !errors.Is(evs[0].Err, ErrInvalid) {
		t.Errorf("n02: rejected events %v, want exactly one ErrInvalid", evs)
	}
	if cur, _ := c.node("n02").Current(); cur.ID() != gen.ID() {
		t.Errorf("n02 current = %s, want genesis kept", cur)
	}
	if r, err := c.node("n02").Get(bad.ID()); err != nil || r.Status != StatusRejected {
		t.Errorf("n02 history: %v status %q, want the version recorded as rejected", err, r.Status)
	}
	// A later valid edit (built on the bad one) applies on n02.
	good, err := c.node("n01").Propose(testConfig("rev = 2", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	c.waitHead(good.ID(), converge)
	if evs := c.evs["n02"].of(EventConflict); len(evs) != 0 {
		t.Errorf("n02: %d conflict events, want 0 (rejected version is an ancestor)", len(evs))
	}
}

func TestCorruptedFileRefetched(t *testing.T) {
	ns := names(3)
	boot := testConfig("rev = 0", members(ns)...)
	c := newCluster(t, ns, boot, nil)
	v1, err := c.node("n00").Propose(testConfig("rev = 1", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := c.node("n00").Propose(testConfig("rev = 2", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	c.waitHead(v2.ID(), converge)

	flip := func(path string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-3] ^= 0x20 // in the content: the hash no longer matches
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("current version, found at start", func(t *testing.T) {
		c.kill("n02")
		path := filepath.Join(c.dirs["n02"], versionsDir, recordName(v2))
		flip(path)
		n2 := c.start("n02", nil)
		if evs := c.evs["n02"].of(EventCorrupt); len(evs) != 1 {
			t.Fatalf("corrupt events = %d, want 1", len(evs))
		}
		q, _ := os.ReadDir(filepath.Join(c.dirs["n02"], quarantineDir))
		if len(q) != 1 {
			t.Errorf("quarantine holds %d files, want 1", len(q))
		}
		c.waitHead(v2.ID(), converge)
		if _, err := n2.Get(v2.ID()); err != nil {
			t.Errorf("re-fetched version: %v", err)
		}
		if _, bad, err := mustStore(t, c.dirs["n02"]).Load(); err != nil || len(bad) != 0 {
			t.Errorf("store after re-fetch: %d bad files, err %v", len(bad), err)
		}
	})
	t.Run("history version, found by scrub", func(t *testing.T) {
		n1 := c.node("n01")
		flip(filepath.Join(c.dirs["n01"], versionsDir, recordName(v1)))
		if got := n1.Scrub(); got != 1 {
			t.Fatalf("Scrub() = %d, want 1", got)
		}
		waitFor(t, converge, "v1 re-fetched on n01", func() (bool, string) {
			_, err := n1.Get(v1.ID())
			return err == nil, fmt.Sprint(err)
		})
		if _, bad, err := mustStore(t, c.dirs["n01"]).Load(); err != nil || len(bad) != 0 {
			t.Errorf("store after re-fetch: %d bad files, err %v", len(bad), err)
		}
	})
}

func mustStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRetention(t *testing.T) {
	ns := names(2)
	c := newCluster(t, ns, testConfig("rev = 0", members(ns)...), func(o *Options) { o.Retention = 4 })
	var last Version
	for i := 1; i <= 10; i++ {
		v, err := c.node("n00").Propose(testConfig(fmt.Sprintf("rev = %d", i), members(ns)...))
		if err != nil {
			t.Fatal(err)
		}
		last = v
	}
	c.waitHead(last.ID(), converge)
	for _, n := range ns {
		h := c.node(n).History()
		var got []uint64
		for _, e := range h {
			got = append(got, e.Version.Counter)
		}
		if diff := cmp.Diff([]uint64{7, 8, 9, 10}, got); diff != "" {
			t.Errorf("%s history (-want +got):\n%s", n, diff)
		}
		files, _ := os.ReadDir(filepath.Join(c.dirs[n], versionsDir))
		if len(files) != 4 {
			t.Errorf("%s: %d files in versions/, want 4", n, len(files))
		}
	}
	// Rollback proposes old content as a new version.
	old, err := c.node("n01").Find("8")
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.node("n01").Rollback("8")
	if err != nil {
		t.Fatal(err)
	}
	if v.Counter != 11 || v.ContentHash != old.Version.ContentHash {
		t.Errorf("Rollback: %s hash %x, want counter 11 with content of #8", v, v.ContentHash[:4])
	}
	c.waitHead(v.ID(), converge)
}

// TestCrashDuringWrite interrupts each step of writing a new version and
// checks what a restart finds.
func TestCrashDuringWrite(t *testing.T) {
	ns := names(1)
	boot := testConfig("rev = 0", members(ns)...)
	next := testConfig("rev = 1", members(ns)...)
	tests := []struct {
		phase   string // written (before fsync), synced (before rename), renamed (before dir fsync)
		file    string // "record" or "HEAD"
		wantNew bool   // after restart the new version is current
	}{
		{"written", "record", false},
		{"synced", "record", false},
		{"renamed", "record", true}, // complete record: restart finishes the job
		{"written", "HEAD", true},
		{"synced", "HEAD", true},
		{"renamed", "HEAD", true},
	}
	for _, tt := range tests {
		t.Run(tt.phase+" "+tt.file, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Self: "n00", Key: testKey("n00"), Dir: dir, Bootstrap: boot, Logger: zerolog.Nop()}
			node, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			old, _ := node.Current()
			crash := errors.New("simulated crash")
			node.st.failpoint = func(step string) error {
				phase, name, _ := strings.Cut(step, ":")
				isRecord := strings.HasSuffix(name, recordExt)
				if phase == tt.phase && (tt.file == "record") == isRecord {
					return crash
				}
				return nil
			}
			if _, err := node.Propose(next); !errors.Is(err, crash) {
				t.Fatalf("Propose: err = %v, want the simulated crash", err)
			}
			el := &eventLog{}
			o.Events = el.add
			o.Bootstrap = nil
			again, err := New(o)
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			cur, content := again.Current()
			if tt.wantNew {
				if cur.Counter != 1 || cur.Parent != old.ID() || !bytes.Equal(content, next) {
					t.Errorf("after restart: %s, want the new version", cur)
				}
			} else if cur.ID() != old.ID() || !bytes.Equal(content, boot) {
				t.Errorf("after restart: %s, want previous version %s intact", cur, old)
			}
			if evs := el.of(EventCorrupt); len(evs) != 0 {
				t.Errorf("restart found %d corrupt records: %v", len(evs), evs[0].Err)
			}
			for _, d := range []string{dir, filepath.Join(dir, versionsDir)} {
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					if bytes.HasPrefix([]byte(e.Name()), []byte(tmpPrefix)) {
						t.Errorf("temp file %s left after restart", e.Name())
					}
				}
			}
		})
	}
}

func TestHistoryOrder(t *testing.T) {
	ns := names(2)
	c := newCluster(t, ns, testConfig("rev = 0", members(ns)...), nil)
	for i := 1; i <= 3; i++ {
		if _, err := c.node("n00").Propose(testConfig(fmt.Sprintf("rev = %d", i), members(ns)...)); err != nil {
			t.Fatal(err)
		}
	}
	h := c.node("n00").History()
	if !slices.IsSortedFunc(h, func(a, b HistoryEntry) int { return cmpVersion(a.Version, b.Version) }) {
		t.Error("History not sorted oldest first")
	}
	if !h[len(h)-1].Current {
		t.Error("last History entry is not marked current")
	}
	if _, err := c.node("n00").Find("zzzz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find(zzzz): err = %v, want ErrNotFound", err)
	}
	r, err := c.node("n00").Find(h[2].ID.String()[:10])
	if err != nil || r.Version.Counter != 2 {
		t.Errorf("Find(id prefix) = %s, %v; want counter 2", r.Version, err)
	}
}
