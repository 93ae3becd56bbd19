package gossip

import (
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// testLog is a warn-level logger into t's log that goes quiet once the test
// and its cleanups are over: serf and memberlist goroutines may still log a
// moment after their agent closed, and t.Log after completion panics.
func testLog(t testing.TB) zerolog.Logger {
	w := &quietAfter{t: t}
	t.Cleanup(func() { // registered first: runs after every later cleanup
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return zerolog.New(w).Level(zerolog.WarnLevel)
}

type quietAfter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *quietAfter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(string(p))
	}
	return len(p), nil
}
