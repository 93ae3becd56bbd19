package confsync

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultPort is the TCP port of the config channel when the agent does not
// choose another (the schema has no key for it yet).
const DefaultPort = 7948

// ALPN protocol names: they select what the server demands of the client.
const (
	alpnConfig = "shoal-config/1" // peers: client key must be pinned
	alpnJoin   = "shoal-join/1"   // joiners: any key, password proof inside
)

// Wire frames: one request and one response per connection, each
// kind (1 byte) + length (4 bytes, big-endian) + payload.
const (
	reqHead    = 'H'
	reqGet     = 'G' // payload: 32-byte ID
	reqHistory = 'L'
	reqJoin    = 'J' // payload: 32-byte proof + JSON JoinRequest
	respOK     = 'O'
	respErr    = 'E' // payload: message
	respNone   = 'N' // not found; payload: message
	maxFrame   = MaxContentSize + 64<<10
)

// ErrUnpinned means a peer presented a key that is not pinned in the
// current config (or not the one pinned for the expected peer).
var ErrUnpinned = errors.New("peer key is not pinned in the current config")

// TLSOptions configure a TLSTransport.
type TLSOptions struct {
	Self string
	Key  ed25519.PrivateKey
	// Pins holds the current config's members; share it with the Node
	// (Options.Pins) so that pinning follows the current config.
	Pins *PinSet
	// Addr gives the dial address of a member; default Address:DefaultPort.
	Addr func(m Member) string
	// Timeout bounds one request (dial, handshake, exchange); default 5s.
	Timeout time.Duration
	// JoinPassword enables serving joins; empty disables them.
	JoinPassword []byte
	// Admit adds a joiner to the config (sponsor side); typically Node.Admit.
	Admit  func(JoinRequest) (Record, error)
	Logger zerolog.Logger
}

// TLSTransport is the mutually authenticated channel between nodes: TLS 1.3
// over TCP, each side presenting a self-signed certificate made from its
// node key, each verifying the other's public key against the key pinned in
// the current config. It implements Fetcher (client) and serves a Source.
type TLSTransport struct {
	o       TLSOptions
	log     zerolog.Logger
	cert    tls.Certificate
	joinKey []byte
}

var _ Fetcher = (*TLSTransport)(nil)

// NewTLSTransport makes the node certificate and returns the transport.
func NewTLSTransport(o TLSOptions) (*TLSTransport, error) {
	if o.Self == "" || len(o.Key) != ed25519.PrivateKeySize || o.Pins == nil {
		return nil, errors.New("new tls transport: Self, Key and Pins are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	if o.Addr == nil {
		o.Addr = func(m Member) string { return net.JoinHostPort(m.Address, strconv.Itoa(DefaultPort)) }
	}
	cert, err := Certificate(o.Self, o.Key)
	if err != nil {
		return nil, fmt.Errorf("new tls transport: %w", err)
	}
	t := &TLSTransport{o: o, cert: cert, log: o.Logger.With().Str("component", "confsync-tls").Logger()}
	if len(o.JoinPassword) > 0 {
		if t.joinKey, err = joinKey(o.JoinPassword); err != nil {
			return nil, fmt.Errorf("new tls transport: %w", err)
		}
	}
	return t, nil
}

// Certificate makes a self-signed X.509 certificate for an Ed25519 node key
// (CN = node name). Only its public key matters to peers: they pin it.
func Certificate(name string, key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"shoal"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(100, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func peerKey(cs tls.ConnectionState) (ed25519.PublicKey, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("peer presented no certificate")
	}
	pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("peer certificate key is not Ed25519")
	}
	return pub, nil
}

func (t *TLSTransport) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{alpnConfig, alpnJoin},
		VerifyConnection: func(cs tls.ConnectionState) error {
			pub, err := peerKey(cs)
			if err != nil {
				return err
			}
			switch cs.NegotiatedProtocol {
			case alpnConfig:
				if _, ok := t.o.Pins.ByKey(pub); !ok {
					return ErrUnpinned
				}
				return nil
			case alpnJoin:
				if t.joinKey == nil {
					return errors.New("joining through this node is disabled")
				}
				return nil
			}
			return fmt.Errorf("unsupported protocol %q", cs.NegotiatedProtocol)
		},
	}
}

// clientConfig pins the server to want (nil: accept any key, for joins).
func (t *TLSTransport) clientConfig(proto string, want ed25519.PublicKey) *tls.Config {
	return clientConfig(t.cert, proto, want)
}

func clientConfig(cert tls.Certificate, proto string, want ed25519.PublicKey) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // no CA: the key is pinned in VerifyConnection
		NextProtos:         []string{proto},
		ServerName:         "shoal",
		VerifyConnection: func(cs tls.ConnectionState) error {
			pub, err := peerKey(cs)
			if err != nil {
				return err
			}
			if cs.NegotiatedProtocol != proto {
				return fmt.Errorf("server did not agree to %s", proto)
			}
			if want != nil && !pub.Equal(want) {
				return ErrUnpinned
			}
			return nil
		},
	}
}

// Serve accepts connections on ln and answers them from src until ctx ends.
// It closes ln and waits for in-flight requests before returning.
func (t *TLSTransport) Serve(ctx context.Context, ln net.Listener, src Source) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	cfg := t.serverConfig()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serve config channel: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.serveConn(ctx, tls.Server(c, cfg), src)
		}()
	}
}

func (t *TLSTransport) serveConn(ctx context.Context, c *tls.Conn, src Source) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(t.o.Timeout))
	if err := c.HandshakeContext(ctx); err != nil {
		t.log.Warn().Str("remote", c.RemoteAddr().String()).Err(err).Msg("config channel handshake failed")
		return
	}
	cs := c.ConnectionState()
	kind, payload, err := readFrame(c)
	if err != nil {
		t.log.Debug().Str("remote", c.RemoteAddr().String()).Err(err).Msg("read request")
		return
	}
	if cs.NegotiatedProtocol == alpnJoin {
		if kind != reqJoin {
			_ = writeFrame(c, respErr, []byte("only join requests on the join protocol"))
			return
		}
		t.serveJoin(ctx, c, cs, payload)
		return
	}
	switch kind {
	case reqHead:
		v, err := src.Head()
		if err != nil {
			_ = writeFrame(c, respNone, []byte(err.Error()))
			return
		}
		_ = writeFrame(c, respOK, MarshalHeader(v))
	case reqGet:
		var id ID
		if len(payload) != len(id) {
			_ = writeFrame(c, respErr, []byte("bad id"))
			return
		}
		copy(id[:], payload)
		r, err := src.Record(id)
		if err != nil {
			_ = writeFrame(c, respNone, []byte(err.Error()))
			return
		}
		_ = writeFrame(c, respOK, EncodeRecord(Record{Version: r.Version, Content: r.Content}))
	case reqHistory:
		vs := src.Versions()
		hs := make([]json.RawMessage, len(vs))
		for i, v := range vs {
			hs[i] = MarshalHeader(v)
		}
		b, _ := json.Marshal(hs)
		_ = writeFrame(c, respOK, b)
	default:
		_ = writeFrame(c, respErr, []byte("unknown request"))
	}
}

// roundTrip dials peer, pins its key, sends one request, reads the answer.
func (t *TLSTransport) roundTrip(ctx context.Context, peer string, kind byte, payload []byte) ([]byte, error) {
	m, ok := t.o.Pins.Member(peer)
	if !ok {
		return nil, fmt.Errorf("%s: %w (not a member)", peer, ErrUnpinned)
	}
	ctx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	return exchange(ctx, t.o.Addr(m), t.clientConfig(alpnConfig, m.PublicKey), kind, payload)
}

func exchange(ctx context.Context, addr string, cfg *tls.Config, kind byte, payload []byte) ([]byte, error) {
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*tls.Conn)
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := writeFrame(c, kind, payload); err != nil {
		return nil, err
	}
	rk, resp, err := readFrame(c)
	if err != nil {
		return nil, err
	}
	switch rk {
	case respOK:
		return resp, nil
	case respNone:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, resp)
	}
	return nil, fmt.Errorf("peer: %s", resp)
}

// Head implements Fetcher.
func (t *TLSTransport) Head(ctx context.Context, peer string) (Version, error) {
	b, err := t.roundTrip(ctx, peer, reqHead, nil)
	if err != nil {
		return Version{}, fmt.Errorf("head of %s: %w", peer, err)
	}
	return UnmarshalHeader(b)
}

// Get implements Fetcher.
func (t *TLSTransport) Get(ctx context.Context, peer string, id ID) (Record, error) {
	b, err := t.roundTrip(ctx, peer, reqGet, id[:])
	if err != nil {
		return Record{}, fmt.Errorf("get %s from %s: %w", id.Short(), peer, err)
	}
	r, err := DecodeRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("get %s from %s: %w", id.Short(), peer, err)
	}
	return Record{Version: r.Version, Content: r.Content}, nil
}

// History implements Fetcher.
func (t *TLSTransport) History(ctx context.Context, peer string) ([]Version, error) {
	b, err := t.roundTrip(ctx, peer, reqHistory, nil)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", peer, err)
	}
	var hs []json.RawMessage
	if err := json.Unmarshal(b, &hs); err != nil {
		return nil, fmt.Errorf("history of %s: %w", peer, err)
	}
	out := make([]Version, 0, len(hs))
	for _, h := range hs {
		v, err := UnmarshalHeader(h)
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", peer, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func writeFrame(w io.Writer, kind byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(payload), maxFrame)
	}
	bw := bufio.NewWriter(w)
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	_, _ = bw.Write(hdr[:]) // a bufio.Writer keeps its first error for Flush
	_, _ = bw.Write(payload)
	return bw.Flush()
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	// Grow with the bytes that actually arrive: a peer (or, on the join
	// protocol, anyone) announcing a large frame and sending nothing must
	// not make this node allocate it.
	var b bytes.Buffer
	if _, err := io.CopyN(&b, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], b.Bytes(), nil
}
