package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a tiny TCP server bound inside a namespace to 0.0.0.0:port and
// [::]:port. For every connection it writes its name and "\n" and closes;
// an echo server (ServeEchoIn) instead keeps the connection and echoes what
// it reads, for long-lived connections (at most EchoLifetime each).
// Wildcard binding means it also answers on traffic IPs added to the node
// later.
type Server struct {
	Name     string
	NS       string
	Port     int
	echo     bool
	lns      []net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	once     sync.Once

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open echo connections, closed by Close
}

// EchoLifetime bounds an echo server's connection.
const EchoLifetime = 5 * time.Minute

// Serve starts a Server in node i's namespace answering NodeName(i). Close
// of the topology closes it.
func (n *Net) Serve(i, port int) (*Server, error) {
	if err := n.checkNode("serve", i); err != nil {
		return nil, err
	}
	s, err := ServeIn(n.Node(i), NodeName(i), port)
	if err != nil {
		return nil, err
	}
	n.onClose(func() { _ = s.Close() })
	return s, nil
}

// ServeAll starts a Server on every node (see Serve).
func (n *Net) ServeAll(port int) ([]*Server, error) {
	var res []*Server
	for i := range n.opts.Nodes {
		s, err := n.Serve(i, port)
		if err != nil {
			for _, s := range res {
				_ = s.Close()
			}
			return nil, err
		}
		res = append(res, s)
	}
	return res, nil
}

// ServeEcho starts an echo Server (see ServeEchoIn) in node i's namespace
// answering NodeName(i). Close of the topology closes it.
func (n *Net) ServeEcho(i, port int) (*Server, error) {
	if err := n.checkNode("serve", i); err != nil {
		return nil, err
	}
	s, err := ServeEchoIn(n.Node(i), NodeName(i), port)
	if err != nil {
		return nil, err
	}
	n.onClose(func() { _ = s.Close() })
	return s, nil
}

// ServeIn starts a Server in namespace ns answering name. The caller closes it.
func ServeIn(ns, name string, port int) (*Server, error) {
	return serveIn(ns, name, port, false)
}

// ServeEchoIn starts a Server in namespace ns that writes name and "\n" on
// every connection, then echoes what it reads until the client closes (or
// EchoLifetime passes). The caller closes it.
func ServeEchoIn(ns, name string, port int) (*Server, error) {
	return serveIn(ns, name, port, true)
}

func serveIn(ns, name string, port int, echo bool) (*Server, error) {
	s := &Server{Name: name, NS: ns, Port: port, echo: echo, conns: map[net.Conn]struct{}{}}
	err := InNamespace(ns, func() error {
		for _, nw := range []struct{ network, host string }{{"tcp4", "0.0.0.0"}, {"tcp6", "::"}} {
			ln, err := net.Listen(nw.network, net.JoinHostPort(nw.host, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			s.lns = append(s.lns, ln)
		}
		return nil
	})
	if err != nil {
		for _, ln := range s.lns {
			ln.Close()
		}
		return nil, fmt.Errorf("serve %s in %s port %d: %w", name, ns, port, err)
	}
	reply := []byte(name + "\n")
	for _, ln := range s.lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.acceptLoop(ln, reply)
		}()
	}
	return s, nil
}

func (s *Server) acceptLoop(ln net.Listener, reply []byte) {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (EMFILE, aborted): back off briefly, keep serving.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		conns.Add(1)
		go func() {
			defer conns.Done()
			if !s.echo {
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Write(reply)
				_ = c.Close()
				return
			}
			if !s.track(c) {
				return
			}
			defer s.untrack(c)
			_ = c.SetDeadline(time.Now().Add(EchoLifetime))
			if _, err := c.Write(reply); err == nil {
				_, _ = io.Copy(c, c)
			}
		}()
	}
}

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// track registers an echo connection; false (and the connection closed)
// once the server is closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		_ = c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = c.Close()
	delete(s.conns, c)
}

// Close stops listening, closes echo connections and waits for in-flight
// replies.
func (s *Server) Close() error {
	s.once.Do(func() {
		for _, ln := range s.lns {
			_ = ln.Close()
		}
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.conns = nil
		s.mu.Unlock()
	})
	s.wg.Wait()
	return nil
}
