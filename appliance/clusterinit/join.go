package clusterinit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
)

// alpnJoin is the config channel's join protocol (docs/CONFIG.md,
// "Bootstrap and joining"); the probe below speaks only its handshake.
const alpnJoin = "shoal-join/1"

// ErrDeclined means the operator did not confirm the sponsor's key.
var ErrDeclined = errors.New("sponsor not confirmed")

// JoinOptions describe the node joining and the sponsor it asks.
type JoinOptions struct {
	// Sponsor is a running unrestricted member: "host" (the default config
	// port 7948) or "host:port".
	Sponsor string
	Node    string     // this node's member name
	Address netip.Addr // this node's unicast address; invalid = the local address that routes to the sponsor
	// Location is this node's site ("" = none).
	Location  string
	Interface string // heartbeat interface for the agent file
	Password  []byte // the cluster password (the cluster secret)
	Dir       string // config dir, default DefaultDir
	DataDir   string // agent data_dir, default DefaultDataDir
	Socket    string // admin socket ("" = default)
	// Confirm is shown the sponsor's address and key fingerprint before the
	// password proof is sent; a non-nil error aborts. nil accepts.
	Confirm func(sponsor, fingerprint string) error
	Timeout time.Duration // whole join, default 30s
}

// JoinResult says what Join did.
type JoinResult struct {
	Paths       Paths
	Sponsor     string // sponsor's member name
	SponsorKey  string // sponsor's fingerprint
	Version     uint64 // the version that added this node
	VersionID   string
	Members     int
	Fingerprint string // this node's fingerprint
	NewKey      bool   // a key was generated (else the existing one was used)
}

// SponsorAddr returns host:port for a sponsor given as host or host:port.
func SponsorAddr(s string) (string, error) {
	if s == "" {
		return "", errors.New("no sponsor address")
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, config.DefaultClusterSettings().ConfigPort).String(), nil
	}
	return net.JoinHostPort(s, strconv.Itoa(int(config.DefaultClusterSettings().ConfigPort))), nil
}

// LocalAddressFor returns this host's source address towards addr
// (host:port), as the routing table chooses it. No packet is sent.
func LocalAddressFor(addr string) (netip.Addr, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("local address towards %s: %w", addr, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// ProbeSponsor opens a TLS handshake on the join protocol to learn the
// sponsor's public key, and closes it without sending anything.
func ProbeSponsor(ctx context.Context, addr string, self string, key ed25519.PrivateKey) (ed25519.PublicKey, error) {
	cert, err := confsync.Certificate(self, key)
	if err != nil {
		return nil, err
	}
	var got ed25519.PublicKey
	d := tls.Dialer{Config: &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // no CA: the key is shown to the operator instead
		NextProtos:         []string{alpnJoin},
		ServerName:         "shoal",
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("sponsor presented no certificate")
			}
			pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok {
				return errors.New("sponsor's key is not Ed25519")
			}
			if cs.NegotiatedProtocol != alpnJoin {
				return errors.New("sponsor does not serve joins (no shoal-join/1)")
			}
			got = pub
			return nil
		},
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("contact sponsor %s: %w", addr, err)
	}
	_ = c.Close()
	return got, nil
}

// Join asks the sponsor to add this node, then writes this node's files:
// its key (when new), the cluster secret (the password), cluster.toml (the
// received config), the received version as the data dir's current
// version, and the agent file. `shoal agent` then starts and catches up.
// Any failure, a wrong password included, leaves no file behind.
func Join(ctx context.Context, o JoinOptions) (*JoinResult, error) {
	p := pathsOf(o.Dir, o.DataDir)
	fail := func(err error) (*JoinResult, error) { return nil, fmt.Errorf("join: %w", err) }
	// The agent trims its secret file; the password is the trimmed secret.
	o.Password = bytes.TrimSpace(o.Password)
	if o.Node == "" {
		return fail(errors.New("a node name is required"))
	}
	if len(o.Password) == 0 {
		return fail(errors.New("empty password"))
	}
	addr, err := SponsorAddr(o.Sponsor)
	if err != nil {
		return fail(err)
	}
	storeDir := filepath.Join(p.DataDir, "config")
	if err := mustNotExist(p.Agent, p.Cluster, p.Secret, filepath.Join(storeDir, "HEAD")); err != nil {
		return fail(err)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	key, newKey, err := loadOrGenerate(p.Key)
	if err != nil {
		return fail(err)
	}
	if !o.Address.IsValid() {
		if o.Address, err = LocalAddressFor(addr); err != nil {
			return fail(err)
		}
	}
	sponsorKey, err := ProbeSponsor(ctx, addr, o.Node, key)
	if err != nil {
		return fail(err)
	}
	if o.Confirm != nil {
		if err := o.Confirm(addr, identity.Fingerprint(sponsorKey)); err != nil {
			return fail(err)
		}
	}
	res, err := confsync.Join(ctx, addr, confsync.JoinOptions{
		Self: o.Node, Key: key, Address: o.Address.String(), Location: o.Location,
		Password: o.Password, Timeout: o.Timeout, Authority: confsync.ConfigAuthority,
		SponsorKey: sponsorKey, // no password proof goes to any other key
	})
	if err != nil {
		return fail(err)
	}
	auth, err := confsync.ConfigAuthority(res.Content)
	if err != nil {
		return fail(fmt.Errorf("received config: %w", err))
	}
	// confsync.Join pinned the confirmed key in the handshake; check the
	// returned config agrees that it is the sponsor's.
	sp, ok := auth.Member(res.Sponsor)
	if !ok || !sp.PublicKey.Equal(sponsorKey) {
		return fail(fmt.Errorf("sponsor %s answered with another key than the confirmed %s", res.Sponsor, identity.Fingerprint(sponsorKey)))
	}
	if err := checkRunnable(res.Content, o.Node); err != nil {
		return fail(fmt.Errorf("received config (version %d): %w", res.Version.Counter, err))
	}
	agent := AgentFile{Node: o.Node, Bind: o.Address.String(), Interface: o.Interface, DataDir: p.DataDir,
		Socket: o.Socket, Comment: "Written by 'shoal join' (sponsor " + res.Sponsor + ")."}
	w := &writer{}
	storeExisted := exists(storeDir)
	if newKey {
		err = w.key(p.Key, key)
	}
	if err == nil {
		err = w.file(p.Secret, append(append([]byte(nil), o.Password...), '\n'), 0o600)
	}
	if err == nil {
		err = w.file(p.Cluster, res.Content, 0o600)
	}
	if err == nil {
		err = confsync.Install(storeDir, res.Version, res.Content)
	}
	if err == nil {
		err = w.file(p.Agent, agent.Render(), 0o600)
	}
	if err != nil {
		var extra []string
		if !storeExisted {
			extra = append(extra, storeDir)
		}
		w.undo(extra...)
		return fail(err)
	}
	return &JoinResult{
		Paths: p, Sponsor: res.Sponsor, SponsorKey: identity.Fingerprint(sponsorKey),
		Version: res.Version.Counter, VersionID: res.Version.ID().Short(), Members: len(auth.Members()),
		Fingerprint: identity.Fingerprint(identity.Public(key)), NewKey: newKey,
	}, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// loadOrGenerate loads the key at path or, when there is none, generates
// one in memory (written only once the join succeeded).
func loadOrGenerate(path string) (ed25519.PrivateKey, bool, error) {
	k, err := identity.LoadPrivateKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, err = identity.Generate()
	return k, true, err
}

// checkRunnable validates content as a node named node would: every
// location's resolved config parses and node is a member.
func checkRunnable(content []byte, node string) error {
	return confsync.ConfigValidator(ClusterFileName, func(loc string, c *config.Cluster) error {
		if loc == "" {
			if _, ok := c.MemberByName(node); !ok {
				return fmt.Errorf("%q is not a member", node)
			}
		}
		return nil
	})(content)
}
