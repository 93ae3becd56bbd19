package shoalrun

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Compact rewrites an agent log (zerolog JSON lines) for a failure report:
// one short line per entry, "15:04:05.000 W component message k=v ...",
// without the fields every line repeats (node, time, level names). Debug
// lines are left out; lines that are not JSON are kept as they are. A
// compact log carries several times more history in the same bytes.
func Compact(log string) string {
	var b strings.Builder
	for line := range strings.Lines(log) {
		line = strings.TrimRight(line, "\n")
		var m map[string]any
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &m) != nil {
			b.WriteString(line)
			b.WriteByte('\n')
			continue
		}
		lvl, _ := m["level"].(string)
		if lvl == "debug" || lvl == "trace" {
			continue
		}
		ts := ""
		if s, ok := m["time"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				ts = t.UTC().Format("15:04:05.000")
			}
		}
		mark := "I"
		if lvl != "" && lvl != "info" {
			mark = strings.ToUpper(lvl[:1])
		}
		comp, _ := m["component"].(string)
		msg, _ := m["message"].(string)
		fmt.Fprintf(&b, "%s %s %s %s", ts, mark, comp, msg)
		delete(m, "level")
		delete(m, "time")
		delete(m, "node")
		delete(m, "component")
		delete(m, "message")
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, _ := json.Marshal(m[k])
			fmt.Fprintf(&b, " %s=%s", k, strings.Trim(string(v), `"`))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
