package aptsrc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func lines(src []Source) []string {
	var out []string
	for _, s := range src {
		out = append(out, s.Line())
	}
	return out
}

func TestReadSystemForRelease(t *testing.T) {
	all, err := ReadSystem("testdata/root")
	if err != nil {
		t.Fatalf("ReadSystem: %v", err)
	}
	key := "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
	want := []string{
		"deb http://old.example/debian bookworm main",
		"deb " + key + "http://mirror.example/debian bookworm main",
		"deb " + key + "http://mirror.example/debian bookworm-updates main",
		"deb " + key + "http://mirror.example/debian-security bookworm-security main",
	}
	if diff := cmp.Diff(want, lines(ForRelease(all, "bookworm", "main"))); diff != "" {
		t.Errorf("ForRelease(bookworm, main) (-want +got):\n%s", diff)
	}
	// every stanza and line read, deb-src and disabled stanza excluded
	if got := len(all); got != 8 {
		t.Errorf("ReadSystem found %d sources, want 8 (5 deb822 incl. deb-src, 2 .list, 1 sources.list): %q", got, lines(all))
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, text string
		deb822     bool
		want       string
	}{
		{"list unclosed option", "deb [trusted=yes http://x bookworm main\n", false, "line 1: unclosed"},
		{"list no suite", "\n\ndeb http://x\n", false, "line 3: want URI and suite"},
		{"list bad option", "deb [trusted] http://x bookworm main\n", false, "has no '='"},
		{"deb822 missing suites", "Types: deb\nURIs: http://x\n", true, "stanza at line 1"},
		{"deb822 no colon", "Types deb\n", true, "line 1: want 'Field: value'"},
		{"deb822 orphan continuation", " main\n", true, "continuation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.deb822 {
				_, err = ParseDeb822(strings.NewReader(tc.text))
			} else {
				_, err = ParseList(strings.NewReader(tc.text))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parse %q: error %v, want one containing %q", tc.text, err, tc.want)
			}
		})
	}
}

func TestLineRoundTrip(t *testing.T) {
	in := "deb [signed-by=/k.gpg trusted=yes] copy:///srv/repo bookworm main contrib\n"
	src, err := ParseList(strings.NewReader(in))
	if err != nil {
		t.Fatalf("ParseList: %v", err)
	}
	if diff := cmp.Diff(strings.TrimSpace(in), src[0].Line()); diff != "" {
		t.Errorf("Line (-want +got):\n%s", diff)
	}
}
