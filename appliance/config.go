package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
)

// openConfig opens the node's versioned config store (data_dir/config),
// bootstrapping it from the agent file's cluster_config when it is empty,
// and sets a.cfg to the current version resolved for this node's location.
func (a *agent) openConfig(secret []byte) error {
	file := a.ac.ClusterConfig
	raw, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read cluster config: %w", err)
	}
	auth, err := confsync.ConfigAuthority(raw)
	if err != nil && raw != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	pins := confsync.NewPinSet(auth)
	a.csTr, err = confsync.NewTLSTransport(confsync.TLSOptions{
		Self: a.ac.Node, Key: a.key, Pins: pins,
		Addr: func(m confsync.Member) string {
			return fmt.Sprintf("%s:%d", m.Address, a.configPort())
		},
		JoinPassword: secret,
		Admit:        func(r confsync.JoinRequest) (confsync.Record, error) { return a.cs.Admit(r) },
		Logger:       a.log,
	})
	if err != nil {
		return err
	}
	a.cs, err = confsync.New(confsync.Options{
		Self: a.ac.Node, Key: a.key, Dir: filepath.Join(a.ac.DataDir, "config"), Bootstrap: raw,
		Validate:  confsync.ConfigValidator(filepath.Base(file), a.checkNodeLocal),
		Authority: confsync.ConfigAuthority, Transport: a.csTr, Pins: pins,
		Logger: a.log, Events: a.onConfigEvent,
	})
	if err != nil {
		return fmt.Errorf("open config store: %w", err)
	}
	v, content := a.cs.Current()
	cfg, err := a.resolve(content)
	if err != nil {
		return err
	}
	plans, err := AllocPlans(cfg)
	if err != nil {
		return err
	}
	a.cfg, a.plans, a.cfgVer, a.cfgID = cfg, plans, v, v.ID()
	return nil
}

// configPort is the current config's config channel port.
func (a *agent) configPort() uint16 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg == nil {
		return config.DefaultClusterSettings().ConfigPort
	}
	return a.cfg.Settings.ConfigPort
}

// resolve parses a config version as this node sees it (its location's
// overrides applied) and checks it is usable here.
func (a *agent) resolve(content []byte) (*config.Cluster, error) {
	base, err := confsync.ResolveConfig(filepath.Base(a.ac.ClusterConfig), content, "")
	if err != nil {
		return nil, err
	}
	self, ok := base.MemberByName(a.ac.Node)
	if !ok {
		return nil, fmt.Errorf("this node %q is not a member of the cluster config", a.ac.Node)
	}
	cfg := base
	if self.Location != "" {
		if cfg, err = confsync.ResolveConfig(filepath.Base(a.ac.ClusterConfig), content, self.Location); err != nil {
			return nil, err
		}
	}
	if err := a.ac.CheckAgainst(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkNodeLocal is the node-local part of validation: a version this node
// cannot run (it is not a member any more, say) is refused here.
func (a *agent) checkNodeLocal(location string, c *config.Cluster) error {
	self, ok := c.MemberByName(a.ac.Node)
	if !ok || self.Location != location {
		return nil // another location's view, or checked by resolve
	}
	return a.ac.CheckAgainst(c)
}

func (a *agent) onConfigEvent(ev confsync.Event) {
	e := events.Event{Details: map[string]string{"version": strconv.FormatUint(ev.Version.Counter, 10), "id": ev.Version.ID().Short(), "origin": ev.Version.Origin}}
	if ev.Peer != "" {
		e.Details["peer"] = ev.Peer
	}
	if ev.Err != nil {
		e.Details["reason"] = ev.Err.Error()
	}
	switch ev.Type {
	case confsync.EventApplied:
		e.Type = events.ConfigApplied
	case confsync.EventRejected:
		e.Type = events.ConfigRejected
		a.log.Warn().Str("version", ev.Version.String()).Str("peer", ev.Peer).AnErr("reason", ev.Err).Msg("config version rejected")
	case confsync.EventConflict:
		e.Type = events.ConfigConflict
		e.Details["winner"] = ev.Winner.String()
		a.log.Warn().Str("loser", ev.Version.String()).Str("winner", ev.Winner.String()).Msg("concurrent config edits: the loser is kept in history")
	case confsync.EventCorrupt:
		e.Type = events.ConfigRejected
		e.Details["corrupt"] = "true"
	default:
		return
	}
	if a.ev != nil {
		a.ev.Publish(e)
	}
}

// watchConfig forwards new config versions to the agent loop.
func (a *agent) watchConfig(ctx context.Context) {
	ch, cancel := a.cs.Subscribe()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-ch:
			if u.Version.ID() == a.currentID() {
				continue
			}
			select {
			case a.cfgUpdates <- u:
			default:
				// Latest wins: replace the pending one.
				select {
				case <-a.cfgUpdates:
				default:
				}
				a.cfgUpdates <- u
			}
		}
	}
}

func (a *agent) currentID() confsync.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfgID
}

func (a *agent) currentConfig() (*config.Cluster, []*allocate.Plan) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg, a.plans
}

// applyConfig makes a new version the running config (called by the agent
// loop). It reports whether the config changed. Settings that need a
// restart (cluster name, ports, multicast group, heartbeat timing) are
// logged; everything else takes effect at once.
func (a *agent) applyConfig(u confsync.Update) bool {
	cfg, err := a.resolve(u.Content)
	if err == nil {
		var plans []*allocate.Plan
		if plans, err = AllocPlans(cfg); err == nil {
			a.mu.Lock()
			old := a.cfg
			a.cfg, a.plans, a.cfgVer, a.cfgID = cfg, plans, u.Version, u.Version.ID()
			a.mu.Unlock()
			if old.Settings != cfg.Settings {
				a.log.Warn().Msg("config version changes [cluster] settings: they take effect when the agent restarts")
			}
			if err := a.gossip.UpdateMembers(gossipMembers(cfg)); err != nil {
				a.log.Error().Err(err).Msg("update gossip members")
			}
			if err := a.gossip.UpdateObservers(cfg.ObserverAddrs()); err != nil {
				a.log.Error().Err(err).Msg("update gossip observers")
			}
			a.gossip.SetConfigVersion(u.Version.Counter, u.Version.ID())
			if err := a.ev.Reconfigure(eventsConfig(cfg)); err != nil {
				a.log.Error().Err(err).Msg("reconfigure events")
			}
			self, _ := cfg.MemberByName(a.ac.Node)
			if err := a.api.Reconfigure(adminUsers(cfg), adminPeers(cfg, a.ac.AdminListen), !self.CanUpdate); err != nil {
				a.log.Error().Err(err).Msg("reconfigure admin api")
			}
			a.log.Info().Str("version", u.Version.String()).Msg("config version applied")
			return true
		}
	}
	a.log.Error().Err(err).Str("version", u.Version.String()).Msg("config version not usable on this node; keeping the previous one")
	a.ev.Publish(events.Event{Type: events.ConfigRejected, Details: map[string]string{"version": u.Version.String(), "reason": err.Error()}})
	return false
}

// observePeers passes the config versions peers announce in their
// heartbeats to confsync, which fetches newer ones.
func (a *agent) observePeers() {
	for _, m := range a.gossip.Members() {
		if m.Self || m.LastHeartbeat.IsZero() {
			continue
		}
		id := confsync.ID(m.ConfigHash)
		if id.IsZero() || a.observed[m.Name] == id {
			continue
		}
		a.observed[m.Name] = id
		a.cs.Observe(m.Name, m.ConfigVersion, id)
	}
}

// configRoutes are the admin socket's config endpoints used by
// `shoal config ...`.
func (a *agent) configRoutes() {
	a.admin.HandleJSON("GET /v1/config", func(r *http.Request) (any, error) {
		ref := r.URL.Query().Get("version")
		var v confsync.Version
		var content []byte
		if ref == "" {
			v, content = a.cs.Current()
		} else {
			rec, err := a.cs.Find(ref)
			if err != nil {
				return nil, httpError{http.StatusNotFound, err.Error()}
			}
			v, content = rec.Version, rec.Content
		}
		if loc := r.URL.Query().Get("location"); loc != "" {
			b, err := confsync.Resolve(content, loc)
			if err != nil {
				return nil, httpError{http.StatusBadRequest, err.Error()}
			}
			content = b
		}
		return ConfigVersion{Version: v.Counter, ID: v.ID().String(), Origin: v.Origin, Time: v.Time, Content: string(content)}, nil
	})
	a.admin.HandleJSON("GET /v1/config/history", func(*http.Request) (any, error) {
		var out []ConfigHistoryEntry
		for _, h := range a.cs.History() {
			out = append(out, ConfigHistoryEntry{Version: h.Version.Counter, ID: h.ID.String(), Origin: h.Version.Origin,
				Time: h.Version.Time, Status: string(h.Status), Reason: h.Reason, Size: h.Size, Current: h.Current})
		}
		return out, nil
	})
	a.admin.HandleJSON("POST /v1/config", func(r *http.Request) (any, error) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			return nil, httpError{http.StatusBadRequest, err.Error()}
		}
		v, err := a.cs.Propose(body)
		return a.proposed(v, err)
	})
	a.admin.HandleJSON("POST /v1/config/rollback", func(r *http.Request) (any, error) {
		v, err := a.cs.Rollback(r.URL.Query().Get("version"))
		return a.proposed(v, err)
	})
}

func (a *agent) proposed(v confsync.Version, err error) (any, error) {
	switch {
	case errors.Is(err, confsync.ErrRestricted):
		return nil, httpError{http.StatusForbidden, "this node is restricted (can_update = false): make config changes on an unrestricted node"}
	case errors.Is(err, confsync.ErrUnchanged):
		return nil, httpError{http.StatusConflict, "config unchanged"}
	case errors.Is(err, confsync.ErrNotFound):
		return nil, httpError{http.StatusNotFound, err.Error()}
	case err != nil:
		return nil, httpError{http.StatusUnprocessableEntity, err.Error()}
	}
	return ConfigVersion{Version: v.Counter, ID: v.ID().String(), Origin: v.Origin, Time: v.Time}, nil
}
