// Package aptsrc reads the machine's APT sources (one-line sources.list and
// deb822 *.sources files) so the image build uses the mirror this machine is
// configured for instead of a hard-coded one. It only reads files.
package aptsrc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Source is one APT source: a type ("deb"), a URI, a suite and components,
// with the options given between brackets (e.g. "signed-by").
type Source struct {
	Type       string
	URI        string
	Suite      string
	Components []string
	Options    map[string]string
}

// Line renders s in one-line sources.list form, options sorted by name.
func (s Source) Line() string {
	var b strings.Builder
	b.WriteString(s.Type)
	if len(s.Options) > 0 {
		keys := make([]string, 0, len(s.Options))
		for k := range s.Options {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(" [")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(k + "=" + s.Options[k])
		}
		b.WriteString("]")
	}
	fmt.Fprintf(&b, " %s %s", s.URI, s.Suite)
	for _, c := range s.Components {
		b.WriteString(" " + c)
	}
	return b.String()
}

// ParseList parses one-line sources.list text. Comments and blank lines are
// skipped; a malformed line is an error naming its line number.
func ParseList(r io.Reader) ([]Source, error) {
	var out []Source
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		s := Source{Options: map[string]string{}}
		typ, rest, _ := strings.Cut(line, " ")
		s.Type = typ
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("parse sources line %d: unclosed '['", n)
			}
			for _, opt := range strings.Fields(rest[1:end]) {
				k, v, ok := strings.Cut(opt, "=")
				if !ok {
					return nil, fmt.Errorf("parse sources line %d: option %q has no '='", n, opt)
				}
				s.Options[strings.ToLower(k)] = v
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			return nil, fmt.Errorf("parse sources line %d: want URI and suite", n)
		}
		s.URI, s.Suite, s.Components = f[0], f[1], f[2:]
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read sources: %w", err)
	}
	return out, nil
}

// ParseDeb822 parses a deb822 .sources file: stanzas separated by blank
// lines, each with Types, URIs, Suites, Components and options such as
// Signed-By. Stanzas with "Enabled: no" are skipped. Each combination of
// type, URI and suite becomes one Source.
func ParseDeb822(r io.Reader) ([]Source, error) {
	var out []Source
	stanza := map[string]string{}
	start, n := 0, 0
	var last string
	flush := func() error {
		if len(stanza) == 0 {
			return nil
		}
		defer func() { stanza = map[string]string{} }()
		if strings.EqualFold(stanza["enabled"], "no") {
			return nil
		}
		types, uris, suites := strings.Fields(stanza["types"]), strings.Fields(stanza["uris"]), strings.Fields(stanza["suites"])
		if len(types) == 0 || len(uris) == 0 || len(suites) == 0 {
			return fmt.Errorf("parse sources stanza at line %d: Types, URIs and Suites are required", start)
		}
		opts := map[string]string{}
		for k, v := range stanza {
			switch k {
			case "types", "uris", "suites", "components", "enabled":
			default:
				if v != "" && !strings.Contains(v, "\n") {
					opts[k] = v
				}
			}
		}
		for _, t := range types {
			for _, u := range uris {
				for _, s := range suites {
					o := make(map[string]string, len(opts))
					for k, v := range opts {
						o[k] = v
					}
					out = append(out, Source{Type: t, URI: u, Suite: s, Components: strings.Fields(stanza["components"]), Options: o})
				}
			}
		}
		return nil
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return nil, err
			}
			last = ""
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return nil, fmt.Errorf("parse sources line %d: continuation without a field", n)
			}
			stanza[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("parse sources line %d: want 'Field: value'", n)
		}
		if len(stanza) == 0 {
			start = n
		}
		last = strings.ToLower(strings.TrimSpace(k))
		stanza[last] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read sources: %w", err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadSystem reads root/etc/apt/sources.list and
// root/etc/apt/sources.list.d/*.list and *.sources in that order (files in
// name order), as APT does. Missing files are not an error.
func ReadSystem(root string) ([]Source, error) {
	var out []Source
	read := func(path string, parse func(io.Reader) ([]Source, error)) error {
		f, err := os.Open(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read sources: %w", err)
		}
		defer func() { _ = f.Close() }()
		s, err := parse(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, s...)
		return nil
	}
	if err := read(filepath.Join(root, "etc/apt/sources.list"), ParseList); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "etc/apt/sources.list.d")
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read sources: %w", err)
	}
	for _, e := range entries { // ReadDir returns entries sorted by name
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".list"):
			err = read(p, ParseList)
		case strings.HasSuffix(e.Name(), ".sources"):
			err = read(p, ParseDeb822)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ForRelease keeps the binary ("deb") sources of one release family: suites
// equal to release or starting with release+"-" ("bookworm-updates",
// "bookworm-security"), keeping only the given components (all when empty).
// Sources left with no component are dropped.
func ForRelease(all []Source, release string, components ...string) []Source {
	var out []Source
	for _, s := range all {
		if s.Type != "deb" || (s.Suite != release && !strings.HasPrefix(s.Suite, release+"-")) {
			continue
		}
		if len(components) > 0 {
			var keep []string
			for _, c := range s.Components {
				for _, want := range components {
					if c == want {
						keep = append(keep, c)
					}
				}
			}
			if len(keep) == 0 {
				continue
			}
			s.Components = keep
		}
		out = append(out, s)
	}
	return out
}
