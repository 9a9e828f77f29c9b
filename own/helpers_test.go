package own

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

var (
	platformOnce sync.Once
	platformOf   string
)

// fixturePlatform is the platform the portage fixtures were built for
// (CHOST and flags of their metadata).
func fixturePlatform(t testing.TB) string {
	t.Helper()
	platformOnce.Do(func() {
		paths, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		pkg, err := xpak.ReadFile(paths[0], xpak.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
		if err != nil {
			t.Fatal(err)
		}
		platformOf = desc.Platform()
	})
	if platformOf == "" {
		t.Fatal("fixture platform unknown")
	}
	return platformOf
}

// testPeer is one daemon's own-builds job with everything it stands on:
// a real store, a real votes book, and a node of an in-memory network
// that serves the book as the daemon's p2p node would.
type testPeer struct {
	id     peer.ID
	key    crypto.PrivKey
	st     *store.Store
	vb     *votes.Book
	nd     *memnet.Node
	ob     *Builds
	reg    *prometheus.Registry
	pkgdir string
}

type peerOptions struct {
	mode       config.Mode // default share
	downloaded openpgp.EntityList
	st         *store.Store // reuse a store (a restart); nil: a fresh one
	key        crypto.PrivKey
}

func newPeer(t *testing.T, net *memnet.Network, pkgdir string, o peerOptions) *testPeer {
	t.Helper()
	key := o.key
	if key == nil {
		var err error
		if key, err = hostile.Identity(); err != nil {
			t.Fatal(err)
		}
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	st := o.st
	if st == nil {
		if st, err = store.Open(t.TempDir(), store.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
	}
	mode := o.mode
	if mode == "" {
		mode = config.ModeShare
	}
	platform := fixturePlatform(t)
	policy := trust.DefaultPolicy()
	policy.Threshold = 1
	nd := net.Join(id)
	vb := votes.New(votes.Options{
		Store: st, Policy: policy, Self: id, Platform: platform,
		Limits: config.Defaults().Limits, Files: xpak.DefaultLimits(), Net: nd,
	})
	nd.Serve(p2p.Handlers{Attestations: vb.ServeAttestations, Catalog: vb.ServeCatalog, OnGossip: vb.OnGossip})
	if err := nd.JoinPlatform(platform); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ob := New(Options{
		Store: st, Votes: vb, Net: nd, Key: key, Self: id, PkgDir: pkgdir, Mode: mode,
		Files: xpak.DefaultLimits(), Downloaded: o.downloaded, Registry: reg,
	})
	return &testPeer{id: id, key: key, st: st, vb: vb, nd: nd, ob: ob, reg: reg, pkgdir: pkgdir}
}

func (p *testPeer) start(t *testing.T) {
	t.Helper()
	if err := p.ob.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// local is the indexed package of cpv (exactly one expected).
func (p *testPeer) local(t *testing.T, cpv string) store.LocalPackage {
	t.Helper()
	lps, err := p.st.ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	var out []store.LocalPackage
	for _, lp := range lps {
		if lp.CPV == cpv {
			out = append(out, lp)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d indexed packages of %s, want 1 (all: %d)", len(out), cpv, len(lps))
	}
	return out[0]
}

// ownAtts are the attestations by p stored for a build key.
func (p *testPeer) ownAtts(t *testing.T, bk string) []*trust.Signed {
	t.Helper()
	return attsBy(t, p.st, p.vb, bk, p.id)
}

func attsBy(t *testing.T, st *store.Store, vb *votes.Book, bk string, who peer.ID) []*trust.Signed {
	t.Helper()
	recs, err := st.AttestationsFor(bk)
	if err != nil {
		t.Fatal(err)
	}
	var out []*trust.Signed
	for _, r := range recs {
		if r.Attester != who.String() {
			continue
		}
		s, err := vb.Decode(r.Blob)
		if err != nil {
			t.Fatalf("stored attestation does not verify: %v", err)
		}
		out = append(out, s)
	}
	return out
}

func (p *testPeer) providing(t *testing.T, key string) bool {
	t.Helper()
	return p.nd.Providing(mustCid(t, key))
}

func (p *testPeer) announces(t *testing.T) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "gentoo_p2pd_announces_total" {
			return sum(mf.GetMetric())
		}
	}
	t.Fatal("gentoo_p2pd_announces_total not registered")
	return 0
}

func sum(ms []*dto.Metric) float64 {
	var n float64
	for _, m := range ms {
		n += m.GetCounter().GetValue()
	}
	return n
}

func mustCid(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeSet copies a fixture set into dir and returns its binpkgs by CPV
// path suffix (e.g. "app-misc/hello-1.0.gpkg.tar").
func writeSet(t *testing.T, set, dir string) map[string]string {
	t.Helper()
	paths, err := fixtures.WritePKGDIR(set, dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range paths {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.ToSlash(rel)] = p
	}
	return out
}

// copyFixture writes one fixture binpkg to dst.
func copyFixture(t *testing.T, set, name, dst string) {
	t.Helper()
	b, err := fixtures.Read(set, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write beside and rename, as portage does: a new inode, so the
	// scanner sees a changed file even within one mtime tick.
	tmp := filepath.Join(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}
