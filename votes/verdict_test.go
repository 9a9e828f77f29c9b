package votes

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

func voter(v trust.Verdict, p peer.ID) (trust.VoterInfo, bool) {
	for _, tl := range v.Tally {
		for _, vi := range tl.Voters {
			if vi.Peer == p {
				return vi, true
			}
		}
	}
	return trust.VoterInfo{}, false
}

// Three agreeing attesters allow a build under the default threshold (a
// blocked peer's vote is not one of them); the allowed build lists the
// daemon's own vote first, then the oldest, and leaves the blocked peer's
// out. A rival content disputes it.
func TestVerdictAndAllowedBuilds(t *testing.T) {
	blockedKey, blocked := mustKey(t)
	net := memnet.New()
	vb := joinBook(t, net, false, func(c *config.Config) { c.Trust.BlockedPeers = []string{blocked.String()} })
	if !slices.Equal(vb.Policy().BlockedPeers, []peer.ID{blocked}) {
		t.Fatalf("the book's policy blocks %v", vb.Policy().BlockedPeers)
	}
	k0, _ := mustKey(t)
	base := junk(t, k0, 1, 1000)
	bk := base.Attestation.BuildKey

	v, atts, err := vb.Verdict(bk)
	if err != nil || v.Decision != trust.Unknown || len(atts) != 0 {
		t.Fatalf("no votes: %s, %d atts, %v; want unknown", v.Decision, len(atts), err)
	}
	votes := agreeing(t, base, 2)
	for _, s := range votes {
		ingestAs(t, vb.Book, s, s.Attester)
	}
	byBlocked := resign(t, base, blockedKey, func(a *trust.Attestation) { a.Time = time.Now().Add(-2 * time.Hour) })
	ingestAs(t, vb.Book, byBlocked, blocked)
	v, atts, err = vb.Verdict(bk)
	if err != nil || v.Decision == trust.Allowed || len(atts) != 3 {
		t.Fatalf("two votes and a blocked one: %s, %d atts, %v; want not allowed, 3 atts", v.Decision, len(atts), err)
	}
	if vi, ok := voter(v, blocked); !ok || vi.Counted {
		t.Fatalf("blocked peer in the tally: %+v, %v; want listed, not counted", vi, ok)
	}
	if _, ok, err := vb.AllowedBuild(bk); ok || err != nil {
		t.Fatalf("AllowedBuild under threshold: %v, %v", ok, err)
	}

	own := resign(t, base, vb.key, func(a *trust.Attestation) { a.Time = time.Now().Add(-time.Minute) })
	if err := vb.StoreOwn(own); err != nil {
		t.Fatal(err)
	}
	ab, ok, err := vb.AllowedBuild(bk)
	if err != nil || !ok || ab.Verdict.Decision != trust.Allowed || *ab.Verdict.Content != base.Attestation.Content {
		t.Fatalf("three votes: %v, %v, %+v; want allowed", ok, err, ab.Verdict)
	}
	want := []peer.ID{vb.self, votes[0].Attester, votes[1].Attester}
	if got := attesters(ab.Atts); !slices.Equal(got, want) {
		t.Fatalf("allowed build's attestations by %v, want own then oldest first %v", got, want)
	}
	for _, tt := range []struct {
		platform string
		want     int
	}{{"", 1}, {vb.platform, 1}, {"riscv64-unknown-linux-gnu", 0}} {
		builds, err := vb.AllowedBuilds(tt.platform)
		if err != nil || len(builds) != tt.want {
			t.Errorf("AllowedBuilds(%q): %d, %v; want %d", tt.platform, len(builds), err, tt.want)
		}
	}

	k9, id9 := mustKey(t)
	rival := resign(t, base, k9, func(a *trust.Attestation) { a.Content.Image[0] ^= 0xff })
	ingestAs(t, vb.Book, rival, id9)
	if v, _, _ := vb.Verdict(bk); v.Decision != trust.Disputed {
		t.Fatalf("with a rival content: %s, want disputed", v.Decision)
	}
	if builds, _ := vb.AllowedBuilds(""); len(builds) != 0 {
		t.Fatalf("a disputed build listed as allowed")
	}
}

// Under distinct_networks, attesters that delivered their votes from one
// /24 count once; the address recorded at arrival is what counts.
func TestVerdictCountsRecordedAddresses(t *testing.T) {
	k0, _ := mustKey(t)
	base := junk(t, k0, 1, 1000)
	for _, tt := range []struct {
		name  string
		addrs []string
		want  trust.Decision
	}{
		{"one network", []string{"192.0.2.1", "192.0.2.2", "::ffff:192.0.2.3"}, trust.Unknown},
		{"three networks", []string{"192.0.2.1", "198.51.100.1", "::ffff:203.0.113.1"}, trust.Allowed},
	} {
		vb := offlineBook(t, func(c *config.Config) { c.Trust.DistinctNetworks = true })
		for i, s := range agreeing(t, base, 3) {
			if _, err := vb.ingestAttestation(t.Context(), s.Marshal(), arrival{from: s.Attester, addr: tt.addrs[i]}, false); err != nil {
				t.Fatal(err)
			}
		}
		v, _, err := vb.Verdict(base.Attestation.BuildKey)
		if err != nil || v.Decision != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.name, v.Decision, err, tt.want)
		}
		if tt.want == trust.Allowed {
			var addrs []string
			for _, vi := range v.Tally[0].Voters {
				addrs = append(addrs, vi.Addr)
			}
			if !slices.Contains(addrs, "203.0.113.1") {
				t.Errorf("%s: a v4-mapped address is not unmapped: %v", tt.name, addrs)
			}
		}
	}
}

// Resolve turns a build key, a variant key or a cpv into build keys.
func TestResolve(t *testing.T) {
	vb := offlineBook(t, nil)
	k, id := mustKey(t)
	a := junk(t, k, 1, 1000)
	// Another build of the same variant: linked against another slot.
	b := resign(t, a, k, func(at *trust.Attestation) {
		setDescriptor(t, at, func(d *identity.Descriptor) { d.SlotDeps = []string{">=dev-libs/a-1:0/1="} })
	})
	if a.Attestation.VariantKey != b.Attestation.VariantKey || a.Attestation.BuildKey == b.Attestation.BuildKey {
		t.Fatal("test setup: want two build keys of one variant")
	}
	ingestAs(t, vb, a, id)
	ingestAs(t, vb, b, id)
	other := junk(t, k, 2, 1000)
	ingestAs(t, vb, other, id)
	both := []keys.Build{a.Attestation.BuildKey, b.Attestation.BuildKey}
	slices.Sort(both)
	unknownKey := junk(t, k, 3, 1000).Attestation.BuildKey
	for _, tt := range []struct {
		q    string
		want []keys.Build
	}{
		{string(a.Attestation.BuildKey), []keys.Build{a.Attestation.BuildKey}},
		{"  " + string(b.Attestation.BuildKey) + "\n", []keys.Build{b.Attestation.BuildKey}},
		{string(a.Attestation.VariantKey), both},
		{string(unknownKey), []keys.Build{unknownKey}},
		{a.Attestation.CPV, both},
		{"=" + other.Attestation.CPV, []keys.Build{other.Attestation.BuildKey}},
		{"junk-cat/nothing-1.0", nil},
	} {
		got, err := vb.Resolve(tt.q)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Resolve(%q) = %v, %v; want %v", tt.q, got, err, tt.want)
		}
	}
	if _, err := vb.Resolve(" "); err == nil {
		t.Error("an empty query resolved")
	}
}

// Decode verifies once per blob and hands out the same result after; it
// never caches a failure, and starts over when full.
func TestDecodeCache(t *testing.T) {
	vb := offlineBook(t, nil)
	k, _ := mustKey(t)
	s := junk(t, k, 1, 1000)
	d1, err := vb.Decode(s.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	d2, err := vb.Decode(s.Marshal())
	if err != nil || d1 != d2 || d1.Attester != s.Attester || d1.Attestation.BuildKey != s.Attestation.BuildKey {
		t.Fatalf("second decode: %p vs %p, %v", d1, d2, err)
	}
	bad := *s
	bad.Signature = append([]byte(nil), s.Signature...)
	bad.Signature[0] ^= 1
	for range 2 {
		if _, err := vb.Decode(bad.Marshal()); err == nil {
			t.Fatal("a forged blob decoded")
		}
	}
	vb.decoded.mu.Lock()
	n := len(vb.decoded.m)
	vb.decoded.bytes = maxDecodedBytes // as if full
	vb.decoded.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d entries cached, want 1 (failures are not cached)", n)
	}
	other := junk(t, k, 2, 1000)
	if _, err := vb.Decode(other.Marshal()); err != nil {
		t.Fatal(err)
	}
	vb.decoded.mu.Lock()
	n, size := len(vb.decoded.m), vb.decoded.bytes
	vb.decoded.mu.Unlock()
	if n != 1 || size != len(other.Marshal()) {
		t.Fatalf("full cache: %d entries, %d bytes after one more; want it started over", n, size)
	}
	if d3, _ := vb.Decode(s.Marshal()); d3 == d1 {
		t.Fatal("an entry survived the cache starting over")
	}
}

// TestGenerationFollowsVotes: Generation and Changed move with every vote
// stored, withdrawn or equivocated and only for the build key concerned,
// and Candidates (kept per generation) follows them: a build key joins the
// candidates with the vote that makes it possible, and leaves them when
// the vote is withdrawn.
func TestGenerationFollowsVotes(t *testing.T) {
	vb := offlineBook(t, nil)
	k0, _ := mustKey(t)
	a, b := junk(t, k0, 1, 1000), junk(t, k0, 2, 1000)
	bkA, bkB := a.Attestation.BuildKey, b.Attestation.BuildKey
	candidates := func() []keys.Build {
		t.Helper()
		got, err := vb.Candidates(vb.platform)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := candidates(); len(got) != 0 {
		t.Fatalf("empty book: candidates %v", got)
	}
	gen, changedB := vb.Generation(), vb.Changed(bkB)
	votesA := agreeing(t, a, 2)
	for _, s := range votesA[:2] {
		ingestAs(t, vb, s, s.Attester)
	}
	if vb.Generation() <= gen || vb.Changed(bkA) <= gen || vb.Changed(bkA) > vb.Generation() || vb.Changed(bkB) != changedB {
		t.Fatalf("after two votes on A: generation %d → %d, A changed at %d, B at %d (was %d)", gen, vb.Generation(), vb.Changed(bkA), vb.Changed(bkB), changedB)
	}
	if got := candidates(); len(got) != 0 {
		t.Fatalf("two votes under threshold 3: candidates %v", got)
	}
	k3, id3 := mustKey(t)
	third := resign(t, a, k3, nil)
	ingestAs(t, vb, third, id3)
	if got := candidates(); !slices.Equal(got, []keys.Build{bkA}) {
		t.Fatalf("three votes: candidates %v, want %v", got, []keys.Build{bkA})
	}
	if _, ok, err := vb.AllowedBuild(bkA); !ok || err != nil {
		t.Fatalf("three votes: allowed %v, %v", ok, err)
	}
	// Withdrawn: the third vote goes, and A with it.
	gen = vb.Generation()
	if _, err := vb.store.DeleteAttestation(third.ID()); err != nil {
		t.Fatal(err)
	}
	if vb.Changed(bkA) <= gen {
		t.Fatalf("withdrawal did not change A")
	}
	if got := candidates(); len(got) != 0 {
		t.Fatalf("after the withdrawal: candidates %v", got)
	}
	// Evidence against a voter of A changes A.
	ingestAs(t, vb, third, id3)
	gen = vb.Generation()
	other := resign(t, third, k3, func(at *trust.Attestation) { at.Content.Image[0] ^= 0xff })
	ingestAs(t, vb, other, id3, errRejected)
	if vb.Changed(bkA) <= gen {
		t.Fatalf("an equivocation on A did not change A (generation %d, A %d)", gen, vb.Changed(bkA))
	}
	if _, ok, err := vb.AllowedBuild(bkA); ok || err != nil {
		t.Fatalf("with an equivocating voter: allowed %v, %v", ok, err)
	}
}
