// Package events is Shoal's event system: typed cluster events, the actions
// an operator configures for them, and serf-compatible event handlers.
//
// It owns:
//   - the event vocabulary (Type, Event, Severity) raised by the appliance;
//   - the Dispatcher: a never-blocking Publish, a ring buffer of recent events
//     for the status page and API, live subscriptions, and the action runners;
//   - the actions: log (zerolog), script (/bin/sh -c with SHOAL_* environment
//     and the event as JSON on stdin), webhook (POST JSON with retries and
//     backoff) and email (SMTP with STARTTLS, batched and rate-limited);
//   - serf handler compatibility: the serf agent's -event-handler syntax, its
//     environment (SERF_*) and stdin contracts, and query responses;
//   - the admin API bodies of `shoal event` and `shoal query` (UserEventPath,
//     QueryPath), which the agent serves by calling gossip/.
//
// Actions run off the failover path: Publish and HandleSerf only append to
// bounded per-action queues (dropping the oldest entry, counted, when full),
// each action runs its queue in order on its own goroutine, at most
// Config.MaxConcurrent actions run at once, and every run is bounded by a
// timeout that kills a script's whole process group. A hung action delays only
// its own later runs, never Publish, other actions or the caller.
//
// It must not touch: serf or memberlist (gossip/ owns them and hands serf-style
// events in as SerfEvent values), the cluster config model (confsync/config;
// the appliance converts it into Config), netlink or packet sockets
// (dataplane/). It imports nothing else from Shoal.
package events
