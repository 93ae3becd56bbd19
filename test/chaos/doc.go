// Package chaos is Shoal's fault-injection runner and its oracle.
//
// Run builds a network-namespace topology with the harness (5 nodes, a
// client, a switch), starts a real `shoal agent` on every node with single-
// and multi-hosted traffic IP groups, probes every traffic IP from the
// client continuously and injects faults drawn at random from a seed: agent
// crash (SIGKILL) and restart, switch-port cut and restore, partition and
// heal, packet loss, link flaps, CPU starvation (SIGSTOP/SIGCONT and a
// cgroup CPU quota) and, when the agent supports config replication, an
// agent restart during a config apply. The schedule is a pure function of
// the seed, so a run is reproducible from it.
//
// The oracle looks from outside the agents only: the addresses and XDP
// attachments in each node namespace (netlink), each agent's /v1/status and
// /v1/events over its admin socket, process liveness and /proc counters. It
// records samples during the run and judges them afterwards against the
// fault timeline (Analyze), so the same judgement can be replayed on
// synthetic samples in unit tests. The definitions are in
// docs/RELIABILITY.md.
//
// It owns only what it creates: namespaces named Prefix+PID+suffix, its
// cgroups under the cpu controller (named after the run) and its temporary
// files. It never touches the root namespace and drives the product only as
// an external binary.
package chaos
