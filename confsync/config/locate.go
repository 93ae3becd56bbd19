package config

import "strings"

// locator finds the line of a key in TOML source. The TOML decoder keeps no
// positions for decoded values, so validation errors find their line here:
// first the n-th header of the table ("[cluster]", the n-th "[[group]]"),
// then the key inside it. It understands the usual layout (one key per line,
// tables as headers); when it cannot find a key it falls back to the table's
// header line, or 0 (unknown).
type locator struct {
	lines []string
}

func newLocator(src []byte) *locator {
	return &locator{lines: strings.Split(string(src), "\n")}
}

// header returns the table name of a header line, and whether it is one.
func header(line string) (string, bool) {
	s := strings.TrimSpace(stripComment(line))
	if strings.HasPrefix(s, "[[") && strings.HasSuffix(s, "]]") {
		return normTable(s[2 : len(s)-2]), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return normTable(s[1 : len(s)-1]), true
	}
	return "", false
}

func normTable(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// stripComment drops a trailing # comment that is outside quotes.
func stripComment(line string) string {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#':
			return line[:i]
		}
	}
	return line
}

// section returns the 0-based line range [start, end) of the n-th table
// called table ("" = the top level before any header); start is the header
// line itself (or 0 for the top level).
func (l *locator) section(table string, n int) (start, end int, ok bool) {
	if table == "" {
		for i, line := range l.lines {
			if _, h := header(line); h {
				return 0, i, true
			}
		}
		return 0, len(l.lines), true
	}
	seen := 0
	start = -1
	for i, line := range l.lines {
		name, h := header(line)
		if !h {
			continue
		}
		if start >= 0 {
			return start, i, true
		}
		if name == table {
			if seen == n {
				start = i
			}
			seen++
		}
	}
	if start >= 0 {
		return start, len(l.lines), true
	}
	return 0, 0, false
}

// isKeyLine reports whether line assigns key (bare or quoted, possibly as
// the first part of a dotted key).
func isKeyLine(line, key string) bool {
	s := strings.TrimSpace(line)
	for _, k := range []string{key, `"` + key + `"`, `'` + key + `'`} {
		if rest, ok := strings.CutPrefix(s, k); ok {
			rest = strings.TrimLeft(rest, " \t")
			if strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, ".") {
				return true
			}
		}
	}
	return false
}

// key returns the 1-based line of key in the n-th table, the table's header
// line when the key is not there, or 0.
func (l *locator) key(table string, n int, key string) int {
	start, end, ok := l.section(table, n)
	if !ok {
		return 0
	}
	if key != "" {
		for i := start; i < end; i++ {
			if isKeyLine(l.lines[i], key) {
				return i + 1
			}
		}
		// A sub-table written as its own header, e.g. [extra] or
		// [selftest.more].
		sub := key
		if table != "" {
			sub = table + "." + key
		}
		if s, _, ok := l.section(sub, 0); ok {
			return s + 1
		}
	}
	if table == "" {
		return 0
	}
	return start + 1
}

// value returns the line of a quoted string value of key (for arrays that
// span lines), or the key's line.
func (l *locator) value(table string, n int, key, value string) int {
	kl := l.key(table, n, key)
	if kl == 0 || value == "" {
		return kl
	}
	_, end, _ := l.section(table, n)
	for i := kl - 1; i < end; i++ {
		if strings.Contains(l.lines[i], `"`+value+`"`) || strings.Contains(l.lines[i], `'`+value+`'`) {
			return i + 1
		}
		if i > kl-1 && !strings.HasPrefix(strings.TrimSpace(l.lines[i]), `"`) && !strings.HasPrefix(strings.TrimSpace(l.lines[i]), `'`) {
			break // left the array
		}
	}
	return kl
}
