package adminapi

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-project/shoal/appliance/events"
)

// ClusterView is the merged cluster picture served at /api/v1/cluster: this
// node's view, completed by the status each up member reports about itself.
type ClusterView struct {
	Cluster    string          `json:"cluster"`
	GatheredBy string          `json:"gathered_by"` // the node that asked everyone
	Time       time.Time       `json:"time"`
	Members    []ClusterMember `json:"members"`
	IPs        []ClusterIP     `json:"ips"`    // single-hosted traffic IPs
	Groups     []ClusterGroup  `json:"groups"` // every group, with shares for multi-hosted ones
	Events     []events.Event  `json:"events"` // the latest events of every node, newest first
	Warnings   []string        `json:"warnings"`
}

// ClusterMember is one member: how the gathering node sees it, and what it
// says about itself when its API answered.
type ClusterMember struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Self    bool   `json:"self"` // the gathering node
	Up      bool   `json:"up"`   // in the gathering node's view
	// Health is its own verdict when it answered, else the gathering
	// node's idea of it: "ok", "failed" or "unknown".
	Health          string   `json:"health"`
	Reasons         []string `json:"reasons,omitempty"`
	LastHeartbeatMS int64    `json:"last_heartbeat_ms"` // -1 = never; 0 for self
	Reachable       bool     `json:"reachable"`         // its admin API answered
	Error           string   `json:"error,omitempty"`   // why not
	Version         string   `json:"version,omitempty"`
	ConfigVersion   uint64   `json:"config_version"`
	ConfigHash      string   `json:"config_hash,omitempty"`
	ViewEpoch       uint64   `json:"view_epoch,omitempty"`
	ViewDigest      string   `json:"view_digest,omitempty"`
	ViewUp          []string `json:"view_up,omitempty"` // its own view
	Holds           []string `json:"holds,omitempty"`   // single-hosted IPs it reports holding
}

// ClusterIP is one single-hosted traffic IP: who should hold it, who says it
// does, and why.
type ClusterIP struct {
	Group  string   `json:"group"`
	IP     string   `json:"ip"`
	Owner  string   `json:"owner"`   // as the gathering node computes it; "" = nobody alive
	HeldBy []string `json:"held_by"` // members reporting they hold it
	Why    string   `json:"why,omitempty"`
}

// ClusterGroup is one traffic IP group.
type ClusterGroup struct {
	Name    string   `json:"name"`
	Mode    string   `json:"mode"`
	Members []string `json:"members"`
	Passive []string `json:"passive,omitempty"`
	// Shares (multi-hosted): buckets per member as the gathering node
	// computes them; Reported: each answering member's own figure for
	// itself.
	Shares   map[string]int `json:"shares,omitempty"`
	Reported map[string]int `json:"reported,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// nodeReport is what one member answered.
type nodeReport struct {
	status NodeStatus
	events []events.Event
	err    error // nil: answered
}

// clusterCache shares one gathering between concurrent callers for a
// second (the web page polls every second, maybe from several browsers).
type clusterCache struct {
	mu   sync.Mutex
	at   time.Time
	view ClusterView
}

const clusterCacheTTL = time.Second

// Cluster gathers the cluster view: asks every member that is up in this
// node's view for its status and recent events, over mutually
// authenticated TLS, and merges the answers.
func (s *Server) Cluster(ctx context.Context) ClusterView {
	s.cluster.mu.Lock()
	defer s.cluster.mu.Unlock()
	if time.Since(s.cluster.at) < s.cacheTTL {
		return s.cluster.view
	}
	v := s.gather(ctx)
	s.cluster.at, s.cluster.view = time.Now(), v
	return v
}

func (s *Server) gather(ctx context.Context) ClusterView {
	_, self, err := localStatus(s.src)
	if err != nil {
		return ClusterView{GatheredBy: s.node, Time: time.Now(), Warnings: []string{err.Error()}}
	}
	reports := map[string]nodeReport{self.Node: {status: self, events: s.src.Events(s.nEvents)}}
	acc := s.access.Load()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range self.Members {
		if m.Name == self.Node || m.Self {
			continue
		}
		p, ok := acc.peers[m.Name]
		var skip error
		switch {
		case !m.Up:
			skip = errors.New("down in this node's view: not asked")
		case !ok || p.Addr == "":
			skip = errors.New("no admin API address known")
		}
		if skip != nil {
			mu.Lock() // the goroutines below write too
			reports[m.Name] = nodeReport{err: skip}
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.peers.report(ctx, p, s.nEvents)
			if r.err != nil {
				s.metrics.peerErrors.WithLabelValues(p.Name).Inc()
			}
			mu.Lock()
			reports[p.Name] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return mergeCluster(self, reports, s.explainText, s.nEvents, time.Now())
}

// explainText is the local node's explanation of ip, as text.
func (s *Server) explainText(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	v, err := s.src.Explain(a)
	if err != nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var t struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(b, &t)
	return strings.TrimSpace(t.Text)
}

// mergeCluster builds the cluster view from the gathering node's status
// (self) and every member's report (self's included). It is pure.
func mergeCluster(self NodeStatus, reports map[string]nodeReport, explain func(ip string) string, nEvents int, now time.Time) ClusterView {
	v := ClusterView{Cluster: self.Cluster, GatheredBy: self.Node, Time: now,
		Members: []ClusterMember{}, IPs: []ClusterIP{}, Groups: []ClusterGroup{}, Events: []events.Event{}, Warnings: []string{}}
	warn := func(format string, a ...any) { v.Warnings = append(v.Warnings, fmt.Sprintf(format, a...)) }
	answered := func(name string) (NodeStatus, bool) {
		r, ok := reports[name]
		return r.status, ok && r.err == nil
	}

	// Members.
	holders := map[string][]string{} // ip -> members reporting it held
	for _, m := range self.Members {
		cm := ClusterMember{Name: m.Name, Address: m.Address, Self: m.Name == self.Node, Up: m.Up,
			Health: m.Health, Reasons: m.Reasons, LastHeartbeatMS: m.LastHeartbeatMS, ConfigVersion: m.ConfigVersion}
		if cm.Self {
			cm.LastHeartbeatMS = 0
		}
		if st, ok := answered(m.Name); ok {
			cm.Reachable = true
			cm.Health, cm.Reasons = "failed", st.Health.Reasons
			if st.Health.OK {
				cm.Health = "ok"
			}
			cm.Version, cm.ConfigVersion, cm.ConfigHash = st.Version, st.ConfigVersion, st.ConfigHash
			cm.ViewEpoch, cm.ViewDigest, cm.ViewUp = st.View.Epoch, st.View.Digest, st.View.Up
			for _, g := range st.Groups {
				for _, ip := range g.Held {
					cm.Holds = append(cm.Holds, ip)
					holders[ip] = append(holders[ip], m.Name)
				}
			}
			sort.Strings(cm.Holds)
			if st.Node != m.Name {
				warn("member %s answered as %q", m.Name, st.Node)
			}
		} else if r, ok := reports[m.Name]; ok && r.err != nil {
			cm.Error = r.err.Error()
			if m.Up {
				warn("%s is up but its admin API did not answer: %v", m.Name, r.err)
			}
		}
		v.Members = append(v.Members, cm)
	}
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].Name < v.Members[j].Name })

	// Agreement between the members that answered.
	var views, configs []string
	digests, versions := map[string]bool{}, map[string]bool{}
	for _, m := range v.Members {
		if !m.Reachable {
			continue
		}
		digests[m.ViewDigest] = true
		versions[fmt.Sprintf("%d/%s", m.ConfigVersion, m.ConfigHash)] = true
		views = append(views, fmt.Sprintf("%s sees [%s] (epoch %d)", m.Name, strings.Join(m.ViewUp, ","), m.ViewEpoch))
		configs = append(configs, fmt.Sprintf("%s=%d", m.Name, m.ConfigVersion))
	}
	if len(digests) > 1 {
		warn("views differ: %s", strings.Join(views, "; "))
	}
	if len(versions) > 1 {
		warn("config versions differ: %s", strings.Join(configs, ", "))
	}

	// Groups and IPs.
	for _, g := range self.Groups {
		cg := ClusterGroup{Name: g.Name, Mode: g.Mode, Members: g.Members, Passive: g.Passive, Error: g.Error}
		if g.Error != "" {
			warn("group %s: %s", g.Name, g.Error)
		}
		if g.Mode == "multi" {
			cg.Shares = g.Shares
			for _, m := range g.Members {
				st, ok := answered(m)
				if !ok {
					continue
				}
				for _, og := range st.Groups {
					if og.Name != g.Name {
						continue
					}
					if cg.Reported == nil {
						cg.Reported = map[string]int{}
					}
					cg.Reported[m] = og.Shares[m]
					if og.Shares[m] != g.Shares[m] {
						warn("group %s: %s computes its share as %d buckets, %s computes %d", g.Name, m, og.Shares[m], self.Node, g.Shares[m])
					}
				}
			}
			v.Groups = append(v.Groups, cg)
			continue
		}
		v.Groups = append(v.Groups, cg)
		ips := make([]string, 0, len(g.IPs))
		for ip := range g.IPs {
			ips = append(ips, ip)
		}
		slices.SortFunc(ips, compareIP)
		for _, ip := range ips {
			ci := ClusterIP{Group: g.Name, IP: ip, Owner: g.IPs[ip], HeldBy: nonNil(holders[ip])}
			sort.Strings(ci.HeldBy)
			if explain != nil {
				ci.Why = explain(ip)
			}
			switch {
			case len(ci.HeldBy) > 1:
				warn("%s (group %s) is held by %s", ip, g.Name, strings.Join(ci.HeldBy, " and "))
			case ci.Owner == "":
				warn("%s (group %s) has no owner: no member of the group is up", ip, g.Name)
			case !slices.Contains(ci.HeldBy, ci.Owner):
				if _, ok := answered(ci.Owner); ok {
					warn("%s (group %s): %s should hold it but does not report it (yet)", ip, g.Name, ci.Owner)
				}
			}
			v.IPs = append(v.IPs, ci)
		}
	}

	// Events, newest first, without duplicates.
	seen := map[string]bool{}
	for _, r := range reports {
		if r.err != nil {
			continue
		}
		for _, e := range r.events {
			k := fmt.Sprintf("%d|%s|%s|%s|%s|%s", e.Time.UnixNano(), e.Type, e.Node, e.Member, e.Group, e.IP)
			if !seen[k] {
				seen[k] = true
				v.Events = append(v.Events, e)
			}
		}
	}
	sort.SliceStable(v.Events, func(i, j int) bool {
		if !v.Events[i].Time.Equal(v.Events[j].Time) {
			return v.Events[i].Time.After(v.Events[j].Time)
		}
		return v.Events[i].Node < v.Events[j].Node
	})
	if len(v.Events) > nEvents {
		v.Events = v.Events[:nEvents]
	}
	return v
}

func compareIP(a, b string) int {
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return x.Compare(y)
}

// peerClient calls other members' admin APIs with this node's certificate,
// pinning each server to the key configured for the member at its address.
type peerClient struct {
	cert    tls.Certificate
	timeout time.Duration
	access  func() *access
	tr      *http.Transport
	hc      *http.Client
}

func newPeerClient(cert tls.Certificate, timeout time.Duration, acc func() *access) *peerClient {
	pc := &peerClient{cert: cert, timeout: timeout, access: acc}
	pc.tr = &http.Transport{DialTLSContext: pc.dialTLS, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
		ResponseHeaderTimeout: timeout}
	pc.hc = &http.Client{Transport: pc.tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return pc
}

func (pc *peerClient) closeIdle() { pc.tr.CloseIdleConnections() }

// errUnpinnedServer: the peer presented a key other than the pinned one.
var errUnpinnedServer = errors.New("server key is not the one pinned for this member")

func (pc *peerClient) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	var peer *Peer
	for _, p := range pc.access().peers {
		if p.Addr == addr {
			peer = &p
			break
		}
	}
	if peer == nil {
		return nil, fmt.Errorf("dial %s: no member has this admin address", addr)
	}
	want := peer.PublicKey
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{pc.cert},
		InsecureSkipVerify: true, // no CA: the key is pinned in VerifyConnection
		ServerName:         "shoal",
		NextProtos:         []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok || !pub.Equal(want) {
				return errUnpinnedServer
			}
			return nil
		},
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: pc.timeout}, Config: cfg}
	return d.DialContext(ctx, network, addr)
}

func (pc *peerClient) get(ctx context.Context, p Peer, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.Addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := pc.hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusSize+1))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	if len(body) > maxStatusSize {
		return fmt.Errorf("%s: answer larger than %d bytes", path, maxStatusSize)
	}
	if st, ok := v.(*NodeStatus); ok {
		*st, err = DecodeNodeStatus(body)
		return err
	}
	return json.Unmarshal(body, v)
}

// report asks p for its status and its last n events.
func (pc *peerClient) report(ctx context.Context, p Peer, n int) nodeReport {
	var r nodeReport
	if err := pc.get(ctx, p, "/api/v1/status", &r.status); err != nil {
		return nodeReport{err: fmt.Errorf("ask %s for its status: %w", p.Name, err)}
	}
	if err := pc.get(ctx, p, fmt.Sprintf("/api/v1/events?n=%d", n), &r.events); err != nil {
		// The status alone is still worth showing.
		r.events = nil
	}
	return r
}
