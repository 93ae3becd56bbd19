package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func testKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

// samplePackets covers every type, with and without view and reasons.
func samplePackets() map[string]*Packet {
	hash := [HashSize]byte{1, 2, 3, 31: 0xff}
	view := &ViewInfo{Epoch: 42, Digest: [HashSize]byte{9, 8, 7}}
	base := func(t Type) *Packet {
		return &Packet{Type: t, Cluster: "demo", Node: "a", BootEpoch: 1700000000123456789, Seq: 7,
			SendTime: 1700000001000000000, Health: Health{OK: true}, ConfigVersion: 3, ConfigHash: hash}
	}
	failed := base(TypeHeartbeat)
	failed.Health = Health{OK: false, Reasons: []string{"gateway 192.0.2.1 unreachable", "link eth0 down", ""}}
	withView := base(TypeHeartbeat)
	withView.View = view
	probe := base(TypeProbe)
	probe.Body = Body{Nonce: 99, Subject: "b"}
	ack := base(TypeProbeAck)
	ack.Body = Body{Nonce: 99, Subject: "b", SubjectEpoch: 5, SubjectSeq: 6}
	ind := base(TypeIndirectProbe)
	ind.Body = Body{Nonce: 100, Subject: "c"}
	ind.View = view
	verdict := base(TypeVerdict)
	verdict.Body = Body{Subject: "c", SubjectEpoch: 5, SubjectSeq: 6, Status: StatusDown}
	evidence := base(TypeVerdict)
	evidence.Body = Body{Subject: "c", SubjectEpoch: 5, SubjectSeq: 8, Status: StatusAlive}
	long := base(TypeHeartbeat)
	long.Cluster = strings.Repeat("c", MaxNameLen)
	long.Node = strings.Repeat("n", MaxNameLen)
	tables := base(TypeHeartbeat)
	tables.View = view
	tables.Tables = []uint64{0x456789abcdef, 1}
	ackTables := base(TypeProbeAck)
	ackTables.Body = Body{Nonce: 3, Subject: "b"}
	ackTables.Tables = []uint64{7}
	// The largest packet a node sends: longest names, the reasons as the
	// gossip agent clips them (6 of 100 bytes), a view and every table.
	largest := base(TypeIndirectProbe)
	largest.Cluster, largest.Node = long.Cluster, long.Node
	largest.Body = Body{Nonce: 1, Subject: strings.Repeat("s", MaxNameLen), SubjectEpoch: 2, SubjectSeq: 3}
	largest.Health = Health{Reasons: slices.Repeat([]string{strings.Repeat("r", 100)}, 6)}
	largest.View = view
	for i := range MaxTables {
		largest.Tables = append(largest.Tables, 1<<TableDigestBits-1-uint64(i))
	}
	return map[string]*Packet{
		"heartbeat": base(TypeHeartbeat), "failed": failed, "view": withView, "probe": probe,
		"ack": ack, "indirect": ind, "verdict": verdict, "evidence": evidence, "leave": base(TypeLeave),
		"long-names": long, "tables": tables, "ack-tables": ackTables, "largest": largest,
	}
}

func TestRoundTrip(t *testing.T) {
	key := testKey(1)
	for name, p := range samplePackets() {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(p, key)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(b) > MaxSize {
				t.Fatalf("Encode produced %d bytes > %d", len(b), MaxSize)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(Encode(p)): %v", err)
			}
			if err := got.Verify(key.Public().(ed25519.PublicKey)); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(p, got, cmpopts.IgnoreFields(Packet{}, "Signed", "Signature"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decode(Encode(p)) (-want +got):\n%s", diff)
			}
			if err := got.Verify(testKey(2).Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify(other key) = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	key := testKey(1)
	good, err := Encode(samplePackets()["probe"], key)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short header", good[:5], ErrTruncated},
		{"no signature", good[:20], ErrTruncated},
		{"oversize", make([]byte, MaxSize+1), ErrTooLarge},
		{"magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMagic},
		{"version", mod(func(b []byte) []byte { b[3] = 2; return b }), ErrVersion},
		{"type zero", mod(func(b []byte) []byte { b[4] = 0; return b }), ErrBadType},
		{"type high", mod(func(b []byte) []byte { b[4] = 7; return b }), ErrBadType},
		{"flags", mod(func(b []byte) []byte { b[5] = 0x80; return b }), ErrMalformed},
		{"empty cluster", mod(func(b []byte) []byte { b[6] = 0; return b }), ErrMalformed},
		{"cluster too long", mod(func(b []byte) []byte { b[6] = 65; return b }), ErrMalformed},
		{"cut body", append(bytes.Clone(good[:len(good)-SignatureSize-3]), good[len(good)-SignatureSize:]...), ErrTruncated},
		{"trailing", append(append(bytes.Clone(good[:len(good)-SignatureSize]), 0), good[len(good)-SignatureSize:]...), ErrMalformed},
		{"bad signature", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrBadSignature},
		{"tampered", mod(func(b []byte) []byte { b[len(b)-SignatureSize-1] = 0; b[len(b)-SignatureSize-20] ^= 1; return b }), ErrBadSignature},
	}
	// Table count: the byte after the view (heartbeat with view and two
	// tables: it is followed by 2 x 6 bytes and the signature).
	withTables, err := Encode(samplePackets()["tables"], key)
	if err != nil {
		t.Fatal(err)
	}
	count := len(withTables) - SignatureSize - 2*6 - 1
	setCount := func(n byte) []byte {
		b := bytes.Clone(withTables)
		b[count] = n
		return b
	}
	tests = append(tests, []struct {
		name string
		in   []byte
		want error
	}{
		{"table count zero", setCount(0), ErrMalformed},
		{"table count over max", setCount(MaxTables + 1), ErrMalformed},
		{"table count over the data", setCount(3), ErrTruncated},
	}...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode(tc.in)
			if err == nil {
				err = p.Verify(key.Public().(ed25519.PublicKey))
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Decode+Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	key := testKey(1)
	tests := []struct {
		name string
		p    Packet
		want error
	}{
		{"bad type", Packet{Type: 9, Cluster: "c", Node: "n"}, ErrBadType},
		{"no cluster", Packet{Type: TypeHeartbeat, Node: "n"}, ErrMalformed},
		{"long node", Packet{Type: TypeHeartbeat, Cluster: "c", Node: strings.Repeat("n", 65)}, ErrMalformed},
		{"no subject", Packet{Type: TypeProbe, Cluster: "c", Node: "n"}, ErrMalformed},
		{"body on heartbeat", Packet{Type: TypeHeartbeat, Cluster: "c", Node: "n", Body: Body{Nonce: 1}}, ErrMalformed},
		{"status on probe", Packet{Type: TypeProbe, Cluster: "c", Node: "n", Body: Body{Subject: "x", Status: 1}}, ErrMalformed},
		{"table digest over 48 bits", Packet{Type: TypeHeartbeat, Cluster: "c", Node: "n", Tables: []uint64{1 << 48}}, ErrMalformed},
		{"too many tables", Packet{Type: TypeHeartbeat, Cluster: "c", Node: "n", Tables: make([]uint64, MaxTables+1)}, ErrTooLarge},
		{"too many reasons", Packet{Type: TypeHeartbeat, Cluster: "c", Node: "n", Health: Health{Reasons: make([]string, 17)}}, ErrTooLarge},
		{"long reason", Packet{Type: TypeHeartbeat, Cluster: "c", Node: "n", Health: Health{Reasons: []string{strings.Repeat("r", 256)}}}, ErrTooLarge},
		{"over 1200 bytes", Packet{Type: TypeHeartbeat, Cluster: "c", Node: "n", Health: Health{Reasons: []string{
			strings.Repeat("r", 255), strings.Repeat("r", 255), strings.Repeat("r", 255), strings.Repeat("r", 255), strings.Repeat("r", 255)}}}, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Encode(&tc.p, key); !errors.Is(err, tc.want) {
				t.Errorf("Encode = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to the
// same bytes (the encoding is canonical, so a signature covers one meaning).
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.bin")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if p != nil {
				t.Fatalf("Decode returned a packet with error %v", err)
			}
			return
		}
		re, err := p.AppendUnsigned(nil)
		if err != nil {
			t.Fatalf("AppendUnsigned of decoded packet: %v", err)
		}
		if !bytes.Equal(re, p.Signed) {
			t.Fatalf("re-encoding differs:\n got % x\nwant % x", re, p.Signed)
		}
		_ = p.Verify(testKey(1).Public().(ed25519.PublicKey))
	})
}

// TestSeedCorpus keeps testdata/*.bin in step with the format: every seed
// named good-* decodes and verifies with testKey(1).
func TestSeedCorpus(t *testing.T) {
	if os.Getenv("WIRE_WRITE_SEEDS") != "" {
		for name, p := range samplePackets() {
			b, err := Encode(p, testKey(1))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata", "good-"+name+".bin"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	seeds, _ := filepath.Glob("testdata/good-*.bin")
	if len(seeds) < len(samplePackets()) {
		t.Fatalf("testdata has %d good seeds, want %d (regenerate with WIRE_WRITE_SEEDS=1)", len(seeds), len(samplePackets()))
	}
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		p, err := Decode(b)
		if err == nil {
			err = p.Verify(testKey(1).Public().(ed25519.PublicKey))
		}
		if err != nil {
			t.Errorf("seed %s: %v", s, err)
		}
	}
}
