package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
)

// Conflict is another host claiming a traffic IP this node holds: an ARP
// packet whose sender IP is one of our IPv4 traffic IPs and whose sender MAC
// is not ours. It is the split-brain alarm: two nodes raising one IP.
type Conflict struct {
	IP        netip.Addr
	Interface string
	MAC       net.HardwareAddr // the other host's
	At        time.Time
}

// ARPWatcher is an optional seam next to Announcer: an Announcer that also
// implements it lets the Manager watch for conflicts (Options.DetectConflicts).
// WatchARP reads ARP packets arriving on link and calls fn with each
// packet's sender IP and sender MAC until ctx ends or reading fails.
type ARPWatcher interface {
	WatchARP(ctx context.Context, link LinkInfo, fn func(sender netip.Addr, mac net.HardwareAddr)) error
}

var _ ARPWatcher = (*packetAnnouncer)(nil)

// WatchARP implements ARPWatcher with a packet socket in the namespace.
func (a *packetAnnouncer) WatchARP(ctx context.Context, link LinkInfo, fn func(netip.Addr, net.HardwareAddr)) error {
	ifi := &net.Interface{Index: link.Index, Name: link.Name, HardwareAddr: link.MAC, MTU: link.MTU}
	var c *packet.Conn
	err := inNetns(a.ns, func() error {
		var err error
		c, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("open arp watch socket on %s: %w", link.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	defer c.Close()
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read arp on %s: %w", link.Name, err)
		}
		var f ethernet.Frame
		if f.UnmarshalBinary(buf[:n]) != nil {
			continue
		}
		var p arp.Packet
		if p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		fn(p.SenderIP, p.SenderHardwareAddr)
	}
}

// conflictWatch runs one ARPWatcher per interface holding IPv4 traffic IPs.
type conflictWatch struct {
	m       *Manager
	w       ARPWatcher
	mu      sync.Mutex
	held    map[string]map[netip.Addr]bool // interface -> IPv4 traffic IPs
	mac     map[string]net.HardwareAddr
	last    map[string]time.Time // rate limit per ip+mac
	running map[string]watchRun
	wg      sync.WaitGroup
}

type watchRun struct {
	index  int
	cancel context.CancelFunc
}

func newConflictWatch(m *Manager, w ARPWatcher) *conflictWatch {
	return &conflictWatch{m: m, w: w, held: map[string]map[netip.Addr]bool{},
		mac: map[string]net.HardwareAddr{}, last: map[string]time.Time{}, running: map[string]watchRun{}}
}

// update sets the held IPv4 addresses and starts or stops watchers; called
// by the loop after each pass.
func (c *conflictWatch) update(ctx context.Context, held map[addrKey]*heldAddr) {
	want := map[string]LinkInfo{}
	ips := map[string]map[netip.Addr]bool{}
	for k, h := range held {
		if !k.IP.Is4() {
			continue
		}
		want[k.Iface] = h.link
		if ips[k.Iface] == nil {
			ips[k.Iface] = map[netip.Addr]bool{}
		}
		ips[k.Iface][k.IP] = true
	}
	c.mu.Lock()
	c.held = ips
	for name, li := range want {
		c.mac[name] = li.MAC
	}
	c.mu.Unlock()
	for name, r := range c.running {
		if li, ok := want[name]; !ok || li.Index != r.index {
			r.cancel()
			delete(c.running, name)
		}
	}
	for name, li := range want {
		if _, ok := c.running[name]; ok {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		c.running[name] = watchRun{index: li.Index, cancel: cancel}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.run(wctx, li)
		}()
	}
}

// run keeps a watcher on li going, retrying with backoff, until ctx ends.
func (c *conflictWatch) run(ctx context.Context, li LinkInfo) {
	delay := time.Second
	for {
		err := c.w.WatchARP(ctx, li, func(ip netip.Addr, mac net.HardwareAddr) { c.check(li.Name, ip, mac) })
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.m.log.Warn().Err(err).Str("interface", li.Name).Dur("retry_in", delay).Msg("conflict watch failed")
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// check reports a conflict when ip is held on iface and mac is not ours.
func (c *conflictWatch) check(iface string, ip netip.Addr, mac net.HardwareAddr) {
	now := time.Now()
	c.mu.Lock()
	if !c.held[iface][ip] || slices.Equal(mac, c.mac[iface]) {
		c.mu.Unlock()
		return
	}
	key := ip.String() + "/" + mac.String()
	if t, ok := c.last[key]; ok && now.Sub(t) < 5*time.Second {
		c.mu.Unlock()
		return
	}
	c.last[key] = now
	for k, t := range c.last {
		if now.Sub(t) > time.Minute {
			delete(c.last, k)
		}
	}
	c.mu.Unlock()
	c.m.conflicts.Add(1)
	// Info, not an error: during a planned hand-off the new owner claims
	// the IP while this node still holds it. The agent, which knows the
	// view, decides whether it is a duplicate and raises the alarm.
	c.m.log.Info().Str("ip", ip.String()).Str("interface", iface).Str("mac", mac.String()).
		Msg("another host claims a traffic ip held here")
	f := Conflict{IP: ip, Interface: iface, MAC: slices.Clone(mac), At: now}
	c.m.mu.Lock()
	c.m.pubStat.LastConflict = &f
	c.m.mu.Unlock()
	select {
	case c.m.conflictCh <- f:
	default:
		// Nobody reading: Status().Conflicts and LastConflict still tell.
	}
}

func (c *conflictWatch) stop() {
	for name, r := range c.running {
		r.cancel()
		delete(c.running, name)
	}
	c.wg.Wait()
}
