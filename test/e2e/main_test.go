package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
)

// prefix starts every namespace these tests create.
const prefix = "she-"

// shoalBin is the agent binary built once by TestMain ("" when not root).
var shoalBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips loudly
	}
	if _, err := harness.CleanupStale(prefix); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cleanup of stale namespaces: %v\n", err)
	}
	if bin := os.Getenv("SHOAL_E2E_BIN"); bin != "" {
		shoalBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "shoal-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shoalBin = filepath.Join(dir, "shoal")
	if err := e2ekit.Build(ctx, shoalBin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// needRoot skips the test unless it runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth pairs and bridges and runs shoal agents in them")
	}
}

// newCluster builds a topology with agents for one test and tears it down
// when the test ends, printing the agent logs if it failed.
func newCluster(t *testing.T, opts e2ekit.Options) *e2ekit.Cluster {
	t.Helper()
	needRoot(t)
	opts.Prefix = prefix
	opts.Binary = shoalBin
	opts.KeepDir = os.Getenv("SHOAL_E2E_KEEP") != ""
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := e2ekit.New(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if opts.KeepDir {
			t.Logf("kept %s", c.Net.Dir())
		}
		if t.Failed() {
			var b strings.Builder
			c.DumpLogs(&b, 6000)
			t.Log(b.String())
		}
		if err := c.Close(); err != nil {
			t.Errorf("tear down: %v", err)
		}
	})
	return c
}

// deadline returns a context for one wait (generous: convergence on a
// loaded 2-core machine).
func deadline(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// wait is the default convergence deadline.
const wait = 15 * time.Second

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
