// Package e2ekit runs real Shoal agent processes (the built `shoal` binary)
// on a harness topology, for the end-to-end tests in test/e2e, the demo
// (test/cmd/demo) and the detection benchmark (test/cmd/benchdetect): it
// builds the binary, writes the cluster through test/harness/shoalrun,
// starts, kills, stops and restarts single agents, reads each agent's view
// over its admin socket and through `shoal status --json`, parses the
// agents' JSON logs (view changes with timestamps) and dials traffic IPs
// from the client namespace.
//
// It drives the product only from the outside (binary, admin socket, logs,
// kernel state) and imports no Shoal package: the JSON shapes it decodes
// mirror appliance.Status, so an incompatible API change fails the tests
// instead of being compiled around. It creates nothing outside the
// topology's namespaces and directory.
package e2ekit
