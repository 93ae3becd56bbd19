package adminapi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDecodeNodeStatus feeds arbitrary peer answers to the decoder and the
// merge: no panic, and a decoded status survives a JSON round trip.
func FuzzDecodeNodeStatus(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/status-*.json")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"node":"x","groups":[{"name":"web","mode":"multi","shares":{"x":-5}}]}`))
	f.Add([]byte(`[]`))
	self := clusterStatus("a", names, map[string]string{ip1: "a", ip2: "b"}, []string{ip1}, 1)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeNodeStatus(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatalf("marshal decoded status: %v", err)
		}
		st2, err := DecodeNodeStatus(again)
		if err != nil {
			t.Fatalf("decode re-encoded status: %v", err)
		}
		if diff := cmp.Diff(st, st2, cmpopts.EquateEmpty()); diff != "" { // omitempty: [] and nil are one
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		v := mergeCluster(self, map[string]nodeReport{"a": {status: self}, "b": {status: st}}, nil, 10, time.Unix(0, 0))
		if len(v.Members) != len(self.Members) {
			t.Fatalf("merge lost members: %d", len(v.Members))
		}
	})
}
