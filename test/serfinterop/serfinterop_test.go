package serfinterop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// prefix starts every namespace this package creates.
const prefix = "ssi-"

// serfVersion is the stock serf the test builds: the version in go.mod.
const serfVersion = "v0.11.0"

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth pairs and a bridge and runs shoal and serf agents in them")
	}
}

// shoalBinary is the binary under test: $SHOAL_BIN or a fresh build.
func shoalBinary(t *testing.T) string { return e2ekit.Binary(t) }

// proxyTrouble matches `go install` failures caused by the module proxy or
// the network rather than by the code.
var proxyTrouble = regexp.MustCompile(`(?i)proxy\.golang\.org|GOPROXY|dial tcp|no such host|connection refused|i/o timeout|TLS handshake|403 Forbidden|404 Not Found|410 Gone|unrecognized import path`)

// serfBinary returns the stock serf agent, built once with `go install
// github.com/hashicorp/serf/cmd/serf@v0.11.0` and cached next to the Go
// build cache ($(go env GOCACHE)/../shoal-serf/v0.11.0/serf), so reruns are
// fast. It skips loudly when the module proxy refuses the download.
func serfBinary(t *testing.T) string {
	t.Helper()
	gocache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil || strings.TrimSpace(string(gocache)) == "" || strings.TrimSpace(string(gocache)) == "off" {
		t.Fatalf("go env GOCACHE: %v (%q)", err, gocache)
	}
	dir := filepath.Join(filepath.Dir(strings.TrimSpace(string(gocache))), "shoal-serf", serfVersion)
	bin := filepath.Join(dir, "serf")
	// `serf version` of v0.11.0 says 0.10.2-dev; the build info is exact.
	if out, err := exec.Command("go", "version", "-m", bin).Output(); err == nil &&
		regexp.MustCompile(`(?m)^\s+mod\s+github\.com/hashicorp/serf\s+`+regexp.QuoteMeta(serfVersion)+`\s`).Match(out) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(dir, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/hashicorp/serf/cmd/serf@"+serfVersion)
	cmd.Dir = tmp // outside the Shoal module: `go install pkg@version` ignores go.mod anyway
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	start := time.Now()
	if msg, err := cmd.CombinedOutput(); err != nil {
		if proxyTrouble.Match(msg) {
			t.Skipf("SKIPPING SERF INTEROP: the Go module proxy refused github.com/hashicorp/serf/cmd/serf@%s: %v\n%s", serfVersion, err, msg)
		}
		t.Fatalf("go install github.com/hashicorp/serf/cmd/serf@%s: %v\n%s", serfVersion, err, msg)
	}
	if err := os.Rename(filepath.Join(tmp, "serf"), bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built stock serf %s into %s in %s", serfVersion, bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// status is the part of `shoal status --json` the test reads.
type status struct {
	View struct {
		Up []string `json:"up"`
	} `json:"view"`
	Heartbeats struct {
		AdmissionRefused uint64
	} `json:"heartbeats"`
}

// serfMember is one entry of `serf members -format json`.
type serfMember struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Status string `json:"status"`
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// readLines returns the lines of path (none when it does not exist yet).
func readLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestStockSerfObserver: a stock serf agent listed in [[observer]], keyed
// with `shoal keys gossip-key`, joins a 3-node Shoal cluster from the client
// namespace, sees every member alive, and exchanges user events both ways;
// it never enters Shoal's view; a stock agent not listed is refused.
func TestStockSerfObserver(t *testing.T) {
	needRoot(t)
	shoalBin := shoalBinary(t)
	serfBin := serfBinary(t)
	if _, err := harness.CleanupStale(prefix); err != nil {
		t.Logf("cleanup of stale namespaces: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()

	n, err := harness.New(ctx, harness.Options{Nodes: 3, Client: true, Prefix: prefix, KeepDir: os.Getenv("SHOAL_KEEP") != ""})
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	var cluster *shoalrun.Cluster
	t.Cleanup(func() {
		if cluster != nil {
			if t.Failed() {
				for i := range 3 {
					t.Logf("--- shoal agent node%d log:\n%s", i, shoalrun.Tail(cluster.Proc(i).Logs(), 4000))
				}
			}
			_ = cluster.Stop(2 * time.Second)
		}
		if t.Failed() {
			for _, name := range []string{"serf-ops", "serf-rogue"} {
				if b, err := os.ReadFile(filepath.Join(n.Dir(), name+".log")); err == nil {
					t.Logf("--- %s log:\n%s", name, shoalrun.Tail(string(b), 4000))
				}
			}
		}
		if err := n.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})

	dir := n.Dir()
	clientAddr := n.ClientAddr4().Addr()
	shoalEvents := filepath.Join(dir, "shoal-events.txt")
	obsEvents := filepath.Join(dir, "observer-events.txt")
	shoalHandler := filepath.Join(dir, "shoal-handler.sh")
	obsHandler := filepath.Join(dir, "observer-handler.sh")
	// serf's handler contract: SERF_EVENT, SERF_USER_EVENT, the payload on
	// stdin; one line per run.
	writeScript(t, shoalHandler, fmt.Sprintf("p=$(cat)\necho \"$SERF_SELF_NAME|$SERF_EVENT|$SERF_USER_EVENT|$p\" >> %s\n", shoalEvents))
	writeScript(t, obsHandler, fmt.Sprintf("p=$(cat)\necho \"$SERF_SELF_NAME|$SERF_EVENT|$SERF_USER_EVENT|$p\" >> %s\n", obsEvents))

	cluster, err = shoalrun.Start(n, shoalrun.Options{
		Binary:      shoalBin,
		ClusterName: "interop",
		Groups:      []shoalrun.Group{{Name: "web", IPs: []netip.Addr{netip.MustParseAddr("203.0.113.80")}}},
		ExtraTOML: fmt.Sprintf("[events]\nserf_handlers = [%q]\n\n[[observer]]\nname = \"ops-serf\"\naddress = %q\n",
			"user:deploy="+shoalHandler, clientAddr),
	})
	if err != nil {
		t.Fatalf("start shoal: %v", err)
	}
	files := cluster.Files
	nodes := []string{"node0", "node1", "node2"}

	// wait polls cond for one step: generous for a loaded machine, short
	// enough that a failing step reports well inside the overall deadline.
	wait := func(what string, cond func() (bool, error)) error {
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return harness.Wait(c, what, cond)
	}
	shoal := func(args ...string) ([]byte, error) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(c, shoalBin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("shoal %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.Bytes(), nil
	}
	statusOf := func(i int) (status, error) {
		var st status
		out, err := shoal("status", "--json", "--socket", files.Sockets[i])
		if err != nil {
			return st, err
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return st, fmt.Errorf("status of node%d: %w: %s", i, err, out)
		}
		return st, nil
	}
	waitViews := func(what string) {
		t.Helper()
		var last string
		err := wait(what, func() (bool, error) {
			if err := cluster.Exited(); err != nil {
				return false, harness.Abort(err)
			}
			for i := range 3 {
				st, err := statusOf(i)
				if err != nil {
					last = err.Error()
					return false, nil
				}
				if !slices.Equal(st.View.Up, nodes) {
					last = fmt.Sprintf("node%d view %v", i, st.View.Up)
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("%v (last: %s)", err, last)
		}
	}
	refused := func() (sum uint64, per []uint64) {
		for i := range 3 {
			st, err := statusOf(i)
			if err != nil {
				t.Fatalf("status: %v", err)
			}
			per = append(per, st.Heartbeats.AdmissionRefused)
			sum += st.Heartbeats.AdmissionRefused
		}
		return sum, per
	}
	waitViews("every node's view = node0..node2")
	t.Logf("shoal cluster up in %s", time.Since(start).Round(time.Millisecond))

	// The key for the stock agent, as a user gets it; it must be the key the
	// agents actually use (their keyring file).
	out, err := shoal("keys", "gossip-key", "--secret-file", files.Secret)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(out))
	ring, err := os.ReadFile(filepath.Join(files.DataDirs[0], "gossip", "serf.keyring"))
	if err != nil {
		t.Fatalf("node0 keyring: %v", err)
	}
	var ringKeys []string
	if err := json.Unmarshal(ring, &ringKeys); err != nil || len(ringKeys) == 0 || ringKeys[0] != key {
		t.Fatalf("shoal keys gossip-key = %q; node0's keyring holds %q (%v)", key, ring, err)
	}

	// The stock observer, in the client namespace, RPC on its loopback.
	const obsRPC = "127.0.0.1:7373"
	node0 := netip.AddrPortFrom(n.NodeAddr4(0).Addr(), 7946).String()
	obs, err := n.StartIn(n.Client(), "serf-ops", []string{serfBin, "agent", "-node", "ops-serf",
		"-bind", netip.AddrPortFrom(clientAddr, 7946).String(), "-encrypt", key, "-join", node0,
		"-rpc-addr", obsRPC, "-event-handler", "user:hello=" + obsHandler, "-log-level", "debug"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	serfCmd := func(rpc string, args ...string) ([]byte, error) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// serf wants flags before the arguments: serf SUBCOMMAND -rpc-addr ADDR ARGS...
		argv := append([]string{serfBin, args[0], "-rpc-addr", rpc}, args[1:]...)
		return n.ExecContext(c, n.Client(), argv...)
	}
	var lastMembers []serfMember
	err = wait("the stock agent to list every Shoal member and itself alive", func() (bool, error) {
		if obs.Exited() {
			return false, harness.Abort(fmt.Errorf("serf agent exited: %v\n%s", obs.Wait(), shoalrun.Tail(obs.Logs(), 3000)))
		}
		out, err := serfCmd(obsRPC, "members", "-format", "json")
		if err != nil {
			return false, nil // RPC not up yet
		}
		var ms struct {
			Members []serfMember `json:"members"`
		}
		if err := json.Unmarshal(out, &ms); err != nil {
			return false, fmt.Errorf("serf members -format json: %w: %s", err, out)
		}
		lastMembers = ms.Members
		var alive []string
		for _, m := range ms.Members {
			if m.Status == "alive" {
				alive = append(alive, m.Name)
			}
		}
		slices.Sort(alive)
		return slices.Equal(alive, []string{"node0", "node1", "node2", "ops-serf"}), nil
	})
	if err != nil {
		t.Fatalf("%v; last serf members: %+v", err, lastMembers)
	}
	t.Logf("serf members (stock agent): %+v", lastMembers)

	// Every Shoal node admitted it (logged the observer's join, refused
	// nobody) and kept it out of its view.
	err = wait("every shoal agent to log the observer's join", func() (bool, error) {
		for i := range 3 {
			l := cluster.Proc(i).Logs()
			if !strings.Contains(l, "serf observer change") || !strings.Contains(l, "observer=ops-serf") {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum, per := refused(); sum != 0 {
		t.Errorf("AdmissionRefused per node = %v with only the listed observer joining, want 0", per)
	}
	waitViews("views unchanged by the observer")

	// serf event from the stock agent runs the user:deploy handler on every
	// Shoal node, with serf's environment and the payload on stdin.
	if out, err := serfCmd(obsRPC, "event", "deploy", "v1"); err != nil {
		t.Fatalf("serf event: %v", err)
	} else {
		t.Logf("serf event deploy v1: %s", bytes.TrimSpace(out))
	}
	wantShoal := []string{"node0|user|deploy|v1", "node1|user|deploy|v1", "node2|user|deploy|v1"}
	err = wait("the deploy handler on every shoal node", func() (bool, error) {
		got := readLines(shoalEvents)
		for _, w := range wantShoal {
			if !slices.Contains(got, w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%v; handler lines %q, want %q", err, readLines(shoalEvents), wantShoal)
	}

	// shoal event from node0 reaches the stock agent's handler.
	if _, err := shoal("event", "--socket", files.Sockets[0], "hello", "world"); err != nil {
		t.Fatal(err)
	}
	err = wait("the stock agent's user:hello handler", func() (bool, error) {
		return slices.Contains(readLines(obsEvents), "ops-serf|user|hello|world"), nil
	})
	if err != nil {
		t.Fatalf("%v; handler lines %q", err, readLines(obsEvents))
	}

	// A stock agent whose name is not listed: refused by the Shoal nodes.
	before, _ := refused()
	rogue, err := n.StartIn(n.Client(), "serf-rogue", []string{serfBin, "agent", "-node", "rogue-serf",
		"-bind", netip.AddrPortFrom(clientAddr, 7950).String(), "-encrypt", key, "-join", node0,
		"-rpc-addr", "127.0.0.1:7374"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var per []uint64
	err = wait("the shoal nodes to refuse rogue-serf", func() (bool, error) {
		var sum uint64
		sum, per = refused()
		if sum <= before {
			return false, nil
		}
		for i := range 3 {
			if l := cluster.Proc(i).Logs(); strings.Contains(l, "serf member refused") && strings.Contains(l, "member=rogue-serf") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%v; AdmissionRefused per node %v (was %d in all); rogue agent log:\n%s", err, per, before, shoalrun.Tail(rogue.Logs(), 3000))
	}
	for i := range 3 {
		if strings.Contains(cluster.Proc(i).Logs(), "observer=rogue-serf") {
			t.Errorf("node%d admitted rogue-serf as an observer", i)
		}
	}
	waitViews("views unchanged by the refused agent")
	if d := time.Since(start); d > 60*time.Second {
		t.Logf("WARNING: the interop run took %s, over its 60 s budget", d.Round(time.Millisecond))
	}
	t.Logf("serf interop checks passed in %s (after builds)", time.Since(start).Round(time.Millisecond))
}
