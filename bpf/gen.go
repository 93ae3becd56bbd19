package bpf

// The generated files (shoal_bpfel.go, shoal_bpfel.o) are committed so that
// `go build` needs no clang. Regenerate with `make generate` after editing
// src/shoal_xdp.c.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cc clang -type mh_group -type mh_chunk -type mh_addr_slot -type mh_addr_cfg -type mh_group_cfg shoal src/shoal_xdp.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
