package appliance

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// linkUpFunc returns gossip's Config.LinkUp: whether the heartbeat
// interface (iface, or else the interface holding bind) has carrier
// (IFF_RUNNING). When the interface cannot be found it reports up, so the
// detector judges peers as it would without the hook. The detector calls it
// every tick (25 ms at the default interval), so it reads the flags with one
// SIOCGIFFLAGS ioctl instead of a netlink dump of every interface.
func linkUpFunc(iface string, bind netip.Addr) func() bool {
	var mu sync.Mutex
	name := iface
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		if name == "" {
			name = interfaceHolding(bind)
			if name == "" {
				return true
			}
		}
		up, err := ifRunning(name)
		if err != nil {
			if iface == "" {
				name = "" // renamed or gone: look again next time
			}
			return true
		}
		return up
	}
}

// ifRunning reads IFF_RUNNING of the named interface.
func ifRunning(name string) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return false, err
	}
	return ifr.Uint16()&unix.IFF_RUNNING != 0, nil
}

// interfaceHolding returns the name of the interface with address a ("" if
// none).
func interfaceHolding(a netip.Addr) string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if pn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(pn.IP); ok && ip.Unmap() == a.Unmap() {
					return ifi.Name
				}
			}
		}
	}
	return ""
}
