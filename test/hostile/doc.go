// Package hostile holds Shoal's hostile-input tests: forged, replayed,
// wrong-cluster, wrong-key, unknown-sender, malformed and oversized
// heartbeats sent into a running agent's namespace; an intruder agent that
// knows the cluster secret but is not a configured member; malformed ARP
// and NDP frames at the multi-hosted responder. Each must be rejected,
// counted in the status JSON and reported by an event, while the node keeps
// working. It also holds fuzz targets for decoders that have none in their
// own package (agent file, serf config tag, version IDs, private keys).
//
// It drives real agent processes (test/chaos Agents on the netns harness)
// and owns only the namespaces it creates (prefix "shx-").
package hostile
