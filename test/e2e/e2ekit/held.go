package e2ekit

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/shoal-project/shoal/test/harness"
)

// Held is a long-lived TCP connection from a namespace to a harness echo
// server (Options.EchoPort): Server is the node that accepted it, Ping
// checks that it still carries data both ways.
type Held struct {
	Server string
	conn   net.Conn
	r      *bufio.Reader
}

// DialHeld opens a long-lived connection from namespace ns to ap and reads
// the answering node's name.
func DialHeld(ns string, ap netip.AddrPort, timeout time.Duration) (*Held, error) {
	var conn net.Conn
	err := harness.InNamespace(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", ap.String(), timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", ap, ns, err)
	}
	h := &Held{conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	line, err := h.r.ReadString('\n')
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("read from %s: %w", ap, err)
	}
	h.Server = strings.TrimSpace(line)
	return h, nil
}

// Ping writes one line and waits for its echo: an error means the
// connection was reset, closed or stalled for timeout.
func (h *Held) Ping(timeout time.Duration) error {
	_ = h.conn.SetDeadline(time.Now().Add(timeout))
	const msg = "ping\n"
	if _, err := h.conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("connection to %s (%s): write: %w", h.Server, h.conn.LocalAddr(), err)
	}
	got, err := h.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("connection to %s (%s): read: %w", h.Server, h.conn.LocalAddr(), err)
	}
	if got != msg {
		return fmt.Errorf("connection to %s (%s): echo %q, want %q", h.Server, h.conn.LocalAddr(), got, msg)
	}
	return nil
}

// Close closes the connection.
func (h *Held) Close() error { return h.conn.Close() }
