// Package wire is the byte format of Shoal's signed heartbeat packets
// (heartbeat, probe, probe-ack, indirect-probe request, verdict, leave).
//
// It owns encoding, decoding and Ed25519 signing/verification of one
// packet and nothing else: no sockets, no clocks, no membership state, no
// logging. The format is documented byte by byte in docs/PROTOCOL.md; keep
// the two in step. Decode never panics on any input (fuzzed) and reports
// problems as errors.Is-able sentinels.
package wire
