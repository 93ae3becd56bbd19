package adminapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Role is what a user may do.
type Role string

// Roles. A restricted node (can_update = false) serves RoleReadOnly to
// everyone whatever their configured role.
const (
	RoleAdmin    Role = "admin"     // every method
	RoleReadOnly Role = "read-only" // GET and HEAD only; other methods get 403
)

// User is one API account (cluster config [[admin.user]]).
type User struct {
	Name string
	// PasswordHash is a bcrypt hash ("$2a$...", "$2b$...", "$2y$..."), made
	// with HashPassword or `htpasswd -nbB`; empty disables password login.
	PasswordHash string
	// TokenHash is "sha256:" + hex(SHA-256(token)) of a bearer token, made
	// with HashToken; empty disables token login. The replicated config
	// never holds the token itself.
	TokenHash string
	Role      Role
}

// HashPassword returns the bcrypt hash (cost 10) of password.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// HashToken returns the TokenHash of a bearer token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NewToken returns a random bearer token (256 bits, base64url).
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ValidateUsers checks names, roles and hash formats; the error names the
// user at fault.
func ValidateUsers(users []User) error {
	seen := map[string]bool{}
	tokens := map[string]string{}
	for i, u := range users {
		switch {
		case u.Name == "":
			return fmt.Errorf("admin user #%d: empty name", i+1)
		case strings.ContainsAny(u.Name, ":\r\n"):
			return fmt.Errorf("admin user %q: name must not contain ':' or line breaks", u.Name)
		case seen[u.Name]:
			return fmt.Errorf("admin user %q: defined twice", u.Name)
		case u.Role != RoleAdmin && u.Role != RoleReadOnly:
			return fmt.Errorf("admin user %q: role %q is not %q or %q", u.Name, u.Role, RoleAdmin, RoleReadOnly)
		case u.PasswordHash == "" && u.TokenHash == "":
			return fmt.Errorf("admin user %q: needs a password_hash or a token_hash", u.Name)
		}
		seen[u.Name] = true
		if u.PasswordHash != "" {
			if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
				return fmt.Errorf("admin user %q: password_hash is not a bcrypt hash: %w", u.Name, err)
			}
		}
		if u.TokenHash != "" {
			if _, err := parseTokenHash(u.TokenHash); err != nil {
				return fmt.Errorf("admin user %q: %w", u.Name, err)
			}
			if other, dup := tokens[u.TokenHash]; dup {
				return fmt.Errorf("admin user %q: same token as user %q", u.Name, other)
			}
			tokens[u.TokenHash] = u.Name
		}
	}
	return nil
}

func parseTokenHash(s string) ([32]byte, error) {
	var h [32]byte
	hx, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return h, errors.New(`token_hash must start with "sha256:"`)
	}
	b, err := hex.DecodeString(hx)
	if err != nil || len(b) != len(h) {
		return h, errors.New("token_hash must be sha256: and 64 hex digits")
	}
	copy(h[:], b)
	return h, nil
}

// Principal is who made a request.
type Principal struct {
	Name string `json:"name"` // user name, or "node:<member>" for a peer
	Role Role   `json:"role"`
	Via  string `json:"via"` // "password", "token" or "node-certificate"
}

type principalKey struct{}

// PrincipalFrom returns the authenticated caller of a request served by the
// Server's handler.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Authentication failure reasons (label of shoal_admin_auth_failures_total).
const (
	authMissing     = "missing"      // no credentials
	authMalformed   = "malformed"    // unparsable Authorization header
	authUnknownUser = "unknown_user" // basic auth for a user not configured
	authBadPassword = "bad_password" // wrong password (or user without one)
	authBadToken    = "bad_token"    // bearer token matches no user
)

var authReasons = []string{authMissing, authMalformed, authUnknownUser, authBadPassword, authBadToken}

// access is the part of the configuration that changes with the cluster
// config; it is replaced as a whole.
type access struct {
	users    map[string]User
	tokens   map[[32]byte]User
	peers    map[string]Peer // by name
	byKey    map[string]Peer // by string(public key)
	readOnly bool
}

func newAccess(users []User, peers []Peer, readOnly bool) (*access, error) {
	if err := ValidateUsers(users); err != nil {
		return nil, err
	}
	a := &access{users: map[string]User{}, tokens: map[[32]byte]User{}, peers: map[string]Peer{},
		byKey: map[string]Peer{}, readOnly: readOnly}
	for _, u := range users {
		a.users[u.Name] = u
		if u.TokenHash != "" {
			h, _ := parseTokenHash(u.TokenHash)
			a.tokens[h] = u
		}
	}
	for _, p := range peers {
		if p.Name == "" || len(p.PublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("admin peer %q: name and a 32-byte ed25519 public key are required", p.Name)
		}
		if p.Addr != "" {
			host, port, err := net.SplitHostPort(p.Addr)
			if err != nil {
				return nil, fmt.Errorf("admin peer %q: address %q: %w", p.Name, p.Addr, err)
			}
			p.Addr = net.JoinHostPort(host, port)
		}
		a.peers[p.Name] = p
		a.byKey[string(p.PublicKey)] = p
	}
	return a, nil
}

func (a *access) role(r Role) Role {
	if a.readOnly {
		return RoleReadOnly
	}
	return r
}

// credCache remembers verified passwords for a while: bcrypt costs ~50 ms
// of CPU and the web page polls every second.
type credCache struct {
	mu sync.Mutex
	m  map[[32]byte]time.Time
}

const (
	credCacheTTL = 5 * time.Minute
	credCacheMax = 1024
)

func credKey(name, password, hash string) [32]byte {
	return sha256.Sum256([]byte(name + "\x00" + password + "\x00" + hash))
}

func (c *credCache) ok(k [32]byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, found := c.m[k]
	return found && now.Sub(t) < credCacheTTL
}

func (c *credCache) put(k [32]byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= credCacheMax {
		c.m = map[[32]byte]time.Time{}
	}
	c.m[k] = now
}

var (
	dummyOnce sync.Once
	dummyHash []byte
)

// dummyCompare spends the time of a bcrypt check, so that an unknown user
// answers as slowly as a wrong password.
func dummyCompare(password string) {
	dummyOnce.Do(func() {
		dummyHash, _ = bcrypt.GenerateFromPassword([]byte("shoal-dummy"), bcrypt.DefaultCost)
	})
	_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
}

// authenticate identifies the caller: a pinned node certificate, a bearer
// token or a password. The reason is one of auth* when it fails.
func (s *Server) authenticate(r *http.Request) (Principal, string) {
	a := s.access.Load()
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// The handshake already refused unpinned keys.
		if pub, ok := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey); ok {
			if p, ok := a.byKey[string(pub)]; ok {
				return Principal{Name: "node:" + p.Name, Role: RoleReadOnly, Via: "node-certificate"}, ""
			}
		}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return Principal{}, authMissing
	}
	if tok, ok := cutPrefixFold(h, "Bearer "); ok {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return Principal{}, authMalformed
		}
		if u, ok := a.tokens[sha256.Sum256([]byte(tok))]; ok {
			return Principal{Name: u.Name, Role: a.role(u.Role), Via: "token"}, ""
		}
		return Principal{}, authBadToken
	}
	name, password, ok := r.BasicAuth()
	if !ok {
		return Principal{}, authMalformed
	}
	u, known := a.users[name]
	if !known {
		dummyCompare(password)
		return Principal{}, authUnknownUser
	}
	if u.PasswordHash == "" {
		dummyCompare(password)
		return Principal{}, authBadPassword
	}
	k := credKey(name, password, u.PasswordHash)
	now := time.Now()
	if !s.creds.ok(k, now) {
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
			return Principal{}, authBadPassword
		}
		s.creds.put(k, now)
	}
	return Principal{Name: u.Name, Role: a.role(u.Role), Via: "password"}, ""
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// readMethod reports whether m only reads.
func readMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// withAuth authenticates every request: 401 without valid credentials
// (counted), 403 for a read-only caller using a writing method.
func (s *Server) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, reason := s.authenticate(r)
		if reason != "" {
			s.metrics.authFailures.WithLabelValues(reason).Inc()
			if reason != authMissing {
				s.logAuthFailure(r, reason)
			}
			if reason != authMissing || !readMethod(r.Method) {
				s.refused(r, http.StatusUnauthorized, reason)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal", charset="UTF-8"`)
			writeError(w, http.StatusUnauthorized, "authentication required")
			return
		}
		if !readMethod(r.Method) && p.Role != RoleAdmin {
			s.metrics.forbidden.Inc()
			s.refused(r, http.StatusForbidden, "read-only")
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s is %s: %s not allowed", p.Name, p.Role, r.Method))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// logAuthFailure logs at most one failure every 10 s: a password guesser
// must not fill the disk (every failure is counted anyway).
func (s *Server) logAuthFailure(r *http.Request, reason string) {
	now := time.Now().UnixNano()
	last := s.lastAuthLog.Load()
	if now-last < int64(10*time.Second) || !s.lastAuthLog.CompareAndSwap(last, now) {
		return
	}
	user, _, _ := r.BasicAuth()
	s.log.Warn().Str("remote", r.RemoteAddr).Str("reason", reason).Str("user", user).
		Msg("admin API authentication failed (further failures are counted, not logged, for 10 s)")
}

// refused reports a refused request to Options.OnRefused.
func (s *Server) refused(r *http.Request, status int, reason string) {
	if s.onRefused == nil {
		return
	}
	user, _, _ := r.BasicAuth()
	s.onRefused(Refusal{Status: status, Reason: reason, User: user, Remote: r.RemoteAddr, Method: r.Method, Path: r.URL.Path})
}
