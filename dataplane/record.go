package dataplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// RecordFile is the name of the state record inside Options.StateDir.
const RecordFile = "dataplane-addresses.json"

// recordVersion is the format version of the state record.
const recordVersion = 1

// labelSuffix marks an IPv4 address as Shoal's (see Label).
const labelSuffix = ":sh"

// maxLabelLen is the longest IPv4 address label (IFNAMSIZ - 1).
const maxLabelLen = 15

// Label returns the IPv4 address label Shoal gives its traffic IPs on
// interface ifname: "<ifname>:sh" (the kernel and iproute2 want a label to
// start with the interface name and fit in 15 bytes). An interface name
// longer than 12 bytes leaves no room: Label returns "" and such addresses
// are known as Shoal's by the state record only, like IPv6 addresses, which
// have no labels.
func Label(ifname string) string {
	l := ifname + labelSuffix
	if len(l) > maxLabelLen {
		return ""
	}
	return l
}

// isShoalLabel reports whether label is one Label would give some interface.
func isShoalLabel(label string) bool {
	return len(label) > len(labelSuffix) && strings.HasSuffix(label, labelSuffix)
}

// recordEntry is one address in the state record.
type recordEntry struct {
	Group     string       `json:"group"`
	Interface string       `json:"interface"`
	Prefix    netip.Prefix `json:"prefix"`
	Since     time.Time    `json:"since"`
}

// record is the state record: every address this node raised (or is about
// to raise) and has not yet seen removed.
type record struct {
	Version   int           `json:"version"`
	Written   time.Time     `json:"written"`
	Addresses []recordEntry `json:"addresses"`
}

// readRecord reads the state record in dir. A missing file is an empty
// record. A file that cannot be decoded is moved aside (kept for the
// operator, never deleted) and reported as an error with an empty record.
func readRecord(dir string) ([]recordEntry, error) {
	path := filepath.Join(dir, RecordFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state record %s: %w", path, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Version != recordVersion {
		if err == nil {
			err = fmt.Errorf("unknown version %d", r.Version)
		}
		bad := path + ".bad-" + time.Now().UTC().Format("20060102T150405")
		if rerr := os.Rename(path, bad); rerr != nil {
			return nil, errors.Join(fmt.Errorf("decode state record %s: %w", path, err), rerr)
		}
		return nil, fmt.Errorf("decode state record %s (moved to %s): %w", path, bad, err)
	}
	for i, e := range r.Addresses {
		if !e.Prefix.IsValid() || e.Interface == "" {
			return nil, fmt.Errorf("decode state record %s: address %d: invalid prefix or interface", path, i)
		}
	}
	return r.Addresses, nil
}

// writeRecord replaces the state record in dir atomically: write a
// temporary file and rename it over the record.
//
// No fsync: the record is written ahead of every raise, on the failover
// path, and an fsync there costs whatever the disk makes it (over a second
// was seen on a busy VM, delaying a failback by as much). It is not needed
// either: the record lets a restarted agent recognise addresses a crashed
// one left in the kernel, and a process crash keeps the page cache; a
// kernel crash or power loss takes the addresses with it, and a record torn
// by one is detected and moved aside by readRecord.
func writeRecord(dir string, entries []recordEntry) error {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b recordEntry) int {
		if c := strings.Compare(a.Interface, b.Interface); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	b, err := json.MarshalIndent(record{Version: recordVersion, Written: time.Now().UTC(), Addresses: entries}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state record: %w", err)
	}
	path := filepath.Join(dir, RecordFile)
	f, err := os.CreateTemp(dir, RecordFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("write state record %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("write state record %s: %w", path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write state record %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write state record %s: %w", path, err)
	}
	return nil
}
