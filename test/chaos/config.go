package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// configApplier starts a config apply on one node: a new version of the
// cluster config is handed to that node's agent, which writes and
// replicates it. start returns as soon as the apply is under way.
type configApplier interface {
	start(ctx context.Context, node int) error
}

// cliApplier applies configs with `shoal config apply --socket S FILE`,
// the admin-socket path the CLI uses. Each call renders the cluster config
// with a different garp_count on the first group, so every apply is a new
// version with the same traffic IPs.
type cliApplier struct {
	r    *Run
	opts shoalrun.Options

	mu  sync.Mutex
	seq int
}

// detectConfigApply reports whether the binary has `config apply`; the
// config-kill fault is enabled only then.
func detectConfigApply(bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "config", "apply", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s config apply --help: %v: %.200s", bin, err, out)
	}
	return nil
}

func (c *cliApplier) start(ctx context.Context, node int) error {
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	o := c.opts
	o.Groups = append([]shoalrun.Group(nil), o.Groups...)
	o.Groups[0].GARPCount = 2 + seq%4
	body := shoalrun.RenderCluster(c.r.net, o, c.r.agents.Files.PublicKeys)
	file := filepath.Join(c.r.agents.Files.Dir, fmt.Sprintf("apply-%d.toml", seq))
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		return fmt.Errorf("config apply: %w", err)
	}
	cmd := exec.CommandContext(ctx, c.opts.Binary, "config", "apply", "--socket", c.r.agents.Files.Sockets[node], file)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("config apply: %w", err)
	}
	// The apply's outcome is judged by the oracle (versions accepted
	// anywhere must survive), not by the command, which may be cut off by
	// the kill.
	go func() { _ = cmd.Wait() }()
	return nil
}
