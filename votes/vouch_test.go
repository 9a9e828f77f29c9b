package votes

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

func vouchMsg(s *trust.SignedVouch) []byte { return append([]byte{gossipTagVouch}, s.Marshal()...) }

func signVouch(t testing.TB, k crypto.PrivKey, vouchee peer.ID, issued time.Time, ttl time.Duration) *trust.SignedVouch {
	t.Helper()
	s, err := trust.SignVouch(trust.Vouch{Vouchee: vouchee, Issued: issued, Expires: issued.Add(ttl)}, k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawVouch signs any payload as a vouch envelope, as a hostile peer can.
func rawVouch(t testing.TB, k crypto.PrivKey, payload []byte) []byte {
	t.Helper()
	sig, err := k.Sign(append([]byte(trust.VouchDomain), payload...))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.MarshalPublicKey(k.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(struct {
		Payload   []byte `json:"payload"`
		PublicKey []byte `json:"public_key"`
		Signature []byte `json:"signature"`
	}{payload, pub, sig})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{gossipTagVouch}, b...)
}

// A daemon's vouch reaches its peers by gossip; a peer that counts the
// voucher fully gives the vouchee half a vote, the vouchee's own vouch a
// quarter, and a revocation takes both back.
func TestVouchTravelsAndDecays(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, true, func(c *config.Config) {
		c.Trust.FreshWeight = 0
		c.Trust.VouchedPeers = []string{a.self.String()}
	})
	c := joinBook(t, net, true, func(c *config.Config) { c.Trust.FreshWeight = 0 })
	xk, x := mustKey(t)
	_, y := mustKey(t)
	ctx := t.Context()
	gen := b.Generation()
	first, err := a.Vouch(ctx, x, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "b holds a's vouch", func() bool { vs, _ := b.Vouches(a.self); return len(vs) == 1 && vs[0].Active })
	ws, err := b.VouchedWeights()
	if err != nil {
		t.Fatal(err)
	}
	if ws[x].Weight != 500 || ws[x].Voucher != a.self || ws[x].Hops != 1 {
		t.Fatalf("b's weight for x: %+v, want 500 by a at hop 1", ws[x])
	}
	if w, from := b.standingOf(x); w != 500 || !strings.Contains(from, "vouched for by "+a.self.String()+" (1 hop(s), decayed to 50 %)") {
		t.Fatalf("standingOf(x) = %d %q", w, from)
	}
	if b.Generation() == gen {
		t.Fatal("new vouch weights left the generation alone: listings would keep the old weights")
	}
	// c does not count a: a's vouch gives x nothing there.
	if ws, _ := c.VouchedWeights(); len(ws) != 0 {
		t.Fatalf("c: %v, want no vouched weight", ws)
	}

	// x vouches for y: hop 2, a quarter. Gossip from x's key arrives via c.
	if err := b.OnGossip(x, c.self, b.platform, vouchMsg(signVouch(t, xk, y, time.Now().Add(-time.Minute), time.Hour))); err != nil {
		t.Fatal(err)
	}
	if ws, _ := b.VouchedWeights(); ws[y].Weight != 250 || ws[y].Hops != 2 || ws[y].Root != a.self {
		t.Fatalf("y: %+v, want 250 at hop 2 from a", ws[y])
	}

	// a revokes: x and y lose what the vouch gave them.
	if _, err := a.Vouch(ctx, x, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b holds a's revocation", func() bool { vs, _ := b.Vouches(a.self); return len(vs) == 1 && !vs[0].Active })
	if ws, _ := b.VouchedWeights(); len(ws) != 0 {
		t.Fatalf("after revocation: %v, want none", ws)
	}
	// The old vouch, replayed, does not come back.
	if err := b.OnGossip(a.self, c.self, b.platform, vouchMsg(first)); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("replayed vouch after its revocation: %v, want ignored", err)
	}
	if ws, _ := b.VouchedWeights(); len(ws) != 0 {
		t.Fatalf("after the replay: %v, want none", ws)
	}
}

// Forged, relabelled and self vouches are rejected and penalise the relay;
// a voucher's vouches are bounded by limits.peer_vouches.
func TestVouchRejectsAndBounds(t *testing.T) {
	net := memnet.New()
	b := joinBook(t, net, true, func(c *config.Config) { c.Limits.PeerVouches = 3 })
	vk, v := mustKey(t)
	_, relay := mustKey(t)
	now := time.Now().UTC().Truncate(time.Second)
	good := signVouch(t, vk, relay, now, time.Hour)

	var w struct {
		Version int       `json:"version"`
		Vouchee string    `json:"vouchee"`
		Issued  time.Time `json:"issued"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal(good.Payload, &w); err != nil {
		t.Fatal(err)
	}
	_, other := mustKey(t)
	w.Vouchee = other.String()
	relabelled, _ := json.Marshal(w)
	forged := vouchMsg(good)
	forged[len(forged)-5] ^= 1 // inside the base64 signature
	w.Vouchee = v.String()
	self, _ := json.Marshal(w)
	var env map[string][]byte
	if err := json.Unmarshal(good.Marshal(), &env); err != nil {
		t.Fatal(err)
	}
	env["payload"] = relabelled
	relabelledMsg, _ := json.Marshal(env)

	for name, msg := range map[string][]byte{
		"forged":     forged,
		"relabelled": append([]byte{gossipTagVouch}, relabelledMsg...),
		"self":       rawVouch(t, vk, self),
	} {
		before := b.Rejected()
		err := b.OnGossip(v, relay, b.platform, msg)
		if err == nil || errors.Is(err, wire.ErrGossipIgnore) {
			t.Errorf("%s: %v, want a rejection that penalises the relay", name, err)
		}
		if b.Rejected() != before+1 {
			t.Errorf("%s: not counted as rejected", name)
		}
	}
	if vs, _ := b.Vouches(""); len(vs) != 0 {
		t.Fatalf("stored %d vouches from rejected input", len(vs))
	}

	// The per-voucher bound: three vouchees, the fourth is ignored, a
	// renewal of a held one still passes.
	var vouchees []peer.ID
	for i := range 4 {
		_, id := mustKey(t)
		vouchees = append(vouchees, id)
		err := b.OnGossip(v, relay, b.platform, vouchMsg(signVouch(t, vk, id, now, time.Hour)))
		if i < 3 && err != nil {
			t.Fatalf("vouch %d: %v", i, err)
		}
		if i == 3 && !errors.Is(err, wire.ErrGossipIgnore) {
			t.Fatalf("vouch past limits.peer_vouches: %v, want ignored", err)
		}
	}
	if err := b.OnGossip(v, relay, b.platform, vouchMsg(signVouch(t, vk, vouchees[0], now.Add(time.Second), 2*time.Hour))); err != nil {
		t.Fatalf("renewal at the bound: %v", err)
	}
	if vs, _ := b.Vouches(v); len(vs) != 3 {
		t.Fatalf("%d vouches by v stored, want 3", len(vs))
	}
	// An expired vouch and one dated far ahead are not stored.
	for name, s := range map[string]*trust.SignedVouch{
		"expired": signVouch(t, vk, vouchees[1], now.Add(-2*time.Hour), time.Hour),
		"future":  signVouch(t, vk, vouchees[1], now.Add(2*vouchClockSkew), time.Hour),
	} {
		if err := b.OnGossip(v, relay, b.platform, vouchMsg(s)); !errors.Is(err, wire.ErrGossipIgnore) {
			t.Errorf("%s: %v, want ignored", name, err)
		}
	}
}

// Vouched identities weigh half a vote each: without an established
// attester they never reach the threshold however many they are; with one
// they can complete it (threshold 3: 1 + min(n × 0.5, 2)).
func TestVouchedWeightInVerdicts(t *testing.T) {
	rk, root := mustKey(t)
	k0, _ := mustKey(t)
	base := junk(t, k0, 1, 1000)
	bk := base.Attestation.BuildKey
	vb := joinBook(t, memnet.New(), false, func(c *config.Config) {
		c.Trust.FreshWeight = 0
		c.Trust.VouchedPeers = []string{root.String()}
	})
	now := time.Now().UTC().Truncate(time.Second)
	_, relay := mustKey(t)
	var vouched []*trust.Signed
	for range 4 {
		k, id := mustKey(t)
		vouched = append(vouched, resign(t, base, k, nil))
		if err := vb.OnGossip(root, relay, vb.platform, vouchMsg(signVouch(t, rk, id, now, time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range vouched {
		ingestAs(t, vb.Book, s, s.Attester)
	}
	v, _, err := vb.Verdict(bk)
	if err != nil {
		t.Fatal(err)
	}
	if v.Decision != trust.Unknown || v.Tally[0].Weight != 2*trust.FullWeight {
		t.Fatalf("four vouched alone: %s, weight %d; want unknown at 2", v.Decision, v.Tally[0].Weight)
	}
	vi, _ := voter(v, vouched[0].Attester)
	if !vi.Counted || vi.Weight != 500 || !strings.HasPrefix(vi.WeightFrom, "vouched for by "+root.String()) {
		t.Fatalf("vouched voter: %+v", vi)
	}
	ingestAs(t, vb.Book, resign(t, base, rk, nil), root)
	v, _, err = vb.Verdict(bk)
	if err != nil {
		t.Fatal(err)
	}
	if v.Decision != trust.Allowed || v.Tally[0].Weight != 3*trust.FullWeight {
		t.Fatalf("root + four vouched: %s, weight %d; want allowed at 3", v.Decision, v.Tally[0].Weight)
	}
}

// A vouch signed by a key of trust.vouch_keyring (a Gentoo developer's)
// gives its vouchee hop-1 weight; a daemon without that key cannot check
// it and neither keeps nor relays it.
func TestPGPVouchFromKeyring(t *testing.T) {
	dev, err := openpgp.NewEntity("dev", "", "dev@gentoo.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	net := memnet.New()
	with := joinBook(t, net, true, func(c *config.Config) { c.Trust.FreshWeight = 0 })
	with.policy.VouchKeyring = openpgp.EntityList{dev}
	without := joinBook(t, net, true, func(c *config.Config) { c.Trust.FreshWeight = 0 })
	_, x := mustKey(t)
	_, relay := mustKey(t)
	now := time.Now().UTC().Truncate(time.Second)
	blob, err := trust.SignPGPVouch(trust.Vouch{Vouchee: x, Issued: now, Expires: now.Add(time.Hour)}, dev)
	if err != nil {
		t.Fatal(err)
	}
	msg := append([]byte{gossipTagPGPVouch}, blob...)
	if err := without.OnGossip(relay, relay, without.platform, msg); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("without the keyring: %v, want ignored", err)
	}
	if err := with.OnGossip(relay, relay, with.platform, msg); err != nil {
		t.Fatal(err)
	}
	if ws, _ := with.VouchedWeights(); ws[x].Weight != 500 {
		t.Fatalf("x: %+v, want 500", ws[x])
	}
	w, from := with.standingOf(x)
	if w != 500 || !strings.Contains(from, "vouched for by OpenPGP key ") {
		t.Fatalf("standingOf(x) = %d %q", w, from)
	}
	vs, err := with.Vouches(trust.PGPVoucher(dev))
	if err != nil || len(vs) != 1 || vs[0].Vouchee != x || !vs[0].Active {
		t.Fatalf("vouches by the key: %+v, %v", vs, err)
	}
	// Tampered in transit: rejected, the relay penalised.
	bad := append([]byte(nil), msg...)
	bad[len(bad)-5] ^= 1
	if err := with.OnGossip(relay, relay, with.platform, bad); err == nil || errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("tampered OpenPGP vouch: %v, want rejected", err)
	}
	// Imported over the local API: stored and gossiped to peers.
	_, y := mustKey(t)
	blob, err = trust.SignPGPVouch(trust.Vouch{Vouchee: y, Issued: now, Expires: now.Add(time.Hour)}, dev)
	if err != nil {
		t.Fatal(err)
	}
	other := joinBook(t, net, true, nil)
	other.policy.VouchKeyring = openpgp.EntityList{dev}
	if _, err := with.ImportPGPVouch(t.Context(), blob); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the imported vouch to reach a peer with the keyring", func() bool {
		vs, _ := other.Vouches(trust.PGPVoucher(dev))
		return len(vs) == 1 && vs[0].Vouchee == y
	})
}

// Republishing gossips only what this daemon signed or imported: a peer
// that joined after a vouch was made learns it then, and vouches learnt
// from others are left to their origins.
func TestRepublishOwnVouches(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	ctx := t.Context()
	_, x := mustKey(t)
	if _, err := a.Vouch(ctx, x, time.Hour); err != nil {
		t.Fatal(err)
	}
	// A vouch a learnt from someone else.
	ok, _ := mustKey(t)
	_, y := mustKey(t)
	if err := a.OnGossip(y, y, a.platform, vouchMsg(signVouch(t, ok, y, time.Now().Add(-time.Minute), time.Hour))); err != nil {
		t.Fatal(err)
	}
	late := joinBook(t, net, true, nil)
	if vs, _ := late.Vouches(""); len(vs) != 0 {
		t.Fatalf("the late peer holds %d vouches before any republishing", len(vs))
	}
	a.republishVouches(ctx)
	eventually(t, "the late peer to learn a's vouch", func() bool { vs, _ := late.Vouches(a.self); return len(vs) == 1 })
	if vs, _ := late.Vouches(""); len(vs) != 1 {
		t.Fatalf("the late peer holds %d vouches, want only a's own", len(vs))
	}
}
