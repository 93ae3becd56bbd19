// Package serfinterop checks that a stock serf agent (github.com/hashicorp/serf
// cmd/serf v0.11.0, built with `go install` by the test) interoperates with a
// Shoal cluster as an [[observer]]: with the gossip key printed by `shoal
// keys gossip-key` it joins the pool, sees every member alive, sends user
// events that run the Shoal nodes' serf_handlers and receives `shoal event`s,
// while a stock agent with a name not in [[observer]] is refused.
//
// It drives the shoal binary as an operator does (test/harness and
// test/harness/shoalrun, read-only), runs the stock agents in the harness's
// client namespace and owns only the namespaces it creates (prefix "ssi-").
// It needs root; without root it skips.
package serfinterop
