package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// FakeKernel is an in-memory Kernel for unit tests (here and in the
// packages above): links and addresses in maps, a notification to watchers
// after every change, and hooks to make operations fail. Its methods that
// start with Set, Inject, Remove or Fail act as "something else" changing the
// kernel.
type FakeKernel struct {
	mu       sync.Mutex
	links    map[string]LinkInfo
	addrs    []KernelAddr
	watchers map[chan struct{}]struct{}
	failAdd  func(KernelAddr) error
	failDel  func(KernelAddr) error
	failList error
	adds     int
	dels     int
	closed   bool
}

var _ Kernel = (*FakeKernel)(nil)

// NewFakeKernel returns a FakeKernel with the given links.
func NewFakeKernel(links ...LinkInfo) *FakeKernel {
	f := &FakeKernel{links: map[string]LinkInfo{}, watchers: map[chan struct{}]struct{}{}}
	for _, l := range links {
		f.links[l.Name] = l
	}
	return f
}

func (f *FakeKernel) notifyLocked() {
	for ch := range f.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SetLink adds or replaces a link.
func (f *FakeKernel) SetLink(l LinkInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[l.Name] = l
	f.notifyLocked()
}

// SetLinkUp sets a link's up state.
func (f *FakeKernel) SetLinkUp(name string, up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.links[name]
	l.Up = up
	f.links[name] = l
	f.notifyLocked()
}

// RemoveLink deletes a link and its addresses.
func (f *FakeKernel) RemoveLink(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return
	}
	delete(f.links, name)
	f.addrs = slices.DeleteFunc(f.addrs, func(a KernelAddr) bool { return a.LinkIndex == l.Index })
	f.notifyLocked()
}

// InjectAddr adds an address as something else would.
func (f *FakeKernel) InjectAddr(a KernelAddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = append(f.addrs, a)
	f.notifyLocked()
}

// RemoveAddr removes ip from every link as something else would; it reports
// whether there was one.
func (f *FakeKernel) RemoveAddr(ip netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.addrs)
	f.addrs = slices.DeleteFunc(f.addrs, func(a KernelAddr) bool { return a.Prefix.Addr() == ip })
	f.notifyLocked()
	return len(f.addrs) != n
}

// SetAddrFlags sets the flags of ip (e.g. FlagDADFailed).
func (f *FakeKernel) SetAddrFlags(ip netip.Addr, flags int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.addrs {
		if f.addrs[i].Prefix.Addr() == ip {
			f.addrs[i].Flags = flags
		}
	}
	f.notifyLocked()
}

// FailAdd makes AddrAdd return fn's error (nil fn or nil error: succeed).
func (f *FakeKernel) FailAdd(fn func(KernelAddr) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failAdd = fn
}

// FailDel makes AddrDel return fn's error (nil fn or nil error: succeed).
func (f *FakeKernel) FailDel(fn func(KernelAddr) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failDel = fn
}

// FailList makes Addrs return err (nil: succeed).
func (f *FakeKernel) FailList(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failList = err
}

// Snapshot returns the addresses, sorted by link and address.
func (f *FakeKernel) Snapshot() []KernelAddr {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.addrs)
	slices.SortFunc(out, func(a, b KernelAddr) int {
		if a.LinkIndex != b.LinkIndex {
			return a.LinkIndex - b.LinkIndex
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	return out
}

// Ops returns the number of AddrAdd and AddrDel calls made so far
// (failed ones included).
func (f *FakeKernel) Ops() (adds, dels int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adds, f.dels
}

// Link implements Kernel.
func (f *FakeKernel) Link(name string) (LinkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return LinkInfo{}, fmt.Errorf("look up link %s: %w", name, ErrLinkNotFound)
	}
	return l, nil
}

// Addrs implements Kernel.
func (f *FakeKernel) Addrs() ([]KernelAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failList != nil {
		return nil, f.failList
	}
	return slices.Clone(f.addrs), nil
}

func (f *FakeKernel) linkByIndexLocked(i int) bool {
	for _, l := range f.links {
		if l.Index == i {
			return true
		}
	}
	return false
}

// AddrAdd implements Kernel.
func (f *FakeKernel) AddrAdd(a KernelAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	if f.failAdd != nil {
		if err := f.failAdd(a); err != nil {
			return err
		}
	}
	if !f.linkByIndexLocked(a.LinkIndex) {
		return fmt.Errorf("add address %s: %w", a.Prefix, ErrLinkNotFound)
	}
	for _, b := range f.addrs {
		if b.LinkIndex == a.LinkIndex && b.Prefix.Addr() == a.Prefix.Addr() {
			return fmt.Errorf("add address %s: file exists", a.Prefix)
		}
	}
	f.addrs = append(f.addrs, a)
	f.notifyLocked()
	return nil
}

// AddrDel implements Kernel.
func (f *FakeKernel) AddrDel(a KernelAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dels++
	if f.failDel != nil {
		if err := f.failDel(a); err != nil {
			return err
		}
	}
	i := slices.IndexFunc(f.addrs, func(b KernelAddr) bool {
		return b.LinkIndex == a.LinkIndex && b.Prefix == a.Prefix
	})
	if i < 0 {
		return fmt.Errorf("delete address %s: %w", a.Prefix, ErrAddrNotFound)
	}
	f.addrs = slices.Delete(f.addrs, i, i+1)
	f.notifyLocked()
	return nil
}

// Watch implements Kernel.
func (f *FakeKernel) Watch(done <-chan struct{}) (<-chan struct{}, error) {
	in := make(chan struct{}, 1)
	f.mu.Lock()
	f.watchers[in] = struct{}{}
	f.mu.Unlock()
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		defer func() {
			f.mu.Lock()
			delete(f.watchers, in)
			f.mu.Unlock()
		}()
		for {
			select {
			case <-done:
				return
			case <-in:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}

// Close implements Kernel.
func (f *FakeKernel) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// AnnounceCall is one call recorded by FakeAnnouncer.
type AnnounceCall struct {
	Link string
	IP   netip.Addr
	At   time.Time
}

// FakeAnnouncer records announcement rounds instead of sending them. As an
// ARPWatcher it delivers the ARP senders given to InjectARP.
type FakeAnnouncer struct {
	mu       sync.Mutex
	calls    []AnnounceCall
	err      error
	watchers map[string]map[int]func(netip.Addr, net.HardwareAddr)
	nextID   int
}

var (
	_ Announcer  = (*FakeAnnouncer)(nil)
	_ ARPWatcher = (*FakeAnnouncer)(nil)
)

// WatchARP implements ARPWatcher.
func (f *FakeAnnouncer) WatchARP(ctx context.Context, link LinkInfo, fn func(netip.Addr, net.HardwareAddr)) error {
	f.mu.Lock()
	if f.watchers == nil {
		f.watchers = map[string]map[int]func(netip.Addr, net.HardwareAddr){}
	}
	if f.watchers[link.Name] == nil {
		f.watchers[link.Name] = map[int]func(netip.Addr, net.HardwareAddr){}
	}
	f.nextID++
	id := f.nextID
	f.watchers[link.Name][id] = fn
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.watchers[link.Name], id)
	return nil
}

// Watching reports whether an ARP watcher runs on link.
func (f *FakeAnnouncer) Watching(link string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers[link]) > 0
}

// InjectARP delivers an ARP packet with the given sender to the watchers
// of link.
func (f *FakeAnnouncer) InjectARP(link string, sender netip.Addr, mac net.HardwareAddr) {
	f.mu.Lock()
	var ws []func(netip.Addr, net.HardwareAddr)
	for _, fn := range f.watchers[link] {
		ws = append(ws, fn)
	}
	f.mu.Unlock()
	for _, fn := range ws {
		fn(sender, mac)
	}
}

// Announce implements Announcer.
func (f *FakeAnnouncer) Announce(link LinkInfo, ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, AnnounceCall{Link: link.Name, IP: ip, At: time.Now()})
	return nil
}

// Fail makes Announce return err (nil: succeed).
func (f *FakeAnnouncer) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Calls returns the rounds sent for ip (all when ip is invalid).
func (f *FakeAnnouncer) Calls(ip netip.Addr) []AnnounceCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []AnnounceCall
	for _, c := range f.calls {
		if !ip.IsValid() || c.IP == ip {
			out = append(out, c)
		}
	}
	return out
}
