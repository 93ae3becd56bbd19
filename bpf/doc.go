// Package bpf owns Shoal's XDP program for multi-hosted traffic IPs: the C
// source (src/shoal_xdp.c), the bpf2go-generated object and bindings
// (shoal_bpfel.go, shoal_bpfel.o; regenerate with `make generate`), and a
// small Go API to load the program, attach it to an interface, write a
// group's partition table atomically and read the counters.
//
// It is the only package importing github.com/cilium/ebpf. It knows nothing
// of netlink, ARP, configs or views: dataplane/multihost drives it. Hash and
// Bucket are the Go reference of the packet hash the program computes; the
// tests run the program on hand-built frames and compare.
package bpf
