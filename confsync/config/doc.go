// Package config is the TOML model of Shoal's two configuration files: the
// replicated cluster config (cluster settings, members, traffic IP groups,
// self-tests, events) and the node-local agent file. It decodes strictly
// (unknown keys are errors), fills defaults, validates, and reports every
// problem at once with file, line and key. It also encodes a cluster config
// back to TOML, so tooling can write assigned multi-hosted slots back and
// they never renumber.
//
// It owns no I/O beyond reading the files it is asked to load, and must not
// import gossip/, allocate/, dataplane/, appliance/ or cmd/.
package config
