package chaos

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shortSeed and shortDuration fix the chaos run of `make test`.
const (
	shortSeed     = 1078
	shortDuration = 45 * time.Second
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, nftables, cgroups and XDP for the chaos run")
	}
}

// shoalBinary returns $SHOAL_BIN or builds ./cmd/shoal into a temporary
// directory (never the shared bin/shoal, which other builds rewrite).
func shoalBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("SHOAL_BIN"); b != "" {
		return b
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
	out := filepath.Join(t.TempDir(), "shoal")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/shoal")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build shoal: %v\n%s", err, b)
	}
	return out
}

// TestChaosShort is the bounded chaos run of `make test`: a fixed seed,
// 45 s of faults on 5 agents, every invariant of the oracle asserted.
func TestChaosShort(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	bin := shoalBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Execute(ctx, Options{Binary: bin, Seed: shortSeed, Duration: shortDuration, Log: &log,
		Command: "go test -run TestChaosShort ./test/chaos/"})
	if err != nil {
		t.Fatalf("chaos run: %v\nprogress:\n%s", err, log.String())
	}
	t.Logf("progress:\n%s", log.String())
	t.Logf("report:\n%s", rep.Text())
	if len(rep.Faults) < 4 {
		t.Errorf("only %d faults injected in %v", len(rep.Faults), shortDuration)
	}
	for _, f := range rep.Faults {
		if f.Err != "" {
			t.Errorf("fault %s: %s", f.Spec, f.Err)
		}
	}
	if !rep.OK() {
		t.Errorf("%d invariant violations (report above)", len(rep.Violations))
	}
}

// TestExecuteRejectsBadOptions needs no root.
func TestExecuteRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{Duration: time.Hour}, {Nodes: 2}, {Nodes: 9}} {
		if _, err := Execute(context.Background(), o); err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("Execute(%+v) = %v, want an options error", o, err)
		}
	}
}
