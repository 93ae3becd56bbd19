// Package crashsafe holds the crash-safety tests of issue 9: an agent
// SIGKILLed while it applies a dataplane change (raising traffic IPs,
// attaching XDP at start-up or on take-over) or while it writes a new
// config version must, on restart, hold its previous config version
// intact, leave no stale traffic IP or duplicate XDP program behind and
// rejoin without manual steps. Tests only (root, netns harness, real
// agents); namespaces are prefixed "shk-".
package crashsafe
