package firstboot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// SeedFile is the file name looked for on a seed drive, and
// /etc/shoal/seed.toml the one looked for in the image itself.
const (
	SeedFile      = "shoal-seed.toml"
	LocalSeedPath = "etc/shoal/seed.toml"
)

// SeedLabels are the file-system labels of seed drives: a NoCloud drive
// (CIDATA) or a partition or stick labelled SHOALSEED. The appliance's own
// ESP (partition label "esp") is also searched, so a seed can be copied
// onto the disk image before its first boot.
var SeedLabels = []string{"by-label/CIDATA", "by-label/cidata", "by-label/SHOALSEED", "by-partlabel/esp"}

// FindSeed returns the first seed found: /etc/shoal/seed.toml, then each
// seed drive (mounted read-only on a temporary directory with the Runner).
// found is false when there is none; a seed that exists but does not parse
// is an error.
func (s *System) FindSeed(ctx context.Context) (seed Seed, source string, found bool, err error) {
	if data, err := os.ReadFile(s.path(LocalSeedPath)); err == nil {
		sd, err := ParseSeed("/"+LocalSeedPath, data)
		return sd, "/" + LocalSeedPath, err == nil, err
	}
	for _, l := range SeedLabels {
		dev := s.path(filepath.Join("dev/disk", l))
		if _, err := os.Stat(dev); err != nil {
			continue
		}
		sd, ok, err := s.seedFromDevice(ctx, dev)
		if err != nil {
			return Seed{}, dev, false, err
		}
		if ok {
			return sd, dev, true, nil
		}
	}
	return Seed{}, "", false, nil
}

func (s *System) seedFromDevice(ctx context.Context, dev string) (Seed, bool, error) {
	// Under /run, not /tmp: at first boot systemd-tmpfiles may be
	// emptying /tmp at the same moment.
	base := s.path("run")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return Seed{}, false, fmt.Errorf("read seed drive %s: %w", dev, err)
	}
	dir, err := os.MkdirTemp(base, "shoal-seed-")
	if err != nil {
		return Seed{}, false, fmt.Errorf("read seed drive %s: %w", dev, err)
	}
	defer func() { _ = os.Remove(dir) }()
	if err := s.Run.Run(ctx, "", "mount", "-o", "ro", dev, dir); err != nil {
		s.logf("seed: cannot mount %s: %v", dev, err)
		return Seed{}, false, nil
	}
	defer func() { _ = s.Run.Run(context.WithoutCancel(ctx), "", "umount", dir) }()
	data, err := os.ReadFile(filepath.Join(dir, SeedFile))
	if os.IsNotExist(err) {
		// a plain NoCloud drive: take its host name only
		if meta, err := os.ReadFile(filepath.Join(dir, "meta-data")); err == nil {
			if h := nocloudHostname(meta); h != "" {
				sd := Seed{Hostname: h}
				if err := sd.Validate(); err != nil {
					return Seed{}, false, fmt.Errorf("seed %s meta-data: %w", dev, err)
				}
				return sd, true, nil
			}
		}
		return Seed{}, false, nil
	}
	if err != nil {
		return Seed{}, false, fmt.Errorf("read seed %s: %w", dev, err)
	}
	sd, err := ParseSeed(dev+":"+SeedFile, data)
	if err != nil {
		return Seed{}, false, err
	}
	return sd, true, nil
}
