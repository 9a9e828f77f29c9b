package trust

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

var vouchT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func signVouch(t testing.TB, voucher, vouchee int, issued time.Time, life time.Duration) *SignedVouch {
	t.Helper()
	s, err := SignVouch(Vouch{Vouchee: testPeer(t, vouchee), Issued: issued, Expires: issued.Add(life)}, testKey(t, voucher))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVouchSignDecode(t *testing.T) {
	s := signVouch(t, 1, 2, vouchT0, 30*24*time.Hour)
	if s.Voucher != testPeer(t, 1) || s.Vouch.Vouchee != testPeer(t, 2) {
		t.Fatalf("voucher %s vouchee %s", s.Voucher, s.Vouch.Vouchee)
	}
	d, err := DecodeVouch(s.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if d.ID() != s.ID() || d.Voucher != s.Voucher || !d.Vouch.Issued.Equal(vouchT0) {
		t.Fatalf("decoded %+v, want %+v", d, s)
	}
	if err := d.Verify(); err != nil {
		t.Fatal(err)
	}
	if !d.Vouch.ActiveAt(vouchT0) || d.Vouch.ActiveAt(vouchT0.Add(30*24*time.Hour)) || d.Vouch.ActiveAt(vouchT0.Add(-time.Second)) {
		t.Fatal("ActiveAt: want active from issue until (not at) expiry")
	}
	if d.Vouch.Revocation() {
		t.Fatal("a 30-day vouch is no revocation")
	}
	if r := signVouch(t, 1, 2, vouchT0, 0); !r.Vouch.Revocation() || r.Vouch.ActiveAt(vouchT0) {
		t.Fatal("expires == issued: want a revocation, never active")
	}
}

func TestVouchRejects(t *testing.T) {
	good := signVouch(t, 1, 2, vouchT0, time.Hour)
	relabel := func(mutate func(*vouchWire)) []byte {
		var w vouchWire
		if err := json.Unmarshal(good.Payload, &w); err != nil {
			t.Fatal(err)
		}
		mutate(&w)
		p, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(signedWire{Payload: p, PublicKey: good.PublicKey, Signature: good.Signature})
		return b
	}
	attSig := func() []byte {
		// A signature made over the same payload without the domain
		// (as if for another record type) must not pass.
		sig, err := testKey(t, 1).Sign(good.Payload)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(signedWire{Payload: good.Payload, PublicKey: good.PublicKey, Signature: sig})
		return b
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"relabelled vouchee", relabel(func(w *vouchWire) { w.Vouchee = testPeer(t, 3).String() }), ErrBadSignature},
		{"extended expiry", relabel(func(w *vouchWire) { w.Expires = w.Expires.Add(time.Hour) }), ErrBadSignature},
		{"no domain", attSig(), ErrBadSignature},
		{"oversized", []byte(`{"payload":"` + strings.Repeat("A", MaxSignedVouchSize) + `"}`), ErrMalformed},
		{"unknown field", []byte(`{"payload":"","public_key":"","signature":"","x":1}`), ErrMalformed},
		{"empty", []byte(`{}`), ErrMalformed},
	} {
		if _, err := DecodeVouch(tc.raw); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		v    Vouch
	}{
		{"self", Vouch{Vouchee: testPeer(t, 1), Issued: vouchT0, Expires: vouchT0.Add(time.Hour)}},
		{"expires before issue", Vouch{Vouchee: testPeer(t, 2), Issued: vouchT0, Expires: vouchT0.Add(-time.Second)}},
		{"over a year", Vouch{Vouchee: testPeer(t, 2), Issued: vouchT0, Expires: vouchT0.Add(MaxVouchLifetime + time.Second)}},
		{"no vouchee", Vouch{Issued: vouchT0, Expires: vouchT0.Add(time.Hour)}},
		{"no time", Vouch{Vouchee: testPeer(t, 2)}},
		{"future version", Vouch{Version: 2, Vouchee: testPeer(t, 2), Issued: vouchT0, Expires: vouchT0.Add(time.Hour)}},
	} {
		if _, err := SignVouch(tc.v, testKey(t, 1)); err == nil {
			t.Errorf("%s: signed, want an error", tc.name)
		}
	}
}

// TestVouchGraphWeights: weight decays per hop from the roots, an identity
// takes its best (shortest) path, and blocked peers pass nothing on.
func TestVouchGraphWeights(t *testing.T) {
	p := func(n int) peer.ID { return testPeer(t, n) }
	edges := []VouchEdge{
		{p(1), p(2)}, // root 1 → 2 (hop 1)
		{p(2), p(3)}, // 2 → 3 (hop 2)
		{p(3), p(4)}, // 3 → 4 (hop 3: beyond the default 2 hops)
		{p(5), p(3)}, // 5 is nobody: gives nothing
		{p(2), p(1)}, // a vouch for a root adds nothing to it
		{p(6), p(7)}, // 6 is a root too: 7 at hop 1
		{p(7), p(2)}, // 2 also reachable at hop 2: keeps hop 1
		{p(2), p(8)}, // 8 is blocked
		{p(8), p(9)}, // and so gives nothing
		{p(6), p(10)},
		{p(1), p(10)}, // equal paths: the smaller voucher id explains
	}
	g := VouchGraph{Roots: []peer.ID{p(1), p(6)}, Blocked: []peer.ID{p(8)}, Edges: edges, Decay: 50, Hops: 2}
	w := g.Weights()
	want := map[peer.ID]int{p(2): 500, p(3): 250, p(7): 500, p(10): 500}
	if len(w) != len(want) {
		t.Fatalf("weights %v, want %v", w, want)
	}
	for id, ww := range want {
		if w[id].Weight != ww {
			t.Errorf("%s: weight %d, want %d", id, w[id].Weight, ww)
		}
	}
	if w[p(3)].Hops != 2 || w[p(3)].Voucher != p(2) || w[p(3)].Root != p(1) {
		t.Errorf("3's path: %+v", w[p(3)])
	}
	if v := w[p(10)].Voucher; v != min(p(1), p(6)) {
		t.Errorf("10's voucher %s, want the smaller id", v)
	}
	if !strings.Contains(w[p(3)].From(), "2 hop(s), decayed to 25 %") {
		t.Errorf("From: %q", w[p(3)].From())
	}
	g.Hops = 3
	if got := g.Weights()[p(4)].Weight; got != 125 {
		t.Errorf("3 hops: 4 weighs %d, want 125", got)
	}
	g.Decay = 0
	if got := g.Weights(); len(got) != 0 {
		t.Errorf("decay 0: %v, want vouching off", got)
	}
	g.Decay, g.Hops = 99, 1
	if got := g.Weights()[p(2)].Weight; got >= FullWeight {
		t.Errorf("decay 99: weight %d, want partial", got)
	}
}

// TestEvaluateVouchedWeights: vouched weight is partial, so vouched
// identities never reach a quorum or a dispute without an established
// attester, however many.
func TestEvaluateVouchedWeights(t *testing.T) {
	bk := testCID(t, "vouched")
	c, other := testContent("c"), testContent("other")
	p := DefaultPolicy() // threshold 3, dispute 1, fresh weight 0
	vouched := func(n int, content ContentID, w int) Vote {
		return Vote{Att: signAs(t, n, testAttestation(t, bk, content)), Standing: w, StandingFrom: Vouched{Weight: w, Voucher: testPeer(t, 99), Hops: 1}.From()}
	}
	var votes []Vote
	for i := 1; i <= 8; i++ {
		votes = append(votes, vouched(i, c, 500))
	}
	v := Evaluate(p, bk, votes, nil, "")
	if v.Decision != Unknown || v.Tally[0].Weight != 2*FullWeight {
		t.Fatalf("eight vouched at 50 %%: %s, weight %d; want unknown at the cap 2", v.Decision, v.Tally[0].Weight)
	}
	if vi := v.Tally[0].Voters[0]; !vi.Counted || !strings.HasPrefix(vi.WeightFrom, "vouched for by ") {
		t.Fatalf("voter %+v: want counted, weight from a vouch", vi)
	}
	// One established voter (p's vouched peer) lifts the vouched ones to
	// the threshold: 1 + min(8 × 0.5, 2) = 3.
	p.VouchedPeers = []peer.ID{testPeer(t, 50)}
	v = Evaluate(p, bk, append(votes, Vote{Att: signAs(t, 50, testAttestation(t, bk, c))}), nil, "")
	if v.Decision != Allowed || v.Tally[0].Weight != 3*FullWeight {
		t.Fatalf("established + vouched: %s, weight %d", v.Decision, v.Tally[0].Weight)
	}
	// Two at 50 % with one established at threshold 2: 1 + 1 = 2, allowed.
	p.Threshold = 2
	v = Evaluate(p, bk, []Vote{vouched(1, c, 500), vouched(2, c, 500), {Att: signAs(t, 50, testAttestation(t, bk, c))}}, nil, "")
	if v.Decision != Allowed {
		t.Fatalf("threshold 2, one established + two vouched at 50 %%: %s (%v)", v.Decision, v.Reasons)
	}
	// One vouched at 50 % and one established: 1.5 < 2.
	v = Evaluate(p, bk, []Vote{vouched(1, c, 500), {Att: signAs(t, 50, testAttestation(t, bk, c))}}, nil, "")
	if v.Decision != Unknown {
		t.Fatalf("threshold 2, 1 + 0.5: %s", v.Decision)
	}
	// Vouched rivals alone stay under one dispute against an allowed build.
	p.Threshold = 1
	rivals := []Vote{{Att: signAs(t, 50, testAttestation(t, bk, c))}}
	for i := 1; i <= 8; i++ {
		rivals = append(rivals, vouched(i, other, 500))
	}
	v = Evaluate(p, bk, rivals, nil, "")
	if v.Decision != Allowed || *v.Content != c {
		t.Fatalf("vouched rivals: %s, want the established voter's content allowed", v.Decision)
	}
}
