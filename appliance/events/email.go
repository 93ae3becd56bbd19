package events

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"syscall"
	"time"
)

// maxBatch bounds the events one mail carries; older ones are dropped and
// the mail says how many.
const maxBatch = 500

// hourLimiter allows at most max sends in any rolling hour.
type hourLimiter struct {
	max  int
	sent []time.Time // send times within the last hour, oldest first
}

// next returns the earliest time at or after now when a send is allowed.
func (l *hourLimiter) next(now time.Time) time.Time {
	l.prune(now)
	if len(l.sent) < l.max {
		return now
	}
	return l.sent[len(l.sent)-l.max].Add(time.Hour)
}

// record notes a send at now.
func (l *hourLimiter) record(now time.Time) {
	l.prune(now)
	l.sent = append(l.sent, now)
}

func (l *hourLimiter) prune(now time.Time) {
	i := 0
	for i < len(l.sent) && !l.sent[i].Add(time.Hour).After(now) {
		i++
	}
	l.sent = l.sent[i:]
}

// mailMessage is one batched mail.
type mailMessage struct {
	From, Node string
	To         []string
	Events     []Event
	Omitted    int // events dropped from an over-full batch
	Date       time.Time
}

// Bytes renders m as an RFC 5322 message (LF line ends; net/smtp's DATA
// writer turns them into CRLF).
func (m mailMessage) Bytes() []byte {
	var b bytes.Buffer
	worst := SeverityInfo
	var types []string
	seen := map[Type]bool{}
	for _, e := range m.Events {
		if rank(e.Severity) > rank(worst) {
			worst = e.Severity
		}
		if !seen[e.Type] {
			seen[e.Type] = true
			types = append(types, string(e.Type))
		}
	}
	subject := fmt.Sprintf("[shoal %s] %s: ", worst, m.Node)
	if len(m.Events) == 1 {
		e := m.Events[0]
		subject += string(e.Type)
		for _, s := range []string{e.Member, e.Group, e.IP} {
			if s != "" {
				subject += " " + s
			}
		}
	} else {
		subject += fmt.Sprintf("%d events (%s)", len(m.Events)+m.Omitted, strings.Join(types, ", "))
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	fmt.Fprintf(&b, "From: %s\n", oneLine(m.From))
	fmt.Fprintf(&b, "To: %s\n", oneLine(strings.Join(m.To, ", ")))
	fmt.Fprintf(&b, "Subject: %s\n", oneLine(subject))
	fmt.Fprintf(&b, "Date: %s\n", m.Date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%d.%s@%s>\n", m.Date.UnixNano(), hex.EncodeToString(id), mailDomain(m.Node))
	b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nX-Shoal-Node: " + oneLine(m.Node) + "\n\n")
	fmt.Fprintf(&b, "Shoal node %s reports %d event(s):\n\n", m.Node, len(m.Events)+m.Omitted)
	if m.Omitted > 0 {
		fmt.Fprintf(&b, "(%d older events omitted: batch limit %d)\n", m.Omitted, maxBatch)
	}
	for _, e := range m.Events {
		line := e.String()
		if strings.HasPrefix(line, ".") { // keep the DATA terminator unambiguous
			line = "." + line
		}
		b.WriteString(line + "\n")
	}
	return b.Bytes()
}

func rank(s Severity) int {
	switch s {
	case SeverityCritical:
		return 2
	case SeverityWarning:
		return 1
	}
	return 0
}

// mailDomain makes a Message-ID right-hand side out of a node name.
func mailDomain(node string) string {
	var b strings.Builder
	for _, r := range node {
		if r < 128 && (r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "shoal.invalid"
	}
	return b.String() + ".shoal.invalid"
}

// sendMail delivers msg through a.SMTPServer within ctx: STARTTLS when the
// server offers it (an error when a.StartTLS requires it and it is not
// offered), AUTH PLAIN when a.Username is set, then one MAIL, an RCPT per
// recipient, and DATA. roots nil means the system roots.
func sendMail(ctx context.Context, a ActionConfig, roots *x509.CertPool, msg []byte) (err error) {
	host, _, err := net.SplitHostPort(a.SMTPServer)
	if err != nil {
		return fmt.Errorf("send mail via %s: %w", a.SMTPServer, err)
	}
	defer func() {
		if err != nil && transient(err) {
			err = fmt.Errorf("%w: %w", errRetryable, err)
		}
		if err != nil {
			err = fmt.Errorf("send mail via %s: %w", a.SMTPServer, err)
		}
	}()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", a.SMTPServer)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return ctxOr(ctx, err)
	}
	defer c.Close()
	helo, _ := os.Hostname()
	if helo == "" || strings.ContainsAny(helo, " \r\n") {
		helo = "localhost"
	}
	if err := c.Hello(helo); err != nil {
		return ctxOr(ctx, err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12}); err != nil {
			return ctxOr(ctx, fmt.Errorf("starttls: %w", err))
		}
	} else if a.StartTLS {
		return errors.New("starttls required but not offered by the server")
	}
	if a.Username != "" {
		pw, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return fmt.Errorf("read password file: %w", err)
		}
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("auth: server offers no AUTH")
		}
		if err := c.Auth(smtp.PlainAuth("", a.Username, strings.TrimRight(string(pw), "\r\n"), host)); err != nil {
			return ctxOr(ctx, fmt.Errorf("auth: %w", err))
		}
	}
	if err := c.Mail(a.From); err != nil {
		return ctxOr(ctx, err)
	}
	for _, to := range a.To {
		if err := c.Rcpt(to); err != nil {
			return ctxOr(ctx, fmt.Errorf("rcpt %s: %w", to, err))
		}
	}
	w, err := c.Data()
	if err != nil {
		return ctxOr(ctx, err)
	}
	if _, err := w.Write(msg); err != nil {
		return ctxOr(ctx, err)
	}
	if err := w.Close(); err != nil {
		return ctxOr(ctx, err)
	}
	_ = c.Quit()
	return nil
}

// transient reports whether a mail attempt that failed with err is worth
// retrying: network errors, timeouts and 4xx SMTP replies are; 5xx replies,
// TLS verification, missing STARTTLS or AUTH and an unreadable password file
// are not.
func transient(err error) bool {
	var tpErr *textproto.Error
	if errors.As(err, &tpErr) {
		return tpErr.Code >= 400 && tpErr.Code < 500
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// ctxOr reports the context's error (a timeout) when it caused err.
func ctxOr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) { // the connection deadline, set from ctx
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}
