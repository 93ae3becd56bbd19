// Package harness builds throw-away network-namespace topologies for the
// end-to-end tests, the benchmarks against peers and the demo: a "switch"
// namespace holding a Linux bridge, N node namespaces each wired to it by one
// veth (eth0 inside the node) and optionally a client namespace that reaches
// the documentation traffic-IP ranges on-link, so it ARPs for traffic IPs
// directly. It injects faults (cut a port, random loss, partitions) with
// link state and nftables bridge rules in the switch namespace, runs
// processes inside node namespaces, and provides an in-process TCP probe and
// TCP server bound inside a namespace for measuring failover gaps.
//
// It owns only the namespaces it creates (named Prefix + creator PID + random
// suffix) and never adds addresses, routes or rules in the root namespace.
// It does not import any Shoal package: it drives the product only as an
// external binary.
package harness
