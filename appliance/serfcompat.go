package appliance

import (
	"net"

	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/gossip"
)

// serfEventOf converts a gossip serf event into the events package's serf
// handler input.
func serfEventOf(se gossip.SerfEvent) events.SerfEvent {
	out := events.SerfEvent{Kind: se.Type, LTime: se.LTime, Payload: se.Payload}
	switch se.Type {
	case "user":
		out.UserName = se.Name
	case "query":
		out.QueryName = se.Name
		if se.Query != nil {
			out.Respond = se.Query.Respond
		}
	}
	for _, m := range se.Members {
		var addr net.IP
		if m.Addr.IsValid() {
			addr = m.Addr.AsSlice()
		}
		out.Members = append(out.Members, events.SerfMember{Name: m.Name, Addr: addr, Tags: m.Tags})
	}
	return out
}
