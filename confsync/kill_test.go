package confsync

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const killChildEnv = "CONFSYNC_KILL_CHILD_DIR"

// TestKillChild is the child of TestKillDuringWrite: it proposes versions
// in a loop until it is killed. It does nothing in a normal run.
func TestKillChild(t *testing.T) {
	dir := os.Getenv(killChildEnv)
	if dir == "" {
		t.Skip("helper process for TestKillDuringWrite")
	}
	ns := names(1)
	node, err := New(Options{Self: "n00", Key: testKey("n00"), Dir: dir, Bootstrap: testConfig("rev = 0", members(ns)...), Logger: zerolog.Nop(), Retention: 8})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	for i := 1; ; i++ {
		// A large content makes the write window wide.
		body := fmt.Sprintf("rev = %d\n# %s", i, bytes.Repeat([]byte("x"), 256<<10))
		if _, err := node.Propose(testConfig(body, members(ns)...)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		if i == 2 {
			_ = os.WriteFile(filepath.Join(dir, "ready"), nil, 0o600)
		}
	}
}

// TestKillDuringWrite SIGKILLs a process that is writing versions at random
// moments and checks that the data dir always reopens on an intact version.
func TestKillDuringWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 4 {
		dir := t.TempDir()
		cmd := exec.Command(exe, "-test.run=^TestKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
		errPath := filepath.Join(t.TempDir(), "stderr")
		stderr, err := os.Create(errPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stderr.Close()
		waitFor(t, 30*time.Second, "child writing", func() (bool, string) {
			_, err := os.Stat(filepath.Join(dir, "ready"))
			msg, _ := os.ReadFile(errPath)
			return err == nil, string(msg)
		})
		time.Sleep(time.Duration(rand.N(40)) * time.Millisecond) // a random moment, not synchronisation
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		el := &eventLog{}
		node, err := New(Options{Self: "n00", Key: testKey("n00"), Dir: dir, Logger: zerolog.Nop(), Retention: 8, Events: el.add})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		v, content := node.Current()
		if content == nil || v.Counter < 2 || HashContent(content) != v.ContentHash {
			t.Errorf("round %d: current after kill = %s (%d bytes), want an intact version >= #2", round, v, len(content))
		}
		if evs := el.of(EventCorrupt); len(evs) != 0 {
			t.Errorf("round %d: %d corrupt records after kill: %v", round, len(evs), evs[0].Err)
		}
		if _, bad, err := mustStore(t, dir).Load(); err != nil || len(bad) != 0 {
			t.Errorf("round %d: store has %d bad records (%v)", round, len(bad), err)
		}
		t.Logf("round %d: killed; reopened at %s with %d versions", round, v, len(node.History()))
	}
}
