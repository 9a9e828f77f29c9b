package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// trustNetVerdict returns the single verdict a daemon reaches for a CPV.
func trustNetVerdict(t *testing.T, n *testnet.Node, cpv string) trust.Verdict {
	t.Helper()
	ex, err := n.Daemon.API().Explain(context.Background(), cpv)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Verdicts) != 1 {
		t.Fatalf("%s: %d verdicts for %s:\n%s", n.Name, len(ex.Verdicts), cpv, ex.Text)
	}
	return ex.Verdicts[0]
}

// TestTrustReproducersAndBackdoor: three honest reproducers and one
// builder of a backdoored layout (same build key, a pkg_postinst added)
// announce to real daemons on loopback; consumers with different policies
// decide as the policy says.
func TestTrustReproducersAndBackdoor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	signerPub, signerPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "honest-a", sets: []string{fixtures.ReproGPKG1}},
		{name: "honest-b", sets: []string{fixtures.ReproGPKG2}},
		{name: "honest-c", sets: []string{fixtures.ReproXPAK1}},
		{name: "backdoor", sets: []string{fixtures.Backdoored}},
		{name: "threshold-2", configure: func(c *config.Config) { c.Trust.Threshold, c.Trust.Dispute = 2, 2 }},
		{name: "defaults"}, // threshold 3, any competing vote disputes
		{name: "threshold-4", configure: func(c *config.Config) { c.Trust.Threshold = 4 }},
		{name: "signer-only", configure: func(c *config.Config) {
			c.Trust.Threshold = 0
			c.Trust.Signers = []string{hex.EncodeToString(signerPub)}
		}},
	})
	builderA, mallory := nodes[0], nodes[3]
	t2, t3, t4, ts := nodes[4], nodes[5], nodes[6], nodes[7]
	for _, n := range []*testnet.Node{t2, t3, t4, ts} {
		waitCatalog(t, n, 7)
	}

	// The honest and the backdoored layout share a build key but not a
	// content id.
	honest := trustNetVerdict(t, t2, "app-misc/layout-1.0-r1")
	if len(honest.Tally) != 2 {
		t.Fatalf("want two competing content ids for layout, got %d", len(honest.Tally))
	}
	backdoor := backdoorContent(t, mallory)

	// threshold 2 (dispute needs 2): honest allowed, backdoor refused, the
	// competing vote visible in the tally.
	if honest.Decision != trust.Allowed || honest.Content == nil || *honest.Content == backdoor {
		t.Fatalf("threshold 2: layout %s (rule %s), want the honest content allowed", honest.Decision, honest.Rule)
	}
	for _, tl := range honest.Tally {
		switch tl.Content {
		case backdoor:
			if tl.Decision != trust.Refused || tl.Count != 1 {
				t.Errorf("backdoored content: %s with %d votes, want refused with 1", tl.Decision, tl.Count)
			}
		default:
			if tl.Count != 3 {
				t.Errorf("honest content has %d votes, want 3", tl.Count)
			}
		}
	}
	if v := trustNetVerdict(t, t2, "app-misc/hello-1.0"); v.Decision != trust.Allowed {
		t.Errorf("threshold 2: hello %s", v.Decision)
	}

	// Defaults: the single backdoored vote turns layout into a dispute,
	// counted in status; hello (no competitor) is allowed.
	if v := trustNetVerdict(t, t3, "app-misc/layout-1.0-r1"); v.Decision != trust.Disputed {
		t.Errorf("defaults: layout %s (rule %s), want disputed", v.Decision, v.Rule)
	}
	if st := t3.Daemon.API().Status(ctx); st.Disputes != 1 {
		t.Errorf("defaults: status shows %d disputes, want 1", st.Disputes)
	}
	if v := trustNetVerdict(t, t3, "app-misc/hello-1.0"); v.Decision != trust.Allowed {
		t.Errorf("defaults: hello %s", v.Decision)
	}

	// threshold 4: three reproducers are not enough for anything.
	for _, cpv := range []string{"app-misc/hello-1.0", "app-misc/layout-1.0-r1"} {
		if v := trustNetVerdict(t, t4, cpv); v.Decision == trust.Allowed {
			t.Errorf("threshold 4: %s allowed by %s", cpv, v.Rule)
		}
	}
	if _, err := t4.Daemon.API().Fetch(ctx, api.FetchRequest{Query: "app-misc/hello-1.0"}); err == nil {
		t.Error("threshold 4: fetching hello succeeded; nothing may be fetched that is not allowed")
	}

	// Signer only: nothing until the build server endorses hello; then
	// hello is allowed at threshold 0 and the others stay out.
	if v := trustNetVerdict(t, ts, "app-misc/hello-1.0"); v.Decision == trust.Allowed {
		t.Fatalf("signer-only: hello allowed before any endorsement (%s)", v.Rule)
	}
	e := endorseFixture(t, builderA, signerPriv)
	var res api.EndorseResult
	if err := api.NewClient(builderA.Config.API.Socket).Post(ctx, api.PathEndorse, api.EndorseRequest{Blob: e.Marshal()}, &res); err != nil || !res.Stored {
		t.Fatalf("endorse via API: stored=%v err=%v", res.Stored, err)
	}
	if err := testnet.WaitFor(ctx, 60*time.Second, "the endorsement to reach the signer-only consumer", func() bool {
		return trustNetVerdict(t, ts, "app-misc/hello-1.0").Decision == trust.Allowed
	}); err != nil {
		t.Fatal(err)
	}
	if v := trustNetVerdict(t, ts, "app-misc/hello-1.0"); v.Rule != trust.RuleSigner {
		t.Errorf("signer-only: hello allowed by rule %q, want %q", v.Rule, trust.RuleSigner)
	}
	if v := trustNetVerdict(t, ts, "app-misc/layout-1.0-r1"); v.Decision == trust.Allowed {
		t.Errorf("signer-only: layout allowed without an endorsement (%s)", v.Rule)
	}
	// A forged endorsement (signed by a key nobody configured) is stored
	// as valid but backs nothing.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forged := endorseFixtureSet(t, fixtures.Backdoored, "app-misc/layout-1.0-r1.gpkg.tar", otherPriv)
	if err := api.NewClient(mallory.Config.API.Socket).Post(ctx, api.PathEndorse, api.EndorseRequest{Blob: forged.Marshal()}, &res); err != nil {
		t.Fatal(err)
	}
	if v := trustNetVerdict(t, ts, "app-misc/layout-1.0-r1"); v.Decision == trust.Allowed {
		t.Errorf("signer-only: layout allowed by an unknown signer's endorsement")
	}
}

// backdoorContent is the content id the backdoored build attests.
func backdoorContent(t *testing.T, mallory *testnet.Node) trust.ContentID {
	t.Helper()
	lps, err := mallory.Daemon.Store().ListLocal()
	if err != nil || len(lps) != 1 {
		t.Fatalf("mallory's packages: %v %v", lps, err)
	}
	return trust.ContentID{Image: lps[0].ImageDigest, Metadata: lps[0].MetadataDigest}
}

func endorseFixture(t *testing.T, _ *testnet.Node, priv ed25519.PrivateKey) votes.Endorsement {
	return endorseFixtureSet(t, fixtures.ReproGPKG1, "app-misc/hello-1.0.gpkg.tar", priv)
}

// endorseFixtureSet signs a fixture's build key and content the way
// `gentoo-p2pd signer endorse` does.
func endorseFixtureSet(t *testing.T, set, name string, priv ed25519.PrivateKey) votes.Endorsement {
	t.Helper()
	path := filepath.Join(t.TempDir(), filepath.Base(name))
	b, err := fixtures.Read(set, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	e, err := votes.EndorsePackage(pkg, priv)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRebuildWithOtherContentIsNotAttested: a peer whose rebuild of a
// package comes out different (a non-reproducible build, or a tampered
// file dropped into PKGDIR) must not sign a second content id for the
// build key — that would be equivocation and void its votes — so the new
// file stays local and peers see no evidence against it.
func TestRebuildWithOtherContentIsNotAttested(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, filepath.Join(dir, "builder", "pkgdir")); err != nil {
		t.Fatal(err)
	}
	a, err := testnet.Start(ctx, testnet.NodeOptions{Name: "builder", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	b, err := testnet.Start(ctx, testnet.NodeOptions{Name: "observer", Dir: dir, Bootstrap: []string{a.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if err := testnet.WaitFor(ctx, 60*time.Second, "the observer's catalog", func() bool {
		return b.Daemon.API().Status(ctx).CatalogAttestations >= 2
	}); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(a.PKGDIR, "app-misc", "layout-1.0-r1.gpkg.tar")
	before, ok, err := a.Daemon.Store().GetLocal(layout)
	if err != nil || !ok {
		t.Fatalf("layout not indexed: %v", err)
	}
	// The "rebuild": same build key, other content.
	evil, err := fixtures.Read(fixtures.Backdoored, "app-misc/layout-1.0-r1.gpkg.tar")
	if err != nil {
		t.Fatal(err)
	}
	tmp := layout + ".new"
	if err := os.WriteFile(tmp, evil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, layout); err != nil {
		t.Fatal(err)
	}
	if err := testnet.WaitFor(ctx, 60*time.Second, "the rebuild to be indexed", func() bool {
		lp, ok, _ := a.Daemon.Store().GetLocal(layout)
		return ok && lp.MetadataDigest != before.MetadataDigest
	}); err != nil {
		t.Fatal(err)
	}
	// The scanner records the file before the daemon reconciles its claims:
	// poll for the withdrawal.
	if err := testnet.WaitFor(ctx, 30*time.Second, "the builder to withdraw the build key", func() bool {
		return !a.Daemon.Node().Providing(mustDecodeCID(t, before.BuildKey))
	}); err != nil {
		t.Error(err)
	}
	recs, err := a.Daemon.Store().AttestationsFor(before.BuildKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Attester == a.Daemon.ID().String() && r.Content != (trust.ContentID{Image: before.ImageDigest, Metadata: before.MetadataDigest}).String() {
			t.Fatalf("the builder signed a second content id for %s", before.BuildKey)
		}
	}
	// The observer holds only the first content from the builder and no
	// evidence against it.
	if ev, _ := b.Daemon.Store().Evidence(); len(ev) != 0 {
		t.Errorf("observer recorded %d equivocation proofs against an honest rebuild", len(ev))
	}
}

func mustDecodeCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
