// Package appliance is the composition root of a running Shoal node. It
// loads the agent file and the cluster config, starts gossip (heartbeat,
// detector, view), confsync, the dataplane and the event dispatcher, and owns
// the agent loop: view or config change -> allocation (allocate/) -> desired
// state -> dataplane. It also owns on-box concerns: self-tests, the local
// admin socket and systemd readiness. It is the only package that imports
// gossip/, confsync/, allocate/ and dataplane/ together; nothing below it
// imports it.
package appliance
