package confsync

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxContentSize bounds a configuration's size, on disk and on the wire.
const MaxContentSize = 4 << 20

// maxOriginLen bounds a member name inside a version header.
const maxOriginLen = 255

// ID identifies a version: SHA-256 over its canonical header and signature.
type ID [32]byte

// String returns the ID in lowercase hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for display.
func (id ID) Short() string { return id.String()[:12] }

// IsZero reports whether id is the zero ID (no parent).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID decodes a 64-digit hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("parse version id %q: want 64 hex digits", s)
	}
	copy(id[:], b)
	return id, nil
}

// Version is the signed header of one configuration version. The content it
// describes travels beside it.
type Version struct {
	Counter     uint64    // Lamport counter: 1 + the highest counter the origin knew
	Origin      string    // member that made the edit; "" only for the unsigned genesis
	Parent      ID        // the version the edit was made on; zero for genesis
	ContentHash [32]byte  // SHA-256 of the content
	Time        time.Time // wall clock of the origin at the edit (informational)
	Signature   []byte    // Ed25519 over SigningBytes by the origin's key; empty for genesis
}

// Genesis reports whether v is the unsigned bootstrap version (counter 0, no
// origin) that a node makes from its initial configuration file.
func (v Version) Genesis() bool { return v.Counter == 0 && v.Origin == "" }

var (
	headerMagic = []byte("shoal-config-version-v1\n")
	idMagic     = []byte("shoal-config-id-v1\n")
)

// SigningBytes is the canonical encoding that the origin signs: magic,
// counter, time (Unix ns, 0 for zero time), origin (length-prefixed), parent
// and content hash, all fixed-width big-endian.
func (v Version) SigningBytes() []byte {
	b := make([]byte, 0, len(headerMagic)+8+8+2+len(v.Origin)+64)
	b = append(b, headerMagic...)
	b = binary.BigEndian.AppendUint64(b, v.Counter)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(v.Time)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.Origin)))
	b = append(b, v.Origin...)
	b = append(b, v.Parent[:]...)
	b = append(b, v.ContentHash[:]...)
	return b
}

// ID returns the version's identifier: SHA-256 over magic, SigningBytes and
// the signature. Ed25519 signatures are deterministic and non-malleable, so
// one signed header has exactly one ID.
func (v Version) ID() ID {
	h := sha256.New()
	h.Write(idMagic)
	h.Write(v.SigningBytes())
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(v.Signature)))
	h.Write(l[:])
	h.Write(v.Signature)
	var id ID
	h.Sum(id[:0])
	return id
}

// Sign sets v.Signature with key.
func (v *Version) Sign(key ed25519.PrivateKey) {
	v.Signature = ed25519.Sign(key, v.SigningBytes())
}

// VerifySignature reports whether v carries a valid signature by pub.
func (v Version) VerifySignature(pub ed25519.PublicKey) bool {
	if len(pub) != ed25519.PublicKeySize || len(v.Signature) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, v.SigningBytes(), v.Signature)
}

// Less orders versions for conflict resolution: higher counter wins, then
// higher origin name, then higher ID (only reachable for two genesis versions
// or a node that reused a counter). Every node computes the same order.
func (v Version) Less(w Version) bool {
	if v.Counter != w.Counter {
		return v.Counter < w.Counter
	}
	if v.Origin != w.Origin {
		return v.Origin < w.Origin
	}
	a, b := v.ID(), w.ID()
	return bytes.Compare(a[:], b[:]) < 0
}

// String is a one-line description for logs and the CLI.
func (v Version) String() string {
	o := v.Origin
	if v.Genesis() {
		o = "(genesis)"
	}
	return fmt.Sprintf("#%d %s by %s", v.Counter, v.ID().Short(), o)
}

// HashContent returns the content hash of a configuration.
func HashContent(content []byte) [32]byte { return sha256.Sum256(content) }

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Status is what a node did with a version it stores. It is local to the
// node, is not signed and is not sent to peers.
type Status string

// Statuses of stored versions.
const (
	StatusApplied  Status = "applied"        // became this node's current version
	StatusHistory  Status = "history"        // an ancestor learned from a peer, never current here
	StatusLoser    Status = "conflict-loser" // lost a concurrent edit to a higher (counter, origin)
	StatusRejected Status = "rejected"       // failed validation on this node; not applied, not retried
)

// wireHeader is the JSON form of a version header (records and the wire).
type wireHeader struct {
	Counter     uint64 `json:"counter"`
	Origin      string `json:"origin"`
	Parent      string `json:"parent"`
	ContentHash string `json:"content_hash"`
	Time        int64  `json:"time_unix_nano"`
	Signature   string `json:"signature"`
	Status      Status `json:"status,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Size        int    `json:"size"`
}

func toWire(v Version, size int) wireHeader {
	return wireHeader{
		Counter:     v.Counter,
		Origin:      v.Origin,
		Parent:      v.Parent.String(),
		ContentHash: hex.EncodeToString(v.ContentHash[:]),
		Time:        unixNano(v.Time),
		Signature:   base64.StdEncoding.EncodeToString(v.Signature),
		Size:        size,
	}
}

func (w wireHeader) version() (Version, error) {
	v := Version{Counter: w.Counter, Origin: w.Origin, Time: fromUnixNano(w.Time)}
	if len(w.Origin) > maxOriginLen {
		return v, fmt.Errorf("origin longer than %d bytes", maxOriginLen)
	}
	var err error
	if v.Parent, err = ParseID(w.Parent); err != nil {
		return v, fmt.Errorf("parent: %w", err)
	}
	ch, err := hex.DecodeString(w.ContentHash)
	if err != nil || len(ch) != len(v.ContentHash) {
		return v, fmt.Errorf("content hash %q: want 64 hex digits", w.ContentHash)
	}
	copy(v.ContentHash[:], ch)
	if v.Signature, err = base64.StdEncoding.DecodeString(w.Signature); err != nil {
		return v, fmt.Errorf("signature: %w", err)
	}
	if len(v.Signature) != 0 && len(v.Signature) != ed25519.SignatureSize {
		return v, fmt.Errorf("signature: %d bytes, want %d", len(v.Signature), ed25519.SignatureSize)
	}
	if len(v.Signature) == 0 {
		v.Signature = nil
	}
	if w.Size < 0 || w.Size > MaxContentSize {
		return v, fmt.Errorf("size %d out of range 0..%d", w.Size, MaxContentSize)
	}
	return v, nil
}

// MarshalHeader encodes a version header as one line of JSON.
func MarshalHeader(v Version) []byte {
	b, _ := json.Marshal(toWire(v, 0)) // plain struct: cannot fail
	return b
}

// UnmarshalHeader decodes MarshalHeader's output.
func UnmarshalHeader(b []byte) (Version, error) {
	var w wireHeader
	if err := strictJSON(b, &w); err != nil {
		return Version{}, fmt.Errorf("decode version header: %w", err)
	}
	v, err := w.version()
	if err != nil {
		return Version{}, fmt.Errorf("decode version header: %w", err)
	}
	return v, nil
}

const recordMagic = "shoal-config-record-v1\n"

// Record is a version, its content and what this node did with it. Records
// are the unit stored on disk (one file each) and sent to peers.
type Record struct {
	Version Version
	Content []byte
	Status  Status // local; EncodeRecord writes it, peers ignore it
	Reason  string // local: why a version was rejected or lost
}

// EncodeRecord writes a record: a magic line, a JSON header line, then the
// content bytes verbatim (so `tail -n +3` of a record is the config file).
func EncodeRecord(r Record) []byte {
	w := toWire(r.Version, len(r.Content))
	w.Status, w.Reason = r.Status, r.Reason
	hb, _ := json.Marshal(w) // plain struct: cannot fail
	b := make([]byte, 0, len(recordMagic)+len(hb)+1+len(r.Content))
	b = append(b, recordMagic...)
	b = append(b, hb...)
	b = append(b, '\n')
	return append(b, r.Content...)
}

// Errors a decoded record can carry.
var (
	ErrCorrupt         = errors.New("corrupt record")
	ErrContentMismatch = errors.New("content does not match its hash")
)

// DecodeRecord parses EncodeRecord's output and checks the content length and
// hash. It does not check the signature (that needs an Authority).
func DecodeRecord(b []byte) (Record, error) {
	rest, ok := bytes.CutPrefix(b, []byte(recordMagic))
	if !ok {
		return Record{}, fmt.Errorf("decode record: %w: bad magic", ErrCorrupt)
	}
	line, content, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return Record{}, fmt.Errorf("decode record: %w: no header line", ErrCorrupt)
	}
	var w wireHeader
	if err := strictJSON(line, &w); err != nil {
		return Record{}, fmt.Errorf("decode record: %w: header: %v", ErrCorrupt, err)
	}
	v, err := w.version()
	if err != nil {
		return Record{}, fmt.Errorf("decode record: %w: %v", ErrCorrupt, err)
	}
	if len(content) != w.Size {
		return Record{}, fmt.Errorf("decode record: %w: content is %d bytes, header says %d", ErrCorrupt, len(content), w.Size)
	}
	if HashContent(content) != v.ContentHash {
		return Record{}, fmt.Errorf("decode record %s: %w", v.ID().Short(), ErrContentMismatch)
	}
	switch w.Status {
	case "", StatusApplied, StatusHistory, StatusLoser, StatusRejected:
	default:
		return Record{}, fmt.Errorf("decode record: %w: unknown status %q", ErrCorrupt, w.Status)
	}
	return Record{Version: v, Content: bytes.Clone(content), Status: w.Status, Reason: w.Reason}, nil
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// FormatTag renders a version announcement for a serf tag or a log line:
// "<counter>:<64 hex id>" (85 bytes at most).
func FormatTag(counter uint64, id ID) string {
	return strconv.FormatUint(counter, 10) + ":" + id.String()
}

// ParseTag decodes FormatTag's output.
func ParseTag(s string) (uint64, ID, error) {
	c, h, ok := strings.Cut(s, ":")
	if !ok {
		return 0, ID{}, fmt.Errorf("parse version tag %q: want <counter>:<id>", s)
	}
	n, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return 0, ID{}, fmt.Errorf("parse version tag %q: counter: %w", s, err)
	}
	id, err := ParseID(h)
	if err != nil {
		return 0, ID{}, fmt.Errorf("parse version tag: %w", err)
	}
	return n, id, nil
}
