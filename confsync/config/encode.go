package config

import (
	"bytes"
	"fmt"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/shoal-project/shoal/confsync/identity"
)

// Encode writes c as TOML with every key explicit, including the slots
// assigned to multi-hosted members, so that re-reading it gives the same
// Cluster and slots never renumber.
func Encode(c *Cluster) ([]byte, error) {
	dur := func(d time.Duration) *string { s := d.String(); return &s }
	i64 := func(v int) *int64 { x := int64(v); return &x }
	bp := func(v bool) *bool { return &v }
	s := c.Settings
	r := rawCluster{Cluster: rawSettings{
		Name:              s.Name,
		HeartbeatInterval: dur(s.HeartbeatInterval),
		MonitorTimeout:    dur(s.MonitorTimeout),
		MulticastGroup:    strp(s.MulticastGroup.String()),
		MulticastPort:     i64(int(s.MulticastPort)),
		HeartbeatMode:     strp(s.HeartbeatMode),
		GossipPort:        i64(int(s.GossipPort)),
		ConfigPort:        i64(int(s.ConfigPort)),
		Verbose:           s.Verbose,
	}}
	for _, m := range c.Members {
		r.Member = append(r.Member, rawMember{
			Name: m.Name, Address: m.Address.String(), PublicKey: identity.FormatPublicKey(m.PublicKey),
			CanUpdate: bp(m.CanUpdate), Location: m.Location,
		})
	}
	for _, g := range c.Groups {
		rg := rawGroup{
			Name: g.Name, Mode: g.Mode, Members: g.Members, Passive: g.Passive, KeepTogether: g.KeepTogether,
			Interface: g.Interface, PrefixLen: int64(g.PrefixLen), PrefixRoute: g.PrefixRoute, Hash: g.Hash,
			FailbackDelay: g.FailbackDelay.String(), GARPCount: i64(g.GARPCount),
			GARPSpread: dur(g.GARPSpread), GARPRefresh: dur(g.GARPRefresh),
		}
		for _, ip := range g.IPs {
			rg.IPs = append(rg.IPs, ip.String())
		}
		if g.Slots != nil {
			rg.Slots = map[string]int64{}
			for m, sl := range g.Slots {
				rg.Slots[m] = int64(sl)
			}
		}
		r.Group = append(r.Group, rg)
	}
	st := c.SelfTest
	rs := &rawSelfTest{
		Interval: dur(st.Interval), Timeout: dur(st.Timeout), FailAfter: i64(st.FailAfter),
		RecoverAfter: i64(st.RecoverAfter), CheckLinks: bp(st.CheckLinks),
	}
	if st.Gateway.IsValid() {
		rs.Gateway = st.Gateway.String()
	}
	for _, ip := range st.CheckIPs {
		rs.CheckIPs = append(rs.CheckIPs, ip.String())
	}
	r.SelfTest = rs
	ev := c.Events
	re := &rawEvents{SerfHandlers: ev.SerfHandlers, MaxConcurrent: i64(ev.MaxConcurrent), DefaultTimeout: dur(ev.DefaultTimeout)}
	for _, a := range ev.Actions {
		re.Action = append(re.Action, rawAction{
			Name: a.Name, Type: a.Type, Events: a.Events, Groups: a.Groups, Timeout: a.Timeout.String(),
			Command: a.Command, URL: a.URL, Retries: i64(a.Retries), SMTPServer: a.SMTPServer,
			StartTLS: bp(a.StartTLS), From: a.From, To: a.To, Username: a.Username,
			PasswordFile: a.PasswordFile, BatchWindow: dur(a.BatchWindow), MaxPerHour: i64(a.MaxPerHour),
		})
	}
	r.Events = re
	if len(c.Admin.Users) > 0 {
		ra := &rawAdmin{}
		for _, u := range c.Admin.Users {
			ra.User = append(ra.User, rawAdminUser(u))
		}
		r.Admin = ra
	}
	for _, o := range c.Observers {
		ro := rawObserver{Name: o.Name}
		if o.Address.IsValid() {
			ro.Address = o.Address.String()
		}
		r.Observer = append(r.Observer, ro)
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(r); err != nil {
		return nil, fmt.Errorf("encode cluster config: %w", err)
	}
	return b.Bytes(), nil
}
