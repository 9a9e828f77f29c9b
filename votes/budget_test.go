package votes

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

var testPlatform = hostile.Platform{CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -pipe", CXXFLAGS: "-O2 -pipe", LDFLAGS: "-Wl,-O1"}

// offlineBook is a Book on a fresh store, configured as a daemon with
// cfg would configure it, on an in-memory network of its own.
func offlineBook(t testing.TB, configure func(*config.Config)) *Book {
	t.Helper()
	return joinBook(t, memnet.New(), false, configure).Book
}

func mustKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, err := hostile.Identity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// ingestAs ingests s as delivered directly by from, failing the test on
// any error but the tolerated ones.
func ingestAs(t testing.TB, vb *Book, s *trust.Signed, from peer.ID, tolerated ...error) {
	t.Helper()
	_, err := vb.ingestAttestation(context.Background(), s.Marshal(), arrival{from: from}, false)
	for _, ok := range tolerated {
		if errors.Is(err, ok) {
			return
		}
	}
	if err != nil {
		t.Fatalf("ingest %s's attestation: %v", s.Attester, err)
	}
}

func junk(t testing.TB, k crypto.PrivKey, i, size int) *trust.Signed {
	t.Helper()
	s, err := hostile.Junk(k, testPlatform, i, size, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A flooder pays with its own records: past its budget its oldest unbacked
// records go, a record another attester backs stays, and nobody else's
// records are touched.
func TestAdmitEvictsOnlyTheFloodersOwnUnbackedRecords(t *testing.T) {
	const budget = 512 << 10
	vb := offlineBook(t, func(c *config.Config) { c.Limits.PeerAttestationBytes = budget })
	ctx := context.Background()
	hk, honest := mustKey(t)
	fk, flooder := mustKey(t)
	var honestAtts []*trust.Signed
	for i := range 3 {
		s := junk(t, hk, 1000+i, 2000)
		honestAtts = append(honestAtts, s)
		if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: honest}, false); err != nil {
			t.Fatal(err)
		}
	}
	// The flooder also votes with the honest attester once: that record is
	// backed and must survive the flood.
	backed, err := hostile.Relabel(honestAtts[0], fk, time.Now().Add(-2*time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vb.ingestAttestation(ctx, backed.Marshal(), arrival{from: flooder}, false); err != nil {
		t.Fatal(err)
	}
	var last *trust.Signed
	for i := range 40 {
		last = junk(t, fk, i, 54<<10)
		// Once it overflowed its budget, the flooder's records are kept
		// at its own expense but not relayed.
		added, err := vb.ingestAttestation(ctx, last.Marshal(), arrival{from: flooder}, false)
		if !added || err != nil && !errors.Is(err, errFlooding) {
			t.Fatalf("junk %d: added %v, %v", i, added, err)
		}
		if i == 39 && !errors.Is(err, errFlooding) {
			t.Errorf("the flood's last record would be relayed")
		}
	}
	u, err := vb.store.AttesterUsage(flooder.String())
	if err != nil {
		t.Fatal(err)
	}
	if u.Bytes > budget {
		t.Errorf("flooder holds %d bytes, budget %d", u.Bytes, budget)
	}
	if u.Records >= 40 {
		t.Errorf("flooder holds %d records: nothing was evicted", u.Records)
	}
	for _, s := range []*trust.Signed{backed, last, honestAtts[0], honestAtts[1], honestAtts[2]} {
		if ok, _ := vb.store.HasAttestation(s.ID()); !ok {
			t.Errorf("%s's attestation for %s was evicted", s.Attester, s.Attestation.CPV)
		}
	}
	if hu, _ := vb.store.AttesterUsage(honest.String()); hu.Records != 3 {
		t.Errorf("honest attester holds %d records, want 3", hu.Records)
	}
	if err := vb.store.Check(); err != nil {
		t.Fatal(err)
	}
}

// A budget full of records other attesters back refuses the next record
// instead of evicting them; the refusal is a budget error (ignored, not
// penalised, in gossip).
func TestAdmitRefusesWhenOnlyBackedRecordsRemain(t *testing.T) {
	vb := offlineBook(t, func(c *config.Config) { c.Limits.PeerAttestations = 2 })
	ctx := context.Background()
	hk, honest := mustKey(t)
	fk, other := mustKey(t)
	for i := range 2 {
		s := junk(t, hk, i, 1000)
		if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: honest}, false); err != nil {
			t.Fatal(err)
		}
		r, err := hostile.Relabel(s, fk, time.Now().Add(-time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vb.ingestAttestation(ctx, r.Marshal(), arrival{from: other}, false); err != nil {
			t.Fatal(err)
		}
	}
	_, err := vb.ingestAttestation(ctx, junk(t, fk, 99, 1000).Marshal(), arrival{from: other}, false)
	if !errors.Is(err, errBudget) || !errors.Is(err, errRejected) {
		t.Fatalf("third record of a full, backed budget: %v, want errBudget", err)
	}
	if u, _ := vb.store.AttesterUsage(other.String()); u.Records != 2 {
		t.Fatalf("usage %+v after refusal", u)
	}
}

// The arrival address is kept only when the attester delivered its own
// attestation, and a relayed copy gains it when the attester sends it.
func TestArrivalAddressOnlyFromTheAttesterItself(t *testing.T) {
	vb := offlineBook(t, nil)
	ctx := context.Background()
	k, attester := mustKey(t)
	_, relay := mustKey(t)
	s := junk(t, k, 1, 1000)
	if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: relay, addr: "198.51.100.7"}, false); err != nil {
		t.Fatal(err)
	}
	r, _, _ := vb.store.GetAttestation(s.ID())
	if r.Addr != "" {
		t.Fatalf("a relayed attestation recorded the relay's address %q", r.Addr)
	}
	if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: attester, addr: "192.0.2.9"}, false); err != nil {
		t.Fatal(err)
	}
	r, _, _ = vb.store.GetAttestation(s.ID())
	if r.Addr != "192.0.2.9" {
		t.Fatalf("addr %q after the attester delivered it, want 192.0.2.9", r.Addr)
	}
}

func TestCheckIndexClaims(t *testing.T) {
	desc := identity.Descriptor{CPV: "app-misc/hello-1.0", USE: []string{"foo"},
		SlotDeps: []string{">=dev-libs/a-1:0/1="}, Requires: map[string][]string{"x86_64": {"libc.so.6"}}}
	honest := map[string]string{
		"USE": "amd64 foo", "IUSE": "foo bar", "RDEPEND": ">=dev-libs/a-1:0/1= sys-libs/b",
		"REQUIRES": "x86_64: libc.so.6", "SLOT": "0", "DEPEND": "dev-libs/a",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for hk, hv := range honest {
			m[hk] = hv
		}
		m[k] = v
		return m
	}
	for _, tt := range []struct {
		name  string
		index map[string]string
		ok    bool
	}{
		{"honest", honest, true},
		{"nothing claimed", nil, true},
		{"SLOT is the voters' to agree on", with("SLOT", "9"), true},
		{"DEPEND is the voters' to agree on", with("DEPEND", "sys-apps/evil"), true},
		{"CATEGORY", with("CATEGORY", "sys-apps"), false},
		{"PF", with("PF", "portage-99.0"), false},
		{"CPV", with("CPV", "sys-apps/portage-99.0"), false},
		{"PATH", with("PATH", "sys-apps/portage/portage-99.0-1.gpkg.tar"), false},
		{"BUILD_ID", with("BUILD_ID", "7"), false},
		{"BUILD_TIME", with("BUILD_TIME", "1"), false},
		{"SIZE", with("SIZE", "1"), false},
		{"USE without a descriptor flag", with("USE", "amd64"), false},
		{"USE with an IUSE flag the descriptor lacks", with("USE", "amd64 foo bar"), false},
		{"RDEPEND with another slot operator", with("RDEPEND", "dev-libs/a:0/2="), false},
		{"RDEPEND hiding a slot operator", with("RDEPEND", "sys-libs/b"), false},
		{"REQUIRES", with("REQUIRES", "x86_64: libevil.so.1"), false},
		{"two lines", with("DESCRIPTION", "hi\nCPV: sys-apps/portage-99.0"), false},
	} {
		err := checkIndexClaims(desc, tt.index)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestAgreedIndexByMajority: a field portage sees is the value a strict
// majority of the voters states; a lone dissenter changes and removes
// nothing, and a field without a majority keeps the build off the index.
func TestAgreedIndexByMajority(t *testing.T) {
	k1, _ := mustKey(t)
	k2, _ := mustKey(t)
	k3, _ := mustKey(t)
	a := junk(t, k1, 1, 1000)
	troll, err := hostile.Relabel(a, k2, time.Now(), map[string]string{"SLOT": "9", "KEYWORDS": "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	honest2, err := hostile.Relabel(a, k3, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AgreedIndex([]*trust.Signed{a, troll, honest2})
	if err != nil {
		t.Fatal(err)
	}
	if got["SLOT"] != a.Attestation.Index["SLOT"] || got["DESCRIPTION"] != a.Attestation.Index["DESCRIPTION"] {
		t.Errorf("the majority's fields lost: %v", got)
	}
	if _, ok := got["KEYWORDS"]; ok {
		t.Errorf("KEYWORDS stated by one voter of three listed as %q", got["KEYWORDS"])
	}
	if _, err := AgreedIndex([]*trust.Signed{a, troll}); !errors.Is(err, ErrIndexDisputed) {
		t.Errorf("one voter against one: err %v, want ErrIndexDisputed", err)
	}
}

// Build keys no vote count could allow are skipped before their votes are
// decoded, and only those.
func TestHopelessBuildKeys(t *testing.T) {
	k, id := mustKey(t)
	tk, trustedID := mustKey(t)
	vb := offlineBook(t, func(c *config.Config) {
		c.Trust.Threshold = 2
		c.Trust.TrustedPeers = []string{trustedID.String()}
	})
	ctx := context.Background()
	one := junk(t, k, 1, 1000)
	byTrusted := junk(t, tk, 2, 1000)
	ingestAs(t, vb, one, id)
	ingestAs(t, vb, byTrusted, trustedID)
	// An endorsement by a signer not configured here changes nothing.
	_, foreign, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndorsement(one.Attestation.BuildKey, vb.platform, one.Attestation.Content, foreign)
	if _, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		bk        keys.Build
		attesters []string
		want      bool
	}{
		{"one stranger under threshold 2, foreign endorsement", one.Attestation.BuildKey, []string{id.String()}, true},
		{"two strangers", one.Attestation.BuildKey, []string{id.String(), "x"}, false},
		{"a trusted peer allows alone", byTrusted.Attestation.BuildKey, []string{trustedID.String()}, false},
	} {
		got, err := vb.hopeless(tt.bk, tt.attesters)
		if err != nil || got != tt.want {
			t.Errorf("%s: hopeless = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	builds, err := vb.AllowedBuilds(vb.platform)
	if err != nil {
		t.Fatal(err)
	}
	if len(builds) != 1 || builds[0].Verdict.BuildKey != byTrusted.Attestation.BuildKey {
		t.Fatalf("allowed = %d builds, want the trusted peer's only", len(builds))
	}
}

// A catalog answer carries its endorsements inside the page's bounds and
// always some attestations: endorsements piled on the oldest build keys
// cannot crowd the records out (a newcomer would stop syncing) or make an
// answer large.
func TestCatalogAnswerBoundsEndorsements(t *testing.T) {
	vb := offlineBook(t, nil)
	vb.pageBytes = 256 << 10 // a smaller page: the same cuts, an eighth of the records
	ctx := context.Background()
	k, id := mustKey(t)
	// 20 records × 8 endorsements of about 3 KiB: more than a page's
	// bytes, so paging has to cut between records.
	const records = 20
	for i := range records {
		s := junk(t, k, i, 600)
		if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: id}, false); err != nil {
			t.Fatal(err)
		}
		for range maxForeignEndorsements {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			e := NewEndorsement(s.Attestation.BuildKey, vb.platform+strings.Repeat("p", 3000), s.Attestation.Content, priv)
			if _, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	var cur p2p.CatalogCursor
	pages, atts := 0, 0
	for range 100 {
		out, err := vb.ServeCatalog(ctx, vb.platform, cur)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) == 0 {
			break
		}
		pages++
		size, n := 0, 0
		for _, b := range out {
			size += len(b)
			if !bytes.HasPrefix(b, endorsementMagic) {
				n++
				s, err := trust.Decode(b)
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(b)
				cur = p2p.CatalogCursor{Since: s.Attestation.Time.Unix(), After: sum[:]}
			}
		}
		if n == 0 {
			t.Fatalf("page %d carries %d endorsements and no attestation", pages, len(out))
		}
		if len(out) > p2p.MaxBlobs || size > vb.pageBytes+64<<10 {
			t.Fatalf("page %d: %d blobs, %d bytes", pages, len(out), size)
		}
		atts += n
	}
	if atts != records || pages < 2 {
		t.Fatalf("paging from each answer's last attestation reached %d of %d records in %d pages", atts, records, pages)
	}
}

// Evidence from the network is kept only where it changes a tally here,
// once per (peer, build key): proofs of self-equivocation on invented
// build keys cost nothing to make and must not grow the store.
func TestEvidenceOnlyWhereItMatters(t *testing.T) {
	vb := offlineBook(t, nil)
	ctx := context.Background()
	k, id := mustKey(t)
	_, relay := mustKey(t)
	a := junk(t, k, 1, 1000)
	other := a.Attestation
	other.Content.Image[0] ^= 0xff
	b, err := trust.Sign(other, k)
	if err != nil {
		t.Fatal(err)
	}
	evs := trust.DetectEquivocation([]*trust.Signed{a, b})
	if len(evs) != 1 {
		t.Fatalf("%d proofs of equivocation", len(evs))
	}
	msg := gossipEvidence(evs[0].Marshal())
	if err := vb.OnGossip(id, relay, vb.platform, msg); !errors.Is(err, p2p.ErrGossipIgnore) {
		t.Fatalf("evidence on a build key nobody attested here: %v, want ignored", err)
	}
	if _, err := vb.ingestAttestation(ctx, a.Marshal(), arrival{from: id}, false); err != nil {
		t.Fatal(err)
	}
	if err := vb.OnGossip(id, relay, vb.platform, msg); err != nil {
		t.Fatalf("evidence against a stored voter: %v", err)
	}
	if err := vb.OnGossip(id, relay, vb.platform, msg); !errors.Is(err, p2p.ErrGossipIgnore) {
		t.Fatalf("the same evidence again: %v, want ignored", err)
	}
	if held, _ := vb.store.EvidenceFor(string(a.Attestation.BuildKey)); len(held) != 1 {
		t.Fatalf("%d evidence records held", len(held))
	}
}

// An attestation dated before 1970 is refused as the peer's fault, not
// mistaken for a store failure that would drop a whole catalog page.
func TestPre1970AttestationIsRejected(t *testing.T) {
	vb := offlineBook(t, nil)
	k, id := mustKey(t)
	old, err := hostile.Junk(k, testPlatform, 1, 1000, time.Unix(-3600, 0))
	if err != nil {
		t.Fatal(err)
	}
	good := junk(t, k, 2, 1000)
	n, err := vb.ingestBatch(context.Background(), [][]byte{old.Marshal(), good.Marshal()}, arrival{from: id})
	if err != nil || n != 1 {
		t.Fatalf("batch with a pre-1970 record: %d stored, %v; want the other one stored", n, err)
	}
	if _, err := vb.ingestAttestation(context.Background(), old.Marshal(), arrival{from: id}, false); !errors.Is(err, errRejected) {
		t.Fatalf("pre-1970 attestation: %v, want rejected", err)
	}
}

// An attest/1 answer keeps the votes of the contents most attesters agree
// on, one per attester first: identities that each send several large
// records for their own content cannot push honest votes out of the cap.
func TestAttestAnswerKeepsTheAgreedVotes(t *testing.T) {
	vb := offlineBook(t, nil)
	vb.answerBytes = 512 << 10 // a smaller answer: the same cut, a sixth of the records
	ctx := context.Background()
	hk, _ := mustKey(t)
	base := junk(t, hk, 1, 1000)
	var honest []*trust.Signed
	for range 3 {
		k, id := mustKey(t)
		s, err := hostile.Relabel(base, k, time.Now().Add(-time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		honest = append(honest, s)
		if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: id}, false); err != nil {
			t.Fatal(err)
		}
	}
	// 4 identities, each 4 padded records of 40 KiB for a content of its
	// own: more than an answer holds.
	for i := range 4 {
		k, id := mustKey(t)
		for j := range maxAttestationsPerAttester {
			a := base.Attestation
			a.Content.Image[0], a.Content.Image[1] = byte(i), byte(j)
			a.Index = map[string]string{"DESCRIPTION": strings.Repeat("x", 15<<10), "KEYWORDS": strings.Repeat("y", 15<<10), "LICENSE": strings.Repeat("z", 10<<10)}
			a.Time = time.Now().Add(-2 * time.Hour).Truncate(time.Second)
			s, err := trust.Sign(a, k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: id}, false); err != nil && !errors.Is(err, errFlooding) {
				t.Fatal(err)
			}
		}
	}
	bk, err := base.Attestation.BuildKey.CID()
	if err != nil {
		t.Fatal(err)
	}
	out, err := vb.ServeAttestations(ctx, bk)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) >= len(honest)+4*maxAttestationsPerAttester {
		t.Fatalf("the answer carries all %d records: the byte cap never cut", len(out))
	}
	got := map[[32]byte]bool{}
	for _, b := range out {
		got[sha256.Sum256(b)] = true
	}
	for _, s := range honest {
		if !got[s.ID()] {
			t.Errorf("honest vote by %s left out of a %d-blob answer", s.Attester, len(out))
		}
	}
}

// Keys are free: many fresh attesters, each within its own budget, still
// meet the store-wide bound, which evicts the unbacked records of the
// largest holders and never a record another attester backs.
func TestStoreWideBoundEvictsLargestUnbackedHolders(t *testing.T) {
	const total = 512 << 10
	vb := offlineBook(t, func(c *config.Config) {
		c.Limits.PeerAttestationBytes = 256 << 10
		c.Limits.AttestationBytes = total
	})
	ctx := context.Background()
	hk, honest := mustKey(t)
	ok, okID := mustKey(t)
	h := junk(t, hk, 0, 2000)
	backer, err := hostile.Relabel(h, ok, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ingestAs(t, vb, h, honest)
	ingestAs(t, vb, backer, okID)
	for i := range 30 {
		k, id := mustKey(t)
		for j := range 3 {
			s := junk(t, k, 100*i+j+1, 20<<10)
			if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: id}, false); err != nil && !errors.Is(err, errFlooding) {
				t.Fatalf("sybil %d record %d: %v", i, j, err)
			}
		}
	}
	u, err := vb.store.TotalUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Bytes > total {
		t.Errorf("the store holds %d bytes of attestations, bound %d", u.Bytes, total)
	}
	for _, s := range []*trust.Signed{h, backer} {
		if has, _ := vb.store.HasAttestation(s.ID()); !has {
			t.Errorf("a backed record was evicted by the store-wide bound")
		}
	}
	if err := vb.store.Check(); err != nil {
		t.Fatal(err)
	}
}

// A build key filled by throwaway identities first still takes honest
// votes: an attester's further records, then records of contents fewer
// attesters back, make room.
func TestFullBuildKeyMakesRoomForBetterSupportedVotes(t *testing.T) {
	vb := offlineBook(t, nil)
	ctx := context.Background()
	bk, _ := mustKey(t)
	base := junk(t, bk, 1, 800)
	// 128 identities × 4 records, each for a content of its own: full.
	var recs []store.AttestationRecord
	for i := range maxAttestationsPerBuild {
		a := base.Attestation
		recs = append(recs, store.AttestationRecord{BuildKey: string(a.BuildKey), VariantKey: string(a.VariantKey), CPV: a.CPV, Platform: a.Platform,
			Attester: fmt.Sprintf("sybil-%d", i/maxAttestationsPerAttester), Content: fmt.Sprintf("junk-%d", i/maxAttestationsPerAttester),
			Blob: []byte(fmt.Sprintf("junk record %d", i)), Time: 1, ReceivedAt: time.Unix(int64(i), 0)})
	}
	if _, err := vb.store.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	var honest []*trust.Signed
	for range 3 {
		k, id := mustKey(t)
		s, err := hostile.Relabel(base, k, time.Now().Add(-time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vb.ingestAttestation(ctx, s.Marshal(), arrival{from: id}, false); err != nil {
			t.Fatalf("honest vote into a full build key: %v", err)
		}
		honest = append(honest, s)
	}
	total, _, err := vb.store.CountForBuildKey(string(base.Attestation.BuildKey), "")
	if err != nil || total != maxAttestationsPerBuild {
		t.Fatalf("build key holds %d records, %v; want the cap %d", total, err, maxAttestationsPerBuild)
	}
	for _, s := range honest {
		if has, _ := vb.store.HasAttestation(s.ID()); !has {
			t.Errorf("honest vote by %s not stored", s.Attester)
		}
	}
}

// Pairs of free keys backing each other's junk cannot lock the store: past
// the store-wide bound their backed records go too, and a trusted peer's
// record is never refused.
func TestStoreFullOfBackedJunkStillTakesRecords(t *testing.T) {
	const total = 256 << 10
	tk, trustedID := mustKey(t)
	vb := offlineBook(t, func(c *config.Config) {
		c.Limits.PeerAttestationBytes = 128 << 10
		c.Limits.AttestationBytes = total
		c.Trust.TrustedPeers = []string{trustedID.String()}
	})
	for i := range 8 {
		k1, id1 := mustKey(t)
		k2, id2 := mustKey(t)
		for j := range 2 {
			a := junk(t, k1, 100*i+j, 20<<10)
			b, err := hostile.Relabel(a, k2, time.Now(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ingestAs(t, vb, a, id1, errFlooding, errBudget)
			ingestAs(t, vb, b, id2, errFlooding, errBudget)
		}
	}
	sk, _ := mustKey(t)
	for _, s := range []*trust.Signed{junk(t, sk, 9001, 20<<10), junk(t, tk, 9002, 20<<10)} {
		ingestAs(t, vb, s, s.Attester, errFlooding)
		if has, _ := vb.store.HasAttestation(s.ID()); !has {
			t.Fatalf("%s's record not stored in a store full of backed junk", s.Attester)
		}
	}
	if u, _ := vb.store.TotalUsage(); u.Bytes > total+(64<<10) {
		t.Errorf("the store holds %d bytes, bound %d", u.Bytes, total)
	}
	if err := vb.store.Check(); err != nil {
		t.Fatal(err)
	}
}
