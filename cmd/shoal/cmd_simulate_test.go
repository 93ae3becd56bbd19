package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const demoConfig = "../../examples/cluster.toml"

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

type simJSON struct {
	Alive  []string `json:"alive"`
	Groups []struct {
		Name         string            `json:"name"`
		Mode         string            `json:"mode"`
		Members      []string          `json:"members"`
		Passive      []string          `json:"passive"`
		KeepTogether bool              `json:"keep_together"`
		IPs          map[string]string `json:"ips"`
		Buckets      int               `json:"buckets"`
		Shares       map[string]int    `json:"shares"`
	} `json:"groups"`
}

func TestSimulateJSON(t *testing.T) {
	tests := []struct {
		down       string
		alive      []string
		webOwners  map[string]int // owner -> IP count
		frontShare map[string]int
	}{
		{"", []string{"a", "b", "c"}, map[string]int{"a": 1, "b": 1, "c": 1}, map[string]int{"a": 13440, "b": 13440, "c": 13440}},
		{"c", []string{"a", "b"}, nil, map[string]int{"a": 20160, "b": 20160, "c": 0}},
		{"a,b,c", []string{}, map[string]int{"": 3}, map[string]int{"a": 0, "b": 0, "c": 0}},
	}
	for _, tc := range tests {
		t.Run("down="+tc.down, func(t *testing.T) {
			args := []string{"simulate", "--config", demoConfig, "--json"}
			if tc.down != "" {
				args = append(args, "--down", tc.down)
			}
			code, out, errOut := runCmd(t, args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			var got simJSON
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("bad JSON %v:\n%s", err, out)
			}
			if diff := cmp.Diff(tc.alive, got.Alive); diff != "" {
				t.Errorf("alive (-want +got):\n%s", diff)
			}
			if len(got.Groups) != 2 || got.Groups[0].Name != "web" || got.Groups[1].Name != "front" {
				t.Fatalf("groups: %+v", got.Groups)
			}
			web, front := got.Groups[0], got.Groups[1]
			if web.Mode != "single" || front.Mode != "multi" || front.Buckets != 40320 || web.Passive == nil {
				t.Errorf("web %+v front %+v", web, front)
			}
			if len(web.IPs) != 3 {
				t.Errorf("web ips = %v, want 3 entries", web.IPs)
			}
			counts := map[string]int{}
			for _, o := range web.IPs {
				counts[o]++
			}
			if tc.webOwners != nil {
				if diff := cmp.Diff(tc.webOwners, counts); diff != "" {
					t.Errorf("web owners (-want +got):\n%s", diff)
				}
			}
			for _, o := range web.IPs {
				if o == "c" && strings.Contains(tc.down, "c") {
					t.Errorf("down member c holds an IP: %v", web.IPs)
				}
			}
			if diff := cmp.Diff(tc.frontShare, front.Shares); diff != "" {
				t.Errorf("front shares (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSimulateHumanAndExplain(t *testing.T) {
	code, out, errOut := runCmd(t, "simulate", "--config", demoConfig, "--down", "b")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"alive: a, c", "GROUP", "192.0.2.10", "front", "a (slot 0)", "20160/40320 (50.0%)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, errOut = runCmd(t, "simulate", "--config", demoConfig, "--down", "a,b,c", "--explain", "192.0.2.11")
	if code != 0 {
		t.Fatalf("explain exit %d: %s", code, errOut)
	}
	if strings.Count(out, "down") != 3 || !strings.Contains(out, "no member is alive") {
		t.Errorf("explain with all down:\n%s", out)
	}
	code, out, _ = runCmd(t, "simulate", "--config", demoConfig, "--explain", "198.51.100.10", "--json")
	if code != 0 || !strings.Contains(out, `"status": "sharing"`) {
		t.Errorf("explain multi json: exit %d\n%s", code, out)
	}
}

func TestSimulateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	src, err := os.ReadFile(demoConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.Replace(string(src), `"192.0.2.12"`, `"192.0.2.300"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		errWant string
	}{
		{"help", []string{"simulate", "--help"}, 0, "Usage: shoal simulate"},
		{"no config", []string{"simulate"}, 2, "--config FILE is required"},
		{"unknown member", []string{"simulate", "--config", demoConfig, "--down", "a,zz"}, 2, `"zz" is not a member`},
		{"bad explain", []string{"simulate", "--config", demoConfig, "--explain", "nope"}, 2, "not an IP address"},
		{"explain unknown ip", []string{"simulate", "--config", demoConfig, "--explain", "203.0.113.1"}, 2, "not a traffic IP"},
		{"bad config", []string{"simulate", "--config", bad}, 1, `bad.toml:41: group "web" key "ips": 192.0.2.300 is not an IP address`},
		{"missing config", []string{"simulate", "--config", filepath.Join(dir, "none.toml")}, 1, "no such file"},
		{"extra arg", []string{"simulate", "--config", demoConfig, "x"}, 2, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.errWant) {
				t.Errorf("run(%q) = exit %d, stderr %q; want exit %d containing %q", tc.args, code, errOut, tc.code, tc.errWant)
			}
		})
	}
}
