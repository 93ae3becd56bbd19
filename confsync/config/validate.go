package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shoal-project/shoal/confsync/identity"
)

// validName: letters, digits, '.', '_', '-'; 1..63 characters.
func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		digit := r >= '0' && r <= '9'
		if !letter && !digit && r != '.' && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

const nameRule = "must be 1..63 letters, digits, '.', '_' or '-'"

// parseIP accepts a plain IPv4 or IPv6 address (no zone, no prefix).
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// duration parses an optional duration string; def when absent.
func (e *errs) duration(w where, key string, s *string, def, lo, hi time.Duration) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		e.add(w, key, "", "%q is not a duration (e.g. \"500ms\", \"2s\")", *s)
		return def
	}
	if d < lo || d > hi {
		e.add(w, key, "", "%s out of range %s..%s", d, lo, hi)
	}
	return d
}

func (e *errs) intIn(w where, key string, v *int64, def, lo, hi int64) int {
	if v == nil {
		return int(def)
	}
	if *v < lo || *v > hi {
		e.add(w, key, "", "%d out of range %d..%d", *v, lo, hi)
		return int(def)
	}
	return int(*v)
}

func (e *errs) oneOf(w where, key, v, def string, allowed ...string) string {
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	e.add(w, key, "", "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

func strp(s string) *string { return &s }

func convertCluster(e *errs, r *rawCluster) *Cluster {
	c := &Cluster{}
	// [cluster]
	w := where{table: "cluster", section: "cluster"}
	s := DefaultClusterSettings()
	s.Name = r.Cluster.Name
	if !validName(s.Name) {
		e.add(w, "name", "", "cluster name %q %s", s.Name, nameRule)
	}
	s.HeartbeatInterval = e.duration(w, "heartbeat_interval", r.Cluster.HeartbeatInterval, s.HeartbeatInterval, MinHeartbeatInterval, MaxHeartbeatInterval)
	s.MonitorTimeout = 4 * s.HeartbeatInterval
	if r.Cluster.MonitorTimeout != nil {
		s.MonitorTimeout = e.duration(w, "monitor_timeout", r.Cluster.MonitorTimeout, s.MonitorTimeout, 2*s.HeartbeatInterval, 5*time.Minute)
	}
	if r.Cluster.MulticastGroup != nil {
		a, ok := parseIP(*r.Cluster.MulticastGroup)
		if !ok || !a.Is4() || !a.IsMulticast() {
			e.add(w, "multicast_group", "", "%q is not an IPv4 multicast address (224.0.0.0/4)", *r.Cluster.MulticastGroup)
		} else {
			s.MulticastGroup = a
		}
	}
	s.MulticastPort = uint16(e.intIn(w, "multicast_port", r.Cluster.MulticastPort, int64(s.MulticastPort), 1, 65535))
	s.GossipPort = uint16(e.intIn(w, "gossip_port", r.Cluster.GossipPort, int64(s.GossipPort), 1, 65535))
	s.ConfigPort = uint16(e.intIn(w, "config_port", r.Cluster.ConfigPort, int64(s.ConfigPort), 1, 65535))
	if r.Cluster.HeartbeatMode != nil {
		s.HeartbeatMode = e.oneOf(w, "heartbeat_mode", *r.Cluster.HeartbeatMode, s.HeartbeatMode, HeartbeatMulticast, HeartbeatUnicast)
		if *r.Cluster.HeartbeatMode == "" {
			e.add(w, "heartbeat_mode", "", "empty; want %s or %s", HeartbeatMulticast, HeartbeatUnicast)
		}
	}
	s.Verbose = r.Cluster.Verbose
	c.Settings = s

	// [[member]]
	if len(r.Member) == 0 {
		e.list = append(e.list, &Error{File: e.file, Key: "member", Msg: "no [[member]] defined"})
	}
	memberIdx := map[string]int{}
	addrOwner := map[netip.Addr]string{}
	for i, rm := range r.Member {
		w := clusterSection("member", i, map[string]any{"name": rm.Name})
		m := Member{Name: rm.Name, CanUpdate: true, Location: rm.Location}
		if !validName(rm.Name) {
			e.add(w, "name", "", "member name %q %s", rm.Name, nameRule)
		} else if _, dup := memberIdx[rm.Name]; dup {
			e.add(w, "name", "", "duplicate member name %q", rm.Name)
		} else {
			memberIdx[rm.Name] = i
		}
		if a, ok := parseIP(rm.Address); !ok {
			e.add(w, "address", "", "%q is not an IP address", rm.Address)
		} else {
			m.Address = a
			if o, dup := addrOwner[a]; dup {
				e.add(w, "address", "", "%s is also the address of member %q", a, o)
			}
			addrOwner[a] = rm.Name
		}
		if rm.PublicKey == "" {
			e.add(w, "public_key", "", "missing (want %q + base64 of the 32-byte key; see shoal keygen)", identity.PublicKeyPrefix)
		} else if k, err := identity.ParsePublicKey(rm.PublicKey); err != nil {
			e.add(w, "public_key", "", "%v", err)
		} else {
			m.PublicKey = k
		}
		if rm.CanUpdate != nil {
			m.CanUpdate = *rm.CanUpdate
		}
		c.Members = append(c.Members, m)
	}

	// [[group]]
	groupIdx := map[string]bool{}
	ipOwner := map[netip.Addr]string{}
	for i := range r.Group {
		rg := &r.Group[i]
		w := clusterSection("group", i, map[string]any{"name": rg.Name})
		g := convertGroup(e, w, rg, memberIdx, ipOwner)
		if !validName(rg.Name) {
			e.add(w, "name", "", "group name %q %s", rg.Name, nameRule)
		} else if groupIdx[rg.Name] {
			e.add(w, "name", "", "duplicate group name %q", rg.Name)
		}
		groupIdx[rg.Name] = true
		c.Groups = append(c.Groups, g)
	}

	// [[observer]]
	obsIdx := map[string]bool{}
	for i, ro := range r.Observer {
		w := clusterSection("observer", i, map[string]any{"name": ro.Name})
		o := Observer{Name: ro.Name}
		switch {
		case !validName(ro.Name):
			e.add(w, "name", "", "observer name %q %s", ro.Name, nameRule)
		case hasKey(memberIdx, ro.Name):
			e.add(w, "name", "", "%q is a member; an observer needs a name of its own", ro.Name)
		case obsIdx[ro.Name]:
			e.add(w, "name", "", "duplicate observer name %q", ro.Name)
		}
		obsIdx[ro.Name] = true
		if ro.Address != "" {
			if a, ok := parseIP(ro.Address); ok {
				o.Address = a
			} else {
				e.add(w, "address", "", "%q is not an IP address", ro.Address)
			}
		}
		c.Observers = append(c.Observers, o)
	}

	// [selftest]
	c.SelfTest = DefaultSelfTest()
	if rs := r.SelfTest; rs != nil {
		w := where{table: "selftest", section: "selftest"}
		st := &c.SelfTest
		if rs.Gateway != "" {
			if a, ok := parseIP(rs.Gateway); ok {
				st.Gateway = a
			} else {
				e.add(w, "gateway", "", "%q is not an IP address", rs.Gateway)
			}
		}
		for _, s := range rs.CheckIPs {
			if a, ok := parseIP(s); ok {
				st.CheckIPs = append(st.CheckIPs, a)
			} else {
				e.add(w, "check_ips", s, "%q is not an IP address", s)
			}
		}
		st.Interval = e.duration(w, "interval", rs.Interval, st.Interval, 100*time.Millisecond, time.Minute)
		st.Timeout = e.duration(w, "timeout", rs.Timeout, st.Timeout, time.Millisecond, time.Minute)
		if st.Timeout > st.Interval {
			e.add(w, "timeout", "", "%s is longer than interval %s", st.Timeout, st.Interval)
		}
		st.FailAfter = e.intIn(w, "fail_after", rs.FailAfter, int64(st.FailAfter), 1, 1000)
		st.RecoverAfter = e.intIn(w, "recover_after", rs.RecoverAfter, int64(st.RecoverAfter), 1, 1000)
		if rs.CheckLinks != nil {
			st.CheckLinks = *rs.CheckLinks
		}
	}

	// [events]
	c.Events = DefaultEvents()
	if re := r.Events; re != nil {
		w := where{table: "events", section: "events"}
		ev := &c.Events
		for _, h := range re.SerfHandlers {
			if strings.TrimSpace(h) == "" || strings.HasSuffix(h, "=") {
				e.add(w, "serf_handlers", h, "%q: want \"[filter[,filter]=]command\"", h)
			}
		}
		ev.SerfHandlers = re.SerfHandlers
		ev.MaxConcurrent = e.intIn(w, "max_concurrent", re.MaxConcurrent, int64(ev.MaxConcurrent), 1, 64)
		ev.DefaultTimeout = e.duration(w, "default_timeout", re.DefaultTimeout, ev.DefaultTimeout, time.Millisecond, time.Hour)
		names := map[string]bool{}
		for i := range re.Action {
			ra := &re.Action[i]
			w := clusterSection("events.action", i, map[string]any{"name": ra.Name})
			a := convertAction(e, w, ra, ev.DefaultTimeout, groupIdx)
			if !validName(ra.Name) {
				e.add(w, "name", "", "action name %q %s", ra.Name, nameRule)
			} else if names[ra.Name] {
				e.add(w, "name", "", "duplicate action name %q", ra.Name)
			}
			names[ra.Name] = true
			ev.Actions = append(ev.Actions, a)
		}
	}

	// [admin]
	if ra := r.Admin; ra != nil {
		names := map[string]bool{}
		for i, u := range ra.User {
			w := clusterSection("admin.user", i, map[string]any{"name": u.Name})
			au := AdminUser{Name: u.Name, PasswordHash: u.PasswordHash, TokenHash: u.TokenHash, Role: e.oneOf(w, "role", u.Role, RoleAdmin, RoleAdmin, RoleReadOnly)}
			switch {
			case u.Name == "" || strings.ContainsAny(u.Name, ": \t"):
				e.add(w, "name", "", "user name %q must be non-empty without ':' or spaces", u.Name)
			case names[u.Name]:
				e.add(w, "name", "", "duplicate user name %q", u.Name)
			}
			names[u.Name] = true
			if u.PasswordHash == "" && u.TokenHash == "" {
				e.add(w, "password_hash", "", "user %q has neither password_hash nor token_hash", u.Name)
			}
			if h := u.PasswordHash; h != "" && !isBcrypt(h) {
				e.add(w, "password_hash", "", "not a bcrypt hash (want $2a$/$2b$/$2y$..., 60 characters; make one with 'shoal admin hash-password')")
			}
			if h := u.TokenHash; h != "" {
				hexPart, ok := strings.CutPrefix(h, "sha256:")
				if _, err := hex.DecodeString(hexPart); !ok || len(hexPart) != 64 || err != nil {
					e.add(w, "token_hash", "", "want \"sha256:\" + 64 hex digits (make one with 'shoal admin new-token')")
				}
			}
			c.Admin.Users = append(c.Admin.Users, au)
		}
	}
	return c
}

func convertGroup(e *errs, w where, rg *rawGroup, memberIdx map[string]int, ipOwner map[netip.Addr]string) Group {
	g := DefaultGroup()
	g.Name = rg.Name
	g.Mode = e.oneOf(w, "mode", rg.Mode, ModeSingle, ModeSingle, ModeMulti)
	multi := g.Mode == ModeMulti

	if len(rg.IPs) == 0 {
		e.add(w, "ips", "", "no traffic IPs")
	}
	has4 := false
	for _, s := range rg.IPs {
		a, ok := parseIP(s)
		if !ok {
			e.add(w, "ips", s, "%s is not an IP address", s)
			continue
		}
		if o, dup := ipOwner[a]; dup {
			if o == rg.Name {
				e.add(w, "ips", s, "%s listed twice", a)
			} else {
				e.add(w, "ips", s, "%s is also in group %q", a, o)
			}
			continue
		}
		ipOwner[a] = rg.Name
		has4 = has4 || a.Is4()
		g.IPs = append(g.IPs, a)
	}

	if len(rg.Members) == 0 {
		e.add(w, "members", "", "no members")
	}
	seen := map[string]bool{}
	for _, m := range rg.Members {
		switch {
		case seen[m]:
			e.add(w, "members", m, "member %q listed twice", m)
			continue
		case !hasKey(memberIdx, m):
			e.add(w, "members", m, "member %q is not defined in any [[member]]", m)
		}
		seen[m] = true
		g.Members = append(g.Members, m)
	}
	limit := MaxSingleMembers
	if multi {
		limit = MaxMultiMembers
	}
	if len(g.Members) > limit {
		e.add(w, "members", "", "%d members; a %s-hosted group has at most %d", len(g.Members), g.Mode, limit)
	}
	pseen := map[string]bool{}
	for _, p := range rg.Passive {
		switch {
		case pseen[p]:
			e.add(w, "passive", p, "member %q listed twice", p)
			continue
		case !seen[p]:
			e.add(w, "passive", p, "%q is not one of the group's members", p)
			continue
		}
		pseen[p] = true
		g.Passive = append(g.Passive, p)
	}
	if len(g.Members) > 0 && len(pseen) == len(g.Members) {
		e.add(w, "passive", "", "every member is passive; at least one must be active")
	}

	g.KeepTogether = rg.KeepTogether
	if multi && rg.KeepTogether {
		e.add(w, "keep_together", "", "only for single-hosted groups")
	}
	g.Interface = rg.Interface
	if rg.Interface == "" {
		e.add(w, "interface", "", "missing: the interface to raise the IPs on")
	} else if len(rg.Interface) > 15 || strings.ContainsAny(rg.Interface, "/ \t:") {
		e.add(w, "interface", "", "%q is not an interface name", rg.Interface)
	}
	maxPrefix := int64(128)
	if has4 {
		maxPrefix = 32
	}
	if rg.PrefixLen < 0 || rg.PrefixLen > maxPrefix {
		e.add(w, "prefix_len", "", "%d out of range 0..%d", rg.PrefixLen, maxPrefix)
	} else {
		g.PrefixLen = int(rg.PrefixLen)
	}
	g.PrefixRoute = rg.PrefixRoute
	if multi {
		g.Hash = e.oneOf(w, "hash", rg.Hash, HashIPPort, HashIPPort, HashIP)
	} else if rg.Hash != "" {
		e.add(w, "hash", "", "only for multi-hosted groups")
	}
	if rg.FailbackDelay != "" {
		g.FailbackDelay = e.duration(w, "failback_delay", strp(rg.FailbackDelay), 0, 0, time.Hour)
	}
	g.GARPCount = e.intIn(w, "garp_count", rg.GARPCount, int64(g.GARPCount), 0, 100)
	g.GARPSpread = e.duration(w, "garp_spread", rg.GARPSpread, g.GARPSpread, 0, time.Minute)
	g.GARPRefresh = e.duration(w, "garp_refresh", rg.GARPRefresh, g.GARPRefresh, 0, 24*time.Hour)
	if g.GARPRefresh > 0 && g.GARPRefresh < time.Second {
		e.add(w, "garp_refresh", "", "%s is below 1s (use \"0s\" to turn refresh off)", g.GARPRefresh)
	}

	// Slots: explicit ones first, then the lowest free slot for the rest,
	// in the order members are listed.
	if !multi {
		if len(rg.Slots) > 0 {
			e.add(w, "slots", "", "only for multi-hosted groups")
		}
		return g
	}
	g.Slots = map[string]int{}
	var used [MaxMultiMembers]string
	for _, m := range sortedKeys(rg.Slots) {
		s := rg.Slots[m]
		switch {
		case !seen[m]:
			e.add(w, "slots", "", "%q is not one of the group's members", m)
		case s < 0 || s >= MaxMultiMembers:
			e.add(w, "slots", "", "slot %d of %q out of range 0..%d", s, m, MaxMultiMembers-1)
		case used[s] != "":
			e.add(w, "slots", "", "slot %d given to both %q and %q", s, used[s], m)
		default:
			used[s] = m
			g.Slots[m] = int(s)
		}
	}
	for _, m := range g.Members {
		if _, ok := g.Slots[m]; ok {
			continue
		}
		for s := range used {
			if used[s] == "" {
				used[s] = m
				g.Slots[m] = s
				break
			}
		}
	}
	return g
}

func convertAction(e *errs, w where, ra *rawAction, defTimeout time.Duration, groups map[string]bool) Action {
	a := DefaultAction()
	a.Name = ra.Name
	a.Type = ra.Type
	switch ra.Type {
	case ActionLog, ActionScript, ActionEmail, ActionWebhook:
	case "":
		e.add(w, "type", "", "missing; want one of log, script, email, webhook")
	default:
		e.add(w, "type", "", "%q is not one of log, script, email, webhook", ra.Type)
	}
	for _, ev := range ra.Events {
		if ev == "" {
			e.add(w, "events", "", "empty event type")
		}
	}
	a.Events = ra.Events
	for _, g := range ra.Groups {
		if !groups[g] {
			e.add(w, "groups", g, "group %q is not defined", g)
		}
	}
	a.Groups = ra.Groups
	a.Timeout = defTimeout
	if ra.Timeout != "" {
		a.Timeout = e.duration(w, "timeout", strp(ra.Timeout), defTimeout, time.Millisecond, time.Hour)
	}
	a.Command = ra.Command
	a.URL = ra.URL
	a.Retries = e.intIn(w, "retries", ra.Retries, int64(a.Retries), 0, 10)
	a.SMTPServer = ra.SMTPServer
	if ra.StartTLS != nil {
		a.StartTLS = *ra.StartTLS
	}
	a.From, a.To, a.Username, a.PasswordFile = ra.From, ra.To, ra.Username, ra.PasswordFile
	a.BatchWindow = e.duration(w, "batch_window", ra.BatchWindow, a.BatchWindow, 0, time.Hour)
	a.MaxPerHour = e.intIn(w, "max_per_hour", ra.MaxPerHour, int64(a.MaxPerHour), 1, 3600)
	switch ra.Type {
	case ActionScript:
		if ra.Command == "" {
			e.add(w, "command", "", "missing: a script action needs a command")
		}
	case ActionWebhook:
		u, err := url.Parse(ra.URL)
		if ra.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			e.add(w, "url", "", "%q is not an http(s) URL", ra.URL)
		}
	case ActionEmail:
		if ra.SMTPServer == "" || !strings.Contains(ra.SMTPServer, ":") {
			e.add(w, "smtp_server", "", "%q: want host:port", ra.SMTPServer)
		}
		if !strings.Contains(ra.From, "@") {
			e.add(w, "from", "", "%q is not a mail address", ra.From)
		}
		if len(ra.To) == 0 {
			e.add(w, "to", "", "missing: an email action needs recipients")
		}
		for _, t := range ra.To {
			if !strings.Contains(t, "@") {
				e.add(w, "to", t, "%q is not a mail address", t)
			}
		}
	}
	return a
}

func convertAgent(e *errs, r *rawAgent, dir string) *Agent {
	w := where{}
	a := DefaultAgent()
	a.Node = r.Node
	if !validName(r.Node) {
		e.add(w, "node", "", "node name %q %s", r.Node, nameRule)
	}
	path := func(v, def string) string {
		if v == "" {
			v = def
		}
		if !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
		}
		return v
	}
	a.ClusterConfig = path(r.ClusterConfig, a.ClusterConfig)
	a.DataDir = path(r.DataDir, a.DataDir)
	a.KeyFile = path(r.KeyFile, a.KeyFile)
	a.SecretFile = path(r.SecretFile, a.SecretFile)
	a.Socket = path(r.Socket, a.Socket)
	if r.Bind != "" {
		if b, ok := parseIP(r.Bind); ok {
			a.Bind = b
		} else {
			e.add(w, "bind", "", "%q is not an IP address", r.Bind)
		}
	}
	a.HeartbeatInterface = r.HeartbeatInterface
	if len(r.HeartbeatInterface) > 15 || strings.ContainsAny(r.HeartbeatInterface, "/ \t:") {
		e.add(w, "heartbeat_interface", "", "%q is not an interface name", r.HeartbeatInterface)
	}
	a.LogLevel = e.oneOf(w, "log_level", r.LogLevel, a.LogLevel, "debug", "info", "warn", "error")
	a.LogFormat = e.oneOf(w, "log_format", r.LogFormat, a.LogFormat, "console", "json")
	a.XDPMode = e.oneOf(w, "xdp_mode", r.XDPMode, a.XDPMode, "auto", "native", "generic")
	for _, kv := range [][2]string{{"admin_listen", r.AdminListen}, {"metrics_listen", r.MetricsListen}} {
		key, v := kv[0], kv[1]
		if v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			e.add(w, key, "", "%q is not host:port (e.g. \":8443\")", v)
		}
	}
	a.AdminListen, a.MetricsListen = r.AdminListen, r.MetricsListen
	return &a
}

// CheckAgainst reports whether the agent file fits the cluster config: its
// node must be a member.
func (a *Agent) CheckAgainst(c *Cluster) error {
	if _, ok := c.MemberByName(a.Node); !ok {
		return &Error{File: a.File, Key: "node", Msg: fmt.Sprintf("%q is not a member of cluster %q (%s)", a.Node, c.Settings.Name, c.File)}
	}
	return nil
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// isBcrypt reports whether h looks like a bcrypt hash ($2a$, $2b$ or $2y$,
// 60 characters).
func isBcrypt(h string) bool {
	return len(h) == 60 && (strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$"))
}
