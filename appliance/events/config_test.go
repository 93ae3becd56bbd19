package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	mail := ActionConfig{Name: "m", Type: ActionEmail, SMTPServer: "mail.example:587", From: "shoal@example.org", To: []string{"ops@example.org"}}
	with := func(a ActionConfig, f func(*ActionConfig)) ActionConfig { f(&a); return a }
	tests := []struct {
		name    string
		cfg     Config
		wantKey string // "" = valid
	}{
		{name: "empty", cfg: Config{}},
		{name: "full", cfg: Config{SerfHandlers: []string{"member-join,user:deploy=/path/script.sh", "uptime"}, MaxConcurrent: 2, DefaultTimeout: time.Second,
			Actions: []ActionConfig{
				{Name: "log", Type: ActionLog, Events: []Type{MemberFailed, DuplicateIP}, Groups: []string{"web"}},
				{Name: "script", Type: ActionScript, Command: "/usr/local/bin/notify.sh"},
				{Name: "hook", Type: ActionWebhook, URL: "https://hooks.example/x", Retries: 3},
				mail,
			}}},
		{name: "bad serf handler", cfg: Config{SerfHandlers: []string{"ok=x"}}, wantKey: "events.serf_handlers[0]"},
		{name: "max_concurrent", cfg: Config{MaxConcurrent: -1}, wantKey: "events.max_concurrent"},
		{name: "no name", cfg: Config{Actions: []ActionConfig{{Type: ActionLog}}}, wantKey: `events.action[0] ("").name`},
		{name: "duplicate name", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: ActionLog}, {Name: "x", Type: ActionLog}}}, wantKey: `events.action[1] ("x").name`},
		{name: "unknown type", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: "pager"}}}, wantKey: `events.action[0] ("x").type`},
		{name: "unknown event", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: ActionLog, Events: []Type{"member-join"}}}}, wantKey: `("x").events`},
		{name: "script without command", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: ActionScript}}}, wantKey: `("x").command`},
		{name: "webhook without url", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: ActionWebhook}}}, wantKey: `("x").url`},
		{name: "webhook ftp url", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: ActionWebhook, URL: "ftp://x/y"}}}, wantKey: `("x").url`},
		{name: "negative retries", cfg: Config{Actions: []ActionConfig{{Name: "x", Type: ActionWebhook, URL: "http://x/", Retries: -1}}}, wantKey: `("x").retries`},
		{name: "mail without port", cfg: Config{Actions: []ActionConfig{with(mail, func(a *ActionConfig) { a.SMTPServer = "mail.example" })}}, wantKey: `("m").smtp_server`},
		{name: "mail without to", cfg: Config{Actions: []ActionConfig{with(mail, func(a *ActionConfig) { a.To = nil })}}, wantKey: `("m").to`},
		{name: "mail user without password", cfg: Config{Actions: []ActionConfig{with(mail, func(a *ActionConfig) { a.Username = "u" })}}, wantKey: `("m").password_file`},
		{name: "mail header injection", cfg: Config{Actions: []ActionConfig{with(mail, func(a *ActionConfig) { a.To = []string{"a@x\r\nBcc: b@y"} })}}, wantKey: `("m")`},
		{name: "negative batch window", cfg: Config{Actions: []ActionConfig{with(mail, func(a *ActionConfig) { a.BatchWindow = -time.Second })}}, wantKey: `("m").batch_window`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantKey == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantKey != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error naming %s", tt.wantKey)
			case tt.wantKey != "":
				if !errors.Is(err, ErrInvalidConfig) {
					t.Errorf("Validate() = %v, does not wrap ErrInvalidConfig", err)
				}
				// The key is part of the error's contract (it tells the operator
				// what to fix), so checking it in the text is intended.
				if !strings.Contains(err.Error(), tt.wantKey) {
					t.Errorf("Validate() = %v, want it to name %s", err, tt.wantKey)
				}
			}
		})
	}
}
