package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// cpuCgroups limits an agent's CPU with a cgroup it creates for the run:
// cgroup v2 (cpu.max) when the unified hierarchy at /sys/fs/cgroup has the
// cpu controller, else cgroup v1 (cpu.cfs_quota_us) at /sys/fs/cgroup/cpu.
type cpuCgroups struct {
	run  string // run name, prefix of every cgroup created
	v2   bool
	root string // hierarchy mount point

	mu      sync.Mutex
	created []string
}

const cpuPeriodUS = 100000

// newCPUCgroups finds a usable cpu controller; the error says why none is.
func newCPUCgroups(run string) (*cpuCgroups, error) {
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		if !strings.Contains(" "+strings.TrimSpace(string(b))+" ", " cpu ") {
			return nil, errors.New("cgroup v2 without the cpu controller")
		}
		sub, _ := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
		if !strings.Contains(" "+strings.TrimSpace(string(sub))+" ", " cpu ") {
			if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+cpu"), 0o644); err != nil {
				return nil, fmt.Errorf("cgroup v2: enable cpu controller: %w", err)
			}
		}
		return &cpuCgroups{run: run, v2: true, root: "/sys/fs/cgroup"}, nil
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"); err == nil {
		return &cpuCgroups{run: run, root: "/sys/fs/cgroup/cpu"}, nil
	}
	return nil, errors.New("no cgroup cpu controller (neither v2 cpu.max nor v1 /sys/fs/cgroup/cpu)")
}

// current returns pid's cgroup path in this hierarchy.
func (c *cpuCgroups) current(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if c.v2 && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if !c.v2 {
			for _, ctl := range strings.Split(parts[1], ",") {
				if ctl == "cpu" {
					return parts[2], nil
				}
			}
		}
	}
	return "", fmt.Errorf("cgroup of %d not found", pid)
}

// limit moves pid into a new cgroup limited to percent% of one CPU. The
// returned function moves it back and removes the cgroup.
func (c *cpuCgroups) limit(node, pid, percent int) (func() error, error) {
	orig, err := c.current(pid)
	if err != nil {
		return nil, fmt.Errorf("cpu quota: %w", err)
	}
	dir := filepath.Join(c.root, fmt.Sprintf("%s-n%d", c.run, node))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("cpu quota: %w", err)
	}
	c.mu.Lock()
	c.created = append(c.created, dir)
	c.mu.Unlock()
	quota := cpuPeriodUS * percent / 100
	if c.v2 {
		err = os.WriteFile(filepath.Join(dir, "cpu.max"), fmt.Appendf(nil, "%d %d", quota, cpuPeriodUS), 0o644)
	} else {
		err = os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(cpuPeriodUS)), 0o644)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quota)), 0o644)
		}
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	}
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("cpu quota: %w", err)
	}
	return func() error {
		err := os.WriteFile(filepath.Join(c.root, orig, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such process") {
			return fmt.Errorf("cpu quota: move %d back: %w", pid, err)
		}
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cpu quota: remove %s: %w", dir, err)
		}
		return nil
	}, nil
}

// cleanup removes every cgroup created (after the agents are gone).
func (c *cpuCgroups) cleanup() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.created {
		_ = os.Remove(d)
	}
	c.created = nil
}
