package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
)

func TestAuth(t *testing.T) {
	const token = "s3cret-token-for-tests"
	users := []User{
		{Name: "alice", PasswordHash: lowCostHash(t, "wonderland"), Role: RoleAdmin},
		{Name: "bob", PasswordHash: lowCostHash(t, "builder"), Role: RoleReadOnly},
		{Name: "ci", TokenHash: HashToken(token), Role: RoleAdmin},
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	header := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", v) }
	}
	tests := []struct {
		name       string
		readOnly   bool // restricted node
		method     string
		auth       func(*http.Request)
		wantCode   int
		wantReason string // auth failure counted, "" = none
		wantWho    string // for whoami
	}{
		{name: "no credentials", method: "GET", wantCode: 401, wantReason: authMissing},
		{name: "wrong password", method: "GET", auth: basic("alice", "nope"), wantCode: 401, wantReason: authBadPassword},
		{name: "unknown user", method: "GET", auth: basic("mallory", "x"), wantCode: 401, wantReason: authUnknownUser},
		{name: "token user has no password", method: "GET", auth: basic("ci", token), wantCode: 401, wantReason: authBadPassword},
		{name: "bad token", method: "GET", auth: bearer("guess"), wantCode: 401, wantReason: authBadToken},
		{name: "empty bearer", method: "GET", auth: header("Bearer "), wantCode: 401, wantReason: authMalformed},
		{name: "unknown scheme", method: "GET", auth: header("Digest x=y"), wantCode: 401, wantReason: authMalformed},
		{name: "admin password", method: "GET", auth: basic("alice", "wonderland"), wantCode: 200, wantWho: "alice/admin/password"},
		{name: "read-only password", method: "GET", auth: basic("bob", "builder"), wantCode: 200, wantWho: "bob/read-only/password"},
		{name: "token", method: "GET", auth: bearer(token), wantCode: 200, wantWho: "ci/admin/token"},
		{name: "token, lower-case scheme", method: "GET", auth: header("bearer " + token), wantCode: 200, wantWho: "ci/admin/token"},
		{name: "read-only POST", method: "POST", auth: basic("bob", "builder"), wantCode: 403},
		{name: "read-only DELETE", method: "DELETE", auth: basic("bob", "builder"), wantCode: 403},
		{name: "read-only PUT", method: "PUT", auth: basic("bob", "builder"), wantCode: 403},
		{name: "admin POST", method: "POST", auth: basic("alice", "wonderland"), wantCode: 200},
		{name: "token POST", method: "POST", auth: bearer(token), wantCode: 200},
		{name: "restricted node: admin POST", readOnly: true, method: "POST", auth: basic("alice", "wonderland"), wantCode: 403},
		{name: "restricted node: admin GET", readOnly: true, method: "GET", auth: basic("alice", "wonderland"), wantCode: 200, wantWho: "alice/read-only/password"},
		{name: "restricted node: wrong password", readOnly: true, method: "GET", auth: basic("alice", "x"), wantCode: 401, wantReason: authBadPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{status: clusterStatus("a", names, nil, nil, 1)}
			s := newTestServer(t, src, Options{Users: users, ReadOnly: tt.readOnly})
			wrote := false
			s.Handle("POST /api/v1/test-write", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wrote = true }))
			s.Handle("PUT /api/v1/test-write", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wrote = true }))
			s.Handle("DELETE /api/v1/test-write", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wrote = true }))
			path := "/api/v1/whoami"
			if tt.method != "GET" {
				path = "/api/v1/test-write"
			}
			w := do(s.Handler(), tt.method, path, tt.auth)
			if w.Code != tt.wantCode {
				t.Fatalf("%s %s: code %d, want %d (body %q)", tt.method, path, w.Code, tt.wantCode, w.Body.String())
			}
			if wantWrite := tt.method != "GET" && tt.wantCode == 200; wrote != wantWrite {
				t.Errorf("write handler ran = %v, want %v", wrote, wantWrite)
			}
			if tt.wantCode == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic realm=") {
				t.Errorf("401 without a Basic challenge: %q", w.Header().Get("WWW-Authenticate"))
			}
			for _, r := range authReasons {
				want := 0.0
				if r == tt.wantReason {
					want = 1
				}
				if got := metricValue(t, s.reg, "shoal_admin_auth_failures_total", "reason", r); got != want {
					t.Errorf("shoal_admin_auth_failures_total{reason=%q} = %v, want %v", r, got, want)
				}
			}
			if got, want := metricValue(t, s.reg, "shoal_admin_forbidden_total"), b2f(tt.wantCode == 403); got != want {
				t.Errorf("shoal_admin_forbidden_total = %v, want %v", got, want)
			}
			if tt.wantWho != "" {
				var p Principal
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
					t.Fatal(err)
				}
				if got := p.Name + "/" + string(p.Role) + "/" + p.Via; got != tt.wantWho {
					t.Errorf("whoami = %s, want %s", got, tt.wantWho)
				}
			}
		})
	}
}

// The failure counter shows up in the exposition, so a guesser is visible.
func TestAuthFailuresExported(t *testing.T) {
	s := newTestServer(t, &fakeSource{status: clusterStatus("a", names, nil, nil, 1)},
		Options{Users: []User{{Name: "alice", PasswordHash: lowCostHash(t, "pw"), Role: RoleAdmin}}})
	for range 3 {
		do(s.Handler(), "GET", "/api/v1/status", func(r *http.Request) { r.SetBasicAuth("alice", "guess") })
	}
	w := do(s.MetricsHandler(), "GET", "/metrics", nil)
	if want := `shoal_admin_auth_failures_total{reason="bad_password"} 3`; !strings.Contains(w.Body.String(), want) {
		t.Errorf("metrics lack %q", want)
	}
}

// Refused requests reach OnRefused (the agent raises admin-refused events);
// an anonymous read (a browser's first request) does not.
func TestOnRefused(t *testing.T) {
	var got []Refusal
	s := newTestServer(t, &fakeSource{status: clusterStatus("a", names, nil, nil, 1)}, Options{
		Users: []User{
			{Name: "alice", PasswordHash: lowCostHash(t, "pw"), Role: RoleAdmin},
			{Name: "bob", PasswordHash: lowCostHash(t, "pw"), Role: RoleReadOnly},
		},
		OnRefused: func(r Refusal) { got = append(got, r) },
	})
	do(s.Handler(), "GET", "/api/v1/status", nil)
	do(s.Handler(), "POST", "/api/v1/status", nil)
	do(s.Handler(), "GET", "/api/v1/status", func(r *http.Request) { r.SetBasicAuth("alice", "guess") })
	do(s.Handler(), "POST", "/api/v1/status", func(r *http.Request) { r.SetBasicAuth("bob", "pw") })
	do(s.Handler(), "GET", "/api/v1/status", func(r *http.Request) { r.SetBasicAuth("alice", "pw") })
	want := []string{"401 missing POST", "401 bad_password GET alice", "403 read-only POST bob"}
	var have []string
	for _, r := range got {
		h := fmt.Sprintf("%d %s %s", r.Status, r.Reason, r.Method)
		if r.User != "" {
			h += " " + r.User
		}
		have = append(have, h)
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Errorf("refusals (-want +got):\n%s", diff)
	}
}

func TestPasswordCacheFollowsHash(t *testing.T) {
	src := &fakeSource{status: clusterStatus("a", names, nil, nil, 1)}
	s := newTestServer(t, src, Options{Users: []User{{Name: "alice", PasswordHash: lowCostHash(t, "old"), Role: RoleAdmin}}})
	login := func(pw string) int {
		return do(s.Handler(), "GET", "/api/v1/whoami", func(r *http.Request) { r.SetBasicAuth("alice", pw) }).Code
	}
	if c := login("old"); c != 200 {
		t.Fatalf("old password: %d", c)
	}
	if err := s.Reconfigure([]User{{Name: "alice", PasswordHash: lowCostHash(t, "new"), Role: RoleAdmin}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if c := login("old"); c != 401 {
		t.Errorf("old password after the hash changed (cached?): %d, want 401", c)
	}
	if c := login("new"); c != 200 {
		t.Errorf("new password: %d, want 200", c)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(h), []byte("correct horse")); err != nil {
		t.Errorf("hash does not verify: %v", err)
	}
	if err := ValidateUsers([]User{{Name: "x", PasswordHash: h, Role: RoleAdmin}}); err != nil {
		t.Errorf("ValidateUsers(own hash): %v", err)
	}
	// htpasswd -B writes $2y$, python's bcrypt $2b$: the same algorithm.
	for _, prefix := range []string{"$2y$", "$2b$"} {
		other := prefix + strings.TrimPrefix(h, "$2a$")
		s := newTestServer(t, &fakeSource{}, Options{Users: []User{{Name: "x", PasswordHash: other, Role: RoleAdmin}}})
		if c := do(s.Handler(), "GET", "/api/v1/whoami", func(r *http.Request) { r.SetBasicAuth("x", "correct horse") }).Code; c != 200 {
			t.Errorf("%s hash: login %d, want 200", prefix, c)
		}
	}
	tok, err := NewToken()
	if err != nil || len(tok) < 40 {
		t.Fatalf("NewToken = %q, %v", tok, err)
	}
	if HashToken(tok) == HashToken(tok+"x") || !strings.HasPrefix(HashToken(tok), "sha256:") {
		t.Errorf("HashToken(%q) = %q", tok, HashToken(tok))
	}
}

func TestValidateUsers(t *testing.T) {
	good := lowCostHash(t, "pw")
	tests := []struct {
		name  string
		users []User
		want  string // error substring, "" = valid
	}{
		{"ok", []User{{Name: "a", PasswordHash: good, Role: RoleAdmin}, {Name: "b", TokenHash: HashToken("t"), Role: RoleReadOnly}}, ""},
		{"none", nil, ""},
		{"empty name", []User{{PasswordHash: good, Role: RoleAdmin}}, "admin user #1: empty name"},
		{"colon in name", []User{{Name: "a:b", PasswordHash: good, Role: RoleAdmin}}, "must not contain"},
		{"duplicate", []User{{Name: "a", PasswordHash: good, Role: RoleAdmin}, {Name: "a", PasswordHash: good, Role: RoleAdmin}}, `"a": defined twice`},
		{"bad role", []User{{Name: "a", PasswordHash: good, Role: "root"}}, `role "root"`},
		{"no credential", []User{{Name: "a", Role: RoleAdmin}}, "needs a password_hash or a token_hash"},
		{"plain password", []User{{Name: "a", PasswordHash: "hunter2", Role: RoleAdmin}}, "not a bcrypt hash"},
		{"plain token", []User{{Name: "a", TokenHash: "abc", Role: RoleAdmin}}, `must start with "sha256:"`},
		{"short token hash", []User{{Name: "a", TokenHash: "sha256:abcd", Role: RoleAdmin}}, "64 hex digits"},
		{"shared token", []User{{Name: "a", TokenHash: HashToken("t"), Role: RoleAdmin}, {Name: "b", TokenHash: HashToken("t"), Role: RoleAdmin}}, `same token as user "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateUsers(tt.users)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if tt.want == "" && err != nil || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("ValidateUsers = %q, want containing %q", got, tt.want)
			}
		})
	}
	// New refuses bad users too, and Reconfigure keeps the old ones.
	if _, err := New(&fakeSource{}, Options{Node: "a", Key: testKey(1), Users: []User{{Name: "a", Role: RoleAdmin}}}); err == nil {
		t.Error("New accepted a user without credentials")
	}
	s := newTestServer(t, &fakeSource{}, Options{Users: []User{{Name: "a", TokenHash: HashToken("t"), Role: RoleAdmin}}})
	if err := s.Reconfigure([]User{{Name: "", Role: RoleAdmin}}, nil, false); err == nil {
		t.Error("Reconfigure accepted a bad user")
	}
	w := do(s.Handler(), "GET", "/api/v1/whoami", func(r *http.Request) { r.Header.Set("Authorization", "Bearer t") })
	if diff := cmp.Diff(200, w.Code); diff != "" {
		t.Errorf("token after a refused Reconfigure (-want +got):\n%s", diff)
	}
}
