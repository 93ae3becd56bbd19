package confsync

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"

	"github.com/shoal-project/shoal/confsync/identity"
)

// Member is what confsync needs to know about one cluster member: its pinned
// identity, whether peers accept its edits, where it is and how to reach it.
type Member struct {
	Name      string
	PublicKey ed25519.PublicKey
	CanUpdate bool   // false: a restricted node; peers refuse its config updates
	Location  string // site name for [location.NAME] overrides; "" = none
	Address   string // unicast IP address
}

// Authority answers, for one configuration, who its members are, which key
// is pinned for each and who may update it.
type Authority interface {
	Member(name string) (Member, bool)
	Members() []Member // sorted by name
}

// AuthorityFunc derives the Authority of a configuration's content.
type AuthorityFunc func(content []byte) (Authority, error)

// StaticAuthority is an Authority over a fixed member list.
type StaticAuthority []Member

// Member returns the member called name.
func (s StaticAuthority) Member(name string) (Member, bool) {
	for _, m := range s {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// Members returns the members sorted by name.
func (s StaticAuthority) Members() []Member {
	out := slices.Clone([]Member(s))
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// memberOf returns the member whose pinned key is pub.
func memberOf(a Authority, pub ed25519.PublicKey) (Member, bool) {
	for _, m := range a.Members() {
		if bytes.Equal(m.PublicKey, pub) {
			return m, true
		}
	}
	return Member{}, false
}

// MembersFromTOML is an AuthorityFunc that reads only the [[member]] tables
// of a cluster configuration (name, address, public_key, can_update,
// location) and ignores every other key. can_update defaults to true. It is
// deliberately lenient about the rest of the file so that membership can be
// derived even while the full schema evolves; full validation is the
// Validate function's job.
func MembersFromTOML(content []byte) (Authority, error) {
	var doc struct {
		Member []struct {
			Name      string `toml:"name"`
			Address   string `toml:"address"`
			PublicKey string `toml:"public_key"`
			CanUpdate *bool  `toml:"can_update"`
			Location  string `toml:"location"`
		} `toml:"member"`
	}
	if _, err := toml.Decode(string(content), &doc); err != nil {
		return nil, fmt.Errorf("read members: %w", err)
	}
	out := make(StaticAuthority, 0, len(doc.Member))
	seen := map[string]bool{}
	for i, m := range doc.Member {
		if m.Name == "" {
			return nil, fmt.Errorf("read members: member[%d]: name is empty", i)
		}
		if seen[m.Name] {
			return nil, fmt.Errorf("read members: member %q defined twice", m.Name)
		}
		seen[m.Name] = true
		pub, err := ParsePublicKey(m.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("read members: member %q: public_key: %w", m.Name, err)
		}
		can := true
		if m.CanUpdate != nil {
			can = *m.CanUpdate
		}
		out = append(out, Member{Name: m.Name, PublicKey: pub, CanUpdate: can, Location: m.Location, Address: m.Address})
	}
	return out, nil
}

// ParsePublicKey parses the config form "ed25519:<base64>" (see
// confsync/identity, which owns the format).
func ParsePublicKey(s string) (ed25519.PublicKey, error) { return identity.ParsePublicKey(s) }

// FormatPublicKey renders a public key in the config form.
func FormatPublicKey(pub ed25519.PublicKey) string { return identity.FormatPublicKey(pub) }

// PinSet is the set of member identities a node currently trusts, shared
// between a Node (which replaces it whenever its current configuration
// changes) and the TLS transport (which pins peers against it). Safe for
// concurrent use.
type PinSet struct {
	mu sync.RWMutex
	a  Authority
}

// NewPinSet returns a PinSet holding a (nil: nobody).
func NewPinSet(a Authority) *PinSet { return &PinSet{a: a} }

// Set replaces the trusted members.
func (p *PinSet) Set(a Authority) {
	p.mu.Lock()
	p.a = a
	p.mu.Unlock()
}

// Member returns the member called name.
func (p *PinSet) Member(name string) (Member, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.a == nil {
		return Member{}, false
	}
	return p.a.Member(name)
}

// ByKey returns the member whose pinned key is pub.
func (p *PinSet) ByKey(pub ed25519.PublicKey) (Member, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.a == nil {
		return Member{}, false
	}
	return memberOf(p.a, pub)
}

// Members returns the trusted members sorted by name.
func (p *PinSet) Members() []Member {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.a == nil {
		return nil
	}
	return p.a.Members()
}
