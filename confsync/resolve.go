package confsync

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Multi-site overrides. A cluster config may carry per-location values:
//
//	[cluster]
//	multicast_group = "239.77.83.1"
//
//	[location.dc2.cluster]            # nodes whose member.location = "dc2"
//	multicast_group = "239.77.83.2"
//
//	[location.dc2.group.web]          # array-of-tables entries by name
//	interface = "eth1"
//
// Under [location.NAME] sit tables named like the top-level tables of the
// config. A plain table ([cluster], [selftest], [events]) is merged key by
// key, nested tables recursively; values (including arrays) replace. An
// array of tables whose entries have a name ([[group]]) is addressed by that
// name: [location.NAME.group.web] merges into the group called "web"; naming
// a group that does not exist is an error. [[member]] cannot be overridden
// (membership and keys are the same everywhere). Each node resolves the
// config for its own member.location; a location without overrides, and ""
// (no location), see the base config.

const locationKey = "location"

// ErrLocation marks an invalid [location.*] override.
var ErrLocation = errors.New("invalid location override")

// Resolve returns the config as a node in location sees it: the
// [location.*] tables removed and location's overrides merged in. When
// nothing is overridden for location the result keeps the original text
// with the [location.*] sections blanked, so line numbers stay true.
func Resolve(content []byte, location string) ([]byte, error) {
	doc, locs, err := splitLocations(content)
	if err != nil {
		return nil, err
	}
	if locs == nil {
		return content, nil // no [location] at all
	}
	over, ok := locs[location]
	if location == "" || !ok || len(over) == 0 {
		if b, ok := blankLocations(content, doc); ok {
			return b, nil
		}
		return encodeTOML(doc)
	}
	if err := overlay(doc, over, location); err != nil {
		return nil, err
	}
	return encodeTOML(doc)
}

// Locations lists the location names that have overrides, sorted.
func Locations(content []byte) ([]string, error) {
	_, locs, err := splitLocations(content)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(locs))
	for k := range locs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// ValidateLocations checks a config as every node will see it: the base
// (location "") and each location with overrides. validate receives the
// location and the resolved bytes; errors are joined, each prefixed with
// its location. If the base fails, only its errors are reported.
func ValidateLocations(content []byte, validate func(location string, resolved []byte) error) error {
	locs, err := Locations(content)
	if err != nil {
		return err
	}
	var errs []error
	for i, loc := range append([]string{""}, locs...) {
		if i > 0 && len(errs) > 0 {
			break // the base is broken: every location would repeat its errors
		}
		b, err := Resolve(content, loc)
		if err == nil {
			err = validate(loc, b)
		}
		if err != nil {
			if loc != "" {
				err = fmt.Errorf("[location.%s] resolved: %w", loc, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func splitLocations(content []byte) (map[string]any, map[string]map[string]any, error) {
	doc := map[string]any{}
	if _, err := toml.Decode(string(content), &doc); err != nil {
		return nil, nil, fmt.Errorf("resolve locations: %w", err)
	}
	raw, ok := doc[locationKey]
	if !ok {
		return doc, nil, nil
	}
	delete(doc, locationKey)
	tab, ok := raw.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("resolve locations: %w: %q must be a table of [location.NAME] tables", ErrLocation, locationKey)
	}
	locs := make(map[string]map[string]any, len(tab))
	for name, v := range tab {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("resolve locations: %w: location.%s must be a table", ErrLocation, name)
		}
		if !nameRE.MatchString(name) {
			return nil, nil, fmt.Errorf("resolve locations: %w: location name %q: want [A-Za-z0-9._-]", ErrLocation, name)
		}
		for k := range m {
			if k == "member" || k == locationKey {
				return nil, nil, fmt.Errorf("resolve locations: %w: location.%s.%s cannot be overridden", ErrLocation, name, k)
			}
		}
		locs[name] = m
	}
	return doc, locs, nil
}

func overlay(doc, over map[string]any, loc string) error {
	for _, k := range sortedMapKeys(over) {
		ov := over[k]
		switch base := doc[k].(type) {
		case []map[string]any:
			byName, ok := ov.(map[string]any)
			if !ok {
				return fmt.Errorf("resolve location %s: %w: location.%s.%s must hold one table per %s name", loc, ErrLocation, loc, k, k)
			}
			for _, name := range sortedMapKeys(byName) {
				patch, ok := byName[name].(map[string]any)
				if !ok {
					return fmt.Errorf("resolve location %s: %w: location.%s.%s.%s must be a table", loc, ErrLocation, loc, k, name)
				}
				i := slices.IndexFunc(base, func(e map[string]any) bool { return e["name"] == name })
				if i < 0 {
					return fmt.Errorf("resolve location %s: %w: location.%s.%s.%s: no %s named %q", loc, ErrLocation, loc, k, name, k, name)
				}
				if _, ok := patch["name"]; ok {
					return fmt.Errorf("resolve location %s: %w: location.%s.%s.%s: name cannot be overridden", loc, ErrLocation, loc, k, name)
				}
				merge(base[i], patch)
			}
		case map[string]any:
			patch, ok := ov.(map[string]any)
			if !ok {
				return fmt.Errorf("resolve location %s: %w: location.%s.%s must be a table", loc, ErrLocation, loc, k)
			}
			merge(base, patch)
		case nil:
			doc[k] = ov
		default:
			doc[k] = ov
		}
	}
	return nil
}

func merge(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

func sortedMapKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func encodeTOML(doc map[string]any) ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(doc); err != nil {
		return nil, fmt.Errorf("resolve locations: encode: %w", err)
	}
	return b.Bytes(), nil
}

// blankLocations replaces the lines of every [location...] section with
// empty lines, keeping line numbers. It reports false (use re-encoding)
// unless the result decodes to exactly want.
func blankLocations(content []byte, want map[string]any) ([]byte, bool) {
	lines := strings.SplitAfter(string(content), "\n")
	in := false
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			name := strings.TrimSpace(strings.Trim(strings.SplitN(t, "#", 2)[0], "[] \t"))
			in = name == locationKey || strings.HasPrefix(strings.ReplaceAll(name, " ", ""), locationKey+".")
		}
		if in {
			if strings.HasSuffix(l, "\n") {
				lines[i] = "\n"
			} else {
				lines[i] = ""
			}
		}
	}
	out := []byte(strings.Join(lines, ""))
	got := map[string]any{}
	if _, err := toml.Decode(string(out), &got); err != nil || !reflect.DeepEqual(got, want) {
		return nil, false
	}
	return out, true
}
