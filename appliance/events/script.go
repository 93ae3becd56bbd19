package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// scriptResult is what one script run produced.
type scriptResult struct {
	Output  []byte // the last maxOutput bytes of stdout and stderr together
	Written int64  // total bytes the script wrote
}

// runScript runs command with /bin/sh -c in its own process group, with the
// agent's environment plus env, stdin as its standard input, and stdout and
// stderr captured together (the last maxOut bytes). When ctx ends the whole
// process group is killed, so a hung script and its children never outlive
// their timeout; Wait returns at most a second later even if a grandchild
// escaped the group and holds the output pipe.
func runScript(ctx context.Context, command string, env []string, stdin []byte, maxOut int) (scriptResult, error) {
	out := &tailBuffer{max: maxOut}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = mergeEnv(os.Environ(), env)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the whole group the shell leads.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// The script exited 0 but left a background child holding its
		// output open: the script is done, the child is on its own.
		err = nil
	}
	res := scriptResult{Output: out.Bytes(), Written: out.written}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return res, fmt.Errorf("run script: killed: %w", ctxErr)
		}
		return res, fmt.Errorf("run script: %w", err)
	}
	return res, nil
}

// mergeEnv returns base with the variables of add appended, dropping any
// variable of base that add sets, so a script never sees two values.
func mergeEnv(base, add []string) []string {
	set := make(map[string]bool, len(add))
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	out := make([]string, 0, len(base)+len(add))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		// SHOAL_* and SERF_* belong to the event: never pass the agent's
		// own through, so a script sees exactly the
		// documented contract.
		if strings.HasPrefix(k, "SHOAL_") || strings.HasPrefix(k, "SERF_") {
			continue
		}
		if !set[k] {
			out = append(out, kv)
		}
	}
	return append(out, add...)
}

// tailBuffer keeps the last max bytes written to it (like serf's circbuf).
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	written int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.written += int64(len(p))
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return len(p), nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf)
}
