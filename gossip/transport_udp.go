package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
)

// UDPTransport is the real Transport: one unicast socket bound to Bind:port
// (probes, unicast heartbeats, and the sender of multicast packets with
// IP_MULTICAST_IF = the interface, TTL 1, loop off) and, in multicast mode,
// one socket bound to group:port that joined the group on the interface.
// Both sockets are created by NewUDPTransport, so a caller may create them
// inside a network namespace and use them from any thread.
type UDPTransport struct {
	uni   *net.UDPConn
	mc    *net.UDPConn // nil in unicast mode
	group netip.AddrPort
	port  uint16
	ch    chan Packet
	wg    sync.WaitGroup
	once  sync.Once
}

var _ Transport = (*UDPTransport)(nil)

// UDPConfig configures NewUDPTransport.
type UDPConfig struct {
	Bind      netip.Addr     // local unicast address (required)
	Group     netip.AddrPort // IPv4 group and port; the port is used for unicast too
	Interface string         // multicast interface; "" = the one holding Bind
	Unicast   bool           // no multicast socket; Send(zero Addr) fails
}

// NewUDPTransport opens the sockets.
func NewUDPTransport(c UDPConfig) (*UDPTransport, error) {
	port := c.Group.Port()
	network := "udp4"
	if c.Bind.Is6() && !c.Bind.Is4In6() {
		network = "udp6"
	}
	local := netip.AddrPortFrom(c.Bind.Unmap(), port)
	pc, err := reuseAddr(false).ListenPacket(context.Background(), network, local.String())
	if err != nil {
		return nil, fmt.Errorf("listen heartbeat %s: %w", local, err)
	}
	uni := pc.(*net.UDPConn)
	t := &UDPTransport{uni: uni, group: c.Group, port: port, ch: make(chan Packet, 1024)}
	if !c.Unicast {
		if err := t.openMulticast(c); err != nil {
			uni.Close()
			return nil, err
		}
	}
	t.wg.Add(1)
	go t.read(uni)
	if t.mc != nil {
		t.wg.Add(1)
		go t.read(t.mc)
	}
	go func() { t.wg.Wait(); close(t.ch) }()
	return t, nil
}

func (t *UDPTransport) openMulticast(c UDPConfig) error {
	ifi, err := multicastInterface(c.Interface, c.Bind)
	if err != nil {
		return err
	}
	p := ipv4.NewPacketConn(t.uni)
	if err := p.SetMulticastInterface(ifi); err != nil {
		return fmt.Errorf("set multicast interface %s: %w", ifi.Name, err)
	}
	if err := p.SetMulticastTTL(1); err != nil {
		return fmt.Errorf("set multicast ttl: %w", err)
	}
	if err := p.SetMulticastLoopback(false); err != nil {
		return fmt.Errorf("set multicast loop off: %w", err)
	}
	pc, err := reuseAddr(true).ListenPacket(context.Background(), "udp4", c.Group.String())
	if err != nil {
		return fmt.Errorf("listen multicast %s: %w", c.Group, err)
	}
	mc := pc.(*net.UDPConn)
	if err := ipv4.NewPacketConn(mc).JoinGroup(ifi, &net.UDPAddr{IP: c.Group.Addr().AsSlice()}); err != nil {
		mc.Close()
		return fmt.Errorf("join %s on %s: %w", c.Group.Addr(), ifi.Name, err)
	}
	t.mc = mc
	return nil
}

// reuseAddr sets SO_REUSEADDR (the unicast and group sockets share a port)
// and, for the group socket, IP_MULTICAST_ALL off (only groups joined on it).
func reuseAddr(group bool) *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			if serr == nil && group {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 49 /* IP_MULTICAST_ALL */, 0)
			}
		}); err != nil {
			return err
		}
		return serr
	}}
}

func multicastInterface(name string, bind netip.Addr) (*net.Interface, error) {
	if name != "" {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("multicast interface %q: %w", name, err)
		}
		return ifi, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for i := range ifs {
		addrs, _ := ifs[i].Addrs()
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == bind.Unmap() {
					return &ifs[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("multicast interface: no interface holds %s", bind)
}

func (t *UDPTransport) read(c *net.UDPConn) {
	defer t.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case t.ch <- Packet{From: from.Addr().Unmap(), Data: append([]byte(nil), buf[:n]...)}:
		default: // receiver behind: drop, like a full socket buffer
		}
	}
}

// Send implements Transport.
func (t *UDPTransport) Send(to netip.Addr, b []byte) error {
	dst := t.group
	if to.IsValid() {
		dst = netip.AddrPortFrom(to, t.port)
	} else if t.mc == nil {
		return fmt.Errorf("send: no multicast socket in unicast mode")
	}
	if _, err := t.uni.WriteToUDPAddrPort(b, dst); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// Recv implements Transport.
func (t *UDPTransport) Recv() <-chan Packet { return t.ch }

// Close implements Transport.
func (t *UDPTransport) Close() error {
	t.once.Do(func() {
		t.uni.Close()
		if t.mc != nil {
			t.mc.Close()
		}
	})
	return nil
}
