package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netlinkKernel is the real Kernel: a netlink handle bound to one network
// namespace (the process's own when the namespace is closed/None).
type netlinkKernel struct {
	h   *netlink.Handle
	ns  netns.NsHandle // netns.None() = the namespace the handle was made in
	log zerolog.Logger

	closeOnce sync.Once
}

var _ Kernel = (*netlinkKernel)(nil)

// NewNetlinkKernel returns the real Kernel. nsPath names a network namespace
// file (e.g. /run/netns/x); empty means the calling thread's namespace.
func NewNetlinkKernel(nsPath string, log zerolog.Logger) (Kernel, error) {
	ns, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	var h *netlink.Handle
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	return &netlinkKernel{h: h, ns: ns, log: log}, nil
}

// openNetns opens the namespace at path, or returns netns.None() for "".
func openNetns(path string) (netns.NsHandle, error) {
	if path == "" {
		return netns.None(), nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return ns, nil
}

// inNetns runs fn on a thread switched into ns (when ns is open), for the
// calls that have no namespace parameter: opening packet and ICMPv6 sockets
// (a socket stays in the namespace it was created in) and net.Interface
// look-ups. If the thread cannot be switched back it stays locked, so the Go
// runtime ends it with the goroutine instead of reusing it.
func inNetns(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

func (k *netlinkKernel) Link(name string) (LinkInfo, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return LinkInfo{}, fmt.Errorf("look up link %s: %w", name, ErrLinkNotFound)
		}
		return LinkInfo{}, fmt.Errorf("look up link %s: %w", name, err)
	}
	return linkInfo(l), nil
}

func linkInfo(l netlink.Link) LinkInfo {
	a := l.Attrs()
	up := a.Flags&net.FlagUp != 0 &&
		(a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown)
	return LinkInfo{Index: a.Index, Name: a.Name, MAC: a.HardwareAddr, MTU: a.MTU, Up: up}
}

func (k *netlinkKernel) Addrs() ([]KernelAddr, error) {
	var (
		list []netlink.Addr
		err  error
	)
	// A dump interrupted by a concurrent change is retried a few times.
	for range 3 {
		list, err = k.h.AddrList(nil, netlink.FAMILY_ALL)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := make([]KernelAddr, 0, len(list))
	for _, a := range list {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, KernelAddr{
			LinkIndex: a.LinkIndex,
			Prefix:    netip.PrefixFrom(ip.Unmap(), ones),
			Label:     a.Label,
			Flags:     a.Flags,
		})
	}
	return out, nil
}

func toNetlinkAddr(a KernelAddr) *netlink.Addr {
	ip := a.Prefix.Addr()
	bits := 128
	if ip.Is4() {
		bits = 32
	}
	na := &netlink.Addr{
		IPNet:     &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), bits)},
		Label:     a.Label,
		Flags:     a.Flags,
		LinkIndex: a.LinkIndex,
	}
	if ip.Is4() {
		// No broadcast address: a traffic IP is a host address even when
		// raised with a shorter prefix.
		na.Broadcast = net.IPv4zero
	}
	return na
}

func (k *netlinkKernel) AddrAdd(a KernelAddr) error {
	if err := k.h.AddrAdd(nil, toNetlinkAddr(a)); err != nil {
		return fmt.Errorf("add address %s to link %d: %w", a.Prefix, a.LinkIndex, err)
	}
	return nil
}

func (k *netlinkKernel) AddrDel(a KernelAddr) error {
	na := toNetlinkAddr(a)
	na.Label = "" // the kernel matches a label when given; delete by address only
	na.Flags = 0
	if err := k.h.AddrDel(nil, na); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete address %s from link %d: %w", a.Prefix, a.LinkIndex, ErrAddrNotFound)
		}
		return fmt.Errorf("delete address %s from link %d: %w", a.Prefix, a.LinkIndex, err)
	}
	return nil
}

// Watch subscribes to address and link updates in the handle's namespace.
func (k *netlinkKernel) Watch(done <-chan struct{}) (<-chan struct{}, error) {
	var nsOpt *netns.NsHandle
	if k.ns.IsOpen() {
		ns := k.ns
		nsOpt = &ns
	}
	stop := make(chan struct{})
	addrCh := make(chan netlink.AddrUpdate, 256)
	linkCh := make(chan netlink.LinkUpdate, 64)
	onErr := func(err error) { k.log.Debug().Err(err).Msg("netlink subscription") }
	if err := netlink.AddrSubscribeWithOptions(addrCh, stop, netlink.AddrSubscribeOptions{
		Namespace: nsOpt, ErrorCallback: onErr, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		close(stop)
		return nil, fmt.Errorf("subscribe to address updates: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(linkCh, stop, netlink.LinkSubscribeOptions{
		Namespace: nsOpt, ErrorCallback: onErr, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		close(stop)
		drain(addrCh)
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		defer func() {
			// Stop both subscriptions and drain them so their goroutines,
			// which send without a select, can exit.
			close(stop)
			go drain(addrCh)
			go drain(linkCh)
		}()
		for {
			select {
			case <-done:
				return
			case _, ok := <-addrCh:
				if !ok {
					return
				}
			case _, ok := <-linkCh:
				if !ok {
					return
				}
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

func (k *netlinkKernel) Close() error {
	k.closeOnce.Do(func() {
		k.h.Close()
		_ = k.ns.Close()
	})
	return nil
}
