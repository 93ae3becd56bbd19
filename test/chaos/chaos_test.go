package chaos

import (
	"context"
	"errors"
	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"os"
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

// shoalBinary is the binary under test: $SHOAL_BIN or a fresh build.
func shoalBinary(t *testing.T) string { return e2ekit.Binary(t) }

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
