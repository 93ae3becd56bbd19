package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// AdminServer serves the local admin API over a unix socket that only root
// (the socket's owner) may open. The CLI (`shoal status`, `shoal members`,
// ...) talks to it with AdminClient.
type AdminServer struct {
	path string
	mux  *http.ServeMux
	srv  *http.Server
	ln   net.Listener
}

// NewAdminServer creates the socket at path (mode 0600, parent 0700 if it
// has to be created). A stale socket file left by a crashed agent is removed
// only if nothing answers on it.
func NewAdminServer(path string) (*AdminServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create admin socket dir: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another agent is running", path)
		}
		_ = os.Remove(path)
	}
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod admin socket: %w", err)
	}
	mux := http.NewServeMux()
	return &AdminServer{path: path, mux: mux, ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// HandleJSON registers a GET handler whose result is encoded as JSON.
func (s *AdminServer) HandleJSON(pattern string, f func(r *http.Request) (any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			var he httpError
			if errors.As(err, &he) {
				code = he.code
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	})
}

type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

// HTTPStatus lets the HTTPS admin API (adminapi) answer with the same code.
func (e httpError) HTTPStatus() int { return e.code }

// Serve serves until ctx is done, then closes the socket.
func (s *AdminServer) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
		_ = os.Remove(s.path)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin socket: %w", err)
	}
}

// AdminClient calls a local agent's admin socket.
type AdminClient struct {
	path string
	hc   *http.Client
}

// NewAdminClient returns a client for the socket at path.
func NewAdminClient(path string) *AdminClient {
	return &AdminClient{path: path, hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Get fetches path (e.g. "/v1/status") and decodes the JSON answer into v.
func (c *AdminClient) Get(path string, v any) error {
	resp, err := c.hc.Get("http://shoal" + path)
	if err != nil {
		return fmt.Errorf("query agent at %s (is `shoal agent` running?): %w", c.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read agent answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent: %s", e.Error)
		}
		return fmt.Errorf("agent: %s", resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode agent answer: %w", err)
	}
	return nil
}
