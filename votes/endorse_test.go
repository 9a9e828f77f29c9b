package votes

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Endorsements by configured signers are always kept; others only for a
// build key someone attested (or the local user's own), and only a few.
func TestIngestEndorsement(t *testing.T) {
	pub, mine := newSigner(t)
	vb := offlineBook(t, func(c *config.Config) { c.Trust.Signers = []string{hex.EncodeToString(pub)} })
	ctx := context.Background()
	k, id := mustKey(t)
	attested := junk(t, k, 1, 1000)
	ingestAs(t, vb, attested, id)
	bk, c := attested.Attestation.BuildKey, attested.Attestation.Content
	unattested := junk(t, k, 2, 1000).Attestation

	// A configured signer's endorsement of a build nobody attested is kept.
	e := NewEndorsement(unattested.BuildKey, vb.platform, unattested.Content, mine)
	if added, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); !added || err != nil {
		t.Fatalf("configured signer, unattested build: added %v, %v", added, err)
	}
	if added, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); added || err != nil {
		t.Fatalf("the same endorsement again: added %v, %v", added, err)
	}

	// A foreign one is not, unless the local user made it.
	_, foreign := newSigner(t)
	f := NewEndorsement(unattested.BuildKey, vb.platform, unattested.Content, foreign)
	if added, err := vb.IngestEndorsement(ctx, f.Marshal(), id, false); added || !errors.Is(err, p2p.ErrGossipIgnore) {
		t.Fatalf("foreign signer, unattested build: added %v, %v; want ignored", added, err)
	}
	if added, err := vb.IngestEndorsement(ctx, f.Marshal(), vb.self, false); !added || err != nil {
		t.Fatalf("the local user's own endorsement: added %v, %v", added, err)
	}

	// Foreign endorsements of an attested build: a few, then no more; a
	// configured signer's still goes in.
	for i := range maxForeignEndorsements {
		_, priv := newSigner(t)
		e := NewEndorsement(bk, vb.platform, c, priv)
		if added, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); !added || err != nil {
			t.Fatalf("foreign endorsement %d: added %v, %v", i, added, err)
		}
	}
	_, priv := newSigner(t)
	over := NewEndorsement(bk, vb.platform, c, priv)
	if added, err := vb.IngestEndorsement(ctx, over.Marshal(), id, false); added || err == nil {
		t.Fatalf("foreign endorsement past the cap: added %v, %v", added, err)
	}
	ours := NewEndorsement(bk, vb.platform, c, mine)
	if added, err := vb.IngestEndorsement(ctx, ours.Marshal(), id, false); !added || err != nil {
		t.Fatalf("configured signer past the foreign cap: added %v, %v", added, err)
	}
	if es, _ := vb.store.EndorsementsFor(bk); len(es) != maxForeignEndorsements+1 {
		t.Fatalf("%d endorsements held, want %d", len(es), maxForeignEndorsements+1)
	}

	// What does not verify is rejected and counted.
	tampered := NewEndorsement(bk, vb.platform, c, mine)
	tampered.Content.Image[0] ^= 1
	notCID := NewEndorsement("not-a-cid", vb.platform, c, mine)
	before := vb.Rejected()
	for name, blob := range map[string][]byte{
		"garbage":           []byte("hello"),
		"no magic":          tampered.Marshal()[len(endorsementMagic):],
		"bad signature":     tampered.Marshal(),
		"build key not cid": notCID.Marshal(),
		"unknown field":     append(append([]byte(nil), endorsementMagic...), `{"build_key":"x","extra":1}`...),
		"oversized":         append(append([]byte(nil), endorsementMagic...), bytes.Repeat([]byte(" "), 5000)...),
	} {
		if added, err := vb.IngestEndorsement(ctx, blob, id, false); added || err == nil {
			t.Errorf("%s: added %v, %v; want an error", name, added, err)
		}
	}
	if got := vb.Rejected() - before; got != 6 {
		t.Errorf("%d rejections counted, want 6", got)
	}
	if !IsEndorsement(ours.Marshal()) || IsEndorsement(attested.Marshal()) {
		t.Error("IsEndorsement mistakes one blob for the other")
	}
}

// A new endorsement ingested with publish reaches the other peers on the
// platform topic through their validators; a known one is not sent again.
func TestIngestEndorsementPublishes(t *testing.T) {
	pub, priv := newSigner(t)
	signer := func(c *config.Config) { c.Trust.Signers = []string{hex.EncodeToString(pub)} }
	net := memnet.New()
	a := joinBook(t, net, true, signer)
	b := joinBook(t, net, true, signer)
	k, _ := mustKey(t)
	s := junk(t, k, 1, 1000)
	e := NewEndorsement(s.Attestation.BuildKey, a.platform, s.Attestation.Content, priv)
	for range 2 {
		if _, err := a.IngestEndorsement(context.Background(), e.Marshal(), a.self, true); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.node.Published(); n != 1 {
		t.Errorf("a published %d messages, want 1", n)
	}
	es, err := b.store.EndorsementsFor(s.Attestation.BuildKey)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0], e.Marshal()) {
		t.Fatalf("b holds %d endorsements, %v; want a's", len(es), err)
	}
}

// Evicting a build key's last attestation drops the foreign endorsements
// kept for it, and keeps the configured signers'.
func TestEvictionDropsOrphanedForeignEndorsements(t *testing.T) {
	pub, mine := newSigner(t)
	vb := offlineBook(t, func(c *config.Config) {
		c.Trust.Signers = []string{hex.EncodeToString(pub)}
		c.Limits.PeerAttestations = 2
	})
	ctx := context.Background()
	k, id := mustKey(t)
	first := junk(t, k, 1, 1000)
	ingestAs(t, vb, first, id)
	bk, c := first.Attestation.BuildKey, first.Attestation.Content
	_, foreign := newSigner(t)
	for _, priv := range [][]byte{foreign, mine} {
		e := NewEndorsement(bk, vb.platform, c, priv)
		if _, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); err != nil {
			t.Fatal(err)
		}
	}
	// Two more records: the budget of two evicts the oldest.
	ingestAs(t, vb, junk(t, k, 2, 1000), id)
	ingestAs(t, vb, junk(t, k, 3, 1000), id, errFlooding)
	if has, _ := vb.store.HasAttestation(first.ID()); has {
		t.Fatal("the oldest record survived its attester's budget")
	}
	es, err := vb.store.EndorsementsFor(bk)
	if err != nil || len(es) != 1 {
		t.Fatalf("%d endorsements left, %v; want the configured signer's only", len(es), err)
	}
	if e, err := DecodeEndorsement(es[0]); err != nil || !bytes.Equal(e.Endorsement.SignerKey, pub) {
		t.Fatalf("the endorsement left is not the configured signer's: %v", err)
	}
}

// EndorsePackage signs a real binpkg's build key and content id, as the
// daemon computes them.
func TestEndorsePackageOnFixture(t *testing.T) {
	dir := t.TempDir()
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, dir); err != nil {
		t.Fatal(err)
	}
	pkg, err := xpak.ReadFile(filepath.Join(dir, "app-misc", "hello-1.0.gpkg.tar"), xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := newSigner(t)
	e, err := EndorsePackage(pkg, priv)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if e.BuildKey != desc.BuildKey().String() || e.Platform != desc.Platform() ||
		e.Content != (trust.ContentID{Image: pkg.ImageDigest, Metadata: md}) || !bytes.Equal(e.Endorsement.SignerKey, pub) {
		t.Fatalf("endorsement %+v does not name the package's build and content", e)
	}
	got, err := DecodeEndorsement(e.Marshal())
	if err != nil || got.BuildKey != e.BuildKey || got.Content != e.Content {
		t.Fatalf("decode the endorsement: %+v, %v", got, err)
	}
	if _, err := EndorsePackage(&xpak.Package{Path: "broken.gpkg.tar", Metadata: xpak.NewMetadata(map[string][]byte{})}, priv); err == nil {
		t.Fatal("endorsed a package without metadata")
	}
}

// fixtureAttestation signs with k an honest attestation of a real binpkg.
func fixtureAttestation(t testing.TB, path string, k crypto.PrivKey) (*trust.Signed, *xpak.Package) {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := trust.Sign(trust.Attestation{
		Version: trust.AttestationVersion, BuildKey: desc.BuildKey().String(), VariantKey: desc.VariantKey().String(),
		CPV: desc.CPV, Platform: desc.Platform(), Descriptor: raw,
		Content:    trust.ContentID{Image: pkg.ImageDigest, Metadata: md},
		FileSHA256: pkg.FileSHA256, Size: pkg.Size, PieceSize: 262144, PieceRoot: pkg.FileSHA256,
		Format: trust.FormatGPKG, Time: time.Now().Add(-time.Hour),
	}, k)
	if err != nil {
		t.Fatal(err)
	}
	return s, pkg
}

func putLocal(t testing.TB, vb *Book, pkg *xpak.Package, buildKey string, c trust.ContentID) {
	t.Helper()
	if err := vb.store.PutLocal(store.LocalPackage{
		Path: pkg.Path, Size: pkg.Size, FileSHA256: pkg.FileSHA256, Format: string(pkg.Format), CPV: "app-misc/hello-1.0",
		BuildKey: buildKey, ImageDigest: c.Image, MetadataDigest: c.Metadata,
	}); err != nil {
		t.Fatal(err)
	}
}

// A vote whose file is here and carries valid OpenPGP signatures by the
// configured keyring backs its content like a signer; an unsigned file, or
// a local file of another build, backs nothing.
func TestPGPVerifiedFileBacksItsContent(t *testing.T) {
	keyring := filepath.Join("..", "trust", "testdata", "gpkg", "signed-zstd-multi-instance.pubkey.asc")
	pgp := func(c *config.Config) { c.Trust.PGPKeyring = keyring }
	k, id := mustKey(t)
	signed, spkg := fixtureAttestation(t, filepath.Join("..", "trust", "testdata", "gpkg", "signed", "hello-1.0-1.gpkg.tar"), k)
	sa := signed.Attestation
	decision := func(vb *Book, bk string) (trust.Verdict, bool) {
		t.Helper()
		v, _, err := vb.Verdict(bk)
		if err != nil {
			t.Fatal(err)
		}
		pgpBacked := false
		for _, tl := range v.Tally {
			pgpBacked = pgpBacked || slices.Contains(tl.Backing, "pgp-signer")
		}
		return v, pgpBacked
	}

	t.Run("signed file here", func(t *testing.T) {
		vb := offlineBook(t, pgp)
		ingestAs(t, vb, signed, id)
		putLocal(t, vb, spkg, sa.BuildKey, sa.Content)
		for range 2 { // the second answer comes from the cache
			v, backed := decision(vb, sa.BuildKey)
			if v.Decision != trust.Allowed || !backed || v.Content == nil || *v.Content != sa.Content {
				t.Fatalf("one vote with a PGP-verified file: %s (%s), pgp %v; want allowed", v.Decision, v.Rule, backed)
			}
		}
		// Hopeless is never assumed with a keyring configured.
		builds, err := vb.AllowedBuilds("")
		if err != nil || len(builds) != 1 {
			t.Fatalf("allowed builds: %d, %v; want the PGP-backed one", len(builds), err)
		}
	})

	t.Run("file not here", func(t *testing.T) {
		vb := offlineBook(t, pgp)
		ingestAs(t, vb, signed, id)
		if v, backed := decision(vb, sa.BuildKey); v.Decision == trust.Allowed || backed {
			t.Fatalf("one vote without its file: %s, pgp %v; want not allowed", v.Decision, backed)
		}
	})

	t.Run("local file of another build", func(t *testing.T) {
		vb := offlineBook(t, pgp)
		ingestAs(t, vb, signed, id)
		other := junk(t, k, 1, 1000).Attestation.BuildKey
		putLocal(t, vb, spkg, other, sa.Content)
		if v, backed := decision(vb, sa.BuildKey); v.Decision == trust.Allowed || backed {
			t.Fatalf("a signed file of another build key lent its signature: %s", v.Decision)
		}
	})

	t.Run("unsigned file", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, dir); err != nil {
			t.Fatal(err)
		}
		unsigned, upkg := fixtureAttestation(t, filepath.Join(dir, "app-misc", "hello-1.0.gpkg.tar"), k)
		vb := offlineBook(t, pgp)
		ingestAs(t, vb, unsigned, id)
		putLocal(t, vb, upkg, unsigned.Attestation.BuildKey, unsigned.Attestation.Content)
		if v, backed := decision(vb, unsigned.Attestation.BuildKey); v.Decision == trust.Allowed || backed {
			t.Fatalf("an unsigned file backed its content: %s", v.Decision)
		}
	})
}
