// Package adminapi is the node's remote administration surface: the HTTPS
// admin API (JSON under /api/v1/), the Prometheus /metrics exposition, the
// self-contained web status page, the cluster view gathered from every node
// over mutually authenticated TLS, and the failover timeline recorder.
//
// It owns: the HTTPS listener and its certificates (made from the node's
// Ed25519 key), user authentication (bcrypt password hashes, hashed bearer
// tokens, roles admin / read-only), node-to-node client authentication
// (TLS client certificates pinned to the members' public keys), the metrics
// registry (a private one: no global state), and the embedded web page.
//
// It must not touch: the kernel, gossip or the dataplane (it only reads
// their stats types), files, or the agent's state. Everything it shows comes
// from a Source the agent implements; appliance imports adminapi, never the
// reverse. It does not import the appliance package: the node status is read
// through its JSON contract (NodeStatus mirrors appliance.Status, documented
// in docs/API.md).
package adminapi
