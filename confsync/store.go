package confsync

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Data dir layout:
//
//	HEAD                                  id of the current version, hex + "\n"
//	versions/<counter:020d>-<id hex>.rec  one Record per version (EncodeRecord)
//	quarantine/<file>.<unix ns>           records that failed their integrity check
//
// Every file is written atomically: a temp file in the same directory
// (".tmp-" prefix), fsync, rename over the final name, fsync the directory.
// A new version is written record first, HEAD second, so a crash at any
// point leaves HEAD naming a complete, synced record. Temp files left by a
// crash are removed by OpenStore.
const (
	headFile      = "HEAD"
	versionsDir   = "versions"
	quarantineDir = "quarantine"
	tmpPrefix     = ".tmp-"
	recordExt     = ".rec"
)

// ErrNoHead means the data dir holds no current version yet.
var ErrNoHead = errors.New("no current version")

// Store is the on-disk version store of one node. It is not safe for
// concurrent use; Node serialises access.
type Store struct {
	dir string
	// failpoint, when set (tests only), is called at each step of an atomic
	// write; a non-nil error aborts the write as a crash would: no cleanup.
	failpoint func(step string) error
}

// BadFile is a record that failed its integrity check and was quarantined.
type BadFile struct {
	Name  string // file name under versions/
	ID    ID     // the ID its name claims (zero if the name is unreadable)
	Err   error
	Moved string // path under quarantine/
}

// OpenStore opens (creating if needed) the data dir and removes temp files
// left by an interrupted write.
func OpenStore(dir string) (*Store, error) {
	s := &Store{dir: dir}
	for _, d := range []string{dir, filepath.Join(dir, versionsDir), filepath.Join(dir, quarantineDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open config store: %w", err)
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("open config store: %w", err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				if err := os.Remove(filepath.Join(d, e.Name())); err != nil {
					return nil, fmt.Errorf("open config store: remove temp file: %w", err)
				}
			}
		}
	}
	return s, nil
}

// Dir returns the data dir.
func (s *Store) Dir() string { return s.dir }

func recordName(v Version) string {
	return fmt.Sprintf("%020d-%s%s", v.Counter, v.ID(), recordExt)
}

func parseRecordName(name string) (uint64, ID, bool) {
	base, ok := strings.CutSuffix(name, recordExt)
	if !ok {
		return 0, ID{}, false
	}
	c, h, ok := strings.Cut(base, "-")
	if !ok {
		return 0, ID{}, false
	}
	n, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return 0, ID{}, false
	}
	id, err := ParseID(h)
	if err != nil {
		return 0, ID{}, false
	}
	return n, id, true
}

// Put writes a record atomically (replacing any record of the same version,
// e.g. to change its status).
func (s *Store) Put(r Record) error {
	if err := s.writeAtomic(filepath.Join(s.dir, versionsDir), recordName(r.Version), EncodeRecord(r)); err != nil {
		return fmt.Errorf("store version %s: %w", r.Version.ID().Short(), err)
	}
	return nil
}

// SetHead atomically points HEAD at id.
func (s *Store) SetHead(id ID) error {
	if err := s.writeAtomic(s.dir, headFile, []byte(id.String()+"\n")); err != nil {
		return fmt.Errorf("set current version %s: %w", id.Short(), err)
	}
	return nil
}

// ReadHead returns the ID HEAD names, or ErrNoHead.
func (s *Store) ReadHead() (ID, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, headFile))
	if errors.Is(err, os.ErrNotExist) {
		return ID{}, ErrNoHead
	}
	if err != nil {
		return ID{}, fmt.Errorf("read HEAD: %w", err)
	}
	id, err := ParseID(string(bytes.TrimSpace(b)))
	if err != nil {
		return ID{}, fmt.Errorf("read HEAD: %w: %w", ErrCorrupt, err)
	}
	return id, nil
}

// Load reads every record, checks each against its file name (ID) and
// content hash, and moves those that fail to quarantine/. Records come back
// sorted by (counter, origin, ID).
func (s *Store) Load() ([]Record, []BadFile, error) {
	dir := filepath.Join(s.dir, versionsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("load config store: %w", err)
	}
	var recs []Record
	var bad []BadFile
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) || e.IsDir() {
			continue
		}
		r, id, err := s.readRecord(name)
		if err == nil {
			recs = append(recs, r)
			continue
		}
		bf := BadFile{Name: name, ID: id, Err: err}
		if bf.Moved, err = s.quarantine(name); err != nil {
			return nil, nil, err
		}
		bad = append(bad, bf)
	}
	slices.SortFunc(recs, func(a, b Record) int {
		if a.Version.Less(b.Version) {
			return -1
		}
		if b.Version.Less(a.Version) {
			return 1
		}
		return 0
	})
	return recs, bad, nil
}

// Check re-reads one stored record and verifies it; a record that fails is
// quarantined and reported as a BadFile.
func (s *Store) Check(v Version) (*BadFile, error) {
	name := recordName(v)
	if _, _, err := s.readRecord(name); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &BadFile{Name: name, ID: v.ID(), Err: err}, nil
		}
		bf := &BadFile{Name: name, ID: v.ID(), Err: err}
		moved, qerr := s.quarantine(name)
		if qerr != nil {
			return nil, qerr
		}
		bf.Moved = moved
		return bf, nil
	}
	return nil, nil
}

func (s *Store) readRecord(name string) (Record, ID, error) {
	counter, id, ok := parseRecordName(name)
	if !ok {
		return Record{}, ID{}, fmt.Errorf("%w: unexpected file name %q", ErrCorrupt, name)
	}
	f, err := os.Open(filepath.Join(s.dir, versionsDir, name))
	if err != nil {
		return Record{}, id, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxContentSize+64<<10))
	if err != nil {
		return Record{}, id, err
	}
	r, err := DecodeRecord(b)
	if err != nil {
		return Record{}, id, err
	}
	if got := r.Version.ID(); got != id || r.Version.Counter != counter {
		return Record{}, id, fmt.Errorf("%w: header hashes to %s, file name says %s", ErrCorrupt, got.Short(), id.Short())
	}
	return r, id, nil
}

// Remove deletes a stored record (retention).
func (s *Store) Remove(v Version) error {
	err := os.Remove(filepath.Join(s.dir, versionsDir, recordName(v)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove version %s: %w", v.ID().Short(), err)
	}
	return nil
}

func (s *Store) quarantine(name string) (string, error) {
	to := filepath.Join(s.dir, quarantineDir, fmt.Sprintf("%s.%d", name, time.Now().UnixNano()))
	if err := os.Rename(filepath.Join(s.dir, versionsDir, name), to); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", name, err)
	}
	if err := syncDir(filepath.Join(s.dir, quarantineDir)); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", name, err)
	}
	return to, nil
}

func (s *Store) fail(step string) error {
	if s.failpoint == nil {
		return nil
	}
	return s.failpoint(step)
}

// writeAtomic writes data to dir/name: temp file, fsync, rename, fsync dir.
func (s *Store) writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+name+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	cleanup := func() { f.Close(); os.Remove(tmp) }
	if _, err := f.Write(data); err != nil {
		cleanup()
		return err
	}
	if err := s.fail("written:" + name); err != nil {
		return err // simulated crash: the temp file stays
	}
	if err := f.Sync(); err != nil {
		cleanup()
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := s.fail("synced:" + name); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := s.fail("renamed:" + name); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Install writes one version into a data dir as its current version. It is
// how a joining node (JoinResult) or an operator seeds a data dir; the
// version's content hash is checked, its signature is the caller's concern.
func Install(dir string, v Version, content []byte) error {
	if HashContent(content) != v.ContentHash {
		return fmt.Errorf("install version %s: %w", v.ID().Short(), ErrContentMismatch)
	}
	s, err := OpenStore(dir)
	if err != nil {
		return err
	}
	if err := s.Put(Record{Version: v, Content: content, Status: StatusApplied}); err != nil {
		return err
	}
	return s.SetHead(v.ID())
}
