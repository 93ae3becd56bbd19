package gossip

import (
	"bytes"
	"log"
	"strings"

	"github.com/rs/zerolog"
)

// logAdapter turns the "[LEVEL] subsystem: message" lines that memberlist and
// serf print through a *log.Logger into structured zerolog events with real
// levels.
type logAdapter struct {
	log zerolog.Logger
}

func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(&logAdapter{log: l}, "", 0)
}

var levelPrefixes = []struct {
	prefix string
	level  zerolog.Level
}{
	{"[TRACE]", zerolog.TraceLevel},
	{"[DEBUG]", zerolog.DebugLevel},
	{"[INFO]", zerolog.InfoLevel},
	{"[WARN]", zerolog.WarnLevel},
	{"[ERR]", zerolog.ErrorLevel},
	{"[ERROR]", zerolog.ErrorLevel},
}

func (w *logAdapter) Write(b []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(b, "\n"), []byte{'\n'}) {
		w.line(string(line))
	}
	return len(b), nil
}

func (w *logAdapter) line(s string) {
	level := zerolog.InfoLevel
	for _, p := range levelPrefixes {
		if i := strings.Index(s, p.prefix); i >= 0 && i < 32 { // after an optional timestamp
			level = p.level
			s = strings.TrimSpace(s[i+len(p.prefix):])
			break
		}
	}
	sub := ""
	if i := strings.Index(s, ": "); i > 0 && i < 16 && !strings.ContainsAny(s[:i], " \t") {
		sub, s = s[:i], s[i+2:]
	}
	ev := w.log.WithLevel(level)
	if sub != "" {
		ev = ev.Str("lib", sub)
	}
	ev.Msg(s)
}
