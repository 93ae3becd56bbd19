package confsync

import (
	"fmt"

	"github.com/shoal-project/shoal/confsync/config"
)

// Adapters from the schema package (confsync/config) to the functions a
// Node takes. The core above does not depend on them; the agent wires them:
//
//	confsync.Options{
//		Authority: confsync.ConfigAuthority,
//		Validate:  confsync.ConfigValidator("cluster.toml", extraChecks),
//	}

// ConfigAuthority derives membership from a cluster config with the full
// schema (config.Parse of the base config, [location.*] removed).
func ConfigAuthority(content []byte) (Authority, error) {
	base, err := Resolve(content, "")
	if err != nil {
		return nil, err
	}
	c, err := config.Parse("cluster config", base)
	if err != nil {
		return nil, fmt.Errorf("read members: %w", err)
	}
	out := make(StaticAuthority, 0, len(c.Members))
	for _, m := range c.Members {
		out = append(out, Member{
			Name: m.Name, PublicKey: m.PublicKey, CanUpdate: m.CanUpdate,
			Location: m.Location, Address: m.Address.String(),
		})
	}
	return out, nil
}

// ConfigValidator returns a Validate function: config.Parse of the base
// config and of every location's resolved config (errors name file, line
// and key; for a location with overrides, the file is "<file> [location.X]"
// and lines refer to the resolved form), then extra (nil: none) on each
// parsed result, e.g. node-local checks.
func ConfigValidator(file string, extra func(location string, c *config.Cluster) error) func([]byte) error {
	return func(content []byte) error {
		return ValidateLocations(content, func(loc string, resolved []byte) error {
			name := file
			if loc != "" {
				name = fmt.Sprintf("%s [location.%s]", file, loc)
			}
			c, err := config.Parse(name, resolved)
			if err != nil {
				return err
			}
			if extra != nil {
				return extra(loc, c)
			}
			return nil
		})
	}
}

// ResolveConfig parses the config as the node in location sees it.
func ResolveConfig(file string, content []byte, location string) (*config.Cluster, error) {
	b, err := Resolve(content, location)
	if err != nil {
		return nil, err
	}
	name := file
	if location != "" {
		name = fmt.Sprintf("%s [location.%s]", file, location)
	}
	return config.Parse(name, b)
}
