package events

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
)

// waitFor polls cond every 10 ms until it holds or the deadline passes.
func waitFor(t *testing.T, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", deadline, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newTestDispatcher starts a dispatcher that logs into a buffer and is
// closed when the test ends.
func newTestDispatcher(t *testing.T, cfg Config) (*Dispatcher, *syncBuffer) {
	t.Helper()
	return newNamedDispatcher(t, "a", cfg)
}

// newNamedDispatcher is newTestDispatcher for the node named self.
func newNamedDispatcher(t *testing.T, self string, cfg Config) (*Dispatcher, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	d, err := New(cfg, self, zerolog.New(logs))
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	d.backoffBase = 5 * time.Millisecond
	t.Cleanup(d.Close)
	return d, logs
}

// actionStats returns one action's counters.
func actionStats(d *Dispatcher, name string) ActionStats {
	return d.Stats().Actions[name]
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readGolden returns testdata/<name>.
func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fileLines returns the lines of path, or nil if it does not exist yet.
func fileLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// compareScriptOutput compares what a contract script wrote to base.env
// (its environment, sorted) and base.stdin with testdata/golden.env (sorted
// here) and testdata/golden.stdin.
func compareScriptOutput(t *testing.T, base, golden string) {
	t.Helper()
	gotEnv, err := os.ReadFile(base + ".env")
	if err != nil {
		t.Fatal(err)
	}
	wantEnv := strings.Split(strings.TrimSuffix(string(readGolden(t, golden+".env")), "\n"), "\n")
	sort.Strings(wantEnv)
	if diff := cmp.Diff(strings.Join(wantEnv, "\n")+"\n", string(gotEnv)); diff != "" {
		t.Errorf("script environment vs %s.env (-want +got):\n%s", golden, diff)
	}
	gotStdin, err := os.ReadFile(base + ".stdin")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(readGolden(t, golden+".stdin")), string(gotStdin)); diff != "" {
		t.Errorf("script stdin vs %s.stdin (-want +got):\n%s", golden, diff)
	}
}
