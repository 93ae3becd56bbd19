package multihost

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/shoal-project/shoal/bpf"
	"github.com/shoal-project/shoal/dataplane"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// loLabel marks IPv4 addresses Shoal raises on lo. IPv6 addresses have no
// label: Shoal marks them as /128 on lo with IFA_F_NODAD|IFA_F_NOPREFIXROUTE.
const loLabel = "lo:shoal"

const v6Mark = unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE

// Config configures a Manager.
type Config struct {
	// Mode is the XDP attach mode (default auto; use generic on veth).
	Mode bpf.Mode
	// NetNS is the network namespace to work in; 0 or -1 = the namespace
	// of the thread calling New. The handle must stay open until Close.
	NetNS netns.NsHandle
	// Logger receives structured logs; a "component" field is added.
	Logger zerolog.Logger
	// PruneInterval is how often buckets that moved away are checked for
	// live connections (default 5s; negative = never, Prune only).
	PruneInterval time.Duration
	// Applied, when set, is called at the end of every Apply with the
	// digests (low TableDigestBits bits of MultiGroup.Digest) of the
	// tables now in the kernel, one per group served; the agent publishes
	// them in its heartbeats. Called with the Manager's lock held: it must
	// not call back into the Manager.
	Applied func(digests []uint64)
}

// TableDigestBits is how much of a table digest is published and shown
// (12 hex digits).
const TableDigestBits = 48

// DefaultPruneInterval is Config.PruneInterval's default.
const DefaultPruneInterval = 5 * time.Second

// Status is what a Manager currently serves.
type Status struct {
	Groups     []GroupStatus
	Interfaces []InterfaceStatus
	Counters   bpf.Counters // XDP program counters, all groups
	// ARPReplies / NDPReplies count answers sent; MalformedARP /
	// MalformedNDP count frames dropped as malformed.
	ARPReplies, NDPReplies     uint64
	MalformedARP, MalformedNDP uint64
}

// InterfaceStatus is one interface carrying the XDP program.
type InterfaceStatus struct {
	Name string
	// Mode is how the program is attached as the kernel reports it
	// ("native", "generic", "offload"; with mode auto, the kernel's pick).
	Mode string
}

// GroupStatus is one served group.
type GroupStatus struct {
	Name      string
	Interface string
	IPs       []netip.Addr
	Index     int // index in the XDP program's tables
	// BucketsOwned is the number of the NumBuckets buckets this node owns.
	BucketsOwned int
	// BucketsHeld counts buckets owned elsewhere in which this node still
	// has (or, until the next prune, may have) connections: their packets
	// cost a socket lookup.
	BucketsHeld int
	// BucketsHandover counts buckets owned here whose previous owner is
	// alive and keeps its connections there: their non-SYN TCP packets
	// cost a socket lookup (docs/MULTIHOST.md, "Handover").
	BucketsHandover int
	// Table is the Digest of the table applied (0 = none known). While
	// BucketsHeld is 0 this node holds no connection outside its share of
	// that table, and cannot get one while the table stands.
	Table uint64
}

// Manager serves multi-hosted groups. It is safe for concurrent use.
type Manager struct {
	cfg  Config
	log  zerolog.Logger
	mu   sync.Mutex
	nl   *netlink.Handle
	objs *bpf.Objects

	ifaces map[string]*iface
	groups map[string]*served
	loIPs  map[netip.Addr]bool
	closed bool
	gen    uint64 // counts Applies (Prune retries its dump across one)
	stop   chan struct{}
	kick   chan struct{} // prune now (a table was applied)
	done   chan struct{}
}

type served struct {
	g      dataplane.MultiGroup
	index  int
	owned  int
	digest uint64 // g.Digest as applied; 0 after a failed application
}

// iface is the per-interface state: XDP attachment, saved sysctls,
// responders and multicast memberships.
type iface struct {
	name    string
	index   int
	mac     net.HardwareAddr
	xdp     bpf.Detacher
	mode    string            // attach mode the kernel reports
	sysctls map[string]string // path -> value before we changed it
	arp     *responder
	ndp     *responder
	igmp    int // socket holding IGMP memberships (-1 = none)
	mld     int // socket holding MLD memberships (-1 = none)
	v4Join  map[netip.Addr]bool
	v6Join  map[netip.Addr]bool
}

// New loads the XDP program and removes leftovers of an earlier run (Shoal's
// addresses on lo). Interfaces are set up by Apply.
func New(cfg Config) (*Manager, error) {
	m := &Manager{
		cfg:    cfg,
		log:    cfg.Logger.With().Str("component", "multihost").Logger(),
		ifaces: map[string]*iface{},
		groups: map[string]*served{},
		loIPs:  map[netip.Addr]bool{},
	}
	var err error
	// Route for addresses and links, inet_diag for the socket dumps of
	// Prune: both sockets opened in the manager's namespace (a family the
	// handle lacks would be asked in the calling thread's namespace).
	fams := []int{unix.NETLINK_ROUTE, unix.NETLINK_INET_DIAG}
	if cfg.NetNS > 0 {
		m.nl, err = netlink.NewHandleAt(cfg.NetNS, fams...)
	} else {
		m.nl, err = netlink.NewHandle(fams...)
	}
	if err != nil {
		return nil, fmt.Errorf("new multihost manager: netlink: %w", err)
	}
	m.objs, err = bpf.Load()
	if err != nil {
		m.nl.Close()
		return nil, fmt.Errorf("new multihost manager: %w", err)
	}
	if err := m.cleanLoopback(); err != nil {
		m.objs.Close()
		m.nl.Close()
		return nil, fmt.Errorf("new multihost manager: %w", err)
	}
	m.stop, m.done, m.kick = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	go m.pruneLoop()
	return m, nil
}

// kickDelay is how long after a table is applied the held buckets are
// checked.
const kickDelay = 200 * time.Millisecond

func (m *Manager) pruneLoop() {
	defer close(m.done)
	every := m.cfg.PruneInterval
	if every == 0 {
		every = DefaultPruneInterval
	}
	if every < 0 {
		<-m.stop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
			// A packet the program passed just before the table flip may
			// not have reached TCP yet: give it time to make its socket.
			select {
			case <-m.stop:
				return
			case <-time.After(kickDelay):
			}
		}
		if err := m.Prune(); err != nil {
			m.log.Warn().Err(err).Msg("prune held buckets")
		}
	}
}

// Prune lets the XDP program forget buckets that moved away from this node
// and in which it has no connection left (established, closing or
// half-open; time-wait does not count), so their packets are dropped
// without a socket lookup. Buckets that still have one stay held: the
// connection keeps working on this node until it ends.
//
// The socket dump (which takes long on a busy server) runs without the
// lock, so it never delays an Apply; if a table changed during the dump,
// the dump is taken again. Buckets that were not ours at dump time cannot
// have gained a connection since (their SYNs are dropped), and a bucket
// that moved away during the dump makes the tables change.
func (m *Manager) Prune() error {
	for range 3 {
		m.mu.Lock()
		closed, gen, held := m.closed, m.gen, 0
		for _, s := range m.groups {
			held += m.objs.Held(s.index)
		}
		m.mu.Unlock()
		if closed || held == 0 {
			return nil // nothing to forget: no dump
		}
		dump, dumpErr := m.tcpConns()
		m.mu.Lock()
		if m.gen != gen {
			m.mu.Unlock()
			continue
		}
		var errs []error
		for _, s := range m.groups {
			if _, err := m.objs.Prune(s.index, func() ([]bpf.Conn, error) { return dump, dumpErr }); err != nil {
				errs = append(errs, fmt.Errorf("group %q: %w", s.g.Name, err))
			}
		}
		m.mu.Unlock()
		return errors.Join(errs...)
	}
	return nil // tables keep changing: the Apply that changed them kicked another prune
}

// tcpConns dumps this namespace's TCP sockets in every state but TIME-WAIT
// (sock_diag).
func (m *Manager) tcpConns() ([]bpf.Conn, error) {
	var out []bpf.Conn
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := m.nl.SocketDiagTCP(fam)
		if err != nil {
			return nil, fmt.Errorf("tcp socket dump: %w", err)
		}
		for _, sk := range socks {
			if sk.State == unix.BPF_TCP_TIME_WAIT {
				// Closed on both sides: nothing of it is lost when its
				// bucket's packets go to the owner (a retransmitted FIN
				// meets a reset there instead of a re-sent ACK).
				continue
			}
			l, ok1 := netip.AddrFromSlice(sk.ID.Source)
			r, ok2 := netip.AddrFromSlice(sk.ID.Destination)
			if !ok1 || !ok2 {
				continue
			}
			out = append(out, bpf.Conn{
				Remote: netip.AddrPortFrom(r.Unmap(), sk.ID.DestinationPort),
				Local:  netip.AddrPortFrom(l.Unmap(), sk.ID.SourcePort),
			})
		}
	}
	return out, nil
}

// cleanLoopback removes every address on lo carrying Shoal's marking.
func (m *Manager) cleanLoopback() error {
	lo, err := m.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	addrs, err := m.nl.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list lo addresses: %w", err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		ones, bits := a.Mask.Size()
		ours := (ip.Is4() && a.Label == loLabel) ||
			(ip.Is6() && ones == 128 && bits == 128 && a.Flags&v6Mark == v6Mark)
		if !ours {
			continue
		}
		if err := m.nl.AddrDel(lo, &a); err != nil {
			return fmt.Errorf("remove leftover %s from lo: %w", ip, err)
		}
		m.log.Info().Stringer("ip", ip).Msg("removed leftover address from lo")
	}
	return nil
}

func validate(groups []dataplane.MultiGroup) error {
	names := map[string]bool{}
	ips := map[netip.Addr]string{}
	if len(groups) > bpf.MaxGroups {
		return fmt.Errorf("%d groups, at most %d", len(groups), bpf.MaxGroups)
	}
	for _, g := range groups {
		if g.Name == "" || names[g.Name] {
			return fmt.Errorf("group %q: empty or duplicate name", g.Name)
		}
		names[g.Name] = true
		if g.Interface == "" {
			return fmt.Errorf("group %q: no interface", g.Name)
		}
		if len(g.MAC) != 6 || g.MAC[0]&1 == 0 {
			return fmt.Errorf("group %q: %q is not a multicast mac", g.Name, g.MAC)
		}
		if len(g.Owners) != dataplane.NumBuckets {
			return fmt.Errorf("group %q: %d owners, want %d", g.Name, len(g.Owners), dataplane.NumBuckets)
		}
		if g.Prev != nil && len(g.Prev) != dataplane.NumBuckets {
			return fmt.Errorf("group %q: %d previous owners, want %d or none", g.Name, len(g.Prev), dataplane.NumBuckets)
		}
		if g.SelfSlot >= bpf.MaxSlots {
			return fmt.Errorf("group %q: self slot %d out of range", g.Name, g.SelfSlot)
		}
		for _, ip := range g.IPs {
			ip = ip.Unmap()
			if !ip.IsValid() || ip.IsMulticast() || ip.IsUnspecified() || ip.IsLoopback() {
				return fmt.Errorf("group %q: bad address %s", g.Name, ip)
			}
			if other, ok := ips[ip]; ok {
				return fmt.Errorf("group %q: address %s also in group %q", g.Name, ip, other)
			}
			ips[ip] = g.Name
		}
	}
	return nil
}

// Apply makes the node serve exactly groups: it sets up new interfaces,
// raises and drops loopback addresses, rewrites every group's table and
// updates the ARP/NDP answers. Invalid input changes nothing.
func (m *Manager) Apply(groups []dataplane.MultiGroup) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("apply multi-hosted groups: manager closed")
	}
	if err := validate(groups); err != nil {
		return fmt.Errorf("apply multi-hosted groups: %w", err)
	}
	m.gen++
	var errs []error
	// Interfaces first; a group whose interface fails is skipped.
	ok := map[string]bool{}
	for _, g := range groups {
		if _, done := ok[g.Interface]; done {
			continue
		}
		err := m.ensureIface(g.Interface)
		ok[g.Interface] = err == nil
		if err != nil {
			errs = append(errs, err)
		}
	}
	// Addresses on lo, then tables, then answers: the XDP program filters
	// before a neighbour learns the multicast MAC.
	wantLo := map[netip.Addr]bool{}
	used := map[int]bool{}
	for _, g := range groups {
		if s, ok := m.groups[g.Name]; ok {
			used[s.index] = true
		}
	}
	var live []*served
	for _, g := range groups {
		if !ok[g.Interface] {
			continue
		}
		for _, ip := range g.IPs {
			wantLo[ip.Unmap()] = true
		}
		s := m.groups[g.Name]
		if s != nil && s.g.Interface != g.Interface {
			// Moved: clear and re-add under the same index.
			if err := m.objs.ClearGroup(s.index); err != nil {
				errs = append(errs, err)
			}
		}
		if s == nil {
			s = &served{index: freeIndex(used)}
			used[s.index] = true
			m.groups[g.Name] = s
		}
		s.g = g
		live = append(live, s)
	}
	for ip := range wantLo {
		if err := m.addLoopback(ip); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range live {
		ifc := m.ifaces[s.g.Interface]
		g := s.g
		err := m.objs.SetGroup(s.index, bpf.Group{
			IPs: g.IPs, Seed: g.Seed, HashIPOnly: g.HashIPOnly, SelfSlot: g.SelfSlot,
			Owners: g.Owners, Prev: g.Prev, PrevAlive: g.PrevAlive,
			Ifindex: ifc.index, MAC: ifc.mac,
		})
		was := s.digest
		s.digest = g.Digest
		if err != nil {
			errs = append(errs, fmt.Errorf("group %q: %w", g.Name, err))
			s.digest = 0
		}
		s.owned = 0
		for _, o := range g.Owners {
			if o == g.SelfSlot {
				s.owned++
			}
		}
		if err == nil && was != s.digest {
			m.log.Info().Str("group", g.Name).Str("table", fmt.Sprintf("%012x", s.digest&(1<<TableDigestBits-1))).
				Int("buckets_owned", s.owned).Msg("multi-hosted table applied")
		}
	}
	// Groups gone (or whose interface failed): stop answering, clear.
	keep := map[string]bool{}
	for _, s := range live {
		keep[s.g.Name] = true
	}
	if err := m.updateAnswers(live); err != nil {
		errs = append(errs, err)
	}
	for name, s := range m.groups {
		if !keep[name] {
			if err := m.objs.ClearGroup(s.index); err != nil {
				errs = append(errs, err)
			}
			delete(m.groups, name)
		}
	}
	for ip := range m.loIPs {
		if !wantLo[ip] {
			if err := m.delLoopback(ip); err != nil {
				errs = append(errs, err)
			}
		}
	}
	usedIf := map[string]bool{}
	for _, s := range live {
		usedIf[s.g.Interface] = true
	}
	for name, ifc := range m.ifaces {
		if !usedIf[name] {
			if err := m.releaseIface(ifc); err != nil {
				errs = append(errs, err)
			}
			delete(m.ifaces, name)
		}
	}
	// Buckets that moved away are held until a socket dump shows they
	// carry no connection: dump soon, so peers learn early that this node
	// holds nothing outside its share.
	select {
	case m.kick <- struct{}{}:
	default:
	}
	if m.cfg.Applied != nil {
		var ds []uint64
		for _, s := range m.groups {
			if s.digest != 0 {
				ds = append(ds, s.digest&(1<<TableDigestBits-1))
			}
		}
		m.cfg.Applied(ds)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply multi-hosted groups: %w", err)
	}
	return nil
}

// Prepare sets up interfaces ahead of the first Apply: it removes a stale
// XDP program left by an earlier run, attaches ours with no group (every
// packet passes untouched) and opens the responders and membership sockets,
// answering nothing yet. An agent calls it before it announces itself, so
// that its first Apply after peers see it only writes tables and addresses:
// peers hand a returning node its buckets as soon as they hear it, and new
// connections there go unanswered until that Apply is done. Interfaces
// that no Apply uses are released by the next Apply.
func (m *Manager) Prepare(ifaces []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("prepare multi-hosted interfaces: manager closed")
	}
	var errs []error
	for _, name := range ifaces {
		errs = append(errs, m.ensureIface(name))
	}
	return errors.Join(errs...)
}

func freeIndex(used map[int]bool) int {
	for i := 0; ; i++ {
		if !used[i] {
			return i
		}
	}
}

// updateAnswers gives each interface's responders the addresses of the
// groups on it, joins their multicast MACs and groups, and announces new
// IPv4 addresses once.
func (m *Manager) updateAnswers(live []*served) error {
	type perIf struct {
		a4, a6       answers
		macs4, macs6 []net.HardwareAddr
		g4, g6       map[netip.Addr]bool
	}
	per := map[string]*perIf{}
	for name := range m.ifaces {
		per[name] = &perIf{a4: answers{}, a6: answers{}, g4: map[netip.Addr]bool{}, g6: map[netip.Addr]bool{}}
	}
	for _, s := range live {
		p := per[s.g.Interface]
		mac := slices.Clone(s.g.MAC)
		mac6 := IPv6MulticastMAC(mac)
		for _, ip := range s.g.IPs {
			ip = ip.Unmap()
			if ip.Is4() {
				p.a4[ip] = mac
				p.macs4 = append(p.macs4, mac)
				if g := s.g.MulticastGroup; g.Is4() && g.IsMulticast() {
					p.g4[g] = true // the cluster's own group: its MAC is mac
				} else {
					p.g4[IGMPGroup(mac)] = true
				}
			} else {
				p.a6[ip] = mac6
				p.macs6 = append(p.macs6, mac6, solicitedNodeMAC(ip))
				p.g6[MLDGroup(mac)] = true
			}
		}
	}
	var errs []error
	for name, ifc := range m.ifaces {
		p := per[name]
		var fresh []netip.Addr
		ifc.arp.mu.Lock()
		for ip := range p.a4 {
			if _, ok := ifc.arp.ans[ip]; !ok {
				fresh = append(fresh, ip)
			}
		}
		ifc.arp.mu.Unlock()
		if err := ifc.arp.set(p.a4, p.macs4); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: arp: %w", name, err))
		}
		if err := ifc.ndp.set(p.a6, p.macs6); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: ndp: %w", name, err))
		}
		if err := m.joinGroups(ifc, p.g4, p.g6); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
		}
		for _, ip := range fresh {
			ifc.arp.announce(ip, p.a4[ip])
		}
	}
	return errors.Join(errs...)
}

// joinGroups keeps the IGMP and MLD memberships of ifc equal to g4 and g6.
func (m *Manager) joinGroups(ifc *iface, g4, g6 map[netip.Addr]bool) error {
	var errs []error
	for g := range g4 {
		if !ifc.v4Join[g] {
			mreq := &unix.IPMreqn{Multiaddr: g.As4(), Ifindex: int32(ifc.index)}
			if err := unix.SetsockoptIPMreqn(ifc.igmp, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
				errs = append(errs, fmt.Errorf("igmp join %s: %w", g, err))
				continue
			}
			ifc.v4Join[g] = true
		}
	}
	for g := range ifc.v4Join {
		if !g4[g] {
			mreq := &unix.IPMreqn{Multiaddr: g.As4(), Ifindex: int32(ifc.index)}
			if err := unix.SetsockoptIPMreqn(ifc.igmp, unix.IPPROTO_IP, unix.IP_DROP_MEMBERSHIP, mreq); err != nil {
				errs = append(errs, fmt.Errorf("igmp leave %s: %w", g, err))
			}
			delete(ifc.v4Join, g)
		}
	}
	for g := range g6 {
		if !ifc.v6Join[g] {
			mreq := &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: uint32(ifc.index)}
			if err := unix.SetsockoptIPv6Mreq(ifc.mld, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
				errs = append(errs, fmt.Errorf("mld join %s: %w", g, err))
				continue
			}
			ifc.v6Join[g] = true
		}
	}
	for g := range ifc.v6Join {
		if !g6[g] {
			mreq := &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: uint32(ifc.index)}
			if err := unix.SetsockoptIPv6Mreq(ifc.mld, unix.IPPROTO_IPV6, unix.IPV6_LEAVE_GROUP, mreq); err != nil {
				errs = append(errs, fmt.Errorf("mld leave %s: %w", g, err))
			}
			delete(ifc.v6Join, g)
		}
	}
	return errors.Join(errs...)
}

// ensureIface sets up an interface once: sysctls, stale XDP removal, XDP
// attach, ARP and NDP responders, IGMP/MLD sockets.
func (m *Manager) ensureIface(name string) error {
	if _, ok := m.ifaces[name]; ok {
		return nil
	}
	ifc := &iface{name: name, sysctls: map[string]string{}, igmp: -1, mld: -1, v4Join: map[netip.Addr]bool{}, v6Join: map[netip.Addr]bool{}}
	err := inNS(m.cfg.NetNS, func() error {
		ni, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		if len(ni.HardwareAddr) != 6 {
			return fmt.Errorf("not an ethernet interface")
		}
		ifc.index, ifc.mac = ni.Index, ni.HardwareAddr
		for _, kv := range [][2]string{{"arp_ignore", "1"}, {"arp_announce", "2"}} {
			path := "/proc/sys/net/ipv4/conf/" + name + "/" + kv[0]
			old, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte(kv[1]), 0o644); err != nil {
				return err
			}
			ifc.sysctls[path] = string(old)
		}
		m.detachStale(name)
		if ifc.xdp, err = m.objs.Attach(ni.Index, m.cfg.Mode); err != nil {
			return err
		}
		ifc.mode = m.attachMode(name)
		if ifc.arp, err = newResponder("arp", ni, m.log.With().Str("interface", name).Logger()); err != nil {
			return fmt.Errorf("arp responder: %w", err)
		}
		if ifc.ndp, err = newResponder("ndp", ni, m.log.With().Str("interface", name).Logger()); err != nil {
			return fmt.Errorf("ndp responder: %w", err)
		}
		if ifc.igmp, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("igmp socket: %w", err)
		}
		if ifc.mld, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("mld socket: %w", err)
		}
		return nil
	})
	if err != nil {
		if rerr := m.releaseIface(ifc); rerr != nil {
			m.log.Warn().Err(rerr).Str("interface", name).Msg("undo partial interface setup")
		}
		return fmt.Errorf("set up interface %s: %w", name, err)
	}
	m.ifaces[name] = ifc
	m.log.Info().Str("interface", name).Stringer("mode", m.cfg.Mode).Str("attached", ifc.mode).Msg("xdp program attached")
	return nil
}

// xdpAttached maps the kernel's report of an XDP attachment
// (XDP_ATTACHED_DRV, _SKB, _HW) to its name and the flag that detaches it.
var xdpAttached = map[uint32]struct {
	name  string
	flags int
}{
	1: {"native", unix.XDP_FLAGS_DRV_MODE},
	2: {"generic", unix.XDP_FLAGS_SKB_MODE},
	3: {"offload", unix.XDP_FLAGS_HW_MODE},
}

// attachMode returns how the kernel reports the interface's XDP program
// attached ("native", "generic", "offload"; "unknown" if it cannot tell).
func (m *Manager) attachMode(name string) string {
	l, err := m.nl.LinkByName(name)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return "unknown"
	}
	if a, ok := xdpAttached[l.Attrs().Xdp.AttachMode]; ok {
		return a.name
	}
	return "unknown"
}

// detachStale removes an XDP program named like ours left on the
// interface by an earlier run (attached through netlink; a program held by
// a live bpf_link cannot be removed and makes our attach fail).
func (m *Manager) detachStale(name string) {
	l, err := m.nl.LinkByName(name)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached || l.Attrs().Xdp.ProgId == 0 {
		return
	}
	x := l.Attrs().Xdp
	pn, err := bpf.ProgramNameByID(x.ProgId)
	if err != nil || pn != bpf.ProgramName {
		return
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, -1, xdpAttached[x.AttachMode].flags); err != nil { // runs inside inNS
		m.log.Warn().Err(err).Str("interface", name).Uint32("prog_id", x.ProgId).Msg("cannot detach stale xdp program")
		return
	}
	m.log.Info().Str("interface", name).Uint32("prog_id", x.ProgId).Msg("detached stale xdp program")
}

// releaseIface undoes ensureIface (each part only if it was done).
func (m *Manager) releaseIface(ifc *iface) error {
	var errs []error
	if ifc.arp != nil {
		errs = append(errs, ifc.arp.close())
	}
	if ifc.ndp != nil {
		errs = append(errs, ifc.ndp.close())
	}
	if ifc.igmp >= 0 {
		errs = append(errs, unix.Close(ifc.igmp)) // closing leaves the groups
	}
	if ifc.mld >= 0 {
		errs = append(errs, unix.Close(ifc.mld))
	}
	if ifc.xdp != nil {
		errs = append(errs, ifc.xdp.Detach())
	}
	if len(ifc.sysctls) > 0 {
		errs = append(errs, inNS(m.cfg.NetNS, func() error {
			var errs []error
			for path, old := range ifc.sysctls {
				if err := os.WriteFile(path, []byte(old), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		}))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release interface %s: %w", ifc.name, err)
	}
	return nil
}

func (m *Manager) loAddr(ip netip.Addr) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}, Scope: unix.RT_SCOPE_HOST}
	if ip.Is4() {
		a.Label = loLabel
	} else {
		a.Flags = v6Mark
	}
	return a
}

func (m *Manager) addLoopback(ip netip.Addr) error {
	if m.loIPs[ip] {
		return nil
	}
	lo, err := m.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("raise %s on lo: %w", ip, err)
	}
	if err := m.nl.AddrReplace(lo, m.loAddr(ip)); err != nil {
		return fmt.Errorf("raise %s on lo: %w", ip, err)
	}
	m.loIPs[ip] = true
	return nil
}

func (m *Manager) delLoopback(ip netip.Addr) error {
	lo, err := m.nl.LinkByName("lo")
	if err == nil {
		err = m.nl.AddrDel(lo, m.loAddr(ip))
	}
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("drop %s from lo: %w", ip, err)
	}
	delete(m.loIPs, ip)
	return nil
}

// Status reports the served groups and the counters.
func (m *Manager) Status() (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st Status
	for _, s := range m.groups {
		st.Groups = append(st.Groups, GroupStatus{Name: s.g.Name, Interface: s.g.Interface, IPs: slices.Clone(s.g.IPs), Index: s.index, BucketsOwned: s.owned, BucketsHeld: m.objs.Held(s.index), BucketsHandover: m.objs.Handover(s.index), Table: s.digest})
	}
	slices.SortFunc(st.Groups, func(a, b GroupStatus) int { return cmpString(a.Name, b.Name) })
	for _, ifc := range m.ifaces {
		st.Interfaces = append(st.Interfaces, InterfaceStatus{Name: ifc.name, Mode: ifc.mode})
		st.ARPReplies += ifc.arp.replies.Load()
		st.MalformedARP += ifc.arp.bad.Load()
		st.NDPReplies += ifc.ndp.replies.Load()
		st.MalformedNDP += ifc.ndp.bad.Load()
	}
	slices.SortFunc(st.Interfaces, func(a, b InterfaceStatus) int { return cmpString(a.Name, b.Name) })
	if m.closed {
		return st, nil
	}
	c, err := m.objs.Counters()
	if err != nil {
		return st, fmt.Errorf("multi-hosted status: %w", err)
	}
	st.Counters = c
	return st, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Close stops serving: responders closed, XDP detached, sysctls restored,
// loopback addresses removed, program unloaded.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	close(m.stop)
	m.mu.Unlock()
	<-m.done // a prune in progress holds m.mu: wait for it outside
	m.mu.Lock()
	var errs []error
	for name, ifc := range m.ifaces {
		errs = append(errs, m.releaseIface(ifc))
		delete(m.ifaces, name)
	}
	for ip := range m.loIPs {
		errs = append(errs, m.delLoopback(ip))
	}
	errs = append(errs, m.objs.Close())
	m.nl.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close multihost manager: %w", err)
	}
	return nil
}
