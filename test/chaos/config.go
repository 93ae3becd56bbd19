package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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

// socketApplier posts a new config to the agent's admin socket
// (POST /v1/config, what `shoal config apply` does). Each call renders the
// cluster config with a different garp_count on the first group, so every
// apply is a new version with the same traffic IPs.
type socketApplier struct {
	r    *Run
	opts shoalrun.Options

	mu  sync.Mutex
	seq int
}

// detectConfigApply reports whether the agent serves its config over the
// admin socket (GET /v1/config); the config-kill fault is enabled only
// then.
func detectConfigApply(ctx context.Context, a *Agents, node int) error {
	var v map[string]any
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return a.get(cctx, node, "/v1/config", &v)
}

func (c *socketApplier) start(ctx context.Context, node int) error {
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	o := c.opts
	o.Groups = append([]shoalrun.Group(nil), o.Groups...)
	o.Groups[0].GARPCount = 2 + seq%4
	body := shoalrun.RenderCluster(c.r.net, o, c.r.agents.Files.PublicKeys)
	cl := unixClient(c.r.agents.Files.Sockets[node], 10*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://shoal/v1/config", bytes.NewReader([]byte(body)))
	if err != nil {
		return fmt.Errorf("config apply: %w", err)
	}
	started := make(chan struct{})
	go func() {
		close(started)
		// The outcome is judged by the oracle (a version accepted anywhere
		// must survive), not by this request, which the kill may cut off.
		resp, err := cl.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-started
	return nil
}
