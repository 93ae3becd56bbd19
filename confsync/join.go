package confsync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Joining a cluster (the library side of `shoal join`).
//
// The joiner knows one member's address and the cluster password; the
// member (the sponsor) must be unrestricted. Neither side sends the
// password, or anything derived from it that is valid outside this session:
//
//  1. TLS 1.3 with ALPN "shoal-join/1"; both present self-signed node
//     certificates. The sponsor accepts any client key on this protocol;
//     the joiner accepts any server key (it has no config to pin with yet).
//  2. Both derive K = PBKDF2-SHA256(password, "shoal-join-v1", 100000) and
//     the channel binding E = TLS exporter("EXPORTER-shoal-join-v1", 32).
//     E differs on both legs of a man-in-the-middle, so proofs cannot be
//     relayed.
//  3. Joiner sends P_j = HMAC(K, "joiner" 0 E request-JSON) and the
//     request {name, address, location}; its public key is the one in its
//     certificate.
//  4. The sponsor checks P_j (constant time; a failure costs the caller a
//     1 s delay), adds a [[member]] for the joiner (idempotent when the
//     same name and key are already there) by proposing a new signed
//     version, and answers P_s = HMAC(K, "sponsor" 0 E SHA-256(record)) and
//     the record.
//  5. The joiner checks P_s, the content hash, the version's signature
//     against its origin's key in the returned config, that its own name
//     and key are in it, and that the sponsor's TLS key is a member's. It
//     installs the version (Install) and starts its node; from then on the
//     normal pinned channel applies.
//
// Limit: like any password-keyed HMAC proof, a party that impersonates a
// sponsor learns P_j and can guess passwords offline; use a generated,
// high-entropy cluster secret (as `shoal init` does), not a word.

const (
	joinSalt       = "shoal-join-v1"
	joinIterations = 100_000
	joinExporter   = "EXPORTER-shoal-join-v1"
	joinFailDelay  = time.Second
)

// ErrJoinProof means the other side failed the password proof.
var ErrJoinProof = errors.New("password proof failed (wrong password, or not a member of that cluster)")

// ErrMemberExists means a joiner's name is taken by a member with another key.
var ErrMemberExists = errors.New("a member with this name already exists with a different key")

// JoinRequest is what a joiner asks for.
type JoinRequest struct {
	Name      string            `json:"name"`
	Address   string            `json:"address"`
	Location  string            `json:"location,omitempty"`
	PublicKey ed25519.PublicKey `json:"-"` // from the joiner's TLS certificate
}

// JoinOptions configure the joining side.
type JoinOptions struct {
	Self     string
	Key      ed25519.PrivateKey
	Address  string // this node's unicast address, written into its [[member]]
	Location string
	Password []byte
	Timeout  time.Duration // whole exchange; default 30s (the sponsor fsyncs)
	// Authority derives membership from the returned config; nil means
	// MembersFromTOML.
	Authority AuthorityFunc
	// SponsorKey, when set, pins the sponsor: the TLS handshake fails
	// before any password proof is sent unless the sponsor presents this
	// key (the fingerprint the operator confirmed).
	SponsorKey ed25519.PublicKey
}

// JoinResult is what a successful join brings back: the version to
// Install into the data dir and the sponsor's name.
type JoinResult struct {
	Version Version
	Content []byte
	Sponsor string
}

func joinKey(password []byte) ([]byte, error) {
	k, err := pbkdf2.Key(sha256.New, string(password), []byte(joinSalt), joinIterations, 32)
	if err != nil {
		return nil, fmt.Errorf("derive join key: %w", err)
	}
	return k, nil
}

func joinMAC(key []byte, role string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(role))
	m.Write([]byte{0})
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// Join asks the sponsor at addr (host:port) to add this node to its cluster.
func Join(ctx context.Context, addr string, o JoinOptions) (JoinResult, error) {
	if o.Authority == nil {
		o.Authority = MembersFromTOML
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	req := JoinRequest{Name: o.Self, Address: o.Address, Location: o.Location}
	if err := checkJoinRequest(req); err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: %w", addr, err)
	}
	key, err := joinKey(o.Password)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: %w", addr, err)
	}
	cert, err := Certificate(o.Self, o.Key)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	d := tls.Dialer{Config: clientConfig(cert, alpnJoin, o.SponsorKey)}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: %w", addr, err)
	}
	c := nc.(*tls.Conn)
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	cs := c.ConnectionState()
	sponsorKey, _ := peerKey(cs) // checked in VerifyConnection
	e, err := cs.ExportKeyingMaterial(joinExporter, nil, 32)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: %w", addr, err)
	}
	body, _ := json.Marshal(req) // plain struct: cannot fail
	payload := append(joinMAC(key, "joiner", e, body), body...)
	if err := writeFrame(c, reqJoin, payload); err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: send: %w", addr, err)
	}
	kind, resp, err := readFrame(c)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: read answer: %w", addr, err)
	}
	if kind != respOK {
		return JoinResult{}, fmt.Errorf("join via %s: sponsor refused: %s", addr, resp)
	}
	if len(resp) < sha256.Size {
		return JoinResult{}, fmt.Errorf("join via %s: short answer", addr)
	}
	proof, recBytes := resp[:sha256.Size], resp[sha256.Size:]
	rh := sha256.Sum256(recBytes)
	if !hmac.Equal(proof, joinMAC(key, "sponsor", e, rh[:])) {
		return JoinResult{}, fmt.Errorf("join via %s: sponsor: %w", addr, ErrJoinProof)
	}
	rec, err := DecodeRecord(recBytes)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: %w", addr, err)
	}
	auth, err := o.Authority(rec.Content)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join via %s: returned config: %w", addr, err)
	}
	v := rec.Version
	if origin, ok := auth.Member(v.Origin); !ok || !v.VerifySignature(origin.PublicKey) || !origin.CanUpdate {
		return JoinResult{}, fmt.Errorf("join via %s: returned version %s: %w", addr, v, ErrBadSignature)
	}
	if me, ok := auth.Member(o.Self); !ok || !me.PublicKey.Equal(o.Key.Public()) {
		return JoinResult{}, fmt.Errorf("join via %s: returned config does not list %q with this node's key", addr, o.Self)
	}
	sponsor, ok := memberOf(auth, sponsorKey)
	if !ok {
		return JoinResult{}, fmt.Errorf("join via %s: sponsor's key is not a member's: %w", addr, ErrUnpinned)
	}
	return JoinResult{Version: v, Content: rec.Content, Sponsor: sponsor.Name}, nil
}

func (t *TLSTransport) serveJoin(ctx context.Context, c *tls.Conn, cs tls.ConnectionState, payload []byte) {
	remote := c.RemoteAddr().String()
	refuse := func(delay bool, msg string) {
		t.log.Warn().Str("remote", remote).Msg("join refused: " + msg)
		if delay {
			select {
			case <-time.After(joinFailDelay):
			case <-ctx.Done():
			}
		}
		_ = writeFrame(c, respErr, []byte(msg))
	}
	if t.o.Admit == nil || t.joinKey == nil {
		refuse(false, "joining through this node is disabled")
		return
	}
	pub, err := peerKey(cs)
	if err != nil || len(payload) < sha256.Size {
		refuse(true, "malformed join request")
		return
	}
	e, err := cs.ExportKeyingMaterial(joinExporter, nil, 32)
	if err != nil {
		refuse(false, "no channel binding")
		return
	}
	proof, body := payload[:sha256.Size], payload[sha256.Size:]
	if !hmac.Equal(proof, joinMAC(t.joinKey, "joiner", e, body)) {
		refuse(true, ErrJoinProof.Error())
		return
	}
	var req JoinRequest
	if err := strictJSON(body, &req); err != nil {
		refuse(false, "malformed join request: "+err.Error())
		return
	}
	req.PublicKey = pub
	// Admission writes and fsyncs a version: allow more than one request's time.
	_ = c.SetDeadline(time.Now().Add(4 * t.o.Timeout))
	rec, err := t.o.Admit(req)
	if err != nil {
		refuse(false, err.Error())
		return
	}
	rb := EncodeRecord(Record{Version: rec.Version, Content: rec.Content})
	rh := sha256.Sum256(rb)
	_ = writeFrame(c, respOK, append(joinMAC(t.joinKey, "sponsor", e, rh[:]), rb...))
	t.log.Info().Str("member", req.Name).Str("address", req.Address).Stringer("version", rec.Version).Msg("member joined")
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,63}$`)

func checkJoinRequest(r JoinRequest) error {
	if !nameRE.MatchString(r.Name) {
		return fmt.Errorf("member name %q: want 1-63 of [A-Za-z0-9._-]", r.Name)
	}
	a, err := netip.ParseAddr(r.Address)
	if err != nil {
		return fmt.Errorf("member address %q: %w", r.Address, err)
	}
	if a.Zone() != "" {
		return fmt.Errorf("member address %q: a member address has no zone", r.Address)
	}
	if r.Location != "" && !nameRE.MatchString(r.Location) {
		return fmt.Errorf("member location %q: want 1-63 of [A-Za-z0-9._-]", r.Location)
	}
	return nil
}

// AppendMember returns content with a [[member]] table appended for m
// (comments and layout of the rest are kept).
func AppendMember(content []byte, m Member) ([]byte, error) {
	if err := checkJoinRequest(JoinRequest{Name: m.Name, Address: m.Address, Location: m.Location}); err != nil {
		return nil, fmt.Errorf("append member: %w", err)
	}
	if len(m.PublicKey) != ed25519.PublicKeySize {
		return nil, errors.New("append member: public key must be 32 bytes")
	}
	var b bytes.Buffer
	b.Write(content)
	if len(content) > 0 && content[len(content)-1] != '\n' {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "\n[[member]]\nname = %q\naddress = %q\npublic_key = %q\ncan_update = %v\n",
		m.Name, m.Address, FormatPublicKey(m.PublicKey), m.CanUpdate)
	if m.Location != "" {
		fmt.Fprintf(&b, "location = %q\n", m.Location)
	}
	return b.Bytes(), nil
}

// Admit adds a joiner to the current config as an unrestricted member and
// returns the new version (or, if the same name and key are already there,
// the current one). Only an unrestricted node can sponsor.
func (n *Node) Admit(req JoinRequest) (Record, error) {
	if err := checkJoinRequest(req); err != nil {
		return Record{}, fmt.Errorf("admit: %w", err)
	}
	n.mu.Lock()
	rec, err := n.admitLocked(req)
	n.mu.Unlock()
	n.flush()
	return rec, err
}

func (n *Node) admitLocked(req JoinRequest) (Record, error) {
	if n.head == nil {
		return Record{}, fmt.Errorf("admit %q: %w", req.Name, ErrNoConfig)
	}
	if m, ok := n.auth.Member(req.Name); ok {
		if m.PublicKey.Equal(req.PublicKey) {
			return Record{Version: n.head.rec.Version, Content: n.head.rec.Content}, nil
		}
		return Record{}, fmt.Errorf("admit %q: %w", req.Name, ErrMemberExists)
	}
	if m, ok := memberOf(n.auth, req.PublicKey); ok {
		return Record{}, fmt.Errorf("admit %q: key already belongs to member %q", req.Name, m.Name)
	}
	content, err := AppendMember(n.head.rec.Content, Member{
		Name: req.Name, Address: req.Address, Location: req.Location, PublicKey: req.PublicKey, CanUpdate: true,
	})
	if err != nil {
		return Record{}, fmt.Errorf("admit %q: %w", req.Name, err)
	}
	v, err := n.proposeLocked(content)
	if err != nil {
		return Record{}, fmt.Errorf("admit %q: %w", req.Name, err)
	}
	return Record{Version: v, Content: content}, nil
}
