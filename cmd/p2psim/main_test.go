package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/sim"
)

// -runs redraws the model and the plots from a fits.json without running,
// and the model is one JSON object with the figures.
func TestModelFromRuns(t *testing.T) {
	dir := t.TempDir()
	runs := []*sim.Result{
		{Nodes: 100, Days: 7, Requests: 100, Hits: 10, Ideal: 11, Attestations: 90, GossipBytesPerPeerDay: 1e5, ResyncBytesPerPeerDay: 1e6, StoreBytesPerPeer: 5e4, LookupP50MS: 100, LookupP99MS: 250, ProvideP50MS: 700, RPCsPerLookup: 5, RPCsPerProvide: 24},
		{Nodes: 250, Days: 7, Requests: 250, Hits: 30, Ideal: 31, Attestations: 230, GossipBytesPerPeerDay: 2.5e5, ResyncBytesPerPeerDay: 2.5e6, StoreBytesPerPeer: 1.25e5, LookupP50MS: 110, LookupP99MS: 330, ProvideP50MS: 750, RPCsPerLookup: 5, RPCsPerProvide: 26},
	}
	b, err := json.Marshal(sim.Fitted{Runs: runs})
	if err != nil {
		t.Fatal(err)
	}
	fits := filepath.Join(dir, "fits.json")
	if err := os.WriteFile(fits, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	plots := filepath.Join(dir, "plots")
	if err := run([]string{"-runs", fits, "-model", "50000", "-plot", plots, "-json", "-q"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"nodes", "builds", "requests", "hit_rate", "ideal_hit_rate", "false_accepts",
		"time_to_installable_p50_s", "time_to_installable_p99_s", "control_bytes_per_peer_day",
		"store_bytes_per_peer", "lookup_p50_ms", "lookup_p99_ms"} {
		if _, ok := got[k]; !ok {
			t.Errorf("model JSON lacks %q", k)
		}
	}
	if got["nodes"] != float64(50000) || got["modelled"] != true {
		t.Errorf("model at %v peers, modelled %v", got["nodes"], got["modelled"])
	}
	if _, err := os.Stat(filepath.Join(plots, "control_bytes_per_peer_day.svg")); err != nil {
		t.Error(err)
	}
}

func TestBadArguments(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"extra"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("a stray argument: %v", err)
	}
	if err := run([]string{"-runs", filepath.Join(t.TempDir(), "none.json"), "-model", "10"}, &out, &errOut); err == nil {
		t.Error("a missing fits.json was accepted")
	}
	if err := run([]string{"-gossipsub", "2", "-gossipsub-variant", "d3", "-q"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "d3") {
		t.Errorf("an unknown GossipSub variant: %v", err)
	}
	if err := run([]string{"-donors", "1.5"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "-donors 1.5") {
		t.Errorf("a share of donors over 1: %v", err)
	}
}
