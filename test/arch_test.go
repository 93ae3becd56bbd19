package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The architecture rules (docs/ARCHITECTURE.md): which package may import
// which library, and which way the arrows between project packages point.
// The same ownership rules are in .golangci.yaml (depguard) for editors and
// `make lint`; this test runs them in plain `go test`.

const module = "github.com/shoal-project/shoal"

// owners: a library may be imported only from the named top-level folder
// (and its subpackages).
var owners = []struct{ lib, owner string }{
	{"github.com/hashicorp/serf", "gossip"},
	{"github.com/hashicorp/memberlist", "gossip"},
	{"github.com/vishvananda/netlink", "dataplane"},
	{"github.com/mdlayher/arp", "dataplane"},
	{"github.com/mdlayher/ndp", "dataplane"},
	{"github.com/mdlayher/packet", "dataplane"},
	{"github.com/cilium/ebpf", "bpf"},
}

// exempt folders: test/ holds the cross-package harness (network
// namespaces), which may use kernel libraries to build its fixtures.
var exempt = []string{"test"}

// forbidden project imports: folder -> folders it must never import.
var forbidden = map[string][]string{
	"gossip":    {"appliance", "cmd", "confsync", "allocate", "dataplane", "bpf"},
	"confsync":  {"appliance", "cmd"},
	"allocate":  {"appliance", "cmd", "gossip", "confsync", "dataplane", "bpf"},
	"dataplane": {"appliance", "cmd", "gossip", "confsync", "allocate"},
	"bpf":       {"appliance", "cmd", "gossip", "confsync", "allocate", "dataplane"},
}

// allocateDenied are standard packages the pure allocator must not use:
// I/O, clocks, logging, randomness, unsafe.
var allocateDenied = []string{"os", "net", "time", "log", "syscall", "io/ioutil", "io/fs", "unsafe", "crypto/rand", "math/rand", "runtime", "path/filepath", "context"}

// pkgImports is the part of `go list -json` the checker needs.
type pkgImports struct {
	ImportPath string
	Imports    []string
}

// hasPath reports whether p is path or inside it.
func hasPath(p, path string) bool {
	return p == path || strings.HasPrefix(p, path+"/")
}

// area returns the top-level folder of a project package ("" if outside).
func area(importPath string) string {
	rel, ok := strings.CutPrefix(importPath, module+"/")
	if !ok {
		return ""
	}
	return strings.Split(rel, "/")[0]
}

func isStd(p string) bool {
	return !strings.Contains(strings.Split(p, "/")[0], ".")
}

// checkArch returns one line per broken rule.
func checkArch(pkgs []pkgImports) []string {
	var out []string
	for _, p := range pkgs {
		a := area(p.ImportPath)
		isExempt := false
		for _, e := range exempt {
			isExempt = isExempt || a == e
		}
		for _, imp := range p.Imports {
			if !isExempt {
				for _, o := range owners {
					if hasPath(imp, o.lib) && a != o.owner {
						out = append(out, fmt.Sprintf("%s imports %s: only %s/ may", p.ImportPath, imp, o.owner))
					}
				}
			}
			for _, f := range forbidden[a] {
				if hasPath(imp, module+"/"+f) {
					out = append(out, fmt.Sprintf("%s imports %s: %s/ must not import %s/", p.ImportPath, imp, a, f))
				}
			}
			if a != "allocate" {
				continue
			}
			switch {
			case strings.HasPrefix(imp, module+"/"):
				if area(imp) != "allocate" {
					out = append(out, fmt.Sprintf("%s imports %s: allocate/ imports no project package", p.ImportPath, imp))
				}
			case !isStd(imp):
				out = append(out, fmt.Sprintf("%s imports %s: allocate/ imports the standard library only", p.ImportPath, imp))
			case imp == "net/netip":
			default:
				for _, d := range allocateDenied {
					if hasPath(imp, d) {
						out = append(out, fmt.Sprintf("%s imports %s: allocate/ is pure (no I/O, clock, logging, randomness)", p.ImportPath, imp))
					}
				}
			}
		}
	}
	return out
}

// goList runs `go list -e -json ./...` at the module root.
func goList(t *testing.T) []pkgImports {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Error", "./...")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkgImports
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkgImports
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestArchitecture(t *testing.T) {
	pkgs := goList(t)
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.ImportPath] = true
	}
	if !seen[module+"/allocate"] || !seen[module+"/cmd/shoal"] {
		t.Fatalf("go list found %d packages but not allocate/ and cmd/shoal", len(pkgs))
	}
	for _, v := range checkArch(pkgs) {
		t.Error(v)
	}
}

// TestArchCheckerCatchesViolations proves each rule fires on a synthetic
// import list, and stays quiet on a clean one.
func TestArchCheckerCatchesViolations(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	clean := []pkgImports{
		{m("gossip"), []string{"github.com/hashicorp/serf/serf", "github.com/hashicorp/memberlist"}},
		{m("dataplane/multihost"), []string{"github.com/vishvananda/netlink", "github.com/mdlayher/packet", m("bpf")}},
		{m("bpf"), []string{"github.com/cilium/ebpf/link"}},
		{m("allocate"), []string{"net/netip", "sort", "hash/fnv", "sync", "math/bits"}},
		{m("confsync/config"), []string{m("confsync/identity"), "os"}},
		{m("appliance"), []string{m("gossip"), m("confsync"), m("allocate"), m("dataplane")}},
		{m("cmd/shoal"), []string{m("appliance")}},
		{m("test/harness"), []string{"github.com/vishvananda/netlink"}},
	}
	if got := checkArch(clean); len(got) != 0 {
		t.Errorf("checkArch(clean) = %q, want none", got)
	}
	bad := []pkgImports{
		{m("appliance"), []string{"github.com/hashicorp/memberlist"}},
		{m("confsync"), []string{"github.com/hashicorp/serf/client", m("appliance")}},
		{m("gossip"), []string{m("confsync/config")}},
		{m("dataplane"), []string{m("allocate"), "github.com/cilium/ebpf"}},
		{m("bpf/gen"), []string{"github.com/mdlayher/arp"}},
		{m("allocate"), []string{"os", "net", "time", "log/slog", "github.com/google/go-cmp/cmp", m("confsync/config"), "net/netip"}},
		{m("cmd/shoal"), []string{"github.com/vishvananda/netlink"}},
	}
	want := []string{
		m("appliance") + " imports github.com/hashicorp/memberlist: only gossip/ may",
		m("confsync") + " imports github.com/hashicorp/serf/client: only gossip/ may",
		m("confsync") + " imports " + m("appliance") + ": confsync/ must not import appliance/",
		m("gossip") + " imports " + m("confsync/config") + ": gossip/ must not import confsync/",
		m("dataplane") + " imports " + m("allocate") + ": dataplane/ must not import allocate/",
		m("dataplane") + " imports github.com/cilium/ebpf: only bpf/ may",
		m("bpf/gen") + " imports github.com/mdlayher/arp: only dataplane/ may",
		m("allocate") + " imports os: allocate/ is pure (no I/O, clock, logging, randomness)",
		m("allocate") + " imports net: allocate/ is pure (no I/O, clock, logging, randomness)",
		m("allocate") + " imports time: allocate/ is pure (no I/O, clock, logging, randomness)",
		m("allocate") + " imports log/slog: allocate/ is pure (no I/O, clock, logging, randomness)",
		m("allocate") + " imports github.com/google/go-cmp/cmp: allocate/ imports the standard library only",
		m("allocate") + " imports " + m("confsync/config") + ": allocate/ must not import confsync/",
		m("allocate") + " imports " + m("confsync/config") + ": allocate/ imports no project package",
		m("cmd/shoal") + " imports github.com/vishvananda/netlink: only dataplane/ may",
	}
	if diff := cmp.Diff(want, checkArch(bad)); diff != "" {
		t.Errorf("checkArch(bad) (-want +got):\n%s", diff)
	}
}
