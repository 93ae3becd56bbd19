package appliance

import (
	"net"
	"net/netip"
	"sync"
)

// linkUpFunc returns gossip's Config.LinkUp: whether the heartbeat
// interface (iface, or else the interface holding bind) has carrier
// (IFF_RUNNING). When the interface cannot be found it reports up, so the
// detector judges peers as it would without the hook.
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
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			if iface == "" {
				name = "" // renamed or gone: look again next time
			}
			return true
		}
		return ifi.Flags&net.FlagRunning != 0
	}
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
