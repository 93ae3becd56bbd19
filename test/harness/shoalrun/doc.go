// Package shoalrun runs the Shoal agent (`shoal agent --config FILE`, an
// external binary built by `make build`) on the nodes of a harness topology:
// it generates node keys, the cluster secret, one cluster.toml and one agent
// file per node following the agreed schema, starts and stops the agents.
// It only writes files under the topology's directory and only starts
// processes through the harness; it imports no Shoal package, so it tests
// the binary exactly as an operator runs it.
package shoalrun
