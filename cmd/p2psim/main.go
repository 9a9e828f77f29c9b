// Command p2psim runs the gentoo-p2pd network simulator: a population of
// Gentoo machines on the project's real code in one process (docs/SCALE.md).
//
//	go run ./cmd/p2psim -nodes 1000 -json
//	go run ./cmd/p2psim -model 50000 -json
//	go run ./cmd/p2psim -plot docs/scale
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/sim"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "p2psim:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("p2psim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 1000, "peers to run, each with its own store and votes")
	days := fs.Int("days", 0, "simulated days (0: the model's default)")
	seed := fs.Uint64("seed", 1, "random seed of the population")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of a table")
	model := fs.Int("model", 0, "extrapolate to this many peers from runs measured at 100, 250, 500, 1000 peers (up to -nodes)")
	plot := fs.String("plot", "", "measure at 100, 250, 500, 1000 peers (up to -nodes) and write SVG plots of each figure, fitted up to 50,000 peers, to this directory")
	runs := fs.String("runs", "", "with -model or -plot: take the measured runs from this fits.json (written by -plot) instead of running them")
	design := fs.String("design", "flood", "how attestations travel: flood (the daemon today) or interest (the candidate docs/SCALE.md measures)")
	adversary := fs.String("adversary", "none", "who attacks every popular build: none; troll (one fresh identity attests random contents); sybil (1,000 fresh identities back a backdoor); sleeper (100 identities with 30 days of standing back a backdoor)")
	perKey := fs.Int("attackers-per-key", 10, "how many of the attacker's identities sign each attacked build")
	established := fs.Float64("established", 0.95, "share of honest peers with full standing at the start (the rest are still earning it)")
	donors := fs.Float64("donors", sim.DefaultDonors, "share of peers that donate CPU (build.donate): they build the most wanted variants of their platform that lack a trusted build; 0: none, and no demand records")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	gossip := fs.Int("gossipsub", 0, "instead: measure real GossipSub's bytes per message and peer on this many libp2p hosts (docs/SCALE.md)")
	gossipFlags := gossipFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *donors < 0 || *donors > 1 {
		return fmt.Errorf("-donors %v: want a share of the peers between 0 and 1", *donors)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// SIGTERM too: a run killed without its context ending would leave its
	// stores (gigabytes at 1,000 peers) in /dev/shm.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := stderr
	if *quiet {
		progress = nil
	}
	if *gossip > 0 {
		return measureGossip(ctx, *gossip, *seed, gossipFlags, progress, stdout, *jsonOut)
	}
	m := sim.DefaultModel(*nodes)
	if *days > 0 {
		m.Days = *days
	}
	switch {
	case *plot != "" || *model > 0:
		var ft *sim.Fitted
		var err error
		if *runs != "" {
			ft, err = sim.LoadFitted(*runs)
		} else {
			ft, err = sim.Measure(ctx, sim.Options{Model: m, Seed: *seed, Design: sim.Design(*design), Adversary: sim.Adversary(*adversary), AttackersPerKey: *perKey, Established: *established, Donors: *donors, Log: progress})
		}
		if err != nil {
			return err
		}
		if *plot != "" {
			if err := ft.WritePlots(*plot, max(50000, *model)); err != nil {
				return err
			}
		}
		if *model == 0 {
			return nil
		}
		return print(stdout, ft.At(*model), *jsonOut)
	default:
		r, err := sim.Run(ctx, sim.Options{Model: m, Seed: *seed, Design: sim.Design(*design), Adversary: sim.Adversary(*adversary), AttackersPerKey: *perKey, Established: *established, Donors: *donors, Log: progress})
		if err != nil {
			return err
		}
		return print(stdout, r, *jsonOut)
	}
}

func print(w io.Writer, r *sim.Result, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	_, err := fmt.Fprint(w, r.Table())
	return err
}
