package clusterinit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shoal-project/shoal/confsync/identity"
)

// File names `shoal init` and `shoal join` write in the config dir.
const (
	AgentFileName   = "agent.toml"
	ClusterFileName = "cluster.toml"
	KeyFileName     = "node.key"
	SecretFileName  = "cluster.secret"
)

// Defaults of the directories.
const (
	DefaultDir     = "/etc/shoal"
	DefaultDataDir = "/var/lib/shoal"
)

// ErrExists means a file init or join would write is already there; nothing
// was written.
var ErrExists = errors.New("already exists (refusing to overwrite)")

// Paths are the files of one node's configuration.
type Paths struct {
	Dir     string // config dir
	Agent   string // agent file
	Cluster string // initial cluster config
	Key     string // node key
	Secret  string // cluster secret
	DataDir string // agent data_dir
}

func pathsOf(dir, dataDir string) Paths {
	if dir == "" {
		dir = DefaultDir
	}
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	return Paths{
		Dir: dir, DataDir: dataDir,
		Agent: filepath.Join(dir, AgentFileName), Cluster: filepath.Join(dir, ClusterFileName),
		Key: filepath.Join(dir, KeyFileName), Secret: filepath.Join(dir, SecretFileName),
	}
}

// mustNotExist returns an error wrapping ErrExists naming every path that
// exists.
func mustNotExist(paths ...string) error {
	var there []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			there = append(there, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if len(there) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(there, ", "), ErrExists)
	}
	return nil
}

// writer writes new files (never over existing ones) and can undo what it
// wrote, so a failure half way leaves nothing behind.
type writer struct{ written []string }

func (w *writer) file(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, ErrExists)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	w.written = append(w.written, path)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (w *writer) key(path string, k ed25519.PrivateKey) error {
	if err := identity.SavePrivateKey(path, k); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, ErrExists)
		}
		return err
	}
	w.written = append(w.written, path)
	return nil
}

// undo removes what was written (in reverse order) and any extra paths.
func (w *writer) undo(extra ...string) {
	for i := len(w.written) - 1; i >= 0; i-- {
		_ = os.Remove(w.written[i])
	}
	for _, p := range extra {
		_ = os.RemoveAll(p)
	}
}

// AgentFile is what init and join write into the agent file.
type AgentFile struct {
	Node      string
	Bind      string // this node's address
	Interface string // heartbeat_interface ("" = kernel chooses)
	DataDir   string
	Socket    string // "" = the default socket
	Comment   string // first line, without "# "
}

// Render returns the agent file (paths relative to its directory).
func (a AgentFile) Render() []byte {
	var b strings.Builder
	q := strconv.Quote
	if a.Comment != "" {
		fmt.Fprintf(&b, "# %s\n", a.Comment)
	}
	b.WriteString("# Node-local agent file (never replicated); see docs/CONFIG.md.\n")
	fmt.Fprintf(&b, "node = %s\n", q(a.Node))
	fmt.Fprintf(&b, "cluster_config = %s\n", q(ClusterFileName))
	fmt.Fprintf(&b, "data_dir = %s\n", q(a.DataDir))
	fmt.Fprintf(&b, "key_file = %s\n", q(KeyFileName))
	fmt.Fprintf(&b, "secret_file = %s\n", q(SecretFileName))
	fmt.Fprintf(&b, "bind = %s\n", q(a.Bind))
	if a.Interface != "" {
		fmt.Fprintf(&b, "heartbeat_interface = %s\n", q(a.Interface))
	}
	if a.Socket != "" {
		fmt.Fprintf(&b, "socket = %s\n", q(a.Socket))
	}
	b.WriteString("log_level = \"info\"\nlog_format = \"console\"\n")
	return []byte(b.String())
}
