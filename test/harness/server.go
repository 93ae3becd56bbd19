package harness

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a tiny TCP server bound inside a namespace to 0.0.0.0:port and
// [::]:port. For every connection it writes its name and "\n" and closes.
// Wildcard binding means it also answers on traffic IPs added to the node
// later.
type Server struct {
	Name     string
	NS       string
	Port     int
	lns      []net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	once     sync.Once
}

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

// ServeIn starts a Server in namespace ns answering name. The caller closes it.
func ServeIn(ns, name string, port int) (*Server, error) {
	s := &Server{Name: name, NS: ns, Port: port}
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
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write(reply)
			_ = c.Close()
		}()
	}
}

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// Close stops listening and waits for in-flight replies.
func (s *Server) Close() error {
	s.once.Do(func() {
		for _, ln := range s.lns {
			_ = ln.Close()
		}
	})
	s.wg.Wait()
	return nil
}
