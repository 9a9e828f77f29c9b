package sim

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
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

// A donor plans as builder/plan.go does from its Book: a wanted variant
// without a trusted build is built; one with a trusted build, or one this
// node attested, is not.
func TestDonorPlan(t *testing.T) {
	m := DefaultModel(10)
	pop, err := NewPopulation(m, 3)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		t.Fatal(err)
	}
	net := memnet.New()
	self, err := newPeer(net, t.TempDir(), pop.Platforms[0].ID, policy, cfg.Limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer self.st.Close()
	// Three builders with full standing here.
	var others []*simPeer
	history := map[string]store.Standing{}
	today := store.DayOf(time.Now())
	for range 3 {
		o, err := newPeer(net, t.TempDir(), pop.Platforms[0].ID, policy, cfg.Limits, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer o.st.Close()
		others = append(others, o)
		history[string(o.id)] = store.Standing{First: today - 90, Last: today - 1, Days: 90}
	}
	if err := self.st.SetStanding(history); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	tc := pop.Toolchains[0]
	at := time.Now().Add(-time.Hour)
	// Three variants wanted here: trusted has three agreeing votes,
	// missing and own none.
	trusted, missing, own := descriptor(pop, 0, 1, 0, 0), descriptor(pop, 1, 1, 0, 0), descriptor(pop, 2, 1, 0, 0)
	for _, d := range []identity.Descriptor{trusted, missing, own} {
		if _, err := self.book.RecordDemand(ctx, d, trust.DemandSource); err != nil {
			t.Fatal(err)
		}
	}
	content := trust.ContentID{Image: sha256.Sum256([]byte("image")), Metadata: sha256.Sum256([]byte("meta"))}
	for _, o := range others {
		s, err := attest(trusted, content, tc, at, o.key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := self.book.IngestFrom(ctx, s.Marshal(), o.id); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := self.book.AllowedBuild(trusted.BuildKey()); err != nil || !ok {
		t.Fatalf("three established builders agree and the build is not allowed (%v)", err)
	}
	s, err := attest(own, content, tc, at, self.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := self.book.StoreOwn(s); err != nil {
		t.Fatal(err)
	}
	w, kind, ok, err := planHead(ctx, self.book, pop.Platforms[0].ID, m.Threshold)
	if err != nil || !ok || w.Variant != missing.VariantKey() || kind != kindBuild {
		t.Fatalf("plan: %v %v %v %v; want a build of %s (%s)", w.Variant, kind, ok, err, missing.VariantKey(), missing.CPV)
	}
	// Built here, nothing is left to build.
	if s, err = attest(missing, content, tc, at, self.key); err != nil {
		t.Fatal(err)
	}
	if err := self.book.StoreOwn(s); err != nil {
		t.Fatal(err)
	}
	if w, _, ok, err := planHead(ctx, self.book, pop.Platforms[0].ID, m.Threshold); err != nil || ok {
		t.Errorf("plan after building: %s %v %v, want nothing", w.Variant, ok, err)
	}
}

// Donors, fed by the peers' real demand records, build what requests
// wanted and no trusted build served: on the same small network and
// seed, they raise the hits, without a false accept.
func TestDonorsRaiseHits(t *testing.T) {
	// As TestAdversaries: few packages and threshold 2, so that builds
	// can reach the threshold within days at 80 peers.
	m := DefaultModel(80)
	m.Days, m.Packages, m.InstalledMean, m.RequestsPerDay, m.Threshold = 4, 60, 15, 2, 2
	run := func(donors float64) *Result {
		t.Helper()
		r, err := Run(t.Context(), Options{Model: m, Seed: 7, DHTOps: 10, Donors: donors})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("donors %.2f: %d requests, %d ideal, %d hits; %d donors, %d builds, %d demand records; %.1f s",
			donors, r.Requests, r.Ideal, r.Hits, r.Donors, r.DonorBuilds, r.DemandRecords, r.WallSeconds)
		if r.FalseAccepts != 0 {
			t.Errorf("donors %.2f: %d false accepts", donors, r.FalseAccepts)
		}
		if lost := r.LostNotAllowed + r.LostOffline + r.LostNAT; r.Hits+lost != r.Ideal {
			t.Errorf("donors %.2f: hits %d + lost %d != ideal %d", donors, r.Hits, lost, r.Ideal)
		}
		return r
	}
	without, with := run(0), run(0.2)
	if without.DemandRecords != 0 || without.DonorBuilds != 0 {
		t.Errorf("without donors: %d demand records, %d donor builds", without.DemandRecords, without.DonorBuilds)
	}
	if with.DemandRecords != with.Requests || with.DonorBuilds == 0 {
		t.Fatalf("with donors: %d demand records for %d requests, %d donor builds", with.DemandRecords, with.Requests, with.DonorBuilds)
	}
	if with.Hits <= without.Hits {
		t.Errorf("donors built %d variants and the hits went from %d to %d", with.DonorBuilds, without.Hits, with.Hits)
	}
}
