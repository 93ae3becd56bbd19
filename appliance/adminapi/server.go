package adminapi

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Peer is another member, for node-to-node calls: its pinned key (checked
// both ways: as a TLS client calling us, and as the server we call) and the
// address of its HTTPS admin API.
type Peer struct {
	Name      string
	PublicKey ed25519.PublicKey
	// Addr is host:port of its admin API; empty: not asked for the
	// cluster view (its key is still accepted).
	Addr string
}

// Options configure a Server.
type Options struct {
	Node string             // this member's name
	Key  ed25519.PrivateKey // the node key: server certificates and client certificate
	// Users may call the API; none means only peers (node certificates)
	// and the plain-HTTP metrics listener get in.
	Users []User
	// ReadOnly makes every caller read-only (a restricted node,
	// can_update = false).
	ReadOnly bool
	// Peers are the members (this node may be included; it is skipped).
	Peers []Peer
	// Timelines is the failover recorder the agent feeds; nil: New makes
	// one (Server.Timelines returns it).
	Timelines *TimelineRecorder
	// PeerTimeout bounds one node-to-node request; default 2 s.
	PeerTimeout time.Duration
	// ClusterEvents is how many events the cluster view keeps; default 50.
	ClusterEvents int
	Logger        zerolog.Logger
	// OnRefused, if set, is called for every refused request (401 with
	// wrong or malformed credentials, any 401 on a writing method, and
	// 403), so the agent can raise an event. It must not block.
	OnRefused func(Refusal)
}

// Refusal describes one refused admin API request.
type Refusal struct {
	Status int    // 401 or 403
	Reason string // the auth failure reason, or "read-only"
	User   string // the user name presented, if any
	Remote string // the client's address
	Method string
	Path   string
}

// Server is the HTTPS admin API, the metrics and the web page.
type Server struct {
	src       Source
	node      string
	log       zerolog.Logger
	access    atomic.Pointer[access]
	creds     credCache
	timelines *TimelineRecorder
	reg       *prometheus.Registry
	metrics   serverMetrics
	certs     []tls.Certificate // Ed25519 first, then the browser's ECDSA one
	mux       *http.ServeMux
	handler   http.Handler
	peers     *peerClient
	cluster   clusterCache
	cacheTTL  time.Duration // cluster view reuse; tests set 0
	nEvents   int

	lastAuthLog atomic.Int64
	onRefused   func(Refusal)
}

// New validates o and builds the server; nothing listens yet.
func New(src Source, o Options) (*Server, error) {
	if src == nil || o.Node == "" {
		return nil, errors.New("new admin api: a Source and the node name are required")
	}
	nodeCert, err := NodeCertificate(o.Key, o.Node)
	if err != nil {
		return nil, fmt.Errorf("new admin api: %w", err)
	}
	browserCert, err := BrowserCertificate(o.Key, o.Node)
	if err != nil {
		return nil, fmt.Errorf("new admin api: %w", err)
	}
	acc, err := newAccess(o.Users, o.Peers, o.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("new admin api: %w", err)
	}
	if o.PeerTimeout <= 0 {
		o.PeerTimeout = 2 * time.Second
	}
	if o.ClusterEvents <= 0 {
		o.ClusterEvents = 50
	}
	if o.Timelines == nil {
		o.Timelines = NewTimelineRecorder(0)
	}
	s := &Server{src: src, node: o.Node, log: o.Logger.With().Str("component", "adminapi").Logger(),
		timelines: o.Timelines, certs: []tls.Certificate{nodeCert, browserCert}, mux: http.NewServeMux(),
		nEvents: o.ClusterEvents, cacheTTL: clusterCacheTTL, onRefused: o.OnRefused}
	s.access.Store(acc)
	s.reg, s.metrics = newRegistry(s)
	s.peers = newPeerClient(nodeCert, o.PeerTimeout, func() *access { return s.access.Load() })
	s.routes()
	s.handler = securityHeaders(s.withAuth(s.mux))
	return s, nil
}

// Reconfigure replaces users, peers and the read-only flag (after a
// cluster config change). On error nothing changes.
func (s *Server) Reconfigure(users []User, peers []Peer, readOnly bool) error {
	acc, err := newAccess(users, peers, readOnly)
	if err != nil {
		return fmt.Errorf("reconfigure admin api: %w", err)
	}
	s.access.Store(acc)
	s.peers.closeIdle()
	return nil
}

// Timelines returns the failover recorder the agent feeds.
func (s *Server) Timelines() *TimelineRecorder { return s.timelines }

// Registry is the server's private metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Pins returns the public-key pins of the two server certificates: the
// Ed25519 one (Go and curl clients, peers) and the ECDSA one (browsers).
func (s *Server) Pins() (node, browser Pin) {
	node, _ = Fingerprint(s.certs[0])
	browser, _ = Fingerprint(s.certs[1])
	return node, browser
}

// Handle adds an endpoint behind authentication (e.g. "POST /api/v1/x");
// writing methods need the admin role. Register before serving.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler is the whole authenticated API, web page and /metrics included.
func (s *Server) Handler() http.Handler { return s.handler }

// MetricsHandler serves /metrics without authentication (for the plain
// metrics listener).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// TLSConfig is the server side: both certificates (Go picks the Ed25519
// one when the client supports it), client certificates requested but
// optional, and a presented client key must be a pinned member's.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: s.certs,
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // users authenticate in HTTP
			}
			pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok {
				return errors.New("client certificate key is not Ed25519")
			}
			if _, ok := s.access.Load().byKey[string(pub)]; !ok {
				return errors.New("client certificate key is not pinned in the cluster config")
			}
			return nil
		},
	}
}

// Serve listens on addr (e.g. ":8443") and serves HTTPS until ctx ends.
func (s *Server) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin api: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves HTTPS on ln until ctx ends, then closes it.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	n, b := s.Pins()
	s.log.Info().Str("addr", ln.Addr().String()).Str("pin", n.String()).Str("browser_pin", b.Hex()).
		Msg("admin API listening (HTTPS)")
	return s.serveHTTP(ctx, tls.NewListener(ln, s.TLSConfig()), s.handler, "admin api")
}

// ServeMetrics listens on addr and serves /metrics over plain HTTP, without
// authentication, until ctx ends.
func (s *Server) ServeMetrics(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.MetricsHandler())
	s.log.Info().Str("addr", ln.Addr().String()).Msg("metrics listening (plain HTTP, no authentication)")
	return s.serveHTTP(ctx, ln, mux, "metrics listener")
}

func (s *Server) serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, what string) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }, // ends streams on shutdown
		// TLS handshake failures (browsers meeting the self-signed
		// certificate, unpinned clients) are routine: debug level.
		ErrorLog: log.New(debugWriter{s.log}, "", 0)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("%s: %w", what, err)
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		b, _, err := localStatus(s.src)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeRaw(w, b)
	})
	s.mux.HandleFunc("GET /api/v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Cluster(r.Context()))
	})
	s.mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		n, err := intParam(r, "n", 100, 0, 10000)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, nonNil(s.src.Events(n)))
	})
	s.mux.HandleFunc("GET /api/v1/explain", func(w http.ResponseWriter, r *http.Request) {
		ip, err := netip.ParseAddr(r.URL.Query().Get("ip"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "explain: bad ip: "+err.Error())
			return
		}
		v, err := s.src.Explain(ip)
		if err != nil {
			writeError(w, errorStatus(err), err.Error())
			return
		}
		writeJSON(w, v)
	})
	s.mux.HandleFunc("GET /api/v1/timeline", func(w http.ResponseWriter, r *http.Request) {
		n, err := intParam(r, "n", 0, 0, 1000)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, s.timelines.Recent(n))
	})
	s.mux.HandleFunc("GET /api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		writeJSON(w, p)
	})
	s.mux.HandleFunc("GET /api/v1/stream", s.stream)
	s.mux.Handle("GET /metrics", s.MetricsHandler())
	s.mux.HandleFunc("GET /{$}", s.servePage)
}

// errorStatus maps a Source error to an HTTP status.
func errorStatus(err error) int {
	var hs interface{ HTTPStatus() int }
	switch {
	case errors.As(err, &hs):
		return hs.HTTPStatus()
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("parameter %s=%q: want an integer in %d..%d", name, s, lo, hi)
	}
	return n, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode answer: "+err.Error())
		return
	}
	writeRaw(w, b)
}

func writeRaw(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// stream sends this node's events as Server-Sent Events ("event: event",
// data = one JSON event) as they are published, with a comment every 15 s
// to keep proxies from closing the connection.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, cancel := s.src.Subscribe()
	defer cancel()
	if ch == nil {
		writeError(w, http.StatusNotFound, "no event stream on this node")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case ev, ok := <-ch:
			if !ok {
				return
			}
			b, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "event: event\ndata: %s\n\n", b); err != nil {
				return
			}
		}
		fl.Flush()
	}
}

// debugWriter turns net/http's error log into debug-level records.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
