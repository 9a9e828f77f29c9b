package trust

import (
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// votesFor signs one attestation of content per peer number in ns, built
// in the given environment.
func votesFor(t *testing.T, bk string, c ContentID, b Builder, standing int, ns ...int) []Vote {
	t.Helper()
	var out []Vote
	for _, n := range ns {
		a := testAttestation(t, testCID(t, bk), c)
		a.Builder = b
		out = append(out, Vote{Att: signAs(t, n, a), Standing: standing, StandingFrom: "agreed on 30 days"})
	}
	return out
}

func peersOf(t *testing.T, ns ...int) []peer.ID {
	var out []peer.ID
	for _, n := range ns {
		out = append(out, testPeer(t, n))
	}
	return out
}

func span(from, to int) []int {
	var out []int
	for n := from; n < to; n++ {
		out = append(out, n)
	}
	return out
}

var (
	gcc14 = Builder{GCC: "14.3.1", Binutils: "2.44", Libc: "glibc-2.41"}
	gcc13 = Builder{GCC: "13.4.0", Binutils: "2.44", Libc: "glibc-2.41"}
)

// TestFreshIdentitiesNeitherAllowNorBlock: with the open-network default
// (fresh_weight 0), any number of fresh identities weighs nothing: they
// cannot reach the threshold, and they cannot dispute the build that
// established attesters agree on.
func TestFreshIdentitiesNeitherAllowNorBlock(t *testing.T) {
	honest, evil := testContent("honest"), testContent("backdoor")
	p := DefaultPolicy()
	sybils := votesFor(t, "fresh", evil, gcc14, 0, span(100, 400)...)
	v := Evaluate(p, testCID(t, "fresh"), sybils, nil, "")
	if v.Decision == Allowed || v.Tally[0].Count != 0 {
		t.Fatalf("300 fresh identities: %s by %s with %d counted, want nothing counted", v.Decision, v.Rule, v.Tally[0].Count)
	}
	if !strings.Contains(v.Explain(), "no standing yet") {
		t.Fatalf("explanation does not say why fresh votes do not count:\n%s", v.Explain())
	}

	p.VouchedPeers = peersOf(t, 1, 2, 3)
	all := append(votesFor(t, "fresh", honest, gcc14, 0, 1, 2, 3), sybils...)
	v = Evaluate(p, testCID(t, "fresh"), all, nil, "")
	if v.Decision != Allowed || *v.Content != honest {
		t.Fatalf("three vouched attesters against 300 fresh ones: %s by %s, want the honest content allowed\n%s", v.Decision, v.Rule, v.Explain())
	}
}

// TestPartialStandingHelpsButNeverDecides: attesters still earning
// standing count, but together at most threshold−1: a hundred of them
// (sleepers) reach nothing alone and block nothing, and with one
// established attester they complete a quorum.
func TestPartialStandingHelpsButNeverDecides(t *testing.T) {
	honest, evil := testContent("honest"), testContent("backdoor")
	bk := "partial"
	p := DefaultPolicy()
	sleepers := votesFor(t, bk, evil, gcc14, 333, span(100, 200)...)
	v := Evaluate(p, testCID(t, bk), sleepers, nil, "")
	if v.Decision == Allowed || v.Tally[0].Weight != 2*FullWeight {
		t.Fatalf("100 attesters at 1/3 standing: %s with weight %s, want below the threshold at weight 2", v.Decision, Weight(v.Tally[0].Weight))
	}
	if !strings.Contains(strings.Join(v.Reasons, "\n"), "an established attester must agree") {
		t.Fatalf("reasons do not say an established attester is needed: %q", v.Reasons)
	}

	p.VouchedPeers = peersOf(t, 1, 2, 3)
	v = Evaluate(p, testCID(t, bk), append(votesFor(t, bk, honest, gcc14, 0, 1, 2, 3), sleepers...), nil, "")
	if v.Decision != Allowed || *v.Content != honest {
		t.Fatalf("three established against 100 at 1/3 standing: %s by %s, want honest allowed\n%s", v.Decision, v.Rule, v.Explain())
	}

	p.VouchedPeers = peersOf(t, 1)
	v = Evaluate(p, testCID(t, bk), append(votesFor(t, bk, honest, gcc14, 0, 1), votesFor(t, bk, honest, gcc14, 500, 2, 3, 4, 5, 6)...), nil, "")
	if v.Decision != Allowed || v.Tally[0].Weight != 3*FullWeight {
		t.Fatalf("one established and five at half standing: %s at weight %s, want allowed at 3", v.Decision, Weight(v.Tally[0].Weight))
	}
}

// TestOneEstablishedDisputerBlocks keeps the dispute guarantee: an
// established reproducer of the same environment that got other bytes
// blocks the build.
func TestOneEstablishedDisputerBlocks(t *testing.T) {
	bk := "disputed"
	p := DefaultPolicy()
	p.VouchedPeers = peersOf(t, 1, 2, 3, 4)
	all := append(votesFor(t, bk, testContent("a"), gcc14, 0, 1, 2, 3), votesFor(t, bk, testContent("b"), gcc14, 0, 4)...)
	v := Evaluate(p, testCID(t, bk), all, nil, "")
	if v.Decision != Disputed {
		t.Fatalf("3 against 1 of one environment: %s by %s, want disputed", v.Decision, v.Rule)
	}
	if !strings.Contains(strings.Join(v.Reasons, "\n"), "may not build reproducibly") {
		t.Fatalf("reasons do not report the environment that did not reproduce: %q", v.Reasons)
	}
}

// TestOtherToolchainIsAnotherBuild: honest builders with another gcc get
// other bytes; that is another build of the key, not a dispute.
func TestOtherToolchainIsAnotherBuild(t *testing.T) {
	bk := "toolchains"
	a, b := testContent("gcc-14 bytes"), testContent("gcc-13 bytes")
	p := DefaultPolicy()
	p.VouchedPeers = peersOf(t, 1, 2, 3, 4, 5, 6, 7)
	all := append(votesFor(t, bk, a, gcc14, 0, 1, 2, 3, 4), votesFor(t, bk, b, gcc13, 0, 5, 6, 7)...)
	v := Evaluate(p, testCID(t, bk), all, nil, "")
	if v.Decision != Allowed || *v.Content != a {
		t.Fatalf("gcc-14 (4) and gcc-13 (3): %s by %s, want the heavier allowed\n%s", v.Decision, v.Rule, v.Explain())
	}
	if !strings.Contains(strings.Join(v.Reasons, "\n"), "another build environment") {
		t.Fatalf("reasons do not mention the other environment's build: %q", v.Reasons)
	}
	// One gcc-13 builder alone is no dispute of the gcc-14 quorum either.
	v = Evaluate(p, testCID(t, bk), append(votesFor(t, bk, a, gcc14, 0, 1, 2, 3), votesFor(t, bk, b, gcc13, 0, 5)...), nil, "")
	if v.Decision != Allowed || *v.Content != a {
		t.Fatalf("gcc-14 quorum and one gcc-13 builder: %s by %s, want allowed", v.Decision, v.Rule)
	}
	// An attester that states no environment is of every one: it
	// disputes as before.
	v = Evaluate(p, testCID(t, bk), append(votesFor(t, bk, a, gcc14, 0, 1, 2, 3), votesFor(t, bk, b, Builder{}, 0, 5)...), nil, "")
	if v.Decision != Disputed {
		t.Fatalf("quorum and an attester without environment: %s by %s, want disputed", v.Decision, v.Rule)
	}
}

// TestCorroboratedVotersEarn: only agreement that was not needed earns
// standing, so a group cannot lift itself to standing.
func TestCorroboratedVotersEarn(t *testing.T) {
	bk := "earn"
	c := testContent("c")
	p := DefaultPolicy()
	p.VouchedPeers = peersOf(t, 1, 2, 3, 4)
	all := append(votesFor(t, bk, c, gcc14, 0, 1, 2, 3, 4), votesFor(t, bk, c, gcc14, 400, 8)...)
	v := Evaluate(p, testCID(t, bk), all, nil, "")
	if v.Decision != Allowed {
		t.Fatalf("%s by %s", v.Decision, v.Rule)
	}
	for _, vi := range v.Tally[0].Voters {
		if !vi.Corroborated {
			t.Errorf("%s (weight %s) not corroborated; the others allow without it", vi.Peer, Weight(vi.Weight))
		}
	}
	// Exactly at the threshold, nobody's agreement was spare.
	v = Evaluate(p, testCID(t, bk), all[:3], nil, "")
	for _, vi := range v.Tally[0].Voters {
		if vi.Corroborated {
			t.Errorf("%s corroborated at an exact quorum", vi.Peer)
		}
	}
}

// TestFreshAgreementEarns: a fresh identity that agrees with an allowed
// build does not count, but its agreement is what earns it standing.
func TestFreshAgreementEarns(t *testing.T) {
	bk := "fresh-earns"
	c := testContent("c")
	p := DefaultPolicy()
	p.VouchedPeers = peersOf(t, 1, 2, 3)
	v := Evaluate(p, testCID(t, bk), votesFor(t, bk, c, gcc14, 0, 1, 2, 3, 9), nil, "")
	if v.Decision != Allowed {
		t.Fatalf("%s by %s", v.Decision, v.Rule)
	}
	for _, vi := range v.Tally[0].Voters {
		if vi.Peer == testPeer(t, 9) && (vi.Counted || !vi.Corroborated) {
			t.Fatalf("fresh agreeing voter: counted %v corroborated %v, want not counted but corroborated", vi.Counted, vi.Corroborated)
		}
	}
}

// TestUnstatedFieldsMatchAny: an attester that could not state its
// binutils (upgraded since the build) is of the same environment as one
// that did, so their different contents dispute; and an attester's
// newest attestation of a content says its environment.
func TestUnstatedFieldsMatchAny(t *testing.T) {
	bk := "unstated"
	p := DefaultPolicy()
	p.VouchedPeers = peersOf(t, 1, 2, 3, 4)
	partial := Builder{GCC: gcc14.GCC, Libc: gcc14.Libc}
	all := append(votesFor(t, bk, testContent("a"), gcc14, 0, 1, 2, 3), votesFor(t, bk, testContent("b"), partial, 0, 4)...)
	if v := Evaluate(p, testCID(t, bk), all, nil, ""); v.Decision != Disputed {
		t.Fatalf("gcc-14 quorum against a gcc-14 builder without binutils: %s by %s, want disputed", v.Decision, v.Rule)
	}

	// Peer 4 first stated gcc-14, then re-signed the same content with
	// what it learned: gcc-13. Only the newest counts.
	older := votesFor(t, bk, testContent("b"), gcc14, 0, 4)[0]
	a := older.Att.Attestation
	a.Builder, a.Time = gcc13, a.Time.Add(time.Hour)
	newer := Vote{Att: signAs(t, 4, a)}
	v := Evaluate(p, testCID(t, bk), append(votesFor(t, bk, testContent("a"), gcc14, 0, 1, 2, 3), older, newer), nil, "")
	if v.Decision != Allowed {
		t.Fatalf("a gcc-13 builder (re-signed from gcc-14) against a gcc-14 quorum: %s by %s, want allowed\n%s", v.Decision, v.Rule, v.Explain())
	}
}
