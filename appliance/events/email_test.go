package events

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// smtpServer is a small SMTP server on 127.0.0.1 that records messages. It
// offers STARTTLS when tlsConf is set and AUTH PLAIN when user is set.
type smtpServer struct {
	ln       net.Listener
	tlsConf  *tls.Config
	user, pw string

	mu        sync.Mutex
	msgs      []smtpMsg
	mailFails []string // replies to the next MAIL commands, consumed in order; then 250
	mails     int      // MAIL commands seen
	wg        sync.WaitGroup
}

type smtpMsg struct {
	From     string
	To       []string
	Data     string
	TLS      bool
	AuthUser string
}

func newSMTPServer(t *testing.T, tlsConf *tls.Config, user, pw string) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{ln: ln, tlsConf: tlsConf, user: user, pw: pw}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *smtpServer) messages() []smtpMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpMsg(nil), s.msgs...)
}

func (s *smtpServer) serve(conn net.Conn) {
	defer func() { conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(conn)
	_ = tp.PrintfLine("220 shoal-test ESMTP")
	var cur smtpMsg
	tlsOn, authUser := false, ""
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			lines := []string{"shoal-test"}
			if s.tlsConf != nil && !tlsOn {
				lines = append(lines, "STARTTLS")
			}
			if s.user != "" {
				lines = append(lines, "AUTH PLAIN")
			}
			lines = append(lines, "8BITMIME")
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				_ = tp.PrintfLine("250%s%s", sep, l)
			}
		case "STARTTLS":
			if s.tlsConf == nil || tlsOn {
				_ = tp.PrintfLine("502 no")
				continue
			}
			_ = tp.PrintfLine("220 go ahead")
			tc := tls.Server(conn, s.tlsConf)
			if err := tc.Handshake(); err != nil {
				return
			}
			conn, tp, tlsOn = tc, textproto.NewConn(tc), true
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			dec, err := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(dec), "\x00")
			if strings.ToUpper(mech) != "PLAIN" || err != nil || len(parts) != 3 || parts[1] != s.user || parts[2] != s.pw {
				_ = tp.PrintfLine("535 authentication failed")
				continue
			}
			authUser = parts[1]
			_ = tp.PrintfLine("235 ok")
		case "MAIL":
			s.mu.Lock()
			s.mails++
			reply := "250 ok"
			if len(s.mailFails) > 0 {
				reply, s.mailFails = s.mailFails[0], s.mailFails[1:]
			}
			s.mu.Unlock()
			cur = smtpMsg{From: angle(arg)}
			_ = tp.PrintfLine("%s", reply)
		case "RCPT":
			cur.To = append(cur.To, angle(arg))
			_ = tp.PrintfLine("250 ok")
		case "DATA":
			_ = tp.PrintfLine("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			cur.Data, cur.TLS, cur.AuthUser = string(data), tlsOn, authUser
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			_ = tp.PrintfLine("250 queued")
		case "RSET", "NOOP":
			_ = tp.PrintfLine("250 ok")
		case "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("502 unknown command")
		}
	}
}

// angle returns the address between < and > in a MAIL or RCPT argument.
func angle(arg string) string {
	_, rest, _ := strings.Cut(arg, "<")
	addr, _, _ := strings.Cut(rest, ">")
	return addr
}

// selfSignedTLS returns a server config for 127.0.0.1 and a pool trusting it.
func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoal-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// Events within the batch window go out as one mail, over STARTTLS with
// AUTH PLAIN.
func TestEmailBatchTLSAuth(t *testing.T) {
	srvTLS, roots := selfSignedTLS(t)
	srv := newSMTPServer(t, srvTLS, "shoal", "s3cret")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{
		Name: "mail", Type: ActionEmail, SMTPServer: srv.ln.Addr().String(), StartTLS: true,
		From: "shoal@example.org", To: []string{"ops@example.org", "oncall@example.org"},
		Username: "shoal", PasswordFile: pwFile, BatchWindow: time.Second, MaxPerHour: 10,
	}}})
	d.tlsRoots = roots
	d.Publish(Event{Type: MemberFailed, Member: "b"})
	d.Publish(Event{Type: IPRaised, Group: "web", IP: "192.0.2.10"})
	d.Publish(Event{Type: DuplicateIP, Group: "web", IP: "192.0.2.10", Details: map[string]string{"mac": "02:00:00:00:00:09"}})
	waitFor(t, 30*time.Second, "one mail", func() bool { return actionStats(d, "mail").Runs == 1 })
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages, want 1 batch; stats %+v", len(msgs), actionStats(d, "mail"))
	}
	m := msgs[0]
	if diff := cmp.Diff(smtpMsg{From: "shoal@example.org", To: []string{"ops@example.org", "oncall@example.org"}, TLS: true, AuthUser: "shoal"},
		smtpMsg{From: m.From, To: m.To, TLS: m.TLS, AuthUser: m.AuthUser}); diff != "" {
		t.Errorf("envelope (-want +got):\n%s", diff)
	}
	for _, want := range []string{
		"Subject: [shoal critical] a: 3 events (member-failed, ip-raised, duplicate-ip)\n",
		"To: ops@example.org, oncall@example.org\n",
		" critical member-failed node=a member=b\n",
		" info ip-raised node=a group=web ip=192.0.2.10\n",
		` critical duplicate-ip node=a group=web ip=192.0.2.10 mac="02:00:00:00:00:09"` + "\n",
	} {
		if !strings.Contains(m.Data, want) {
			t.Errorf("mail lacks %q:\n%s", want, m.Data)
		}
	}
}

// STARTTLS required but not offered: the mail is not sent in clear.
func TestEmailStartTLSRequired(t *testing.T) {
	srv := newSMTPServer(t, nil, "", "")
	d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{
		Name: "mail", Type: ActionEmail, SMTPServer: srv.ln.Addr().String(), StartTLS: true,
		From: "shoal@example.org", To: []string{"ops@example.org"}, BatchWindow: 50 * time.Millisecond,
	}}})
	d.Publish(Event{Type: MemberFailed, Member: "b"})
	waitFor(t, 30*time.Second, "mail attempt", func() bool { return actionStats(d, "mail").Runs == 1 })
	if s := actionStats(d, "mail"); s.Failed != 1 {
		t.Errorf("stats = %+v, want 1 failure", s)
	}
	if n := len(srv.messages()); n != 0 {
		t.Errorf("server got %d messages without TLS, want 0", n)
	}
}

// max_per_hour holds a due batch back instead of sending it.
func TestEmailRateLimit(t *testing.T) {
	srv := newSMTPServer(t, nil, "", "")
	d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{
		Name: "mail", Type: ActionEmail, SMTPServer: srv.ln.Addr().String(),
		From: "shoal@example.org", To: []string{"ops@example.org"}, BatchWindow: 50 * time.Millisecond, MaxPerHour: 2,
	}}})
	for i, member := range []string{"b", "c"} {
		d.Publish(Event{Type: MemberFailed, Member: member})
		waitFor(t, 30*time.Second, "mail", func() bool { return len(srv.messages()) == i+1 })
	}
	d.Publish(Event{Type: MemberFailed, Member: "d"})
	waitFor(t, 30*time.Second, "rate limit", func() bool { return actionStats(d, "mail").RateLimited == 1 })
	msgs := srv.messages()
	if len(msgs) != 2 {
		t.Fatalf("server got %d messages, want 2 (limit)", len(msgs))
	}
	for i, member := range []string{"b", "c"} {
		if want := "Subject: [shoal critical] a: member-failed " + member + "\n"; !strings.Contains(msgs[i].Data, want) {
			t.Errorf("mail %d lacks %q:\n%s", i, want, msgs[i].Data)
		}
	}
	d.Close()
	if s := actionStats(d, "mail"); s.Runs != 2 || s.Dropped != 1 {
		t.Errorf("stats after Close = %+v, want 2 runs and the held event dropped", s)
	}
}

// Transient SMTP failures (4xx) are retried with backoff; permanent ones
// (5xx) are not.
func TestEmailRetries(t *testing.T) {
	tests := []struct {
		name      string
		fails     []string
		retries   int
		wantMails int // MAIL commands the server saw
		wantMsgs  int
		wantFail  uint64
	}{
		{name: "transient then ok", fails: []string{"451 busy", "421 later"}, retries: 3, wantMails: 3, wantMsgs: 1},
		{name: "transient, retries exhausted", fails: []string{"451 busy", "451 busy"}, retries: 1, wantMails: 2, wantFail: 1},
		{name: "permanent", fails: []string{"550 no such sender"}, retries: 3, wantMails: 1, wantFail: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSMTPServer(t, nil, "", "")
			srv.mailFails = tt.fails
			d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{
				Name: "mail", Type: ActionEmail, SMTPServer: srv.ln.Addr().String(), Retries: tt.retries,
				From: "shoal@example.org", To: []string{"ops@example.org"},
			}}})
			d.Publish(Event{Type: ConfigConflict, Details: map[string]string{"versions": "7,8"}})
			waitFor(t, 30*time.Second, "mail run", func() bool { return actionStats(d, "mail").Runs == 1 })
			srv.mu.Lock()
			mails := srv.mails
			srv.mu.Unlock()
			if s := actionStats(d, "mail"); mails != tt.wantMails || len(srv.messages()) != tt.wantMsgs || s.Failed != tt.wantFail {
				t.Errorf("MAIL commands %d, messages %d, stats %+v; want %d, %d, Failed %d",
					mails, len(srv.messages()), s, tt.wantMails, tt.wantMsgs, tt.wantFail)
			}
		})
	}
}

func TestHourLimiter(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	l := &hourLimiter{max: 2}
	steps := []struct {
		at     time.Duration // after t0
		want   time.Duration // next allowed, after t0
		record bool
	}{
		{0, 0, true},
		{time.Minute, time.Minute, true},
		{2 * time.Minute, time.Hour, false},
		{59 * time.Minute, time.Hour, false},
		{time.Hour, time.Hour, true},
		{time.Hour + 30*time.Second, time.Hour + time.Minute, false},
		{time.Hour + time.Minute, time.Hour + time.Minute, true},
		{time.Hour + 2*time.Minute, 2 * time.Hour, false},
	}
	for _, s := range steps {
		now := t0.Add(s.at)
		if got := l.next(now); !got.Equal(t0.Add(s.want)) {
			t.Fatalf("next(t0+%s) = t0+%s, want t0+%s", s.at, got.Sub(t0), s.want)
		}
		if s.record {
			l.record(now)
		}
	}
}

// Values cannot inject mail headers.
func TestMailMessageHeaders(t *testing.T) {
	m := mailMessage{From: "shoal@example.org", To: []string{"ops@example.org"}, Node: "a\nBcc: evil@example.org",
		Events: []Event{{Type: MemberFailed, Member: "b\r\nX-Evil: 1", Severity: SeverityCritical}}, Date: time.Unix(0, 0)}
	msg := string(m.Bytes())
	head, _, _ := strings.Cut(msg, "\n\n")
	for _, l := range strings.Split(head, "\n") {
		if strings.HasPrefix(l, "Bcc:") || strings.HasPrefix(l, "X-Evil:") {
			t.Errorf("header injected: %q in\n%s", l, head)
		}
	}
}
