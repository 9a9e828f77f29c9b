package votes_test

import (
	"bytes"
	"encoding/base64"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// The tests of votes on real binpkgs, through the Book's exported API.

// book is a peer whose Book is configured as a daemon with cfg would
// configure it, on an in-memory network of its own.
func book(t testing.TB, configure func(*config.Config)) *jobtest.Peer {
	t.Helper()
	cfg := config.Defaults()
	cfg.Trust.FreshWeight = 100 // a closed network: every attester counts
	if configure != nil {
		configure(cfg)
	}
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		t.Fatal(err)
	}
	return jobtest.NewPeer(t, memnet.New(), jobtest.WithPolicy(policy))
}

// ingest stores s as delivered directly by from.
func ingest(t testing.TB, p *jobtest.Peer, s *trust.Signed, from peer.ID) {
	t.Helper()
	if _, err := p.Book.IngestFrom(t.Context(), s.Marshal(), from); err != nil {
		t.Fatalf("ingest %s's attestation: %v", s.Attester, err)
	}
}

// fixtureAttestation signs with k an honest attestation of a real binpkg.
func fixtureAttestation(t testing.TB, path string, k crypto.PrivKey) (*trust.Signed, jobtest.Binpkg) {
	t.Helper()
	b := jobtest.Identify(t, path)
	return jobtest.Attest(t, k, b, time.Now().Add(-time.Hour)), b
}

// putLocal indexes b's file in p's store as a local package of buildKey.
func putLocal(t testing.TB, p *jobtest.Peer, b jobtest.Binpkg, buildKey keys.Build) {
	t.Helper()
	lp := b.Local
	lp.BuildKey = string(buildKey)
	if err := p.Store.PutLocal(lp); err != nil {
		t.Fatal(err)
	}
}

// EndorsePackage signs a real binpkg's build key and content id, as the
// daemon computes them.
func TestEndorsePackageOnFixture(t *testing.T) {
	b := jobtest.Identify(t, jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())[jobtest.HelloFile])
	pub, priv := jobtest.NewSigner(t)
	e, err := votes.EndorsePackage(b.Pkg, priv)
	if err != nil {
		t.Fatal(err)
	}
	if e.BuildKey != b.BuildKey() || e.Platform != b.Local.Platform ||
		e.Content != b.Content() || !bytes.Equal(e.Endorsement.SignerKey, pub) {
		t.Fatalf("endorsement %+v does not name the package's build and content", e)
	}
	got, err := votes.DecodeEndorsement(e.Marshal())
	if err != nil || got.BuildKey != e.BuildKey || got.Content != e.Content {
		t.Fatalf("decode the endorsement: %+v, %v", got, err)
	}
	if _, err := votes.EndorsePackage(&xpak.Package{Path: "broken.gpkg.tar", Metadata: xpak.NewMetadata(map[string][]byte{})}, priv); err == nil {
		t.Fatal("endorsed a package without metadata")
	}
}

// A vote whose file is here and carries valid OpenPGP signatures by the
// configured keyring backs its content like a signer; an unsigned file, or
// a local file of another build, backs nothing.
func TestPGPVerifiedFileBacksItsContent(t *testing.T) {
	keyring := filepath.Join("..", "trust", "testdata", "gpkg", "signed-zstd-multi-instance.pubkey.asc")
	pgp := func(c *config.Config) { c.Trust.PGPKeyring = keyring }
	k, id := jobtest.NewKey(t)
	signed, spkg := fixtureAttestation(t, filepath.Join("..", "trust", "testdata", "gpkg", "signed", "hello-1.0-1.gpkg.tar"), k)
	sa := signed.Attestation
	decision := func(p *jobtest.Peer, bk keys.Build) (trust.Verdict, bool) {
		t.Helper()
		v, _, err := p.Book.Verdict(bk)
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
		p := book(t, pgp)
		ingest(t, p, signed, id)
		putLocal(t, p, spkg, sa.BuildKey)
		for range 2 { // the second answer comes from the cache
			v, backed := decision(p, sa.BuildKey)
			if v.Decision != trust.Allowed || !backed || v.Content == nil || *v.Content != sa.Content {
				t.Fatalf("one vote with a PGP-verified file: %s (%s), pgp %v; want allowed", v.Decision, v.Rule, backed)
			}
		}
		// Hopeless is never assumed with a keyring configured.
		builds, err := p.Book.AllowedBuilds("")
		if err != nil || len(builds) != 1 {
			t.Fatalf("allowed builds: %d, %v; want the PGP-backed one", len(builds), err)
		}
	})

	t.Run("file not here", func(t *testing.T) {
		p := book(t, pgp)
		ingest(t, p, signed, id)
		if v, backed := decision(p, sa.BuildKey); v.Decision == trust.Allowed || backed {
			t.Fatalf("one vote without its file: %s, pgp %v; want not allowed", v.Decision, backed)
		}
	})

	t.Run("local file of another build", func(t *testing.T) {
		p := book(t, pgp)
		ingest(t, p, signed, id)
		junk, err := hostile.Junk(k, hostile.Platform{CHOST: "x86_64-pc-linux-gnu"}, 1, 1000, time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		other := junk.Attestation.BuildKey
		putLocal(t, p, spkg, other)
		if v, backed := decision(p, sa.BuildKey); v.Decision == trust.Allowed || backed {
			t.Fatalf("a signed file of another build key lent its signature: %s", v.Decision)
		}
	})

	t.Run("unsigned file", func(t *testing.T) {
		unsigned, upkg := fixtureAttestation(t, jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())[jobtest.HelloFile], k)
		p := book(t, pgp)
		ingest(t, p, unsigned, id)
		putLocal(t, p, upkg, unsigned.Attestation.BuildKey)
		if v, backed := decision(p, unsigned.Attestation.BuildKey); v.Decision == trust.Allowed || backed {
			t.Fatalf("an unsigned file backed its content: %s", v.Decision)
		}
	})
}

// A configured signer's endorsement (given in base64 here) allows a real
// package on one vote; AllowedBuilds finds it although one vote is under
// every threshold.
func TestSignerEndorsementAllowsFixtureBuild(t *testing.T) {
	pub, priv := jobtest.NewSigner(t)
	p := book(t, func(c *config.Config) { c.Trust.Signers = []string{base64.StdEncoding.EncodeToString(pub)} })
	k, id := jobtest.NewKey(t)
	s, pkg := fixtureAttestation(t, jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())[jobtest.HelloFile], k)
	ingest(t, p, s, id)
	if builds, _ := p.Book.AllowedBuilds(""); len(builds) != 0 {
		t.Fatal("one unbacked vote allowed")
	}
	e, err := votes.EndorsePackage(pkg.Pkg, priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Book.IngestEndorsement(t.Context(), e.Marshal(), id, false); err != nil {
		t.Fatal(err)
	}
	builds, err := p.Book.AllowedBuilds("")
	if err != nil || len(builds) != 1 || builds[0].Verdict.BuildKey != s.Attestation.BuildKey || len(builds[0].Atts) != 1 {
		t.Fatalf("endorsed build: %d allowed, %v; want it", len(builds), err)
	}
	if b := builds[0].Verdict.Tally[0].Backing; len(b) == 0 || !strings.HasPrefix(b[0], "signer") {
		t.Errorf("backing %v, want the signer", b)
	}
}
