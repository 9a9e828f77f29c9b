package votes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// A valid attestation delivered by its attester is stored with the columns
// the store indexes and the address it came from.
func TestIngestFromStoresAValidAttestation(t *testing.T) {
	net := memnet.New()
	vb := joinBook(t, net, false, nil)
	k, id := mustKey(t)
	attesterNode := net.Join(id)
	s := junk(t, k, 1, 1000)
	added, err := vb.IngestFrom(context.Background(), s.Marshal(), id)
	if err != nil || !added {
		t.Fatalf("IngestFrom: added %v, %v", added, err)
	}
	r, ok, err := vb.store.GetAttestation(s.ID())
	if err != nil || !ok {
		t.Fatalf("not stored: %v", err)
	}
	a := s.Attestation
	if r.BuildKey != string(a.BuildKey) || r.VariantKey != string(a.VariantKey) || r.CPV != a.CPV || r.Platform != a.Platform ||
		r.Attester != id.String() || r.From != id.String() || r.Content != a.Content.String() || r.Time != a.Time.Unix() {
		t.Errorf("stored record %+v does not match the attestation", r)
	}
	if r.Addr != attesterNode.Addr().String() {
		t.Errorf("addr %q, want the attester's direct address %s", r.Addr, attesterNode.Addr())
	}
	// The same blob again is known: nothing new, no error.
	if added, err := vb.IngestFrom(context.Background(), s.Marshal(), id); added || err != nil {
		t.Errorf("known blob again: added %v, %v", added, err)
	}
	if vb.Rejected() != 0 {
		t.Errorf("%d rejections for valid input", vb.Rejected())
	}
}

// Everything checkable without the file is checked before anything is
// stored: signature, descriptor binding, claims.
func TestIngestRejectsWhatFailsItsChecks(t *testing.T) {
	vb := offlineBook(t, nil)
	k, id := mustKey(t)
	base := junk(t, k, 1, 1000)
	other := junk(t, k, 2, 1000)
	badSig := *base
	badSig.Signature = append([]byte(nil), base.Signature...)
	badSig.Signature[0] ^= 0xff
	cases := []struct {
		name string
		blob []byte
	}{
		{"not json", []byte("garbage")},
		{"bad signature", badSig.Marshal()},
		{"build key not the descriptor's", resign(t, base, k, func(a *trust.Attestation) { a.BuildKey = other.Attestation.BuildKey }).Marshal()},
		{"variant key not the descriptor's", resign(t, base, k, func(a *trust.Attestation) { a.VariantKey = other.Attestation.VariantKey }).Marshal()},
		{"cpv not the descriptor's", resign(t, base, k, func(a *trust.Attestation) { a.CPV = "sys-libs/glibc-2.40" }).Marshal()},
		{"no descriptor", resign(t, base, k, func(a *trust.Attestation) { a.Descriptor = nil }).Marshal()},
		{"platform not the descriptor's", resign(t, base, k, func(a *trust.Attestation) { a.Platform = "aarch64-unknown-linux-gnu/-O3" }).Marshal()},
		{"dated in the future", resign(t, base, k, func(a *trust.Attestation) { a.Time = time.Now().Add(48 * time.Hour) }).Marshal()},
		{"container larger than the limits", resign(t, base, k, func(a *trust.Attestation) { a.Size = vb.files.MaxImageBytes + maxContainerOverhead + 1 }).Marshal()},
		{"index key no attester may claim", resign(t, base, k, func(a *trust.Attestation) { a.Index["CATEGORY"] = "sys-apps" }).Marshal()},
		{"index USE contradicting the descriptor", resign(t, base, k, func(a *trust.Attestation) { a.Index["USE"] = "x"; a.Index["IUSE"] = "x" }).Marshal()},
		{"CFLAGS still -march=native", resign(t, base, k, func(a *trust.Attestation) {
			setDescriptor(t, a, func(d *identity.Descriptor) { d.CFLAGS = "-O2 -march=native" })
		}).Marshal()},
		{"LDFLAGS still -mtune=native", resign(t, base, k, func(a *trust.Attestation) {
			setDescriptor(t, a, func(d *identity.Descriptor) { d.LDFLAGS = "-Wl,-O1 -flto -mtune=native" })
		}).Marshal()},
	}
	for i, tc := range cases {
		added, err := vb.ingestAttestation(context.Background(), tc.blob, arrival{from: id}, false)
		if added || !errors.Is(err, errRejected) {
			t.Errorf("%s: added %v, %v; want rejected", tc.name, added, err)
		}
		if got := vb.Rejected(); got != int64(i+1) {
			t.Errorf("%s: %d rejections counted, want %d", tc.name, got, i+1)
		}
	}
	if u, _ := vb.store.TotalUsage(); u.Records != 0 {
		t.Fatalf("%d records stored from rejected input", u.Records)
	}
	// A batch skips the bad blob and keeps the good one.
	n, err := vb.ingestBatch(context.Background(), [][]byte{badSig.Marshal(), base.Marshal()}, arrival{from: id})
	if n != 1 || err != nil {
		t.Fatalf("batch with one bad blob: %d stored, %v; want 1, nil", n, err)
	}
}

// A descriptor with resolved flags is taken; one that still says native
// is refused with the flag named.
func TestRefuseNativeFlags(t *testing.T) {
	for _, tc := range []struct {
		desc identity.Descriptor
		want string // "" for accepted, else a substring of the error
	}{
		{identity.Descriptor{CFLAGS: "-O2 -pipe"}, ""},
		{identity.Descriptor{CFLAGS: "-O2 -march=znver3 -mavx2 --param=l1-cache-size=32 -mtune=znver3"}, ""},
		{identity.Descriptor{CFLAGS: "-O2 -march=native"}, "CFLAGS has -march=native"},
		{identity.Descriptor{CFLAGS: "-O2", CXXFLAGS: "-O2 -mtune=native"}, "CXXFLAGS has -mtune=native"},
		{identity.Descriptor{FCFLAGS: "-mcpu=native"}, "FCFLAGS has -mcpu=native"},
	} {
		err := refuseNativeFlags(tc.desc)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.desc, err, tc.want)
		}
	}
}

// One attester gets a few records per build key; a fifth is refused, and
// so is one past the build key's cap within the same batch.
func TestCapsPerAttesterAndPerBuildKey(t *testing.T) {
	vb := offlineBook(t, nil)
	k, id := mustKey(t)
	base := junk(t, k, 1, 1000)
	var mine [][]byte
	for i := range maxAttestationsPerAttester + 1 {
		mine = append(mine, resign(t, base, k, func(a *trust.Attestation) { a.Time = time.Now().Add(-time.Duration(i+1) * time.Minute) }).Marshal())
	}
	n, err := vb.ingest(context.Background(), mine, arrival{from: id}, false)
	if n != maxAttestationsPerAttester || !errors.Is(err, errTooMany) || !errors.Is(err, errRejected) {
		t.Fatalf("%d records by one attester: %d stored, %v; want %d and too many", len(mine), n, err, maxAttestationsPerAttester)
	}
	// Once stored, the cap holds across calls too.
	k2, _ := mustKey(t)
	fifth := resign(t, base, k, func(a *trust.Attestation) { a.Time = time.Now().Add(-time.Hour) })
	if _, err := vb.ingestAttestation(context.Background(), fifth.Marshal(), arrival{from: id}, false); !errors.Is(err, errTooMany) {
		t.Fatalf("fifth record later: %v, want too many", err)
	}
	// Another attester still has room.
	ingestAs(t, vb, resign(t, base, k2, nil), "")

	// A full build key takes no two new records of one batch: the first may
	// make room, the second is refused without evicting anything.
	full := junk(t, k, 2, 800)
	fillBuildKey(t, vb, full.Attestation, func(i int) (string, string) {
		return fmt.Sprintf("sybil-%d", i/maxAttestationsPerAttester), "junk-content"
	})
	a1 := resign(t, full, k2, nil)
	k3, _ := mustKey(t)
	a2 := resign(t, full, k3, nil)
	n, err = vb.ingest(context.Background(), blobsOf(a1, a2), arrival{}, false)
	if n != 1 || !errors.Is(err, errTooMany) {
		t.Fatalf("two votes into a full build key: %d stored, %v; want 1 and too many", n, err)
	}
	if total, _, _ := vb.store.CountForBuildKey(string(full.Attestation.BuildKey), ""); total != maxAttestationsPerBuild {
		t.Fatalf("full build key holds %d records, want %d", total, maxAttestationsPerBuild)
	}
}

// fillBuildKey stores maxAttestationsPerBuild placeholder records for a's
// build key; who names each record's attester and content.
func fillBuildKey(t testing.TB, vb *Book, a trust.Attestation, who func(i int) (attester, content string)) {
	t.Helper()
	var recs []store.AttestationRecord
	for i := range maxAttestationsPerBuild {
		attester, content := who(i)
		recs = append(recs, store.AttestationRecord{BuildKey: string(a.BuildKey), VariantKey: string(a.VariantKey), CPV: a.CPV, Platform: a.Platform,
			Attester: attester, Content: content, Blob: []byte(fmt.Sprintf("placeholder record %d of %s", i, a.BuildKey)),
			Time: 1, ReceivedAt: time.Unix(int64(i+1), 0)})
	}
	if _, err := vb.store.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
}

// makeRoomInBuild evicts a blocked peer's record first, then an
// attester's further record, and refuses when every record is worth as
// much as the new one.
func TestMakeRoomInFullBuildKey(t *testing.T) {
	k, _ := mustKey(t)
	base := junk(t, k, 7, 800)
	_, blocked := mustKey(t)
	hk, honest := mustKey(t)
	vote := resign(t, base, hk, nil)
	infos := func(vb *Book) []store.AttestationInfo {
		t.Helper()
		in, err := vb.store.InfosFor(string(base.Attestation.BuildKey))
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	count := func(in []store.AttestationInfo, attester string) int {
		n := 0
		for _, r := range in {
			if r.Attester == attester {
				n++
			}
		}
		return n
	}

	t.Run("blocked peer first", func(t *testing.T) {
		vb := offlineBook(t, func(c *config.Config) { c.Trust.BlockedPeers = []string{blocked.String()} })
		// 512 distinct attesters back the new vote's rivals, one of them blocked.
		fillBuildKey(t, vb, base.Attestation, func(i int) (string, string) {
			if i == 100 {
				return blocked.String(), "rival"
			}
			return fmt.Sprintf("sybil-%d", i), "rival"
		})
		ingestAs(t, vb, vote, honest)
		in := infos(vb)
		if len(in) != maxAttestationsPerBuild || count(in, blocked.String()) != 0 || count(in, honest.String()) != 1 {
			t.Fatalf("after the vote: %d records, %d blocked, %d honest; want %d, 0, 1",
				len(in), count(in, blocked.String()), count(in, honest.String()), maxAttestationsPerBuild)
		}
	})

	t.Run("an attester's further record", func(t *testing.T) {
		vb := offlineBook(t, nil)
		// 128 attesters with 4 records each: the latest received of
		// those further records goes.
		fillBuildKey(t, vb, base.Attestation, func(i int) (string, string) {
			return fmt.Sprintf("sybil-%d", i/maxAttestationsPerAttester), "rival"
		})
		ingestAs(t, vb, vote, honest)
		in := infos(vb)
		last := fmt.Sprintf("sybil-%d", (maxAttestationsPerBuild-1)/maxAttestationsPerAttester)
		if len(in) != maxAttestationsPerBuild || count(in, honest.String()) != 1 || count(in, last) != maxAttestationsPerAttester-1 {
			t.Fatalf("after the vote: %d records, honest %d, %s %d; want %d, 1, %d",
				len(in), count(in, honest.String()), last, count(in, last), maxAttestationsPerBuild, maxAttestationsPerAttester-1)
		}
	})

	t.Run("refused when nothing is worth less", func(t *testing.T) {
		vb := offlineBook(t, nil)
		fillBuildKey(t, vb, base.Attestation, func(i int) (string, string) {
			return fmt.Sprintf("sybil-%d", i), "rival"
		})
		_, err := vb.ingestAttestation(context.Background(), vote.Marshal(), arrival{from: honest}, false)
		if !errors.Is(err, errTooMany) || !errors.Is(err, errRejected) {
			t.Fatalf("vote into a build key of 512 agreeing attesters: %v, want too many", err)
		}
		// As gossip, it is valid: ignored, the relay not penalised.
		_, relay := mustKey(t)
		if err := vb.OnGossip(honest, relay, vb.platform, gossipAttestation(vote.Marshal())); !errors.Is(err, p2p.ErrGossipIgnore) {
			t.Fatalf("gossiped over the cap: %v, want ignored", err)
		}
		if has, _ := vb.store.HasAttestation(vote.ID()); has || len(infos(vb)) != maxAttestationsPerBuild {
			t.Fatalf("refused vote stored or records evicted")
		}
	})
}

// A daemon's own attestation coming back from a peer is not taken: it
// comes only from PKGDIR, and a withdrawn one stays withdrawn.
func TestOwnAttestationEchoIsIgnored(t *testing.T) {
	net := memnet.New()
	vb := joinBook(t, net, false, nil)
	_, relay := mustKey(t)
	own := junk(t, vb.key, 1, 1000)
	added, err := vb.IngestFrom(context.Background(), own.Marshal(), relay)
	if added || err != nil {
		t.Fatalf("own attestation from a peer: added %v, %v", added, err)
	}
	if has, _ := vb.store.HasAttestation(own.ID()); has {
		t.Fatal("own attestation taken back from the network")
	}
	if err := vb.OnGossip(relay, relay, vb.platform, gossipAttestation(own.Marshal())); !errors.Is(err, p2p.ErrGossipIgnore) {
		t.Fatalf("own attestation gossiped back: %v, want ignored (not forwarded, nobody penalised)", err)
	}
	if has, _ := vb.store.HasAttestation(own.ID()); has {
		t.Fatal("own attestation taken back from gossip")
	}
}

// Each gossip tag goes to its own check; what fails a check is rejected
// (the relay penalised), what is valid but unwanted is ignored.
func TestOnGossipByTag(t *testing.T) {
	vb := offlineBook(t, nil)
	k, id := mustKey(t)
	_, relay := mustKey(t)
	s := junk(t, k, 1, 1000)

	if err := vb.OnGossip(id, relay, vb.platform, gossipAttestation(s.Marshal())); err != nil {
		t.Fatalf("valid attestation: %v", err)
	}
	if has, _ := vb.store.HasAttestation(s.ID()); !has {
		t.Fatal("gossiped attestation not stored")
	}
	r, _, _ := vb.store.GetAttestation(s.ID())
	if r.From != relay.String() || r.Addr != "" {
		t.Errorf("relayed record: from %s addr %q; want the relay and no address", r.From, r.Addr)
	}

	bad := *s
	bad.Signature = append([]byte(nil), s.Signature...)
	bad.Signature[3] ^= 1
	err := vb.OnGossip(id, relay, vb.platform, gossipAttestation(bad.Marshal()))
	if err == nil || errors.Is(err, p2p.ErrGossipIgnore) || !errors.Is(err, errRejected) {
		t.Errorf("forged attestation: %v; want rejected, not ignored", err)
	}

	if err := vb.OnGossip(id, relay, vb.platform, gossipEvidence([]byte("{}"))); err == nil || errors.Is(err, p2p.ErrGossipIgnore) {
		t.Errorf("malformed evidence: %v; want rejected", err)
	}

	// Endorsements: kept for an attested build key, ignored otherwise.
	_, priv := newSigner(t)
	e := NewEndorsement(s.Attestation.BuildKey, vb.platform, s.Attestation.Content, priv)
	if err := vb.OnGossip(id, relay, vb.platform, append([]byte{gossipTagEndorsement}, e.Marshal()...)); err != nil {
		t.Fatalf("endorsement of an attested build: %v", err)
	}
	if es, _ := vb.store.EndorsementsFor(string(s.Attestation.BuildKey)); len(es) != 1 {
		t.Fatalf("%d endorsements held, want 1", len(es))
	}
	o := junk(t, k, 2, 1000)
	e2 := NewEndorsement(o.Attestation.BuildKey, vb.platform, o.Attestation.Content, priv)
	if err := vb.OnGossip(id, relay, vb.platform, append([]byte{gossipTagEndorsement}, e2.Marshal()...)); !errors.Is(err, p2p.ErrGossipIgnore) {
		t.Errorf("endorsement of a build nobody attested: %v, want ignored", err)
	}

	if err := vb.OnGossip(id, relay, vb.platform, []byte("zjunk")); err == nil || !strings.Contains(err.Error(), "unknown gossip message type") {
		t.Errorf("unknown tag: %v", err)
	}
	for _, m := range [][]byte{nil, {gossipTagAttestation}} {
		if err := vb.OnGossip(id, relay, vb.platform, m); err == nil || errors.Is(err, p2p.ErrGossipIgnore) {
			t.Errorf("message %q: %v, want rejected", m, err)
		}
	}
}

// A relay gets limits.peer_gossip_rate messages a second (ten seconds'
// worth in a burst); past that its messages are ignored before any check,
// while other relays go on.
func TestGossipRateLimitPerRelay(t *testing.T) {
	vb := offlineBook(t, func(c *config.Config) { c.Limits.PeerGossipRate = 1 })
	k, id := mustKey(t)
	_, flood := mustKey(t)
	_, other := mustKey(t)
	s := junk(t, k, 1, 1000)
	burst := 10
	for i := range burst {
		if err := vb.OnGossip(id, flood, vb.platform, []byte("zz")); errors.Is(err, p2p.ErrGossipIgnore) {
			t.Fatalf("message %d of the burst ignored for rate: %v", i, err)
		}
	}
	err := vb.OnGossip(id, flood, vb.platform, gossipAttestation(s.Marshal()))
	if !errors.Is(err, p2p.ErrGossipIgnore) || !strings.Contains(err.Error(), "peer_gossip_rate") {
		t.Fatalf("message past the burst: %v, want ignored for rate", err)
	}
	if has, _ := vb.store.HasAttestation(s.ID()); has {
		t.Fatal("a message past the rate was checked and stored")
	}
	if err := vb.OnGossip(id, other, vb.platform, gossipAttestation(s.Marshal())); err != nil {
		t.Fatalf("another relay: %v", err)
	}
}

// An equivocation revealed by a gossiped attestation is recorded and
// gossiped on; one revealed by a direct delivery is recorded only.
func TestEquivocationFromGossipIsRecordedAndPublished(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, true, nil)
	k, id := mustKey(t)
	s1 := junk(t, k, 1, 1000)
	s2 := resign(t, s1, k, func(at *trust.Attestation) { at.Content.Image[0] ^= 0xff })
	for _, vb := range []member{a, b} {
		ingestAs(t, vb.Book, s1, id)
	}
	// b learns of s2 from a's relay: a verified it, found the
	// equivocation and published the proof.
	if err := a.OnGossip(id, id, a.platform, gossipAttestation(s2.Marshal())); err != nil {
		t.Fatal(err)
	}
	for name, vb := range map[string]member{"a": a, "b": b} {
		ev, err := vb.store.EvidenceFor(string(s1.Attestation.BuildKey))
		if err != nil || len(ev) != 1 || ev[0].Peer != id.String() {
			t.Errorf("%s holds evidence %v, %v; want one record against %s", name, ev, err, id)
		}
	}
	if a.node.Published() != 1 {
		t.Errorf("a published %d messages, want the proof only", a.node.Published())
	}
	v, _, err := b.Verdict(s1.Attestation.BuildKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range v.Tally {
		for _, vi := range tl.Voters {
			if vi.Peer == id && vi.Counted {
				t.Errorf("equivocating peer counted in %s", tl.Content)
			}
		}
	}
}
