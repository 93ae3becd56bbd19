package multihost

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNS runs fn on a thread switched into ns (when ns > 0; 0 or -1 = the calling thread's namespace), for work that
// resolves the network namespace from the calling thread: socket creation,
// interface lookup by name or index, /proc/sys/net, XDP attach.
func inNS(ns netns.NsHandle, fn func() error) error {
	if ns <= 0 {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when the
		// goroutine exits, so no other goroutine runs in the wrong netns.
		return fmt.Errorf("restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
