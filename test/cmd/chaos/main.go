// Command chaos runs Shoal's fault-injection test (test/chaos) and prints
// its report: 5 agents in network namespaces, every traffic IP probed
// continuously, random faults drawn from a seed. It needs root.
//
//	go run ./test/cmd/chaos -duration 5m -seed 42
//
// The exit status is 0 when no invariant was violated, 1 when one was (or
// the run could not be carried out) and 2 on bad flags.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/test/chaos"
)

func main() {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	duration := fs.Duration("duration", chaos.DefaultDuration, "length of the fault phase (at most 12m)")
	seed := fs.Uint64("seed", 0, "schedule seed (0 = random; the seed used is printed)")
	bin := fs.String("shoal", "bin/shoal", "shoal binary")
	kinds := fs.String("faults", "all", "comma-separated fault kinds: "+kindList())
	nodes := fs.Int("nodes", chaos.DefaultNodes, "number of agents (3..8)")
	out := fs.String("out", "", "also write the report to this file")
	keep := fs.Bool("keep", false, "keep the run directory (agent logs and configs)")
	quiet := fs.Bool("quiet", false, "no progress lines")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ks, err := chaos.ParseKinds(*kinds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "chaos: needs root (network namespaces, nftables, cgroups)")
		os.Exit(1)
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	cmdline := fmt.Sprintf("go run ./test/cmd/chaos -duration %v -seed %d -faults %s -nodes %d", *duration, *seed, *kinds, *nodes)
	fmt.Printf("chaos: seed %d (reproduce: %s)\n", *seed, cmdline)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	opts := chaos.Options{Binary: *bin, Seed: *seed, Duration: *duration, Nodes: *nodes, Kinds: ks,
		KeepDir: *keep, Command: cmdline, Log: os.Stdout}
	if *quiet {
		opts.Log = nil
	}
	start := time.Now()
	rep, err := chaos.Execute(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v (after %v)\n", err, time.Since(start).Round(time.Second))
		os.Exit(1)
	}
	text := rep.Text()
	fmt.Print("\n" + text)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			os.Exit(1)
		}
	}
	if !rep.OK() {
		os.Exit(1)
	}
}

func kindList() string {
	var s []string
	for _, k := range chaos.AllKinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ",")
}
