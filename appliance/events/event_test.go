package events

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseType(t *testing.T) {
	for _, typ := range AllTypes {
		t.Run(string(typ), func(t *testing.T) {
			got, err := ParseType(string(typ))
			if err != nil || got != typ {
				t.Errorf("ParseType(%q) = %q, %v; want %q, nil", typ, got, err, typ)
			}
		})
	}
	for _, bad := range []string{"", "member_failed", "Member-Failed", "member-join"} {
		t.Run("bad/"+bad, func(t *testing.T) {
			if _, err := ParseType(bad); err == nil {
				t.Errorf("ParseType(%q) = nil error, want an error", bad)
			}
		})
	}
}

// The split-brain alarm and failures must stand out.
func TestDefaultSeverity(t *testing.T) {
	tests := map[Type]Severity{
		MemberFailed: SeverityCritical, DuplicateIP: SeverityCritical, SelftestFailed: SeverityCritical,
		HeartbeatRejected: SeverityWarning, ConfigConflict: SeverityWarning, ConfigRejected: SeverityWarning, MemberLeft: SeverityWarning,
		IPRaised: SeverityInfo, MemberRecovered: SeverityInfo, ViewChanged: SeverityInfo,
	}
	for typ, want := range tests {
		t.Run(string(typ), func(t *testing.T) {
			if got := DefaultSeverity(typ); got != want {
				t.Errorf("DefaultSeverity(%q) = %q, want %q", typ, got, want)
			}
		})
	}
}

var goldenShoalEvents = []struct {
	name string
	ev   Event
}{
	{"ip-raised", Event{
		Time: time.Date(2024, 5, 1, 12, 0, 0, 250e6, time.UTC), Type: IPRaised, Group: "web", IP: "192.0.2.10",
		Details: map[string]string{"reason": "failover", "mac-addr": "02:00:00:00:00:01"},
	}},
	{"member-failed", Event{Time: time.Date(2024, 5, 1, 14, 0, 1, 0, time.FixedZone("x", 2*3600)), Type: MemberFailed, Member: "b"}},
}

func TestShoalEnvGolden(t *testing.T) {
	for _, tc := range goldenShoalEvents {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			ev.Node, ev.Severity = "a", DefaultSeverity(ev.Type)
			got := strings.Join(ShoalEnv(ev, "notify"), "\n") + "\n"
			if diff := cmp.Diff(string(readGolden(t, "shoal/"+tc.name+".env")), got); diff != "" {
				t.Errorf("ShoalEnv (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEventString(t *testing.T) {
	ev := Event{Time: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), Type: DuplicateIP, Node: "a\nb", IP: "192.0.2.10",
		Severity: SeverityCritical, Details: map[string]string{"mac": "02:00:00:00:00:09"}}
	want := `2024-05-01T12:00:00Z critical duplicate-ip node=a\nb ip=192.0.2.10 mac="02:00:00:00:00:09"`
	if got := ev.String(); got != want {
		t.Errorf("Event.String() = %q, want %q", got, want)
	}
}

func FuzzEventJSON(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "shoal", "*.stdin"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"type":"x","details":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := json.Unmarshal(b, &ev); err != nil {
			return
		}
		out, err := json.Marshal(ev)
		if err != nil {
			return // e.g. a year outside 0..9999
		}
		var again Event
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("Unmarshal(Marshal(%+v)) = %v", ev, err)
		}
		if diff := cmp.Diff(ev, again, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("JSON round trip of %q (-first +second):\n%s", b, diff)
		}
	})
}
