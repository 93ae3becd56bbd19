package confsync

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func signedVersion(t testing.TB) (Version, []byte) {
	content := testConfig("rev = 1", members(names(2))...)
	v := Version{Counter: 3, Origin: "n00", Parent: ID{1}, ContentHash: HashContent(content), Time: time.Unix(1700000000, 5).UTC()}
	v.Sign(testKey("n00"))
	return v, content
}

func TestVersionSignature(t *testing.T) {
	v, _ := signedVersion(t)
	pub := testKey("n00").Public().(ed25519.PublicKey)
	if !v.VerifySignature(pub) {
		t.Fatal("VerifySignature(signer) = false")
	}
	// Every header field is covered by the signature and the ID.
	tamper := []struct {
		name string
		f    func(*Version)
	}{
		{"counter", func(v *Version) { v.Counter++ }},
		{"origin", func(v *Version) { v.Origin = "n01" }},
		{"parent", func(v *Version) { v.Parent[5] ^= 1 }},
		{"content hash", func(v *Version) { v.ContentHash[0] ^= 1 }},
		{"time", func(v *Version) { v.Time = v.Time.Add(time.Nanosecond) }},
		{"signature", func(v *Version) { v.Signature = bytes.Clone(v.Signature); v.Signature[0] ^= 1 }},
	}
	for _, tt := range tamper {
		t.Run(tt.name, func(t *testing.T) {
			w := v
			tt.f(&w)
			if w.VerifySignature(pub) {
				t.Error("tampered version still verifies")
			}
			if w.ID() == v.ID() {
				t.Error("tampered version has the same ID")
			}
		})
	}
	if v.VerifySignature(testKey("n01").Public().(ed25519.PublicKey)) {
		t.Error("verifies against another member's key")
	}
}

func TestVersionOrder(t *testing.T) {
	a := Version{Counter: 2, Origin: "b"}
	b := Version{Counter: 3, Origin: "a"}
	c := Version{Counter: 3, Origin: "c"}
	if !a.Less(b) || !b.Less(c) || !a.Less(c) || c.Less(a) || a.Less(a) {
		t.Error("Less is not (counter, origin) order")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	v, content := signedVersion(t)
	for _, r := range []Record{
		{Version: v, Content: content, Status: StatusApplied},
		{Version: v, Content: content, Status: StatusLoser, Reason: "lost to #4"},
		{Version: Version{ContentHash: HashContent(nil)}, Content: nil},
	} {
		got, err := DecodeRecord(EncodeRecord(r))
		if err != nil {
			t.Fatalf("DecodeRecord: %v", err)
		}
		if got.Version.ID() != r.Version.ID() || !bytes.Equal(got.Content, r.Content) || got.Status != r.Status || got.Reason != r.Reason {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
	}
	h, err := UnmarshalHeader(MarshalHeader(v))
	if err != nil || h.ID() != v.ID() {
		t.Errorf("header round trip: %s, %v", h, err)
	}
	c, id, err := ParseTag(FormatTag(v.Counter, v.ID()))
	if err != nil || c != v.Counter || id != v.ID() {
		t.Errorf("tag round trip: %d %s %v", c, id.Short(), err)
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	v, content := signedVersion(t)
	good := EncodeRecord(Record{Version: v, Content: content})
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"truncated", good[:len(good)-5], ErrCorrupt},
		{"extra byte", append(bytes.Clone(good), 'x'), ErrCorrupt},
		{"flipped content", func() []byte { b := bytes.Clone(good); b[len(b)-2] ^= 0x20; return b }(), ErrContentMismatch},
		{"bad magic", append([]byte("x"), good...), ErrCorrupt},
		{"unknown header field", bytes.Replace(good, []byte(`"size"`), []byte(`"sighs"`), 1), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRecord(tt.b)
			if !errors.Is(err, tt.want) {
				t.Errorf("DecodeRecord: err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestStoreLoadQuarantines(t *testing.T) {
	dir := t.TempDir()
	s := mustStore(t, dir)
	v, content := signedVersion(t)
	if err := s.Put(Record{Version: v, Content: content, Status: StatusApplied}); err != nil {
		t.Fatal(err)
	}
	// A record whose header was rewritten consistently (valid JSON, right
	// content hash) but does not match its file name's ID.
	w := v
	w.Counter = 4
	forged := EncodeRecord(Record{Version: w, Content: content})
	if err := os.WriteFile(filepath.Join(dir, versionsDir, recordName(v)), forged, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, versionsDir, "junk.rec"), []byte("junk"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, versionsDir, tmpPrefix+"partial"), []byte("half a rec"), 0o600)
	s = mustStore(t, dir) // removes the temp file
	recs, bad, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	var gotBad []string
	for _, b := range bad {
		gotBad = append(gotBad, b.Name)
	}
	if diff := cmp.Diff([]string{recordName(v), "junk.rec"}, gotBad); diff != "" || len(recs) != 0 {
		t.Errorf("Load: %d good records, bad (-want +got):\n%s", len(recs), diff)
	}
	if bad[0].ID != v.ID() {
		t.Errorf("bad record ID = %s, want the one its name claims (%s) so it can be re-fetched", bad[0].ID.Short(), v.ID().Short())
	}
	q, _ := os.ReadDir(filepath.Join(dir, quarantineDir))
	if len(q) != 2 {
		t.Errorf("quarantine holds %d files, want 2", len(q))
	}
	if _, err := os.Stat(filepath.Join(dir, versionsDir, tmpPrefix+"partial")); !os.IsNotExist(err) {
		t.Error("temp file survived OpenStore")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, name := range []string{"record-signed.rec", "record-genesis.rec", "record-loser.rec"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to a record with the same identity.
		again, err := DecodeRecord(EncodeRecord(r))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Version.ID() != r.Version.ID() || !bytes.Equal(again.Content, r.Content) {
			t.Fatal("round trip changed the record")
		}
	})
}

func FuzzUnmarshalHeader(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "header.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := UnmarshalHeader(b)
		if err != nil {
			return
		}
		w, err := UnmarshalHeader(MarshalHeader(v))
		if err != nil || w.ID() != v.ID() {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzResolve(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "site.toml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, "dc2")
	f.Add(b, "")
	f.Fuzz(func(t *testing.T, b []byte, loc string) {
		out, err := Resolve(b, loc)
		if err != nil {
			return
		}
		// A resolved config has no overrides left and resolves to itself.
		if locs, err := Locations(out); err != nil || len(locs) != 0 {
			t.Fatalf("resolved config still has locations %v (%v)", locs, err)
		}
	})
}
