package confsync

import (
	"bytes"
	"crypto/ed25519"
	"net/netip"
	"testing"

	"github.com/shoal-project/shoal/confsync/config"
)

// FuzzReadFrame feeds the config channel's frame reader arbitrary bytes, as a
// peer or a joiner that completed the TLS handshake could: it must never
// allocate past maxFrame, and what it accepts must re-encode to the same
// bytes.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	_ = writeFrame(&seed, reqGet, bytes.Repeat([]byte{7}, 32))
	f.Add(seed.Bytes())
	f.Add([]byte{reqHead, 0, 0, 0, 0})
	f.Add([]byte{reqJoin, 0xff, 0xff, 0xff, 0xff, 1, 2})
	f.Add([]byte{respOK, 0, 0, 0, 3, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, payload, err := readFrame(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(payload) > maxFrame {
			t.Fatalf("accepted a %d-byte frame", len(payload))
		}
		var again bytes.Buffer
		if err := writeFrame(&again, kind, payload); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(again.Bytes(), b[:5+len(payload)]) {
			t.Fatal("round trip changed the frame")
		}
	})
}

// joinBase is the config a sponsor appends joiners to in FuzzJoinRequest.
var joinBase = []byte(`[cluster]
name = "fuzz"

[[member]]
name = "a"
address = "10.0.0.1"
public_key = "ed25519:` + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" + `"
`)

// FuzzJoinRequest decodes a join request body the way the sponsor does
// (strict JSON, then the request's own checks) and, for every request it
// accepts, appends the member and parses the result as the config package
// would: an accepted request must never produce a config that fails to
// parse or that names a different member (no TOML injection through the
// name, address or location).
func FuzzJoinRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"b","address":"10.0.0.2"}`,
		`{"name":"c","address":"fd00::3","location":"lon"}`,
		`{"name":"d","address":"fe80::1%eth0"}`,
		`{"name":"e\"\n[admin]","address":"10.0.0.5"}`,
		`{"name":"f","address":"10.0.0.6","extra":1}`,
	} {
		f.Add([]byte(s))
	}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)).Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req JoinRequest
		if err := strictJSON(body, &req); err != nil {
			return
		}
		if err := checkJoinRequest(req); err != nil {
			return
		}
		if req.Name == "a" || req.Address == "10.0.0.1" {
			return // duplicates: config validation's job, tested there
		}
		content, err := AppendMember(joinBase, Member{Name: req.Name, Address: req.Address, Location: req.Location, PublicKey: key, CanUpdate: true})
		if err != nil {
			t.Fatalf("accepted request %s but AppendMember failed: %v", body, err)
		}
		c, err := config.Parse("fuzz.toml", content)
		if err != nil {
			if req.Location != "" {
				return // a location must also be defined by [location.NAME]: validation may refuse
			}
			t.Fatalf("accepted request %s gave a config that does not parse: %v\n%s", body, err, content)
		}
		if len(c.Members) != 2 {
			t.Fatalf("request %s gave %d members", body, len(c.Members))
		}
		m := c.Members[1]
		if m.Name != req.Name || m.Address != netip.MustParseAddr(req.Address) || m.Location != req.Location {
			t.Fatalf("request %s became member %q %s %q", body, m.Name, m.Address, m.Location)
		}
	})
}
