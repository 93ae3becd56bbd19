package appliance

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/appliance/adminapi"
	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/bpf"
	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
	"github.com/shoal-project/shoal/dataplane"
	"github.com/shoal-project/shoal/dataplane/multihost"
	"github.com/shoal-project/shoal/gossip"
)

// AgentOptions are the command-line inputs of `shoal agent`.
type AgentOptions struct {
	ConfigPath string    // the agent file
	Version    string    // this build's version
	LogLevel   string    // overrides the agent file's log_level when set
	Stderr     io.Writer // log output
}

// SocketFromAgentFile returns the admin socket named by an agent file.
func SocketFromAgentFile(path string) (string, error) {
	a, err := config.LoadAgent(path)
	if err != nil {
		return "", err
	}
	return a.Socket, nil
}

// RunAgent runs a node until ctx is done, then leaves the cluster cleanly:
// peers are told first (so they raise this node's IPs at once), then the
// IPs are dropped.
func RunAgent(ctx context.Context, opts AgentOptions) error {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	ac, err := config.LoadAgent(opts.ConfigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return runUnconfigured(ctx, opts)
	}
	if err != nil {
		return err
	}
	log := newLogger(opts.Stderr, ac.LogFormat, firstNonEmpty(opts.LogLevel, ac.LogLevel)).With().Str("node", ac.Node).Logger()
	a, err := newAgent(ac, opts.Version, log)
	if err != nil {
		return err
	}
	return a.run(ctx)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func newLogger(w io.Writer, format, level string) zerolog.Logger {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	out := w
	if format != "json" {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: true}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

// runUnconfigured is the agent of a fresh appliance: no agent file yet. It
// reports ready (so the service is up and `shoal setup` can run) and waits.
func runUnconfigured(ctx context.Context, opts AgentOptions) error {
	log := newLogger(opts.Stderr, "console", firstNonEmpty(opts.LogLevel, "info"))
	srv, err := NewAdminServer(DefaultSocket)
	if err == nil {
		srv.HandleJSON("GET /v1/status", func(*http.Request) (any, error) {
			return Status{Version: opts.Version, Configured: false}, nil
		})
		go func() { _ = srv.Serve(ctx) }()
	} else {
		log.Warn().Err(err).Msg("admin socket unavailable")
	}
	log.Info().Str("version", opts.Version).Str("agent_file", opts.ConfigPath).
		Msgf("shoal %s ready (unconfigured: run 'shoal setup')", opts.Version)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	stopWatchdog := startWatchdog(ctx, func() bool { return true })
	defer stopWatchdog()
	<-ctx.Done()
	return nil
}

// agent is one running node.
type agent struct {
	ac      *config.Agent
	version string
	log     zerolog.Logger
	key     []byte

	mu        sync.Mutex // guards cfg, plans, status fields below
	cfg       *config.Cluster
	cfgVer    confsync.Version
	cfgID     confsync.ID
	plans     []*allocate.Plan
	groups    []GroupStatus
	health    SelfTestResult
	failed    map[string]string   // groups this node cannot serve -> reason
	confirmed map[string][]string // ReleaseQuery answers not yet planned with
	lastView  gossip.View

	gossip *gossip.Agent
	dp     *dataplane.Manager
	mh     *multihost.Manager
	ev     *events.Dispatcher
	st     *selfTester
	admin  *AdminServer
	cs     *confsync.Node
	csTr   *confsync.TLSTransport
	cfgLn  net.Listener

	api *adminapi.Server

	refusedAt sync.Map // admin refusal reason -> time.Time of the last event

	rejSeen     map[string]uint64    // heartbeat rejections already reported, by reason (loop only)
	rejReported map[string]time.Time // last report per reason (loop only)

	cfgUpdates chan confsync.Update   // new config versions to apply, latest wins
	observed   map[string]confsync.ID // config version last announced by each peer (loop only)

	loopTick       atomic.Int64 // unix nanos of the last agent-loop pass
	lastViewChange atomic.Int64 // unix nanos of the last view change
	leaving        atomic.Bool  // shutting down: peers are taking our IPs
	kick           chan struct{}
}

func newAgent(ac *config.Agent, version string, log zerolog.Logger) (*agent, error) {
	key, err := identity.LoadPrivateKey(ac.KeyFile)
	if err != nil {
		return nil, err
	}
	secret, err := os.ReadFile(ac.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("read cluster secret: %w", err)
	}
	secret = bytes.TrimSpace(secret)
	if err := os.MkdirAll(ac.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	a := &agent{ac: ac, version: version, log: log, key: key,
		health: SelfTestResult{OK: true}, failed: map[string]string{}, kick: make(chan struct{}, 1),
		cfgUpdates: make(chan confsync.Update, 1), observed: map[string]confsync.ID{}}
	// The cluster config is versioned and replicated: the file only
	// bootstraps an empty data dir; afterwards the newest accepted version
	// in the data dir wins.
	if err := a.openConfig(secret); err != nil {
		return nil, err
	}
	cfg := a.cfg
	self, _ := cfg.MemberByName(ac.Node)
	if !bytes.Equal(identity.Public(key), self.PublicKey) {
		return nil, fmt.Errorf("key file %s does not match member %q's public_key in %s", ac.KeyFile, ac.Node, cfg.File)
	}

	bind := ac.Bind
	if !bind.IsValid() {
		bind = self.Address
	}
	s := cfg.Settings
	a.gossip, err = gossip.New(gossip.Config{
		Cluster: s.Name, Node: ac.Node, PrivateKey: key, Members: gossipMembers(cfg),
		Interval: s.HeartbeatInterval, MonitorTimeout: s.MonitorTimeout,
		Multicast: netip.AddrPortFrom(s.MulticastGroup, s.MulticastPort), Interface: ac.HeartbeatInterface,
		Unicast: s.HeartbeatMode == config.HeartbeatUnicast, Bind: bind, GossipPort: int(s.GossipPort),
		Secret: secret, DataDir: filepath.Join(ac.DataDir, "gossip"), Version: version, Verbose: s.Verbose,
		Logger: log, Observers: cfg.ObserverAddrs(), LinkUp: linkUpFunc(ac.HeartbeatInterface, bind),
	})
	if err != nil {
		return nil, err
	}
	a.gossip.SetConfigVersion(a.cfgVer.Counter, a.cfgID)

	if ifs := multiIfaces(cfg, ac.Node); len(ifs) > 0 {
		g := a.gossip
		a.mh, err = multihost.New(multihost.Config{Mode: xdpMode(ac), Logger: log, Applied: func(ds []uint64) {
			// Peers taking buckets this node just let go wait for these.
			if err := g.SetTables(ds); err != nil {
				log.Error().Err(err).Msg("table digests not published")
			}
		}})
		if err != nil {
			a.gossip.Close()
			return nil, fmt.Errorf("multi-hosted dataplane: %w", err)
		}
		// Attach before the first heartbeat: peers give a returning node
		// its buckets as soon as they hear it (multihost.Manager.Prepare).
		if err := a.mh.Prepare(ifs); err != nil {
			log.Warn().Err(err).Msg("multi-hosted interfaces not ready; the first apply retries")
		}
	}
	dpOpts := dataplane.Options{StateDir: filepath.Join(ac.DataDir, "dataplane"), Logger: log, DetectConflicts: true}
	if a.mh != nil {
		dpOpts.Multi = a.mh
	}
	a.dp, err = dataplane.New(dpOpts)
	if err != nil {
		a.gossip.Close()
		if a.mh != nil {
			a.mh.Close()
		}
		return nil, err
	}
	a.ev, err = events.New(eventsConfig(cfg), ac.Node, log)
	if err != nil {
		a.gossip.Close()
		a.dp.Close()
		return nil, err
	}
	a.st = newSelfTester(selfTestConfig(cfg, ac.Node), a.dp.LinkUp, func() time.Time { return time.Unix(0, a.loopTick.Load()) })
	a.admin, err = NewAdminServer(ac.Socket)
	if err != nil {
		a.gossip.Close()
		a.dp.Close()
		a.ev.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(bind, cfg.Settings.ConfigPort).String())
	if err != nil {
		a.gossip.Close()
		a.dp.Close()
		a.ev.Close()
		return nil, fmt.Errorf("config channel: %w", err)
	}
	a.cfgLn = ln
	a.api, err = adminapi.New(adminapi.SourceFuncs{
		StatusFunc: func() any { return a.status() }, EventsFunc: a.ev.Recent, SubscribeFunc: a.ev.Subscribe,
		ExplainFunc: a.explain, MetricsFunc: a.metricsSnapshot,
	}, adminapi.Options{Node: ac.Node, Key: key, Users: adminUsers(cfg), ReadOnly: !self.CanUpdate, Peers: adminPeers(cfg, ac.AdminListen), Logger: log,
		OnRefused: a.onAdminRefused})
	if err != nil {
		a.gossip.Close()
		a.dp.Close()
		a.ev.Close()
		ln.Close()
		return nil, err
	}
	a.routes()
	return a, nil
}

func xdpMode(ac *config.Agent) bpf.Mode {
	m, err := bpf.ParseMode(ac.XDPMode)
	if err != nil {
		return bpf.ModeAuto // validated when the agent file was loaded
	}
	return m
}

// multiIfaces returns the interfaces of the multi-hosted groups node is a
// member of, sorted, without duplicates.
func multiIfaces(cfg *config.Cluster, node string) []string {
	var out []string
	for _, g := range cfg.Groups {
		if g.Mode == config.ModeMulti && slices.Contains(g.Members, node) && !slices.Contains(out, g.Interface) {
			out = append(out, g.Interface)
		}
	}
	sort.Strings(out)
	return out
}

func gossipMembers(cfg *config.Cluster) []gossip.Member {
	out := make([]gossip.Member, 0, len(cfg.Members))
	for _, m := range cfg.Members {
		out = append(out, gossip.Member{Name: m.Name, Addr: m.Address, PublicKey: m.PublicKey})
	}
	return out
}

func selfTestConfig(cfg *config.Cluster, node string) SelfTestConfig {
	st := cfg.SelfTest
	c := SelfTestConfig{Gateway: st.Gateway, CheckIPs: st.CheckIPs, Interval: st.Interval, Timeout: st.Timeout,
		FailAfter: st.FailAfter, RecoverAfter: st.RecoverAfter}
	if st.CheckLinks {
		seen := map[string]bool{}
		for _, g := range cfg.Groups {
			for _, m := range g.Members {
				if m == node && !seen[g.Interface] {
					seen[g.Interface] = true
					c.Links = append(c.Links, g.Interface)
				}
			}
		}
		sort.Strings(c.Links)
	}
	return c
}

func eventsConfig(cfg *config.Cluster) events.Config {
	e := cfg.Events
	out := events.DefaultConfig()
	out.SerfHandlers = e.SerfHandlers
	out.MaxConcurrent = e.MaxConcurrent
	out.DefaultTimeout = e.DefaultTimeout
	for _, a := range e.Actions {
		ac := events.ActionConfig{Name: a.Name, Type: events.ActionType(a.Type), Groups: a.Groups, Timeout: a.Timeout,
			Command: a.Command, URL: a.URL, Retries: a.Retries, SMTPServer: a.SMTPServer, StartTLS: a.StartTLS,
			From: a.From, To: a.To, Username: a.Username, PasswordFile: a.PasswordFile,
			BatchWindow: a.BatchWindow, MaxPerHour: a.MaxPerHour}
		for _, t := range a.Events {
			ac.Events = append(ac.Events, events.Type(t))
		}
		out.Actions = append(out.Actions, ac)
	}
	return out
}

// run starts every part and runs the agent loop until ctx is done.
func (a *agent) run(ctx context.Context) error {
	gctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(gctx); err != nil && gctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	a.loopTick.Store(time.Now().UnixNano())
	start("gossip", a.gossip.Run)
	start("dataplane", a.dp.Run)
	start("admin", a.admin.Serve)
	start("selftest", func(ctx context.Context) error {
		a.st.run(ctx, a.onSelfTest)
		return nil
	})
	start("events", func(ctx context.Context) error { a.forwardEvents(ctx); return nil })
	if a.mh != nil {
		start("release", func(ctx context.Context) error { a.releaseLoop(ctx); return nil })
	}
	start("confsync", a.cs.Run)
	start("config channel", func(ctx context.Context) error { return a.csTr.Serve(ctx, a.cfgLn, a.cs) })
	start("config updates", func(ctx context.Context) error { a.watchConfig(ctx); return nil })
	if a.ac.AdminListen != "" {
		start("admin api", func(ctx context.Context) error { return a.api.Serve(ctx, a.ac.AdminListen) })
	}
	if a.ac.MetricsListen != "" {
		start("metrics", func(ctx context.Context) error { return a.api.ServeMetrics(ctx, a.ac.MetricsListen) })
	}

	a.log.Info().Str("version", a.version).Str("cluster", a.cfg.Settings.Name).Int("members", len(a.cfg.Members)).
		Int("groups", len(a.cfg.Groups)).Msgf("shoal %s ready", a.version)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	stopWatchdog := startWatchdog(ctx, func() bool {
		return time.Since(time.Unix(0, a.loopTick.Load())) < 10*time.Second
	})

	var loopErr error
	select {
	case loopErr = <-a.loopErr(ctx):
	case loopErr = <-errc:
	}
	stopWatchdog()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)

	// Hand off: peers first, so they raise our IPs at once, then drop ours.
	a.leaving.Store(true)
	lctx, lcancel := context.WithTimeout(context.Background(), 3*time.Second)
	if err := a.gossip.AnnounceLeave(lctx); err != nil {
		a.log.Warn().Err(err).Msg("leave")
	}
	if err := a.dp.DropAll(lctx); err != nil {
		a.log.Warn().Err(err).Msg("drop traffic IPs")
	}
	if err := a.gossip.LeaveSerf(lctx); err != nil {
		a.log.Warn().Err(err).Msg("leave gossip")
	}
	lcancel()
	a.ev.Close()
	cancel()
	wg.Wait()
	a.dp.Close()
	a.gossip.Close()
	a.log.Info().Msg("stopped")
	return loopErr
}

func (a *agent) loopErr(ctx context.Context) <-chan error {
	c := make(chan error, 1)
	go func() { c <- a.loop(ctx) }()
	return c
}

// onSelfTest is called by the self-tester when its verdict changes. The
// verdict goes into the very next heartbeat; a failed node's view excludes
// itself, so the loop drops every IP at once.
func (a *agent) onSelfTest(r SelfTestResult) {
	a.mu.Lock()
	a.health = r
	a.mu.Unlock()
	if r.OK {
		a.log.Info().Msg("self-tests pass again")
		a.ev.Publish(events.Event{Type: events.SelftestPassed})
	} else {
		a.log.Warn().Strs("reasons", r.Reasons).Msg("self-tests failed: dropping traffic IPs")
		a.ev.Publish(events.Event{Type: events.SelftestFailed, Details: map[string]string{"reason": strings.Join(r.Reasons, "; ")}})
	}
	a.pushHealth()
	a.wake()
}

// pushHealth sends the node's health (self-tests plus groups it cannot
// serve) to gossip.
func (a *agent) pushHealth() {
	a.mu.Lock()
	h := gossip.Health{OK: a.health.OK, Reasons: append([]string(nil), a.health.Reasons...)}
	names := make([]string, 0, len(a.failed))
	for g := range a.failed {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		h.Reasons = append(h.Reasons, GroupFailedPrefix+g+" "+a.failed[g])
	}
	a.mu.Unlock()
	a.gossip.SetHealth(h)
}

func (a *agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// loop is the agent loop: view, config or failure change -> allocation ->
// desired state -> dataplane. It never blocks the heartbeat path: gossip
// hands it views through a latest-wins channel and the dataplane's Apply
// does not block.
func (a *agent) loop(ctx context.Context) error {
	s := a.cfg.Settings
	settle := 2*s.HeartbeatInterval + 250*time.Millisecond
	start := time.Now()
	pl := newPlanner(a.ac.Node, a.cfg, a.plans, start, settle)
	startupDone := false
	var timer *time.Timer
	timerC := func() <-chan time.Time {
		if timer == nil {
			return nil
		}
		return timer.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// Peers announce new config versions in heartbeats; pass them on to
	// confsync promptly even while the view is stable.
	obs := time.NewTicker(100 * time.Millisecond)
	defer obs.Stop()
	view := a.gossip.View()
	prevHeld := map[string]dataplane.Address{}
	holdUntil := start.Add(settle)
	startTimer := time.NewTimer(settle)
	defer startTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case v := <-a.gossip.Views():
			view = v
			a.lastViewChange.Store(time.Now().UnixNano())
		case f := <-a.dp.Failures():
			a.mu.Lock()
			if f.Failed {
				a.failed[f.Group] = f.Reason
			} else {
				delete(a.failed, f.Group)
			}
			a.mu.Unlock()
			a.log.Warn().Str("group", f.Group).Bool("failed", f.Failed).Str("reason", f.Reason).Msg("group state")
			a.pushHealth()
		case u := <-a.cfgUpdates:
			if a.applyConfig(u) {
				pl.setConfig(a.currentConfig())
			}
		case <-obs.C:
			a.observePeers()
			a.reportRejections(time.Now())
			a.api.Timelines().ObserveDataplane(a.dp.Status())
			continue
		case <-a.kick:
		case <-a.gossip.Changes():
			// A peer's reasons (a group failed or recovered there) or
			// applied tables changed.
		case <-timerC():
		case <-startTimer.C:
		case <-tick.C:
		}
		now := time.Now()
		a.loopTick.Store(now.UnixNano())
		a.observePeers()
		if !startupDone {
			// Startup hold: apply nothing until we have heard every peer
			// that is up, so we never grab IPs others hold.
			if now.Before(holdUntil) && len(view.Up) < len(a.cfg.Members) {
				continue
			}
			startupDone = true
			a.log.Info().Strs("up", view.Up).Msg("startup hold over")
		}
		in := a.planInput(now, view)
		out := pl.plan(in)
		a.api.Timelines().Allocated(now)
		a.dp.Apply(out.desired)
		if out.grew {
			// After Apply: addresses now in hand-off are not re-announced.
			a.dp.Reannounce()
		}
		for _, ad := range out.desired.Addresses {
			if _, held := prevHeld[ad.IP.String()]; !held {
				a.api.Timelines().IPRaised(ad.IP, time.Now())
			}
		}
		a.publishChanges(prevHeld, out.desired.Addresses)
		prevHeld = map[string]dataplane.Address{}
		for _, ad := range out.desired.Addresses {
			prevHeld[ad.IP.String()] = ad
		}
		a.mu.Lock()
		a.groups = out.groups
		a.lastView = view
		a.mu.Unlock()
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		if !out.wakeAt.IsZero() {
			timer = time.NewTimer(time.Until(out.wakeAt) + time.Millisecond)
		}
	}
}

func (a *agent) planInput(now time.Time, view gossip.View) planInput {
	in := planInput{now: now, up: view.Up, peerFailedGroups: map[string]map[string]bool{}, peerStart: map[string]time.Time{},
		peerTables: map[string][]uint64{}}
	for _, m := range a.gossip.Members() {
		if m.Self {
			continue
		}
		in.peerTables[m.Name] = m.Tables
		if fg := failedGroupsOf(m.Reasons); fg != nil {
			in.peerFailedGroups[m.Name] = fg
		}
		if m.BootEpoch != 0 {
			in.peerStart[m.Name] = time.Unix(0, int64(m.BootEpoch))
		}
	}
	a.mu.Lock()
	in.released, a.confirmed = a.confirmed, nil
	a.mu.Unlock()
	a.mu.Lock()
	if len(a.failed) > 0 {
		in.selfFailedGroups = map[string]bool{}
		for g := range a.failed {
			in.selfFailedGroups[g] = true
		}
	}
	a.mu.Unlock()
	return in
}

// releaseInterval is how often a node with buckets in handover asks the
// previous owners whether they still hold connections there.
const releaseInterval = 2 * time.Second

// releaseLoop asks, every releaseInterval while this node has buckets in
// handover, whether their previous owners hold no connection outside their
// share of the tables applied here (ReleaseQuery), and hands the answers to
// the agent loop.
func (a *agent) releaseLoop(ctx context.Context) {
	t := time.NewTicker(releaseInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := a.mh.Status()
		if err != nil {
			continue
		}
		var ask []string
		for _, g := range st.Groups {
			if g.BucketsHandover > 0 && g.Table != 0 {
				ask = append(ask, TableDigestHex(g.Table))
			}
		}
		if len(ask) == 0 {
			continue
		}
		resp, err := a.gossip.Query(ReleaseQuery, []byte(strings.Join(ask, " ")), time.Second)
		if err != nil {
			a.log.Debug().Err(err).Msg("release query")
			continue
		}
		got := false
		a.mu.Lock()
		for node, b := range resp {
			if ds := strings.Fields(string(b)); len(ds) > 0 && node != a.ac.Node {
				if a.confirmed == nil {
					a.confirmed = map[string][]string{}
				}
				a.confirmed[node] = ds
				got = true
			}
		}
		a.mu.Unlock()
		if got {
			a.wake()
		}
	}
}

// answerRelease answers a ReleaseQuery: the asked tables this node has
// applied and holds no connection outside its share of.
func (a *agent) answerRelease(q *gossip.SerfQuery, payload []byte) {
	if a.mh == nil || q == nil {
		return
	}
	st, err := a.mh.Status()
	if err != nil {
		return
	}
	asked := strings.Fields(string(payload))
	var yes []string
	for _, g := range st.Groups {
		if d := TableDigestHex(g.Table); g.Table != 0 && g.BucketsHeld == 0 && slices.Contains(asked, d) {
			yes = append(yes, d)
		}
	}
	if len(yes) == 0 {
		return
	}
	if err := q.Respond([]byte(strings.Join(yes, " "))); err != nil {
		a.log.Debug().Err(err).Msg("answer release query")
	}
}

func (a *agent) publishChanges(prev map[string]dataplane.Address, now []dataplane.Address) {
	cur := map[string]bool{}
	for _, ad := range now {
		k := ad.IP.String()
		cur[k] = true
		if _, ok := prev[k]; !ok {
			a.log.Info().Str("group", ad.Group).Str("ip", k).Msg("raising traffic IP")
			a.ev.Publish(events.Event{Type: events.IPRaised, Group: ad.Group, IP: k})
		}
	}
	for k, ad := range prev {
		if !cur[k] {
			a.log.Info().Str("group", ad.Group).Str("ip", k).Msg("dropping traffic IP")
			a.ev.Publish(events.Event{Type: events.IPDropped, Group: ad.Group, IP: k})
		}
	}
}

// forwardEvents turns gossip member events and dataplane conflicts into
// typed events.
func (a *agent) forwardEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case me := <-a.gossip.Events():
			a.api.Timelines().ObserveGossip(me)
			ev := events.Event{Time: me.Time, Member: me.Member}
			if me.Reason != "" {
				ev.Details = map[string]string{"reason": me.Reason}
			}
			switch me.Type {
			case gossip.EventJoined:
				ev.Type = events.MemberJoined
			case gossip.EventRecovered:
				ev.Type = events.MemberRecovered
			case gossip.EventFailed:
				ev.Type = events.MemberFailed
			case gossip.EventLeft:
				ev.Type = events.MemberLeft
			case gossip.EventViewChange:
				a.lastViewChange.Store(me.Time.UnixNano())
				ev.Type = events.ViewChanged
				if me.View != nil {
					ev.Details = map[string]string{"up": strings.Join(me.View.Up, ","), "epoch": fmt.Sprint(me.View.Epoch)}
				}
			default:
				continue
			}
			a.ev.Publish(ev)
		case c := <-a.dp.Conflicts():
			if since := time.Since(time.Unix(0, a.lastViewChange.Load())); since < conflictQuiet || a.leaving.Load() {
				// A planned hand-off (make-before-break) or a healing
				// partition: two holders for a moment are expected.
				a.log.Debug().Str("ip", c.IP.String()).Str("mac", c.MAC.String()).Dur("since_view_change", since).Msg("other holder during hand-off")
				continue
			}
			a.log.Error().Str("ip", c.IP.String()).Str("mac", c.MAC.String()).Msg("duplicate IP: another host answers for a traffic IP we hold")
			a.ev.Publish(events.Event{Type: events.DuplicateIP, IP: c.IP.String(), Details: map[string]string{"mac": c.MAC.String(), "interface": c.Interface}})
		case se := <-a.gossip.SerfEvents():
			if se.Type == "query" && se.Name == ReleaseQuery {
				a.answerRelease(se.Query, se.Payload) // internal: not for handlers
				continue
			}
			a.ev.HandleSerf(serfEventOf(se))
		}
	}
}

// conflictQuiet is how long after a view change another host answering for
// one of our IPs is expected (the previous holder during a hand-off) and not
// reported as a duplicate IP.
const conflictQuiet = DefaultHandoffGrace + 2*time.Second

// startWatchdog pings systemd's watchdog at half its interval while healthy
// says so. It returns a stop function.
func startWatchdog(ctx context.Context, healthy func() bool) func() {
	iv, err := daemon.SdWatchdogEnabled(false)
	if err != nil || iv == 0 {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if healthy() {
					_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
				}
			}
		}
	}()
	return cancel
}

// routes registers the admin API handlers.
func (a *agent) routes() {
	a.configRoutes()
	a.admin.HandleJSON("POST "+events.UserEventPath, func(r *http.Request) (any, error) {
		req, err := events.DecodeUserEventRequest(r.Body)
		if err != nil {
			return nil, httpError{http.StatusBadRequest, err.Error()}
		}
		return struct{}{}, a.gossip.UserEvent(req.Name, req.Payload, req.Coalesce)
	})
	a.admin.HandleJSON("POST "+events.QueryPath, func(r *http.Request) (any, error) {
		req, err := events.DecodeQueryRequest(r.Body)
		if err != nil {
			return nil, httpError{http.StatusBadRequest, err.Error()}
		}
		m, err := a.gossip.Query(req.Name, req.Payload, req.Timeout())
		if err != nil {
			return nil, err
		}
		return events.NewQueryResponse(m), nil
	})
	a.admin.HandleJSON("GET /v1/status", func(*http.Request) (any, error) { return a.status(), nil })
	a.admin.HandleJSON("GET /v1/events", func(*http.Request) (any, error) { return a.ev.Recent(100), nil })
	a.admin.HandleJSON("GET /v1/explain", func(r *http.Request) (any, error) {
		ip, err := netip.ParseAddr(r.URL.Query().Get("ip"))
		if err != nil {
			return nil, httpError{http.StatusBadRequest, "explain: bad ip: " + err.Error()}
		}
		return a.explain(ip)
	})
}

func (a *agent) explain(ip netip.Addr) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	alive := allocate.AliveOf(a.lastView.Up...)
	for i, g := range a.cfg.Groups {
		for _, gip := range g.IPs {
			if gip == ip {
				e, err := a.plans[i].Explain(ip, alive)
				if err != nil {
					return nil, err
				}
				return map[string]any{"group": g.Name, "explanation": e, "text": e.String()}, nil
			}
		}
	}
	return nil, httpError{http.StatusNotFound, fmt.Sprintf("explain: %s is not a traffic IP", ip)}
}

func (a *agent) status() Status {
	v := a.gossip.View()
	a.mu.Lock()
	st := Status{
		Node: a.ac.Node, Cluster: a.cfg.Settings.Name, Version: a.version, Configured: true,
		Health:        HealthStatus{OK: a.health.OK, Reasons: append([]string(nil), a.health.Reasons...)},
		View:          ViewStatus{Epoch: v.Epoch, Up: v.Up, Digest: hex.EncodeToString(v.Digest[:8])},
		ConfigVersion: a.cfgVer.Counter, ConfigHash: a.cfgID.Short(),
		Groups: append([]GroupStatus(nil), a.groups...),
	}
	for g, r := range a.failed {
		st.Health.Reasons = append(st.Health.Reasons, GroupFailedPrefix+g+" "+r)
	}
	a.mu.Unlock()
	now := time.Now()
	for _, m := range a.gossip.Members() {
		ms := MemberStatus{Name: m.Name, Address: m.Addr.String(), Self: m.Self, Up: m.Up, Reasons: m.Reasons,
			ConfigVersion: m.ConfigVersion, Gossip: m.SerfStatus, LastHeartbeatMS: -1, Health: "unknown"}
		if !m.LastHeartbeat.IsZero() {
			ms.LastHeartbeatMS = now.Sub(m.LastHeartbeat).Milliseconds()
			ms.Health = "failed"
			if m.Health {
				ms.Health = "ok"
			}
		}
		if m.Self {
			ms.Health = "ok"
			if !st.Health.OK {
				ms.Health = "failed"
			}
		}
		st.Members = append(st.Members, ms)
	}
	st.Dataplane = a.dp.Status()
	if a.mh != nil {
		if ms, err := a.mh.Status(); err == nil {
			st.Multihost = &ms
		}
	}
	st.Heartbeats = a.gossip.Stats()
	st.Goroutines = runtime.NumGoroutine()
	return st
}

// metricsSnapshot gathers the counters /metrics exposes.
func (a *agent) metricsSnapshot() adminapi.MetricsSnapshot {
	m := adminapi.MetricsSnapshot{Gossip: a.gossip.Stats(), Events: a.ev.Stats(), Dataplane: a.dp.Status()}
	if a.mh != nil {
		if st, err := a.mh.Status(); err == nil {
			m.Multihost = &st
		}
	}
	return m
}

// adminUsers converts the config's [[admin.user]] tables.
func adminUsers(cfg *config.Cluster) []adminapi.User {
	var out []adminapi.User
	for _, u := range cfg.Admin.Users {
		role := adminapi.RoleAdmin
		if u.Role == config.RoleReadOnly {
			role = adminapi.RoleReadOnly
		}
		out = append(out, adminapi.User{Name: u.Name, PasswordHash: u.PasswordHash, TokenHash: u.TokenHash, Role: role})
	}
	return out
}

// adminPeers lists every member's HTTPS admin API for the merged cluster
// view: the same port as ours on each member's address.
func adminPeers(cfg *config.Cluster, listen string) []adminapi.Peer {
	_, port, err := net.SplitHostPort(listen)
	if listen == "" || err != nil {
		return nil
	}
	out := make([]adminapi.Peer, 0, len(cfg.Members))
	for _, m := range cfg.Members {
		out = append(out, adminapi.Peer{Name: m.Name, PublicKey: m.PublicKey, Addr: net.JoinHostPort(m.Address.String(), port)})
	}
	return out
}

// reportRejections raises a heartbeat-rejected event when gossip rejected
// packets (forged, replayed, unknown node...), at most once per reason per
// minute, with the number rejected since the last report.
func (a *agent) reportRejections(now time.Time) {
	if a.rejSeen == nil {
		a.rejSeen, a.rejReported = map[string]uint64{}, map[string]time.Time{}
	}
	for reason, n := range a.gossip.Stats().Rejected {
		seen := a.rejSeen[reason]
		if n <= seen || now.Sub(a.rejReported[reason]) < time.Minute {
			continue
		}
		a.rejSeen[reason], a.rejReported[reason] = n, now
		a.ev.Publish(events.Event{Type: events.HeartbeatRejected, Details: map[string]string{
			"reason": reason, "count": strconv.FormatUint(n-seen, 10), "total": strconv.FormatUint(n, 10)}})
	}
}

// onAdminRefused raises an admin-refused event for a refused HTTPS admin API
// request, at most one per reason every 10 s (a password guesser must not
// flood scripts and mail; every refusal is counted in the metrics anyway).
func (a *agent) onAdminRefused(r adminapi.Refusal) {
	now := time.Now()
	if last, ok := a.refusedAt.Load(r.Reason); ok && now.Sub(last.(time.Time)) < 10*time.Second {
		return
	}
	a.refusedAt.Store(r.Reason, now)
	a.ev.Publish(events.Event{Type: events.AdminRefused, Details: map[string]string{
		"status": strconv.Itoa(r.Status), "reason": r.Reason, "user": r.User, "remote": r.Remote,
		"method": r.Method, "path": r.Path}})
}
