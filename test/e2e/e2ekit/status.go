package e2ekit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-project/shoal/test/harness"
)

// Status mirrors the part of the admin API's /v1/status answer (and of
// `shoal status --json`) the tests read; see appliance.Status.
type Status struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster"`
	Health  struct {
		OK      bool     `json:"ok"`
		Reasons []string `json:"reasons"`
	} `json:"health"`
	View    View           `json:"view"`
	Members []MemberStatus `json:"members"`
	Groups  []GroupStatus  `json:"groups"`
	// Heartbeats are the gossip agent's counters (gossip.Stats).
	Heartbeats struct {
		Suspicions  uint64 `json:"Suspicions"`
		ViewChanges uint64 `json:"ViewChanges"`
		Stalls      uint64 `json:"Stalls"`
		ProbeAcks   uint64 `json:"ProbeAcks"`
		Accepted    uint64 `json:"Accepted"`
	} `json:"heartbeats"`
	// Multihost is the multi-hosted dataplane's state (multihost.Status).
	Multihost struct {
		Groups []struct {
			Name            string
			BucketsOwned    int
			BucketsHeld     int
			BucketsHandover int
			Table           uint64 // digest of the table applied (0 = none)
		}
	} `json:"multihost"`
}

// View is a node's view: the members up, its epoch and digest.
type View struct {
	Epoch  uint64   `json:"epoch"`
	Up     []string `json:"up"`
	Digest string   `json:"digest"`
}

// MemberStatus is one member as a node sees it.
type MemberStatus struct {
	Name    string   `json:"name"`
	Self    bool     `json:"self"`
	Up      bool     `json:"up"`
	Health  string   `json:"health"`
	Reasons []string `json:"reasons"`
	Gossip  string   `json:"gossip"`
}

// GroupStatus is one group's allocation as a node computes it.
type GroupStatus struct {
	Name   string            `json:"name"`
	Mode   string            `json:"mode"`
	IPs    map[string]string `json:"ips"`
	Held   []string          `json:"held"`
	Shares map[string]int    `json:"shares"`
	Error  string            `json:"error"`
}

// Group returns the named group's status (nil if absent).
func (s *Status) Group(name string) *GroupStatus {
	for i := range s.Groups {
		if s.Groups[i].Name == name {
			return &s.Groups[i]
		}
	}
	return nil
}

// apiClient returns an HTTP client for node i's admin socket (cached).
func (c *Cluster) apiClient(i int) *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		c.clients = map[int]*http.Client{}
	}
	if hc := c.clients[i]; hc != nil {
		return hc
	}
	path := c.Files.Sockets[i]
	hc := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConnsPerHost: 1,
		},
	}
	c.clients[i] = hc
	return hc
}

// StatusAPI reads node i's status straight from its admin socket (cheap
// enough to poll every few milliseconds).
func (c *Cluster) StatusAPI(i int) (*Status, error) {
	resp, err := c.apiClient(i).Get("http://shoal/v1/status")
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", harness.NodeName(i), err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", harness.NodeName(i), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status of %s: %s: %s", harness.NodeName(i), resp.Status, strings.TrimSpace(string(body)))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("status of %s: decode: %w", harness.NodeName(i), err)
	}
	return &st, nil
}

// StatusCLI runs `shoal status --json --socket S` for node i, as an
// operator would.
func (c *Cluster) StatusCLI(ctx context.Context, i int) (*Status, error) {
	out, err := runBinary(ctx, c.opts.Binary, "status", "--json", "--socket", c.Files.Sockets[i])
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", harness.NodeName(i), err)
	}
	var st Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("status of %s: decode shoal status --json: %w", harness.NodeName(i), err)
	}
	return &st, nil
}

// Statuses reads the status of every node in nodes in parallel (API).
func (c *Cluster) Statuses(nodes []int) (map[int]*Status, error) {
	res := make([]*Status, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for k, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[k], errs[k] = c.StatusAPI(i)
		}()
	}
	wg.Wait()
	out := map[int]*Status{}
	for k, i := range nodes {
		if errs[k] != nil {
			return nil, errs[k]
		}
		out[i] = res[k]
	}
	return out, nil
}

// viewsAgree checks that every status in sts has exactly the up set want
// and that all digests are equal.
func viewsAgree(sts map[int]*Status, want []string) error {
	digest := ""
	for i, st := range sts {
		if !slices.Equal(st.View.Up, want) {
			return fmt.Errorf("%s sees up %v (epoch %d), want %v", harness.NodeName(i), st.View.Up, st.View.Epoch, want)
		}
		if digest == "" {
			digest = st.View.Digest
		} else if st.View.Digest != digest {
			return fmt.Errorf("%s has view digest %s, another node %s", harness.NodeName(i), st.View.Digest, digest)
		}
	}
	return nil
}

// WaitView waits until every node in observers sees exactly the nodes in up
// as up, all with the same digest, then confirms it once through
// `shoal status --json` on every observer. It fails early when an agent
// exits unexpectedly.
func (c *Cluster) WaitView(ctx context.Context, observers, up []int) error {
	want := Names(up)
	var last error
	err := harness.WaitEvery(ctx, fmt.Sprintf("view %v on %v", want, Names(observers)), 50*time.Millisecond, func() (bool, error) {
		if err := c.Exited(); err != nil {
			return false, harness.Abort(err)
		}
		sts, err := c.Statuses(observers)
		if err != nil {
			last = err
			return false, err
		}
		last = viewsAgree(sts, want)
		return last == nil, last
	})
	if err != nil {
		return err
	}
	sts := map[int]*Status{}
	for _, i := range observers {
		st, err := c.StatusCLI(ctx, i)
		if err != nil {
			return err
		}
		sts[i] = st
	}
	if err := viewsAgree(sts, want); err != nil {
		return fmt.Errorf("shoal status --json after the API agreed: %w", err)
	}
	return nil
}

// ViewChange is one "view changed" line of an agent's JSON log.
type ViewChange struct {
	Time  time.Time
	Epoch uint64
	Up    []string
}

// LogEntry is one line of an agent's JSON log (the fields tests read).
type LogEntry struct {
	Time      time.Time `json:"time"`
	Level     string    `json:"level"`
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Member    string    `json:"member"`
	IP        string    `json:"ip"`
	Reason    string    `json:"reason"`
	Epoch     uint64    `json:"epoch"`
	Up        []string  `json:"up"`
}

// LogEntries parses node i's agent log (JSON lines; other lines, such as
// the harness's start markers, are skipped).
func (c *Cluster) LogEntries(i int) ([]LogEntry, error) {
	f, err := os.Open(c.LogPath(i))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []LogEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e LogEntry
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// ViewChanges returns node i's "view changed" log lines.
func (c *Cluster) ViewChanges(i int) ([]ViewChange, error) {
	es, err := c.LogEntries(i)
	if err != nil {
		return nil, err
	}
	var out []ViewChange
	for _, e := range es {
		if e.Message == "view changed" {
			out = append(out, ViewChange{Time: e.Time, Epoch: e.Epoch, Up: e.Up})
		}
	}
	return out, nil
}

// DialName connects from namespace ns to ap, reads the first line the
// server sends (the harness server's node name) and returns it.
func DialName(ns string, ap netip.AddrPort, timeout time.Duration) (string, error) {
	h, err := DialHeld(ns, ap, timeout)
	if err != nil {
		return "", err
	}
	_ = h.Close()
	return h.Server, nil
}

// WaitReach waits until a connection from the client to ap is answered by
// node want.
func (c *Cluster) WaitReach(ctx context.Context, ap netip.AddrPort, want int) error {
	var got string
	var last error
	err := harness.WaitEvery(ctx, fmt.Sprintf("client reaches %s on %s", ap, harness.NodeName(want)), 100*time.Millisecond, func() (bool, error) {
		got, last = DialName(c.Net.Client(), ap, time.Second)
		return last == nil && got == harness.NodeName(want), nil
	})
	if err != nil {
		return fmt.Errorf("%w; last answer %q, error %v", err, got, last)
	}
	return nil
}
