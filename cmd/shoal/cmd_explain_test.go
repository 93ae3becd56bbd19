package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/appliance"
)

// fakeExplainAgent serves /v1/explain on a unix socket as the agent does.
func fakeExplainAgent(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "explsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	srv, err := appliance.NewAdminServer(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv.HandleJSON("GET /v1/explain", func(r *http.Request) (any, error) {
		switch ip := r.URL.Query().Get("ip"); ip {
		case "192.0.2.10":
			return map[string]any{"group": "web", "explanation": map[string]any{"Owner": "a"},
				"text": "192.0.2.10 (group \"web\", single-hosted, IP #0)\n  1. a            active  alive\n"}, nil
		case "2001:db8::10":
			return map[string]any{"group": "web", "text": "2001:db8::10 (group \"web\")\n"}, nil
		default:
			return nil, notFoundErr(ip)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

type notFoundErr string

func (e notFoundErr) Error() string { return "explain: " + string(e) + " is not a traffic IP" }

func TestExplainCommand(t *testing.T) {
	sock := fakeExplainAgent(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // substring of stdout
		wantErr  string // substring of stderr
	}{
		{"text", []string{"explain", "--socket", sock, "192.0.2.10"}, 0, "  1. a            active  alive", ""},
		{"flags after the IP", []string{"explain", "2001:db8::10", "--socket", sock}, 0, `2001:db8::10 (group "web")`, ""},
		{"json", []string{"explain", "192.0.2.10", "--json", "--socket", sock}, 0, "\"group\": \"web\",\n", ""},
		{"not a traffic IP", []string{"explain", "--socket", sock, "198.51.100.7"}, 1, "", "is not a traffic IP"},
		{"no IP", []string{"explain", "--socket", sock}, 2, "", "which IP?"},
		{"bad IP", []string{"explain", "--socket", sock, "banana"}, 2, "", `"banana" is not an IP address`},
		{"two IPs", []string{"explain", "--socket", sock, "192.0.2.10", "192.0.2.11"}, 2, "", `unexpected argument "192.0.2.11"`},
		{"no agent", []string{"explain", "--socket", filepath.Join(t.TempDir(), "none"), "192.0.2.10"}, 1, "", "is `shoal agent` running?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("shoal %s: code %d, stdout %q, stderr %q; want code %d, stdout containing %q, stderr containing %q",
					strings.Join(tt.args, " "), code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}
