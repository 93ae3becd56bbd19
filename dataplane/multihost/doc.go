// Package multihost serves multi-hosted traffic IPs on this node: it answers
// ARP requests (and IPv6 neighbour solicitations) for the groups' addresses
// with a multicast MAC so the switch floods their traffic to every member,
// keeps the kernel from answering with its unicast MAC (addresses on lo,
// arp_ignore/arp_announce), joins the multicast MAC and IGMP/MLD group on the
// interface, attaches Shoal's XDP program (bpf/) and writes each group's
// partition table on every Apply.
//
// It owns the netlink, sysctl and packet-socket work for multi-hosted groups
// and drives bpf/ for the XDP side. It must not import gossip/, confsync/,
// allocate/ or appliance/: it gets a plain []dataplane.MultiGroup.
package multihost
