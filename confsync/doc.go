// Package confsync turns configuration edits into versions and replicates
// them across the cluster.
//
// A Version is a signed header over a configuration's bytes: a Lamport
// counter, the origin node, the parent version's ID, the content hash and a
// time, signed with the origin's Ed25519 key. A Node accepts a version from a
// peer only if the signature checks against the key pinned for the origin in
// the configuration the node currently holds and that member has
// can_update = true. Concurrent edits are ordered by (counter, origin, ID) on
// every node; the loser stays in history and raises a config-conflict event.
//
// What it owns: the version format and its canonical signing encoding; the
// on-disk store (data dir with HEAD, versions/ with bounded retention,
// quarantine/), written atomically (temp file, fsync, rename, fsync dir);
// acceptance rules; fetch of announced versions and anti-entropy; the
// mutually authenticated TLS 1.3 transport (certificates made from node keys,
// pinned by public key); the password-proof join protocol; multi-site
// resolution of [location.NAME] overrides; unified diffs of configurations.
//
// What it must not touch: it never imports gossip/, allocate/, dataplane/ or
// appliance/. Versions seen in heartbeats or serf tags reach it through
// Node.Observe, called by the agent. It does not interpret the configuration
// beyond membership (Authority) and location overrides; the schema and its
// validation live in confsync/config and are injected as functions.
package confsync
