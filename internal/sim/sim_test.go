package sim

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A CI-sized network: 100 peers for 7 simulated days on the real code.
// Whatever the design's hit rate, it must never accept a build fewer than
// threshold honest reproducers made, every request it serves must be one
// the ideal serves too, and what it lost of the ideal is accounted for.
func TestSmallNetwork(t *testing.T) {
	m := DefaultModel(100)
	m.Days = 7
	r, err := Run(t.Context(), Options{Model: m, Seed: 7, DHTOps: 40})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.Table())
	if r.FalseAccepts != 0 {
		t.Errorf("%d false accepts in an honest network", r.FalseAccepts)
	}
	if r.Requests == 0 || r.Attestations == 0 || r.Builds == 0 {
		t.Fatalf("nothing happened: %d requests, %d attestations, %d builds", r.Requests, r.Attestations, r.Builds)
	}
	if r.Hits > r.Ideal {
		t.Errorf("%d hits but only %d requests had threshold honest reproducers", r.Hits, r.Ideal)
	}
	if lost := r.LostNotAllowed + r.LostOffline + r.LostNAT; r.Hits+lost != r.Ideal {
		t.Errorf("hits %d + lost %d (not allowed %d, offline %d, NAT %d) != ideal %d",
			r.Hits, lost, r.LostNotAllowed, r.LostOffline, r.LostNAT, r.Ideal)
	}
	if r.LookupsFound != 1 {
		t.Errorf("the DHT found a provider for %.0f %% of the provided build keys, want all", 100*r.LookupsFound)
	}
	// Every peer of a platform receives every attestation of it: the
	// bytes measured cover at least one copy per platform peer.
	if r.GossipBytesPerPeerDay <= 0 || r.StoreBytesPerPeer <= 0 {
		t.Errorf("no bytes measured: gossip %.0f, store %.0f", r.GossipBytesPerPeerDay, r.StoreBytesPerPeer)
	}
}

// The fitted laws reproduce the points they were fitted to when the
// points follow the law, and plots are written for every figure.
func TestFitAndPlots(t *testing.T) {
	runs := []*Result{
		{Nodes: 100, Days: 1, GossipBytesPerPeerDay: 1000, StoreBytesPerPeer: 500, LookupP50MS: 70, LookupP99MS: 140, ProvideP50MS: 300, RPCsPerLookup: 7, RPCsPerProvide: 20, Attestations: 100, Requests: 100},
		{Nodes: 200, Days: 1, GossipBytesPerPeerDay: 2000, StoreBytesPerPeer: 1000, LookupP50MS: 80, LookupP99MS: 160, ProvideP50MS: 350, RPCsPerLookup: 8, RPCsPerProvide: 21, Attestations: 200, Requests: 200},
	}
	f := fitLaw("g", Linear, "bytes", 0, runs, func(r *Result) float64 { return r.GossipBytesPerPeerDay })
	if got := f.At(400); got < 3999 || got > 4001 {
		t.Errorf("linear fit at 400 = %v, want 4000", got)
	}
	l := fitLaw("l", Log, "ms", 0, runs, func(r *Result) float64 { return r.LookupP50MS })
	if got := l.At(400); got < 89.9 || got > 90.1 {
		t.Errorf("log fit at 400 = %v, want 90", got)
	}
	ft := &Fitted{Runs: runs}
	ft.Fits = fitAll(runs)
	at := ft.At(50000)
	if !at.Modelled || at.Nodes != 50000 || at.GossipBytesPerPeerDay < 499e3 || len(at.Assumptions) == 0 {
		t.Errorf("model at 50,000: %+v", at)
	}
	dir := t.TempDir()
	if err := ft.WritePlots(dir, 50000); err != nil {
		t.Fatal(err)
	}
	for _, f := range append([]string{"control_bytes_per_peer_day"}, "store_bytes_per_peer", "lookup_p99_ms") {
		b, err := os.ReadFile(filepath.Join(dir, f+".svg"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("<svg")) || !strings.Contains(string(b), "<polyline") || !strings.Contains(string(b), "<circle") {
			t.Errorf("%s.svg is not a plot with measured points and a line:\n%.300s", f, b)
		}
	}
	var back Fitted
	b, err := os.ReadFile(filepath.Join(dir, "fits.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Runs) != 2 || len(back.Fits) != len(ft.Fits) {
		t.Errorf("fits.json: %v, %d runs, %d fits", err, len(back.Runs), len(back.Fits))
	}
}

// Each adversary attacks every popular build of a small, dense network
// (few packages, so builds reach the threshold within days): none may get
// a backdoor accepted, and none may cost the honest network more than the
// issue allows (5 %, 10 % for sleepers) of what it serves without them.
// The control: with every attester counted (fresh_weight 100, a closed
// network's policy) the Sybils block what they attack — the attack
// reaches the peers and would matter without standing.
func TestAdversaries(t *testing.T) {
	// 80 peers, 30 packages, threshold 2: at this size threshold 3 is
	// rarely reached on any platform within days.
	m := DefaultModel(80)
	m.Days, m.Packages, m.InstalledMean, m.RequestsPerDay, m.Threshold = 4, 30, 15, 3, 2
	run := func(a Adversary, fresh int) *Result {
		t.Helper()
		// Three signers per key (more than the threshold): past the threshold the number changes
		// nothing but the time (Options.AttackersPerKey).
		r, err := Run(t.Context(), Options{Model: m, Seed: 7, DHTOps: 10, Adversary: a, FreshWeight: fresh, AttackersPerKey: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (fresh_weight %d): %d requests, %d ideal, %d hits, %d false accepts, %d lost to disputes, %d to standing, %d adversary attestations, %.1f s",
			a, fresh, r.Requests, r.Ideal, r.Hits, r.FalseAccepts, r.LostDispute, r.LostStanding, r.AdversaryAttestations, r.WallSeconds)
		return r
	}
	honest := run(None, 0)
	if honest.Ideal < 20 || honest.Hits == 0 {
		t.Fatalf("the network is too sparse to test anything: %d ideal requests, %d hits", honest.Ideal, honest.Hits)
	}
	for _, c := range []struct {
		a    Adversary
		keep float64
	}{{Troll, 0.95}, {Sybil, 0.95}, {Sleeper, 0.90}} {
		r := run(c.a, 0)
		if r.AdversaryAttestations == 0 {
			t.Errorf("%s: the attacker sent nothing", c.a)
		}
		if r.FalseAccepts != 0 {
			t.Errorf("%s: %d requests accepted a build no threshold of honest builders made", c.a, r.FalseAccepts)
		}
		if float64(r.Hits) < c.keep*float64(honest.Hits) {
			t.Errorf("%s: %d hits, want at least %.0f %% of the honest network's %d", c.a, r.Hits, 100*c.keep, honest.Hits)
		}
	}
	// Counted like anyone, the Sybils dispute every build they attack:
	// the honest builders' votes still keep the backdoor out, but the
	// network serves less than half of what it did.
	if r := run(Sybil, 100); r.LostDispute == 0 || 2*r.Hits >= honest.Hits {
		t.Errorf("control: with every attester counted the Sybils cost only %d of %d hits (%d disputes): the attack did not reach the peers", honest.Hits-r.Hits, honest.Hits, r.LostDispute)
	}
}
