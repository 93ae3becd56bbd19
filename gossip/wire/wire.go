package wire

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
)

// Format constants. See docs/PROTOCOL.md.
const (
	// Version is the only packet format version this package speaks.
	Version = 1
	// MaxSize is the largest packet accepted or produced, in bytes.
	MaxSize = 1200
	// MaxNameLen is the longest cluster, node or subject name, in bytes.
	MaxNameLen = 64
	// MaxReasons is the largest number of health reasons in one packet.
	MaxReasons = 16
	// MaxReasonLen is the longest single health reason, in bytes.
	MaxReasonLen = 255
	// SignatureSize is the size of the trailing Ed25519 signature.
	SignatureSize = ed25519.SignatureSize
	// HashSize is the size of the config hash and view digest.
	HashSize = 32
	// MaxTables is the largest number of table digests in one packet (one
	// per multi-hosted group the sender serves).
	MaxTables = 32
	// TableDigestBits is the size of a table digest: the low 48 bits of
	// the table's hash, as `shoal status` shows it (12 hex digits).
	TableDigestBits = 48

	flagView   = 0x01
	flagTables = 0x02
	flagsMask  = flagView | flagTables
	headerMin  = 3 + 1 + 1 + 1
)

// Magic opens every packet: "SHB" (Shoal HeartBeat).
var Magic = [3]byte{'S', 'H', 'B'}

// Decoding and encoding errors. Every error returned by Decode, Verify and
// Encode wraps exactly one of these.
var (
	ErrTooLarge     = errors.New("packet too large")
	ErrTruncated    = errors.New("packet truncated")
	ErrBadMagic     = errors.New("bad magic")
	ErrVersion      = errors.New("unsupported version")
	ErrBadType      = errors.New("unknown packet type")
	ErrMalformed    = errors.New("malformed packet")
	ErrBadSignature = errors.New("bad signature")
)

// Type is the kind of a packet.
type Type uint8

// Packet types.
const (
	TypeHeartbeat     Type = 1 // periodic health broadcast
	TypeProbe         Type = 2 // direct liveness probe of Subject
	TypeProbeAck      Type = 3 // answer to a probe: Subject is alive
	TypeIndirectProbe Type = 4 // ask the receiver to probe Subject for the sender
	TypeVerdict       Type = 5 // the sender's verdict about Subject (Status)
	TypeLeave         Type = 6 // the sender is leaving the cluster
)

func (t Type) String() string {
	switch t {
	case TypeHeartbeat:
		return "heartbeat"
	case TypeProbe:
		return "probe"
	case TypeProbeAck:
		return "probe-ack"
	case TypeIndirectProbe:
		return "indirect-probe"
	case TypeVerdict:
		return "verdict"
	case TypeLeave:
		return "leave"
	default:
		return fmt.Sprintf("type(%d)", uint8(t))
	}
}

// hasBody reports whether packets of type t carry the subject body.
func (t Type) hasBody() bool {
	switch t {
	case TypeProbe, TypeProbeAck, TypeIndirectProbe, TypeVerdict:
		return true
	}
	return false
}

func (t Type) valid() bool { return t >= TypeHeartbeat && t <= TypeLeave }

// Verdict statuses carried in Body.Status of a TypeVerdict packet.
const (
	StatusAlive uint8 = 0 // evidence: the sender hears Subject
	StatusDown  uint8 = 1 // the sender declared Subject down
)

// Health is the sender's self-reported health.
type Health struct {
	OK      bool
	Reasons []string
}

// ViewInfo is the sender's current view, optional in every packet.
type ViewInfo struct {
	Epoch  uint64
	Digest [HashSize]byte
}

// Body is the type-specific part of probe, probe-ack, indirect-probe and
// verdict packets.
type Body struct {
	Nonce        uint64 // matches a probe-ack to its probe
	Subject      string // the member the packet is about
	SubjectEpoch uint64 // the subject's boot epoch as known to the sender
	SubjectSeq   uint64 // the subject's last sequence seen by the sender
	Status       uint8  // verdicts only: StatusAlive or StatusDown; 0 otherwise
}

// Packet is one decoded packet. Signed and Signature are filled by Decode.
type Packet struct {
	Type          Type
	Cluster       string
	Node          string
	BootEpoch     uint64
	Seq           uint64
	SendTime      int64 // unix nanoseconds
	Health        Health
	ConfigVersion uint64
	ConfigHash    [HashSize]byte
	View          *ViewInfo // nil when absent
	// Tables are the digests (TableDigestBits each) of the multi-hosted
	// partition tables the sender has written into its kernel, one per
	// group it serves (none: absent). A node taking buckets over waits
	// until their previous owners show a table that lets them go
	// (docs/MULTIHOST.md).
	Tables []uint64
	Body   Body // zero for heartbeat and leave

	// Signed is the signed prefix of the decoded packet (aliases the input).
	Signed []byte
	// Signature is the trailing Ed25519 signature (aliases the input).
	Signature []byte
}

// AppendUnsigned appends the canonical encoding of p without signature.
func (p *Packet) AppendUnsigned(b []byte) ([]byte, error) {
	if !p.Type.valid() {
		return nil, fmt.Errorf("encode: %w: %d", ErrBadType, uint8(p.Type))
	}
	if err := checkName("cluster", p.Cluster); err != nil {
		return nil, err
	}
	if err := checkName("node", p.Node); err != nil {
		return nil, err
	}
	if len(p.Health.Reasons) > MaxReasons {
		return nil, fmt.Errorf("encode: %w: %d reasons > %d", ErrTooLarge, len(p.Health.Reasons), MaxReasons)
	}
	if len(p.Tables) > MaxTables {
		return nil, fmt.Errorf("encode: %w: %d tables > %d", ErrTooLarge, len(p.Tables), MaxTables)
	}
	for _, d := range p.Tables {
		if d>>TableDigestBits != 0 {
			return nil, fmt.Errorf("encode: %w: table digest %#x over %d bits", ErrMalformed, d, TableDigestBits)
		}
	}
	start := len(b)
	b = append(b, Magic[:]...)
	b = append(b, Version, byte(p.Type))
	var flags byte
	if p.View != nil {
		flags |= flagView
	}
	if len(p.Tables) > 0 {
		flags |= flagTables
	}
	b = append(b, flags)
	b = appendString(b, p.Cluster)
	b = appendString(b, p.Node)
	b = binary.BigEndian.AppendUint64(b, p.BootEpoch)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SendTime))
	if p.Health.OK {
		b = append(b, 0)
	} else {
		b = append(b, 1)
	}
	b = append(b, byte(len(p.Health.Reasons)))
	for _, r := range p.Health.Reasons {
		if len(r) > MaxReasonLen {
			return nil, fmt.Errorf("encode: %w: reason of %d bytes > %d", ErrTooLarge, len(r), MaxReasonLen)
		}
		b = appendString(b, r)
	}
	b = binary.BigEndian.AppendUint64(b, p.ConfigVersion)
	b = append(b, p.ConfigHash[:]...)
	if p.View != nil {
		b = binary.BigEndian.AppendUint64(b, p.View.Epoch)
		b = append(b, p.View.Digest[:]...)
	}
	if len(p.Tables) > 0 {
		b = append(b, byte(len(p.Tables)))
		for _, d := range p.Tables {
			b = binary.BigEndian.AppendUint16(b, uint16(d>>32))
			b = binary.BigEndian.AppendUint32(b, uint32(d))
		}
	}
	if p.Type.hasBody() {
		if err := checkName("subject", p.Body.Subject); err != nil {
			return nil, err
		}
		if p.Body.Status > StatusDown || (p.Type != TypeVerdict && p.Body.Status != 0) {
			return nil, fmt.Errorf("encode: %w: status %d for %s", ErrMalformed, p.Body.Status, p.Type)
		}
		b = binary.BigEndian.AppendUint64(b, p.Body.Nonce)
		b = appendString(b, p.Body.Subject)
		b = binary.BigEndian.AppendUint64(b, p.Body.SubjectEpoch)
		b = binary.BigEndian.AppendUint64(b, p.Body.SubjectSeq)
		b = append(b, p.Body.Status)
	} else if p.Body != (Body{}) {
		return nil, fmt.Errorf("encode: %w: %s carries no body", ErrMalformed, p.Type)
	}
	if len(b)-start+SignatureSize > MaxSize {
		return nil, fmt.Errorf("encode: %w: %d bytes > %d", ErrTooLarge, len(b)-start+SignatureSize, MaxSize)
	}
	return b, nil
}

// Encode returns the signed packet: the canonical encoding of p followed by
// an Ed25519 signature over it made with key.
func Encode(p *Packet, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("encode: private key of %d bytes", len(key))
	}
	b, err := p.AppendUnsigned(make([]byte, 0, 256))
	if err != nil {
		return nil, err
	}
	return append(b, ed25519.Sign(key, b)...), nil
}

// Decode parses b without checking the signature (the key depends on the
// node name inside). Call Verify with the sender's pinned key before
// trusting anything in the packet. The returned packet aliases b.
func Decode(b []byte) (*Packet, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("decode: %w: %d bytes > %d", ErrTooLarge, len(b), MaxSize)
	}
	if len(b) < headerMin {
		return nil, fmt.Errorf("decode: %w: %d bytes", ErrTruncated, len(b))
	}
	if b[0] != Magic[0] || b[1] != Magic[1] || b[2] != Magic[2] {
		return nil, fmt.Errorf("decode: %w: % x", ErrBadMagic, b[:3])
	}
	if b[3] != Version {
		return nil, fmt.Errorf("decode: %w: %d", ErrVersion, b[3])
	}
	p := &Packet{Type: Type(b[4])}
	if !p.Type.valid() {
		return nil, fmt.Errorf("decode: %w: %d", ErrBadType, b[4])
	}
	flags := b[5]
	if flags&^flagsMask != 0 {
		return nil, fmt.Errorf("decode: %w: unknown flags %#x", ErrMalformed, flags)
	}
	if len(b) < headerMin+SignatureSize {
		return nil, fmt.Errorf("decode: %w: %d bytes", ErrTruncated, len(b))
	}
	end := len(b) - SignatureSize
	r := reader{b: b[:end], off: headerMin}
	p.Cluster = r.name("cluster")
	p.Node = r.name("node")
	p.BootEpoch = r.u64()
	p.Seq = r.u64()
	p.SendTime = int64(r.u64())
	switch r.u8() {
	case 0:
		p.Health.OK = true
	case 1:
	default:
		r.fail(ErrMalformed, "health status")
	}
	n := int(r.u8())
	if n > MaxReasons {
		r.fail(ErrMalformed, "reason count")
	}
	for i := 0; i < n && r.err == nil; i++ {
		p.Health.Reasons = append(p.Health.Reasons, r.str())
	}
	p.ConfigVersion = r.u64()
	copy(p.ConfigHash[:], r.bytes(HashSize))
	if flags&flagView != 0 {
		v := &ViewInfo{Epoch: r.u64()}
		copy(v.Digest[:], r.bytes(HashSize))
		p.View = v
	}
	if flags&flagTables != 0 {
		// At least one: the flag is clear when there is none, so every
		// packet has one encoding.
		n := int(r.u8())
		if r.err == nil && (n == 0 || n > MaxTables) {
			r.fail(ErrMalformed, "table count")
		}
		for i := 0; i < n && r.err == nil; i++ {
			if d := r.bytes(TableDigestBits / 8); d != nil {
				p.Tables = append(p.Tables, uint64(binary.BigEndian.Uint16(d))<<32|uint64(binary.BigEndian.Uint32(d[2:])))
			}
		}
	}
	if p.Type.hasBody() {
		p.Body.Nonce = r.u64()
		p.Body.Subject = r.name("subject")
		p.Body.SubjectEpoch = r.u64()
		p.Body.SubjectSeq = r.u64()
		p.Body.Status = r.u8()
		if r.err == nil && (p.Body.Status > StatusDown || (p.Type != TypeVerdict && p.Body.Status != 0)) {
			r.fail(ErrMalformed, "status")
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode %s: %w", p.Type, r.err)
	}
	if r.off != end {
		return nil, fmt.Errorf("decode %s: %w: %d trailing bytes", p.Type, ErrMalformed, end-r.off)
	}
	p.Signed = b[:end]
	p.Signature = b[end:]
	return p, nil
}

// Verify checks the packet's signature against the sender's pinned key.
func (p *Packet) Verify(key ed25519.PublicKey) error {
	if len(key) != ed25519.PublicKeySize || len(p.Signature) != SignatureSize || p.Signed == nil {
		return fmt.Errorf("verify %s from %q: %w: no key or signature", p.Type, p.Node, ErrBadSignature)
	}
	if !ed25519.Verify(key, p.Signed, p.Signature) {
		return fmt.Errorf("verify %s from %q: %w", p.Type, p.Node, ErrBadSignature)
	}
	return nil
}

func checkName(what, s string) error {
	if len(s) == 0 || len(s) > MaxNameLen {
		return fmt.Errorf("encode: %w: %s name of %d bytes (1..%d)", ErrMalformed, what, len(s), MaxNameLen)
	}
	return nil
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// reader reads big-endian fields and remembers the first error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(sentinel error, what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at offset %d", sentinel, what, r.off)
	}
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b)-r.off < n {
		r.fail(ErrTruncated, fmt.Sprintf("%d bytes", n))
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *reader) u8() uint8 {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) u64() uint64 {
	v := r.bytes(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (r *reader) str() string {
	n := int(r.u8())
	return string(r.bytes(n))
}

func (r *reader) name(what string) string {
	s := r.str()
	if r.err == nil && (len(s) == 0 || len(s) > MaxNameLen) {
		r.fail(ErrMalformed, what+" name length")
	}
	return s
}
