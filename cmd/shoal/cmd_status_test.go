package main

import (
	"strings"
	"testing"

	"github.com/shoal-project/shoal/bpf"
	"github.com/shoal-project/shoal/dataplane/multihost"
)

func TestPrintMultihost(t *testing.T) {
	var b strings.Builder
	printMultihost(&b, &multihost.Status{
		Interfaces: []multihost.InterfaceStatus{{Name: "eth0", Mode: "native"}},
		Groups: []multihost.GroupStatus{
			{Name: "web", Interface: "eth0", BucketsOwned: 13440, BucketsHeld: 7, BucketsHandover: 120, Table: 0xabc0123456789},
			{Name: "dns", Interface: "eth0"},
		},
		Counters:   bpf.Counters{PassedOwner: 10, DroppedNotOwner: 20, ParseErrors: 1},
		ARPReplies: 3, MalformedNDP: 2,
	})
	out := b.String()
	rows := map[string]bool{}
	for l := range strings.Lines(out) {
		rows[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{"web eth0 13440 7 120 bc0123456789", "dns eth0 0 0 0 (failed)"} {
		if !rows[want] {
			t.Errorf("output lacks the row %q:\n%s", want, out)
		}
	}
	for _, want := range []string{
		"Multi-hosted data plane: XDP on eth0 (native)",
		"10 passed (owner)", "20 dropped (not owner)", "1 parse errors",
		"3 ARP and 0 NDP replies, 0 ARP and 2 NDP malformed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
