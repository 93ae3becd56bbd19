// Package gossip turns packets into a view of which cluster members are up.
//
// It owns:
//   - the signed heartbeat (format in gossip/wire, documented in
//     docs/PROTOCOL.md), sent every Interval by UDP multicast (or unicast to
//     every member) through a small Transport interface with an in-memory fake
//     (MemNetwork) for many-node tests;
//   - receiver validation (cluster, pinned key per member, replay window, clock
//     window), with every rejection counted by reason;
//   - the failure detector (suspect, direct + indirect probes, signed verdicts,
//     hard monitor timeout) and the resulting View{Up, Epoch, Digest};
//   - serf and memberlist, embedded as a library: encrypted gossip keyed from
//     the cluster secret, a persisted keyring with rotation, signed admission
//     tokens checked by serf's Merge delegate (configured observers, stock
//     serf agents, are admitted without one and never enter the view),
//     automatic re-join, user events and queries. gossip is the ONLY package
//     that imports serf or memberlist.
//
// It must not touch: config files or confsync (the caller passes a Config),
// allocation, the dataplane (netlink, ARP, XDP), the admin socket or the CLI.
// Serf alone never marks a member up: only a fresh, valid, healthy heartbeat
// does; serf "left" marks a member down, serf "failed" only while the
// heartbeat detector does not hear it either.
package gossip
