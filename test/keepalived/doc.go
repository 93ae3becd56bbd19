// Package keepalived runs keepalived (VRRPv3) as the reference peer in
// harness topologies: it renders one configuration per node for a set of
// virtual IPs, starts `keepalived --vrrp` in each node namespace, stops it,
// and reports which node holds an IP. It owns only the files it writes in
// the topology's directory and the processes it starts; it does not import
// any Shoal package.
package keepalived
