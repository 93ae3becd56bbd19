package e2ekit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RepoRoot returns the directory holding the module's go.mod, searching
// upwards from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/shoal-project/shoal\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repo root: no go.mod of github.com/shoal-project/shoal above the working directory")
		}
		dir = parent
	}
}

// Build compiles ./cmd/shoal of the repository into out (static, like
// `make build`).
func Build(ctx context.Context, out string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/shoal")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build shoal: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// Binary returns the shoal binary a test runs: $SHOAL_BIN when set (a
// relative path is taken from the repository root, e.g. bin/shoal), else
// ./cmd/shoal built into the test's temporary directory (never the shared
// bin/shoal, which other builds rewrite).
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("SHOAL_BIN"); b != "" {
		if filepath.IsAbs(b) {
			return b
		}
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(root, b)
	}
	out := filepath.Join(t.TempDir(), "shoal")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := Build(ctx, out); err != nil {
		t.Fatal(err)
	}
	return out
}
