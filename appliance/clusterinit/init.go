package clusterinit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
)

// SecretSize is the number of random bytes in a generated cluster secret
// (written hex-encoded).
const SecretSize = 32

// InitOptions describe a new cluster and its first node.
type InitOptions struct {
	Cluster   string     // cluster name
	Node      string     // this node's member name
	Address   netip.Addr // this node's unicast address
	Interface string     // heartbeat interface ("" = kernel chooses)
	Location  string     // this node's site ("" = none)
	Dir       string     // config dir, default DefaultDir
	DataDir   string     // agent data_dir, default DefaultDataDir
	Socket    string     // admin socket ("" = default)
	// Secret is the cluster secret to use; nil generates SecretSize random
	// bytes, hex-encoded. It is also the join password.
	Secret []byte
}

// InitResult says what Init wrote.
type InitResult struct {
	Paths       Paths
	PublicKey   string // "ed25519:..."
	Fingerprint string // "SHA256:..."
	Generated   bool   // the secret was generated (show the operator where it is)
}

// Init writes a new cluster's secret, this node's key, a first cluster.toml
// listing this node as its only (unrestricted) member, and the agent file.
// It refuses if any of these files exists, and writes nothing then.
func Init(o InitOptions) (*InitResult, error) {
	p := pathsOf(o.Dir, o.DataDir)
	if err := checkInit(o); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := mustNotExist(p.Agent, p.Cluster, p.Key, p.Secret); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	secret, generated := o.Secret, false
	if len(secret) == 0 {
		var b [SecretSize]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("init: generate secret: %w", err)
		}
		secret, generated = []byte(hex.EncodeToString(b[:])), true
	}
	key, err := identity.Generate()
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	pub := identity.Public(key)
	content := FirstConfig(o.Cluster, o.Node, o.Address, o.Location, pub)
	if err := confsync.ConfigValidator(ClusterFileName, nil)(content); err != nil {
		return nil, fmt.Errorf("init: first config: %w", err)
	}
	agent := AgentFile{Node: o.Node, Bind: o.Address.String(), Interface: o.Interface, DataDir: p.DataDir,
		Socket: o.Socket, Comment: "Written by 'shoal init' for cluster " + o.Cluster + "."}
	w := &writer{}
	err = w.file(p.Secret, append(append([]byte(nil), secret...), '\n'), 0o600)
	if err == nil {
		err = w.key(p.Key, key)
	}
	if err == nil {
		err = w.file(p.Cluster, content, 0o600)
	}
	if err == nil {
		err = w.file(p.Agent, agent.Render(), 0o600)
	}
	if err != nil {
		w.undo()
		return nil, fmt.Errorf("init: %w", err)
	}
	return &InitResult{Paths: p, PublicKey: identity.FormatPublicKey(pub), Fingerprint: identity.Fingerprint(pub), Generated: generated}, nil
}

func checkInit(o InitOptions) error {
	if o.Cluster == "" {
		return fmt.Errorf("a cluster name is required")
	}
	if o.Node == "" {
		return fmt.Errorf("a node name is required")
	}
	if !o.Address.IsValid() {
		return fmt.Errorf("this node's address is required")
	}
	if strings.ContainsAny(o.Interface, "/ \t:") || len(o.Interface) > 15 {
		return fmt.Errorf("interface %q is not an interface name", o.Interface)
	}
	return nil
}

// FirstConfig is the cluster config `shoal init` writes: the cluster's name
// and this node as its only member, with every other setting at its
// default (spelled out in comments).
func FirstConfig(cluster, node string, addr netip.Addr, location string, pub ed25519.PublicKey) []byte {
	q := strconv.Quote
	d := config.DefaultClusterSettings()
	var b strings.Builder
	fmt.Fprintf(&b, "# Cluster config of %s, written by 'shoal init'. Once the agent has started,\n", q(cluster))
	b.WriteString("# this file is only the first version: change the running config with\n")
	b.WriteString("# 'shoal config apply FILE' or 'shoal config set KEY=VALUE' (see docs/CONFIG.md).\n")
	b.WriteString("[cluster]\n")
	fmt.Fprintf(&b, "name = %s\n", q(cluster))
	fmt.Fprintf(&b, "# heartbeat_interval = %s\n", q(d.HeartbeatInterval.String()))
	fmt.Fprintf(&b, "# multicast_group = %s\n", q(d.MulticastGroup.String()))
	fmt.Fprintf(&b, "# multicast_port = %d\n", d.MulticastPort)
	fmt.Fprintf(&b, "# gossip_port = %d\n", d.GossipPort)
	fmt.Fprintf(&b, "# config_port = %d\n", d.ConfigPort)
	b.WriteString("\n[[member]]\n")
	fmt.Fprintf(&b, "name = %s\n", q(node))
	fmt.Fprintf(&b, "address = %s\n", q(addr.String()))
	fmt.Fprintf(&b, "public_key = %s\n", q(identity.FormatPublicKey(pub)))
	b.WriteString("can_update = true\n")
	if location != "" {
		fmt.Fprintf(&b, "location = %s\n", q(location))
	}
	b.WriteString("\n# Traffic IP groups, e.g.:\n# [[group]]\n# name = \"web\"\n# ips = [\"192.0.2.10\"]\n")
	fmt.Fprintf(&b, "# members = [%s]\n# interface = \"eth0\"\n", q(node))
	return []byte(b.String())
}
