package clusterinit

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Assignment is one KEY=VALUE of `shoal config set`.
type Assignment struct {
	Path  []string // dotted key split: ["group", "web", "failback_delay"]
	Value string   // as typed
}

// ParseAssignment parses "a.b.c=value". Keys are bare TOML keys (letters,
// digits, '_', '-'); entries of arrays of tables ([[member]], [[group]],
// [[events.action]]) are addressed by their name: member.b.can_update.
func ParseAssignment(s string) (Assignment, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return Assignment{}, fmt.Errorf("%q: want KEY=VALUE", s)
	}
	k = strings.TrimSpace(k)
	if k == "" {
		return Assignment{}, fmt.Errorf("%q: empty key", s)
	}
	path := strings.Split(k, ".")
	for _, p := range path {
		if p == "" || strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
			return Assignment{}, fmt.Errorf("%q: bad key part %q", s, p)
		}
	}
	return Assignment{Path: path, Value: v}, nil
}

// topOrder is the order of the top-level tables in a re-encoded config.
var topOrder = []string{"cluster", "member", "group", "selftest", "events", "location"}

// SetKeys decodes content into a generic TOML tree, applies the
// assignments and encodes it again. The result has canonical layout:
// comments and the original key order are lost (array order is kept).
//
// A VALUE replacing an existing string stays a string; replacing an
// integer, boolean or array, it must parse as one (TOML syntax: 5, true,
// ["a", "b"]). A new key's VALUE is taken as TOML if it parses as a TOML
// value, else as a string (so 750ms needs no quotes).
func SetKeys(content []byte, as []Assignment) ([]byte, error) {
	var doc map[string]any
	if _, err := toml.Decode(string(content), &doc); err != nil {
		return nil, fmt.Errorf("set: decode current config: %w", err)
	}
	for _, a := range as {
		if err := setKey(doc, a); err != nil {
			return nil, fmt.Errorf("set %s: %w", strings.Join(a.Path, "."), err)
		}
	}
	return encodeOrdered(doc)
}

func setKey(doc map[string]any, a Assignment) error {
	cur := doc
	for i, part := range a.Path[:len(a.Path)-1] {
		switch next := cur[part].(type) {
		case map[string]any:
			cur = next
		case []map[string]any:
			if i+1 >= len(a.Path)-1 {
				return fmt.Errorf("%q is a list of [[%s]] tables: name an entry, e.g. %s.NAME.key", part, part, strings.Join(a.Path[:i+1], "."))
			}
			name := a.Path[i+1]
			var found map[string]any
			for _, e := range next {
				if e["name"] == name {
					found = e
				}
			}
			if found == nil {
				return fmt.Errorf("no [[%s]] named %q", part, name)
			}
			// Skip the name part: continue below it.
			return setKey(found, Assignment{Path: a.Path[i+2:], Value: a.Value})
		case nil:
			m := map[string]any{}
			cur[part] = m
			cur = m
		default:
			return fmt.Errorf("%q is a value, not a table", strings.Join(a.Path[:i+1], "."))
		}
	}
	last := a.Path[len(a.Path)-1]
	v, err := typedValue(cur[last], a.Value)
	if err != nil {
		return err
	}
	cur[last] = v
	return nil
}

func typedValue(old any, s string) (any, error) {
	switch old.(type) {
	case string:
		if u, err := strconv.Unquote(s); err == nil && strings.HasPrefix(s, `"`) {
			return u, nil
		}
		return s, nil
	case map[string]any, []map[string]any:
		return nil, errors.New("is a table: set its keys one by one")
	case nil:
		if v, ok := parseTOMLValue(s); ok {
			return v, nil
		}
		return s, nil
	}
	v, ok := parseTOMLValue(s)
	if !ok {
		return nil, fmt.Errorf("%q is not of type %s (the key's type)", s, tomlKind(old))
	}
	if tomlKind(v) != tomlKind(old) {
		return nil, fmt.Errorf("%q is of type %s, the key holds a value of type %s", s, tomlKind(v), tomlKind(old))
	}
	return v, nil
}

func parseTOMLValue(s string) (any, bool) {
	var m map[string]any
	if _, err := toml.Decode("v = "+s, &m); err != nil {
		return nil, false
	}
	v, ok := m["v"]
	return v, ok
}

func tomlKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// encodeOrdered encodes doc with the top-level tables in topOrder (the
// rest after them, sorted by the encoder).
func encodeOrdered(doc map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by 'shoal config set' (comments of the previous version are not kept).\n")
	rest := map[string]any{}
	for k, v := range doc {
		rest[k] = v
	}
	enc := func(m map[string]any) error {
		if len(m) == 0 {
			return nil
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		return toml.NewEncoder(&b).Encode(m)
	}
	ordered := map[string]any{}
	for _, k := range topOrder {
		if v, ok := rest[k]; ok {
			ordered[k] = v
			delete(rest, k)
		}
	}
	// Keys outside the schema first (decoding will name them), so that a
	// plain key never lands under another table's header.
	if err := enc(rest); err != nil {
		return nil, fmt.Errorf("set: encode: %w", err)
	}
	for _, k := range topOrder {
		if v, ok := ordered[k]; ok {
			if err := enc(map[string]any{k: v}); err != nil {
				return nil, fmt.Errorf("set: encode %s: %w", k, err)
			}
		}
	}
	return b.Bytes(), nil
}
