package events

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// ActionType names what an action does.
type ActionType string

// Action types.
const (
	ActionLog     ActionType = "log"     // write the event to the agent's log
	ActionScript  ActionType = "script"  // run Command with /bin/sh -c
	ActionEmail   ActionType = "email"   // mail the event (batched, rate-limited)
	ActionWebhook ActionType = "webhook" // POST the event as JSON to URL
)

// Config mirrors the [events] section of the cluster config (see SCHEMA.md).
// The appliance converts the decoded TOML into this struct; zero values take
// the defaults of DefaultConfig.
type Config struct {
	// SerfHandlers are serf agent -event-handler strings:
	// "[filter[,filter]*=]script". Default none.
	SerfHandlers []string
	// MaxConcurrent is how many actions may run at once. Default 4.
	MaxConcurrent int
	// DefaultTimeout bounds an action run (one script, one webhook attempt,
	// one mail) when the action sets no timeout, and every serf handler run.
	// Default 10s.
	DefaultTimeout time.Duration
	// Actions are the configured actions, in config order.
	Actions []ActionConfig

	// QueueSize is the number of pending events each action may hold; when
	// full the oldest is dropped and counted. Not in the TOML. Default 256.
	QueueSize int
	// RecentSize is the number of events kept for Recent. Not in the TOML.
	// Default 512.
	RecentSize int
}

// ActionConfig is one [[events.action]].
type ActionConfig struct {
	Name    string        // unique, used in logs, stats and SHOAL_ACTION
	Type    ActionType    // log | script | email | webhook
	Events  []Type        // event types to match; empty = all
	Groups  []string      // traffic IP groups to match; empty = all (an event with no group then never matches)
	Timeout time.Duration // per run (script) or attempt (webhook, mail); 0 = Config.DefaultTimeout

	Command string // script: run with /bin/sh -c

	URL     string // webhook: http or https URL
	Retries int    // webhook and email: attempts after the first on a transient failure, with backoff (cluster config default 3; 0 = none)

	SMTPServer   string        // email: host:port
	StartTLS     bool          // email: require STARTTLS (it is always used when offered)
	From         string        // email: envelope and header sender
	To           []string      // email: recipients
	Username     string        // email: AUTH PLAIN user; empty = no AUTH
	PasswordFile string        // email: file holding the password (read at each send, trailing newline trimmed)
	BatchWindow  time.Duration // email: events within this window of the first go in one mail (cluster config default 10s; 0 = mail at once)
	MaxPerHour   int           // email: at most this many mails per rolling hour; 0 = default (60)
}

// Defaults.
const (
	DefaultMaxConcurrent = 4
	DefaultTimeout       = 10 * time.Second
	DefaultQueueSize     = 256
	DefaultRecentSize    = 512
	DefaultRetries       = 3                // the cluster config's default for ActionConfig.Retries
	DefaultBatchWindow   = 10 * time.Second // the cluster config's default for ActionConfig.BatchWindow
	DefaultMaxPerHour    = 60
)

// DefaultConfig returns the configuration used when [events] is absent: no
// actions, no serf handlers.
func DefaultConfig() Config {
	return Config{
		MaxConcurrent:  DefaultMaxConcurrent,
		DefaultTimeout: DefaultTimeout,
		QueueSize:      DefaultQueueSize,
		RecentSize:     DefaultRecentSize,
	}
}

// withDefaults returns a copy of c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = d.DefaultTimeout
	}
	if c.QueueSize == 0 {
		c.QueueSize = d.QueueSize
	}
	if c.RecentSize == 0 {
		c.RecentSize = d.RecentSize
	}
	acts := make([]ActionConfig, len(c.Actions))
	for i, a := range c.Actions {
		if a.Timeout == 0 {
			a.Timeout = c.DefaultTimeout
		}
		if a.Type == ActionEmail && a.MaxPerHour == 0 {
			a.MaxPerHour = DefaultMaxPerHour
		}
		acts[i] = a
	}
	c.Actions = acts
	return c
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid events config")

// Validate checks c after defaults are applied. Errors name the key, e.g.
// `events.action[2] ("ops-mail").smtp_server: ...`, and wrap
// ErrInvalidConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, a...)))
	}
	if c.MaxConcurrent < 1 {
		bad("events.max_concurrent", "must be at least 1, got %d", c.MaxConcurrent)
	}
	if c.DefaultTimeout < 0 {
		bad("events.default_timeout", "must be positive, got %s", c.DefaultTimeout)
	}
	if c.QueueSize < 1 || c.RecentSize < 1 {
		bad("events", "queue and recent sizes must be at least 1")
	}
	for i, h := range c.SerfHandlers {
		if _, err := ParseSerfHandler(h); err != nil {
			bad(fmt.Sprintf("events.serf_handlers[%d]", i), "%v", err)
		}
	}
	names := map[string]bool{}
	for i, a := range c.Actions {
		key := fmt.Sprintf("events.action[%d] (%q)", i, a.Name)
		if a.Name == "" {
			bad(key+".name", "must be set")
		} else if names[a.Name] {
			bad(key+".name", "duplicate action name")
		}
		names[a.Name] = true
		for _, t := range a.Events {
			if !t.Valid() {
				_, err := ParseType(string(t))
				bad(key+".events", "%v", err)
			}
		}
		if a.Timeout < 0 {
			bad(key+".timeout", "must be positive, got %s", a.Timeout)
		}
		if a.Retries < 0 || a.Retries > 100 {
			bad(key+".retries", "must be 0..100, got %d", a.Retries)
		}
		switch a.Type {
		case ActionLog:
		case ActionScript:
			if a.Command == "" {
				bad(key+".command", "must be set for a script action")
			}
		case ActionWebhook:
			u, err := url.Parse(a.URL)
			switch {
			case a.URL == "":
				bad(key+".url", "must be set for a webhook action")
			case err != nil:
				bad(key+".url", "%v", err)
			case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
				bad(key+".url", "must be an http:// or https:// URL, got %q", a.URL)
			}
		case ActionEmail:
			if _, _, err := net.SplitHostPort(a.SMTPServer); err != nil {
				bad(key+".smtp_server", "must be host:port: %v", err)
			}
			if a.From == "" {
				bad(key+".from", "must be set for an email action")
			}
			if len(a.To) == 0 {
				bad(key+".to", "must list at least one recipient")
			}
			if a.Username != "" && a.PasswordFile == "" {
				bad(key+".password_file", "must be set when username is set")
			}
			if a.BatchWindow < 0 {
				bad(key+".batch_window", "must not be negative, got %s", a.BatchWindow)
			}
			if a.MaxPerHour < 1 {
				bad(key+".max_per_hour", "must be at least 1, got %d", a.MaxPerHour)
			}
			for _, s := range append([]string{a.From}, a.To...) {
				if containsCRLF(s) {
					bad(key, "addresses must not contain line breaks")
				}
			}
		default:
			bad(key+".type", "must be log, script, email or webhook, got %q", a.Type)
		}
	}
	return errors.Join(errs...)
}

func containsCRLF(s string) bool {
	for _, r := range s {
		if r == '\r' || r == '\n' {
			return true
		}
	}
	return false
}
