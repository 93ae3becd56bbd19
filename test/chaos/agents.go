package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/gossip"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// AgentStatus is the part of an agent's GET /v1/status the oracle reads.
// Heartbeats carries the gossip counters (rejections by reason, admission
// refusals); Goroutines is nil when the agent does not publish a count
// (agents built before it did).
type AgentStatus struct {
	appliance.Status
	Heartbeats gossip.Stats `json:"heartbeats"`
	Goroutines *int         `json:"goroutines,omitempty"`
}

// Exit is an agent that exited without the runner killing or stopping it.
type Exit struct {
	Node    int
	Time    time.Time
	Err     string
	LogTail string
}

// Agents runs `shoal agent` on nodes of a harness topology and restarts
// single agents (shoalrun.Cluster only starts and stops them all). Methods
// are safe for concurrent use.
type Agents struct {
	n     *harness.Net
	Files *shoalrun.Files
	bin   string
	env   []string

	mu       sync.Mutex
	procs    map[int]*harness.Proc
	intended map[*harness.Proc]bool // exits the runner caused
	starts   map[int][]time.Time
	exits    []Exit
	clients  map[int]*http.Client
}

// NewAgents writes the cluster files (shoalrun.WriteFiles) without
// starting anything. env is added to every agent's environment.
func NewAgents(n *harness.Net, opts shoalrun.Options, env []string) (*Agents, error) {
	if opts.Binary == "" {
		return nil, errors.New("agents: no shoal binary")
	}
	bin, err := filepath.Abs(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	opts.Binary = bin
	if err := shoalrun.CheckBinary(bin); err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	files, err := shoalrun.WriteFiles(n, opts)
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	a := &Agents{n: n, Files: files, bin: bin, env: env, procs: map[int]*harness.Proc{},
		intended: map[*harness.Proc]bool{}, starts: map[int][]time.Time{}, clients: map[int]*http.Client{}}
	for node, sock := range files.Sockets {
		a.clients[node] = unixClient(sock, 800*time.Millisecond)
	}
	return a, nil
}

// unixClient is an HTTP client for an admin socket. Keep-alives are off so
// the oracle's own connections never show up in the agent's FD count.
func unixClient(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// Start starts (or restarts) node's agent. It fails if one is running.
func (a *Agents) Start(node int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.procs[node]; p != nil && !p.Exited() {
		return fmt.Errorf("start agent on node %d: already running (pid %d)", node, p.Pid())
	}
	agentFile, ok := a.Files.Agents[node]
	if !ok {
		return fmt.Errorf("start agent on node %d: not a member", node)
	}
	argv := []string{a.bin, "agent", "--config", agentFile}
	p, err := a.n.Start(node, "shoal-"+harness.NodeName(node), argv, a.env)
	if err != nil {
		return fmt.Errorf("start agent on node %d: %w", node, err)
	}
	a.procs[node] = p
	a.starts[node] = append(a.starts[node], time.Now())
	go a.watch(node, p)
	return nil
}

// watch records an exit the runner did not cause.
func (a *Agents) watch(node int, p *harness.Proc) {
	<-p.Done()
	t := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.intended[p] {
		return
	}
	e := Exit{Node: node, Time: t, LogTail: shoalrun.Tail(p.Logs(), 4000)}
	if err := p.Wait(); err != nil {
		e.Err = err.Error()
	} else {
		e.Err = "exit status 0"
	}
	a.exits = append(a.exits, e)
}

// Kill SIGKILLs node's agent (a crash caused by the runner) and waits for it.
func (a *Agents) Kill(node int) error {
	p := a.markIntended(node)
	if p == nil {
		return fmt.Errorf("kill agent on node %d: not running", node)
	}
	return p.Kill()
}

// StopAll stops every agent (SIGTERM, SIGKILL after grace).
func (a *Agents) StopAll(grace time.Duration) error {
	var errs []error
	var wg sync.WaitGroup
	a.mu.Lock()
	nodes := make([]int, 0, len(a.procs))
	for node := range a.procs {
		nodes = append(nodes, node)
	}
	a.mu.Unlock()
	var mu sync.Mutex
	for _, node := range nodes {
		p := a.markIntended(node)
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(grace); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (a *Agents) markIntended(node int) *harness.Proc {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.procs[node]
	if p == nil || p.Exited() {
		return nil
	}
	a.intended[p] = true
	return p
}

// Signal sends sig to node's agent process only (SIGSTOP, SIGCONT).
func (a *Agents) Signal(node int, sig syscall.Signal) error {
	pid := a.Pid(node)
	if pid == 0 {
		return fmt.Errorf("signal %v to node %d: agent not running", sig, node)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %v to node %d (pid %d): %w", sig, node, pid, err)
	}
	return nil
}

// Pid is the running agent's pid on node, 0 if none.
func (a *Agents) Pid(node int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.procs[node]
	if p == nil || p.Exited() {
		return 0
	}
	return p.Pid()
}

// Running reports whether node's agent process is running.
func (a *Agents) Running(node int) bool { return a.Pid(node) != 0 }

// Logs returns what node's current agent process has written.
func (a *Agents) Logs(node int) string {
	a.mu.Lock()
	p := a.procs[node]
	a.mu.Unlock()
	if p == nil {
		return ""
	}
	return p.Logs()
}

// Exits returns the unexpected exits so far.
func (a *Agents) Exits() []Exit {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Exit(nil), a.exits...)
}

// Starts returns how many times node's agent was started.
func (a *Agents) Starts(node int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.starts[node])
}

// Status fetches node's /v1/status.
func (a *Agents) Status(ctx context.Context, node int) (*AgentStatus, error) {
	var st AgentStatus
	if err := a.get(ctx, node, "/v1/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Events fetches node's recent events (/v1/events).
func (a *Agents) Events(ctx context.Context, node int) ([]events.Event, error) {
	var evs []events.Event
	if err := a.get(ctx, node, "/v1/events", &evs); err != nil {
		return nil, err
	}
	return evs, nil
}

func (a *Agents) get(ctx context.Context, node int, path string, v any) error {
	c := a.clients[node]
	if c == nil {
		return fmt.Errorf("get %s from node %d: not a member", path, node)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://shoal"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("get %s from node %d: %w", path, node, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("get %s from node %d: %w", path, node, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s from node %d: %s: %s", path, node, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("get %s from node %d: decode: %w", path, node, err)
	}
	return nil
}

// Resources are a process's kernel-visible resource counts.
type Resources struct {
	FDs     int
	Threads int
}

// ProcResources reads /proc/<pid>/fd and the Threads line of
// /proc/<pid>/status.
func ProcResources(pid int) (Resources, error) {
	var r Resources
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return r, fmt.Errorf("count fds of %d: %w", pid, err)
	}
	r.FDs = len(ents)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return r, fmt.Errorf("read status of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			r.Threads, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return r, nil
}
