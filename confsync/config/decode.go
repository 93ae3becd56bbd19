package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// errs collects errors for one file.
type errs struct {
	file string
	loc  *locator
	list []*Error
}

// where names a table instance for messages and for the locator.
type where struct {
	table   string // TOML table path: "cluster", "group", "events.action", "" for top level
	index   int    // index among tables of that name (arrays of tables)
	section string // for messages: `group "web"`, `cluster`, ""
}

func (e *errs) add(w where, key, value, format string, a ...any) {
	line := e.loc.value(w.table, w.index, key, value)
	e.list = append(e.list, &Error{File: e.file, Line: line, Section: w.section, Key: key, Msg: fmt.Sprintf(format, a...)})
}

func (e *errs) err() error {
	if len(e.list) == 0 {
		return nil
	}
	sort.SliceStable(e.list, func(i, j int) bool {
		li, lj := e.list[i].Line, e.list[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	out := make([]error, len(e.list))
	for i, x := range e.list {
		out[i] = x
	}
	return errors.Join(out...)
}

// decodeStrict decodes src into v (a pointer to a raw struct). It first
// decodes into a generic map and checks every key and value type against v's
// type, so that all unknown keys and type mismatches are reported with
// their lines; then it decodes into v.
func decodeStrict(e *errs, src []byte, v any, section func(table string, index int, m map[string]any) where) bool {
	var generic map[string]any
	if _, err := toml.Decode(string(src), &generic); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.list = append(e.list, &Error{File: e.file, Line: pe.Position.Line, Msg: pe.Message})
		} else {
			e.list = append(e.list, &Error{File: e.file, Msg: err.Error()})
		}
		return false
	}
	before := len(e.list)
	checkTable(e, generic, reflect.TypeOf(v).Elem(), "", 0, section("", 0, generic), section)
	if len(e.list) > before {
		return false
	}
	md, err := toml.Decode(string(src), v)
	if err != nil {
		// The type check above should make this unreachable.
		e.list = append(e.list, &Error{File: e.file, Msg: err.Error()})
		return false
	}
	for _, k := range md.Undecoded() {
		e.list = append(e.list, &Error{File: e.file, Key: k.String(), Msg: "unknown key"})
	}
	return len(e.list) == before
}

// tomlFields maps toml tags to struct fields.
func tomlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if tag := f.Tag.Get("toml"); tag != "" && tag != "-" {
			out[strings.Split(tag, ",")[0]] = f
		}
	}
	return out
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}

func wantType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int64, reflect.Int:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	case reflect.Struct, reflect.Map:
		return "a table"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "an array of tables"
		}
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(wantType(t.Elem()), "a "), "an ") + "s"
	}
	return t.String()
}

// checkTable checks the keys and value types of table m against struct t.
func checkTable(e *errs, m map[string]any, t reflect.Type, path string, index int, w where, section func(string, int, map[string]any) where) {
	fields := tomlFields(t)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := m[k]
		f, ok := fields[k]
		if !ok {
			e.add(w, k, "", "unknown key")
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		sub := k
		if path != "" {
			sub = path + "." + k
		}
		switch ft.Kind() {
		case reflect.Struct:
			tm, ok := val.(map[string]any)
			if !ok {
				e.add(w, k, "", "want %s, got %s", wantType(ft), tomlType(val))
				continue
			}
			checkTable(e, tm, ft, sub, 0, section(sub, 0, tm), section)
		case reflect.Slice:
			if ft.Elem().Kind() == reflect.Struct {
				arr, ok := tablesOf(val)
				if !ok {
					e.add(w, k, "", "want %s, got %s", wantType(ft), tomlType(val))
					continue
				}
				for i, tm := range arr {
					checkTable(e, tm, ft.Elem(), sub, i, section(sub, i, tm), section)
				}
				continue
			}
			arr, ok := val.([]any)
			if !ok {
				e.add(w, k, "", "want %s, got %s", wantType(ft), tomlType(val))
				continue
			}
			for _, x := range arr {
				if !scalarOK(ft.Elem(), x) {
					e.add(w, k, "", "want %s, got an element that is %s", wantType(ft), tomlType(x))
					break
				}
			}
		case reflect.Map:
			tm, ok := val.(map[string]any)
			if !ok {
				e.add(w, k, "", "want %s, got %s", wantType(ft), tomlType(val))
				continue
			}
			for mk, x := range tm {
				if !scalarOK(ft.Elem(), x) {
					e.add(w, k, "", "%q: want %s, got %s", mk, wantType(ft.Elem()), tomlType(x))
				}
			}
		default:
			if !scalarOK(ft, val) {
				e.add(w, k, "", "want %s, got %s", wantType(ft), tomlType(val))
			}
		}
	}
}

// tablesOf returns an array of tables, written as [[x]] headers or as an
// inline array of inline tables.
func tablesOf(v any) ([]map[string]any, bool) {
	switch a := v.(type) {
	case []map[string]any:
		return a, true
	case []any:
		out := make([]map[string]any, len(a))
		for i, x := range a {
			m, ok := x.(map[string]any)
			if !ok {
				return nil, false
			}
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

func scalarOK(t reflect.Type, v any) bool {
	switch t.Kind() {
	case reflect.String:
		_, ok := v.(string)
		return ok
	case reflect.Int64, reflect.Int:
		_, ok := v.(int64)
		return ok
	case reflect.Bool:
		_, ok := v.(bool)
		return ok
	}
	return false
}

// clusterSection names table instances of the cluster config.
func clusterSection(table string, index int, m map[string]any) where {
	w := where{table: table, index: index, section: table}
	name, _ := m["name"].(string)
	switch table {
	case "member", "group", "observer":
		if name != "" {
			w.section = fmt.Sprintf("%s %q", table, name)
		} else {
			w.section = fmt.Sprintf("%s #%d", table, index+1)
		}
	case "admin.user":
		if name != "" {
			w.section = fmt.Sprintf("admin user %q", name)
		} else {
			w.section = fmt.Sprintf("admin user #%d", index+1)
		}
	case "events.action":
		if name != "" {
			w.section = fmt.Sprintf("action %q", name)
		} else {
			w.section = fmt.Sprintf("action #%d", index+1)
		}
	}
	return w
}

// Load reads and validates a cluster config file.
func Load(path string) (*Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load cluster config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a cluster config; name is used in errors.
// The error, if any, joins one *Error per problem (see Errors).
func Parse(name string, data []byte) (*Cluster, error) {
	e := &errs{file: name, loc: newLocator(data)}
	var raw rawCluster
	if !decodeStrict(e, data, &raw, clusterSection) {
		return nil, e.err()
	}
	c := convertCluster(e, &raw)
	c.File = name
	if err := e.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadAgent reads and validates an agent file, resolving relative paths
// against the file's directory.
func LoadAgent(path string) (*Agent, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load agent file: %w", err)
	}
	return ParseAgent(path, data, filepath.Dir(path))
}

// ParseAgent decodes and validates an agent file; relative paths are made
// relative to dir.
func ParseAgent(name string, data []byte, dir string) (*Agent, error) {
	e := &errs{file: name, loc: newLocator(data)}
	var raw rawAgent
	if !decodeStrict(e, data, &raw, func(table string, index int, _ map[string]any) where {
		return where{table: table, index: index, section: table}
	}) {
		return nil, e.err()
	}
	a := convertAgent(e, &raw, dir)
	a.File = name
	if err := e.err(); err != nil {
		return nil, err
	}
	return a, nil
}
