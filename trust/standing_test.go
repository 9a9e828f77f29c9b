package trust

import (
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestBackingNeedsGoodStanding: a blocked or equivocating voter cannot
// lend PGP or trusted-peer backing to its content, which would otherwise
// override an honest quorum.
func TestBackingNeedsGoodStanding(t *testing.T) {
	bk := testCID(t, "standing")
	honest, evil := testContent("honest"), testContent("evil")
	var votes []Vote
	for i := 1; i <= 3; i++ {
		votes = append(votes, Vote{Att: signAs(t, i, testAttestation(t, bk, honest))})
	}
	bad := Vote{Att: signAs(t, 9, testAttestation(t, bk, evil)), PGPVerified: true}
	p := labPolicy()
	p.Dispute = 2
	e, err := openpgp.NewEntity("k", "", "k@example.org", nil)
	if err != nil {
		t.Fatal(err)
	}
	p.PGPKeyring = openpgp.EntityList{e}
	p.BlockedPeers = []peer.ID{testPeer(t, 9)}
	v := Evaluate(p, bk, append(votes, bad), nil, "")
	if v.Decision != Allowed || *v.Content != honest {
		t.Fatalf("blocked peer's PGP-verified vote: %s by %s, want the honest content allowed", v.Decision, v.Rule)
	}

	p.BlockedPeers = nil
	p.TrustedPeers = []peer.ID{testPeer(t, 9)}
	other := testAttestation(t, bk, testContent("evil-2"))
	ev := DetectEquivocation([]*Signed{bad.Att, signAs(t, 9, other)})
	if len(ev) != 1 {
		t.Fatalf("want one equivocation, got %d", len(ev))
	}
	v = Evaluate(p, bk, append(votes, Vote{Att: bad.Att}), ev, "")
	if v.Decision != Allowed || *v.Content != honest {
		t.Fatalf("equivocating trusted peer: %s by %s, want the honest content allowed", v.Decision, v.Rule)
	}
	// The control: in good standing, the same backing wins.
	v = Evaluate(p, bk, append(votes, Vote{Att: bad.Att}), nil, "")
	if v.Decision != Allowed || *v.Content != evil || v.Rule != RuleTrustedPeer {
		t.Fatalf("trusted peer in good standing: %s by %s", v.Decision, v.Rule)
	}
}
