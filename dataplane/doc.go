// Package dataplane turns a desired state (traffic IPs to hold, multi-hosted
// groups to serve) into kernel state and keeps it there with one reconcile
// loop. It is the only package that touches netlink, ARP/NDP and raw packet
// sockets; it drives bpf/ for multi-hosted groups. It must not import gossip/,
// confsync/, allocate/ or appliance/: it knows nothing of views or configs.
package dataplane
