package firstboot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// Seed is everything setup can configure. It is read from a seed file
// (TOML) for unattended setup, or filled in by the console dialogue.
// Every field is optional; an empty Seed means "DHCP on the first NIC,
// default host name, no cluster yet".
type Seed struct {
	// Hostname is the node's host name (RFC 1123; default "shoal-" and
	// the last three bytes of the first NIC's MAC address).
	Hostname string  `toml:"hostname"`
	Network  Network `toml:"network"`
	Access   Access  `toml:"access"`
	Cluster  Cluster `toml:"cluster"`
}

// Network is the node's addressing on one interface.
type Network struct {
	// Interface is the NIC to configure (default: the first NIC, lowest
	// ifindex among physical Ethernet interfaces).
	Interface string `toml:"interface"`
	// Mode is "dhcp" (default) or "static".
	Mode string `toml:"mode"`
	// Addresses are CIDR prefixes ("192.0.2.10/24", "2001:db8::10/64");
	// required when Mode is "static".
	Addresses []string `toml:"addresses"`
	// Gateways are default routers, IPv4 and/or IPv6 (static mode).
	Gateways []string `toml:"gateways"`
	// DNS are name servers (static mode; DHCP supplies its own).
	DNS []string `toml:"dns"`
}

// Access is how an administrator reaches the node after setup. Setup
// removes the console autologin only when one of these is given, so the
// node never ends up unreachable.
type Access struct {
	// RootPasswordHash is a crypt(3) hash for root (e.g. from
	// 'mkpasswd -m yescrypt'); plain passwords are never stored.
	RootPasswordHash string `toml:"root_password_hash"`
	// RootPassword is a plain password typed at the console; it is hashed
	// by chpasswd and never written anywhere by setup.
	RootPassword string `toml:"-"`
	// SSHAuthorizedKeys are public keys for root; giving any enables the
	// SSH server (disabled until then).
	SSHAuthorizedKeys []string `toml:"ssh_authorized_keys"`
}

// Cluster says whether this node creates a cluster or joins one.
type Cluster struct {
	// Action is "" (decide later), "init" or "join".
	Action string `toml:"action"`
	// Name is the cluster to create (init) or to join (join; default: the
	// only cluster discovered).
	Name string `toml:"name"`
	// Password is the cluster password (required for init and join).
	Password string `toml:"password"`
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// ParseSeed decodes a seed file. Unknown keys are errors naming the file
// and key; syntax errors name the file and line.
func ParseSeed(name string, data []byte) (Seed, error) {
	var s Seed
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&s)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Seed{}, fmt.Errorf("parse seed %s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		return Seed{}, fmt.Errorf("parse seed %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return Seed{}, fmt.Errorf("parse seed %s: unknown key %q", name, und[0].String())
	}
	if err := s.Validate(); err != nil {
		return Seed{}, fmt.Errorf("parse seed %s: %w", name, err)
	}
	return s, nil
}

// Validate checks every field, naming the first bad key.
func (s Seed) Validate() error {
	if s.Hostname != "" && (len(s.Hostname) > 253 || !hostnameRE.MatchString(s.Hostname)) {
		return fmt.Errorf("hostname: %q is not a valid host name (lower-case letters, digits, '-', '.')", s.Hostname)
	}
	n := s.Network
	if n.Interface != "" && (len(n.Interface) > 15 || strings.ContainsAny(n.Interface, "/ \t\n")) {
		return fmt.Errorf("network.interface: %q is not an interface name", n.Interface)
	}
	switch n.Mode {
	case "", "dhcp":
		if len(n.Addresses) > 0 {
			return fmt.Errorf("network.addresses: only with mode = \"static\"")
		}
	case "static":
		if len(n.Addresses) == 0 {
			return fmt.Errorf("network.addresses: mode \"static\" needs at least one address")
		}
	default:
		return fmt.Errorf("network.mode: %q is not \"dhcp\" or \"static\"", n.Mode)
	}
	for i, a := range n.Addresses {
		if _, err := netip.ParsePrefix(a); err != nil {
			return fmt.Errorf("network.addresses[%d]: %q is not an address with prefix length (192.0.2.10/24)", i, a)
		}
	}
	for i, g := range n.Gateways {
		if _, err := netip.ParseAddr(g); err != nil {
			return fmt.Errorf("network.gateways[%d]: %q is not an IP address", i, g)
		}
	}
	for i, d := range n.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("network.dns[%d]: %q is not an IP address", i, d)
		}
	}
	if h := s.Access.RootPasswordHash; h != "" && (!strings.HasPrefix(h, "$") || strings.ContainsAny(h, ": \n")) {
		return fmt.Errorf("access.root_password_hash: not a crypt(3) hash (want e.g. $y$... from mkpasswd)")
	}
	if strings.ContainsAny(s.Access.RootPassword, "\n\r") {
		return fmt.Errorf("root password: must be one line")
	}
	for i, k := range s.Access.SSHAuthorizedKeys {
		f := strings.Fields(k)
		if len(f) < 2 || strings.Contains(k, "\n") || !isKeyType(f[0]) {
			return fmt.Errorf("access.ssh_authorized_keys[%d]: not an OpenSSH public key line", i)
		}
	}
	switch s.Cluster.Action {
	case "":
	case "init", "join":
		if s.Cluster.Password == "" {
			return fmt.Errorf("cluster.password: required for action %q", s.Cluster.Action)
		}
		if s.Cluster.Action == "init" && s.Cluster.Name == "" {
			return fmt.Errorf("cluster.name: required for action \"init\"")
		}
	default:
		return fmt.Errorf("cluster.action: %q is not \"init\" or \"join\"", s.Cluster.Action)
	}
	return nil
}

func isKeyType(t string) bool {
	return strings.HasPrefix(t, "ssh-") || strings.HasPrefix(t, "ecdsa-") || strings.HasPrefix(t, "sk-")
}

// nocloudHostname reads local-hostname from a NoCloud meta-data file, so a
// cloud-init style seed drive names the node even without a shoal seed.
func nocloudHostname(metaData []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(metaData))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "local-hostname" {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}
