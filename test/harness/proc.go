package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// Proc is a process running inside a namespace, started with Start or
// StartIn. Its stdout and stderr go to LogPath.
type Proc struct {
	Name    string // caller's label, also the log file's base name
	NS      string // namespace it runs in
	LogPath string
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	err     error // Wait result, valid after done is closed
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// Start runs argv inside node i's namespace. env entries ("K=V") are added
// to the current environment. The process gets its own process group so
// Kill and Stop reach its children too (keepalived forks a VRRP child).
func (n *Net) Start(node int, name string, argv []string, env []string) (*Proc, error) {
	if node < 0 || node >= n.opts.Nodes {
		return nil, fmt.Errorf("start %s: node %d out of range", name, node)
	}
	return n.StartIn(n.Node(node), name, argv, env)
}

// StartIn runs argv inside namespace ns (see Start).
func (n *Net) StartIn(ns, name string, argv []string, env []string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("start %s: empty argv", name)
	}
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("start %s: topology closed", name)
	}
	logPath := filepath.Join(n.dir, unsafeName.ReplaceAllString(name, "_")+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// No Pdeathsig: it fires when the forking OS thread exits, and Go ends
	// threads that were locked by InNamespace. Close and CleanupStale kill
	// whatever runs in the namespaces instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(logf, "=== %s start in %s: %q\n", time.Now().Format(time.RFC3339Nano), ns, argv)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, NS: ns, LogPath: logPath, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p, nil
}

// Pid is the process id (`ip netns exec` execs argv, so it is argv's pid).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// signal sends sig to the process group, falling back to the process.
func (p *Proc) signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group (a crash) and waits for the exit.
func (p *Proc) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. It returns nil when
// the process is gone (whatever its exit status).
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		// The leader exited; sweep any children left in its group.
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	return p.Kill()
}

// Logs returns what the process has written so far.
func (p *Proc) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(read log %s: %v)", p.LogPath, err)
	}
	return string(b)
}
