// Package dataplane turns a desired state (traffic IPs to hold, multi-hosted
// groups to serve) into kernel state and keeps it there with one reconcile
// loop.
//
// It owns, and is the only package to touch: netlink (vishvananda/netlink:
// addresses, links, their notifications), ARP (mdlayher/arp), NDP
// (mdlayher/ndp) and raw packet sockets (mdlayher/packet). It drives
// multi-hosted groups only through the MultiHoster interface, which
// dataplane/multihost implements on top of bpf/. It must not import gossip/,
// confsync/, allocate/ or appliance/: it knows nothing of views, configs or
// allocation, only of Desired values.
//
// # Shape
//
// The agent computes a Desired value and calls Manager.Apply, which never
// blocks: the latest value wins and wakes the loop. The loop (Manager.Run)
// reconciles on Apply, on every netlink address or link notification, on a
// retry timer and on a slow full resync (Options.Resync, 30s). Each pass
// dumps the kernel's addresses once and:
//
//   - drops held addresses that are no longer desired (and, on the first
//     pass, stale Shoal-marked addresses left by an earlier run);
//   - raises desired addresses that are missing: IPv4 with the label
//     Label(ifname) ("<ifname>:sh"), IPv6 with IFA_F_NODAD, both with
//     IFA_F_NOPREFIXROUTE unless Address.PrefixRoute, as /32 or /128 unless
//     Address.PrefixLen;
//   - re-adds a held address something else removed, and re-raises one whose
//     DAD failed or whose prefix or flags differ;
//   - calls the MultiHoster when Desired.Multi changed;
//   - reports groups whose interface is missing or down (Failures, Status).
//
// Failed operations are retried with exponential backoff per operation
// (Options.RetryMin..RetryMax with jitter), never in a hot loop; a failed
// operation leaves everything else in place. Each raise starts an
// announcement burst (gratuitous ARP request and reply, or an unsolicited
// neighbour advertisement with the override flag to ff02::1) and the
// periodic refresh; Reannounce repeats the burst for every held address.
//
// # Ownership of addresses
//
// An address is Shoal's when it carries a Shoal label (IPv4) or is listed in
// the state record (Options.StateDir/RecordFile), a JSON file written
// atomically (temporary file, fsync, rename, fsync of the directory) before
// an address is raised and after every change, so a restarted agent knows its
// own addresses, IPv6 included. Nothing is touched before the first Apply
// (or DropAll); that first pass drops every Shoal address the first desired
// state does not contain and adopts the ones it does.
//
// IPv6 addresses are raised with IFA_F_NODAD. This is safe because an
// address is only raised after the cluster decided this node owns it: the
// allocation is the duplicate detection. DAD would instead hold a taken-over
// address tentative for a second and, worse, fail it for good when the
// previous owner still answers for a moment (a partition healing, a slow
// drop), leaving the address dead on the node that should serve it. DAD
// failure is still handled: an address seen with IFA_F_DADFAILED is deleted
// and raised again, with backoff. Duplicates are watched for instead with
// Options.DetectConflicts (ARP from another MAC for a held IPv4 address).
//
// # Stopping
//
// DropAll removes every address held and withdraws the multi-hosted groups
// (the agent first tells its peers it is leaving); Apply is ignored after.
// Close stops the loop without dropping anything, as a crash would.
//
// See docs/DATAPLANE.md for labels, the state record, flags, announcement
// timing and reconcile behaviour in detail.
package dataplane
