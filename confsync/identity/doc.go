// Package identity owns a node's Ed25519 identity: generating, loading and
// saving the private key file (PEM "PRIVATE KEY", PKCS#8), and the textual
// forms of the public key used in the cluster config ("ed25519:" + base64)
// and for display (an OpenSSH-style "SHA256:" fingerprint). It does no
// signing of protocol messages and must not import gossip/, appliance/ or
// any network code.
package identity
