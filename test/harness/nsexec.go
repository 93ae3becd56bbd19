package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps the bind mounts naming namespaces.
const netnsDir = "/run/netns"

// nsPath returns the bind-mount path of the named network namespace.
func nsPath(ns string) string { return filepath.Join(netnsDir, ns) }

// enterNS moves the calling OS thread into the named network namespace. The
// caller must have locked the goroutine to its thread and must never unlock
// it, so the thread dies with the goroutine and the namespace never leaks to
// other goroutines.
func enterNS(ns string) error {
	f, err := os.Open(nsPath(ns))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	return nil
}

// InNamespace runs fn on a fresh OS thread that has joined the named network
// namespace and returns fn's error. Sockets created by fn belong to that
// namespace for their whole life and may be used from any goroutine after fn
// returns. The thread is discarded afterwards.
func InNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the runtime terminates a thread whose goroutine
		// exits while locked, which is exactly what we want.
		runtime.LockOSThread()
		if err := enterNS(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// nsWorker is a long-lived goroutine locked to a thread inside a namespace
// that runs small functions (socket creation) on request. It lets a probe
// create hundreds of sockets per second in the namespace without creating a
// thread per socket.
type nsWorker struct {
	reqs chan func()
	done chan struct{}
}

// newNSWorker starts a worker in the named namespace. Close stops it.
func newNSWorker(ns string) (*nsWorker, error) {
	w := &nsWorker{reqs: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer close(w.done)
		if err := enterNS(ns); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for f := range w.reqs {
			f()
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return w, nil
}

var errWorkerClosed = errors.New("namespace worker closed")

// socket creates a non-blocking, close-on-exec socket in the worker's
// namespace.
func (w *nsWorker) socket(family, typ int) (fd int, err error) {
	res := make(chan struct{})
	f := func() {
		fd, err = unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		close(res)
	}
	select {
	case w.reqs <- f:
	case <-w.done:
		return -1, errWorkerClosed
	}
	<-res
	return fd, err
}

// Close stops the worker and waits for its thread to exit. The caller must
// not call socket concurrently with or after Close.
func (w *nsWorker) Close() {
	close(w.reqs)
	<-w.done
}
