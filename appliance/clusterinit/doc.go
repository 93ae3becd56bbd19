// Package clusterinit is the library side of `shoal init`, `shoal discover`,
// `shoal join` and `shoal config set`: creating a cluster's first files,
// listening for the clusters heard on the heartbeat multicast group, joining
// a running cluster with its password, and editing a cluster config by
// dotted keys.
//
// What it owns: the files `shoal init` and `shoal join` write (the cluster
// secret, this node's key, the first or received cluster.toml, the agent
// file, and the first version in the data dir via confsync.Install), all
// refusing to overwrite anything and written only once every check passed;
// decoding heard heartbeats without verifying them (the listener holds no
// cluster keys, so what it reports is unverified).
//
// What it must not touch: it never talks to a running agent (the CLI does,
// over the admin socket), never opens gossip sockets beyond one multicast
// listener, and never edits a version store that already holds versions.
// It imports confsync, confsync/config, confsync/identity and gossip/wire
// (the heartbeat byte format only), nothing of gossip's runtime.
package clusterinit
