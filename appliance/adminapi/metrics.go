package adminapi

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-project/shoal/gossip"
)

// serverMetrics are the metrics the server owns itself.
type serverMetrics struct {
	authFailures *prometheus.CounterVec
	forbidden    prometheus.Counter
	peerErrors   *prometheus.CounterVec
}

func newRegistry(s *Server) (*prometheus.Registry, serverMetrics) {
	reg := prometheus.NewRegistry()
	m := serverMetrics{
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_admin_auth_failures_total",
			Help: "Admin API requests refused with 401, by reason (missing, malformed, unknown_user, bad_password, bad_token).",
		}, []string{"reason"}),
		forbidden: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_admin_forbidden_total",
			Help: "Admin API requests refused with 403 (a writing method by a read-only caller).",
		}),
		peerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_admin_peer_errors_total",
			Help: "Failed status requests to other members while gathering the cluster view, by member.",
		}, []string{"member"}),
	}
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r) // export zeros: rate() works from the first failure
	}
	reg.MustRegister(m.authFailures, m.forbidden, m.peerErrors, &collector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.timelines != nil {
		reg.MustRegister(s.timelines.Collector())
	}
	return reg, m
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics read from the Source at scrape time.
var (
	dBuildInfo        = desc("shoal_build_info", "Always 1; labels name the build and the node.", "version", "node", "cluster")
	dHeartbeatsSent   = desc("shoal_heartbeats_sent_total", "Heartbeats sent.")
	dPacketsSent      = desc("shoal_heartbeat_packets_sent_total", "Heartbeat-channel packets sent (a unicast fan-out counts each copy).")
	dSendErrors       = desc("shoal_heartbeat_send_errors_total", "Heartbeat-channel send failures.")
	dPacketsReceived  = desc("shoal_heartbeat_packets_received_total", "Heartbeat-channel packets received, valid or not.")
	dPacketsAccepted  = desc("shoal_heartbeat_packets_accepted_total", "Heartbeat-channel packets that passed validation.")
	dPacketsStale     = desc("shoal_heartbeat_packets_stale_total", "Valid heartbeat-channel packets older than the sender's latest (reordered or delayed): answered, but their state is not applied.")
	dPacketsBacklog   = desc("shoal_heartbeat_packets_backlog_total", "Heartbeat-channel packets older than the sender's latest by more than an interval (a backlog flushed after the sender's link came back): dropped before signature verification.")
	dPacketsRejected  = desc("shoal_heartbeat_packets_rejected_total", "Heartbeat-channel packets rejected, by reason.", "reason")
	dSuspicions       = desc("shoal_gossip_suspicions_total", "Suspicions started (a member went silent).")
	dViewChanges      = desc("shoal_view_changes_total", "View epoch increments.")
	dViewEpoch        = desc("shoal_view_epoch", "Current view epoch (+1 on every change of the members up).")
	dMembers          = desc("shoal_members", "Members in the cluster config.")
	dMembersUp        = desc("shoal_members_up", "Members in this node's current view.")
	dMemberUp         = desc("shoal_member_up", "1 if the member is in this node's view.", "member")
	dMemberHealthy    = desc("shoal_member_healthy", "1 if the member reports its self-tests pass.", "member")
	dMemberConfig     = desc("shoal_member_config_version", "Cluster config version each member announces.", "member")
	dHealthOK         = desc("shoal_health_ok", "1 if this node's self-tests pass.")
	dConfigVersion    = desc("shoal_config_version", "Cluster config version applied on this node.")
	dIPsHeld          = desc("shoal_traffic_ips_held", "Single-hosted traffic IPs held on this node, by group.", "group")
	dIPsOwned         = desc("shoal_traffic_ips", "Single-hosted traffic IPs of the group, by owner as this node computes it (owner \"\" = none).", "group", "owner")
	dShares           = desc("shoal_multihost_share_buckets", "Buckets of a multi-hosted group allocated to each member, as this node computes it.", "group", "member")
	dXDPAttached      = desc("shoal_multihost_xdp_attached", "1 for each interface carrying the XDP program, labelled with the attach mode the kernel reports (native, generic, offload).", "interface", "mode")
	dBucketsOwned     = desc("shoal_multihost_buckets_owned", "Buckets of a multi-hosted group this node's XDP program serves.", "group")
	dBucketsHeld      = desc("shoal_multihost_buckets_held", "Buckets owned elsewhere in which this node still has connections (their packets cost a socket lookup).", "group")
	dBucketsHandover  = desc("shoal_multihost_buckets_handover", "Buckets owned here whose alive previous owner keeps its connections there (their non-SYN TCP packets cost a socket lookup); falls as those owners confirm they hold none.", "group")
	dXDP              = desc("shoal_xdp_packets_total", "Packets seen by the multi-hosted XDP program, by verdict.", "verdict")
	dResponderReplies = desc("shoal_multihost_replies_total", "ARP / NDP answers sent by the multi-hosted responder.", "proto")
	dResponderBad     = desc("shoal_multihost_malformed_total", "Malformed ARP / NDP frames dropped by the multi-hosted responder.", "proto")
	dAnnouncements    = desc("shoal_announcements_total", "Gratuitous ARP / unsolicited NA rounds sent.")
	dAnnounceErrors   = desc("shoal_announce_errors_total", "Announcement rounds that failed.")
	dRestored         = desc("shoal_traffic_ips_restored_total", "Traffic IPs re-added after something else removed them.")
	dConflicts        = desc("shoal_ip_conflicts_total", "Other hosts seen claiming a traffic IP this node holds.")
	dConverged        = desc("shoal_dataplane_converged", "1 if the kernel matches the latest desired state.")
	dEventsPublished  = desc("shoal_events_published_total", "Cluster events published on this node.")
	dEventsDropped    = desc("shoal_events_subscriber_drops_total", "Events not delivered to a slow subscriber.")
	dActionRuns       = desc("shoal_event_action_runs_total", "Event action runs finished, by action.", "action", "type")
	dActionFailures   = desc("shoal_event_action_failures_total", "Event action runs that failed (timeouts included), by action.", "action", "type")
	dActionTimeouts   = desc("shoal_event_action_timeouts_total", "Event action runs cut off by their timeout, by action.", "action", "type")
	dActionDropped    = desc("shoal_event_action_dropped_total", "Events an action dropped (queue full, batch limit, shutdown), by action.", "action", "type")
	dActionsRunning   = desc("shoal_event_actions_running", "Event actions running now.")
	dStatusError      = desc("shoal_admin_status_error", "1 if this node's status could not be read at scrape time (status-derived series are missing).")

	allDescs = []*prometheus.Desc{dBuildInfo, dHeartbeatsSent, dPacketsSent, dSendErrors, dPacketsReceived,
		dPacketsAccepted, dPacketsStale, dPacketsBacklog, dPacketsRejected, dSuspicions, dViewChanges, dViewEpoch, dMembers, dMembersUp, dMemberUp,
		dMemberHealthy, dMemberConfig, dHealthOK, dConfigVersion, dIPsHeld, dIPsOwned, dShares, dBucketsOwned, dBucketsHeld, dBucketsHandover, dXDP, dXDPAttached,
		dResponderReplies, dResponderBad, dAnnouncements, dAnnounceErrors, dRestored, dConflicts, dConverged,
		dEventsPublished, dEventsDropped, dActionRuns, dActionFailures, dActionTimeouts, dActionDropped,
		dActionsRunning, dStatusError}
)

// collector reads the Source at scrape time.
type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.src.Metrics()
	g := m.Gossip
	counter(ch, dHeartbeatsSent, g.Heartbeats)
	counter(ch, dPacketsSent, g.Sent)
	counter(ch, dSendErrors, g.SendErrors)
	counter(ch, dPacketsReceived, g.Received)
	counter(ch, dPacketsAccepted, g.Accepted)
	counter(ch, dPacketsStale, g.Stale)
	counter(ch, dPacketsBacklog, g.Backlog)
	for _, r := range gossip.RejectReasons {
		counter(ch, dPacketsRejected, g.Rejected[r], r)
	}
	counter(ch, dSuspicions, g.Suspicions)
	counter(ch, dViewChanges, g.ViewChanges)

	d := m.Dataplane
	counter(ch, dAnnouncements, d.Announcements)
	counter(ch, dAnnounceErrors, d.AnnounceErrors)
	counter(ch, dRestored, d.Restored)
	counter(ch, dConflicts, d.Conflicts)
	gauge(ch, dConverged, b2f(d.Converged))

	if mh := m.Multihost; mh != nil {
		x := mh.Counters
		for _, v := range []struct {
			verdict string
			n       uint64
		}{
			{"passed_owner", x.PassedOwner}, {"passed_socket", x.PassedSocket},
			{"dropped_not_owner", x.DroppedNotOwner}, {"dropped_handover", x.DroppedHandover},
			{"passed_not_ours", x.PassedNotOurs}, {"parse_error", x.ParseErrors},
			{"icmp_steered", x.ICMPSteered}, {"fragment", x.Fragments},
		} {
			counter(ch, dXDP, v.n, v.verdict)
		}
		counter(ch, dResponderReplies, mh.ARPReplies, "arp")
		counter(ch, dResponderReplies, mh.NDPReplies, "ndp")
		counter(ch, dResponderBad, mh.MalformedARP, "arp")
		counter(ch, dResponderBad, mh.MalformedNDP, "ndp")
		for _, i := range mh.Interfaces {
			gauge(ch, dXDPAttached, 1, i.Name, i.Mode)
		}
		for _, gr := range mh.Groups {
			gauge(ch, dBucketsOwned, float64(gr.BucketsOwned), gr.Name)
			gauge(ch, dBucketsHeld, float64(gr.BucketsHeld), gr.Name)
			gauge(ch, dBucketsHandover, float64(gr.BucketsHandover), gr.Name)
		}
	}

	e := m.Events
	counter(ch, dEventsPublished, e.Published)
	counter(ch, dEventsDropped, e.SubscriberDrops)
	gauge(ch, dActionsRunning, float64(e.Running))
	names := make([]string, 0, len(e.Actions))
	for n := range e.Actions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := e.Actions[n]
		counter(ch, dActionRuns, a.Runs, n, a.Type)
		counter(ch, dActionFailures, a.Failed, n, a.Type)
		counter(ch, dActionTimeouts, a.TimedOut, n, a.Type)
		counter(ch, dActionDropped, a.Dropped, n, a.Type)
	}

	_, st, err := localStatus(c.s.src)
	gauge(ch, dStatusError, b2f(err != nil))
	if err != nil {
		return
	}
	gauge(ch, dBuildInfo, 1, st.Version, st.Node, st.Cluster)
	gauge(ch, dViewEpoch, float64(st.View.Epoch))
	gauge(ch, dMembers, float64(len(st.Members)))
	gauge(ch, dMembersUp, float64(len(st.View.Up)))
	gauge(ch, dHealthOK, b2f(st.Health.OK))
	gauge(ch, dConfigVersion, float64(st.ConfigVersion))
	for _, mb := range st.Members {
		gauge(ch, dMemberUp, b2f(mb.Up), mb.Name)
		gauge(ch, dMemberHealthy, b2f(mb.Health == "ok"), mb.Name)
		gauge(ch, dMemberConfig, float64(mb.ConfigVersion), mb.Name)
	}
	for _, gr := range st.Groups {
		if gr.Mode == "multi" {
			for _, mb := range gr.Members {
				gauge(ch, dShares, float64(gr.Shares[mb]), gr.Name, mb)
			}
			continue
		}
		gauge(ch, dIPsHeld, float64(len(gr.Held)), gr.Name)
		owners := map[string]int{}
		for _, o := range gr.IPs {
			owners[o]++
		}
		for o, n := range owners {
			gauge(ch, dIPsOwned, float64(n), gr.Name, o)
		}
	}
}
