package binhost

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// node is one daemon on the in-memory network: a peer serving its votes
// and its own builds.
type node struct {
	*jobtest.Peer
	own    *own.Builds
	pkgdir string
}

func newNode(t testing.TB, net *memnet.Network, pkgdir string, threshold int) *node {
	t.Helper()
	p := jobtest.NewPeer(t, net, jobtest.WithThreshold(threshold))
	ob := own.New(own.Options{
		Store: p.Store, Votes: p.Book, Net: p.Node, Key: p.Key, Self: p.ID, PkgDir: pkgdir,
		Mode: config.ModeShare, Files: xpak.DefaultLimits(),
	})
	return &node{Peer: p, own: ob, pkgdir: pkgdir}
}

func (n *node) start(t testing.TB) {
	t.Helper()
	if err := n.own.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// gateway is the gateway daemon G of a small network:
//   - G built hello itself (its PKGDIR holds ReproGPKG1's hello);
//   - peer A built hello and layout independently (ReproGPKG2);
//   - peer B built layout (ReproGPKG1).
//
// At threshold 2, hello (G + A) is allowed and local to G; layout (A + B)
// is allowed but held only by the peers.
type gateway struct {
	*node
	net   *memnet.Network
	a, b  *node
	mz    *materialize.Materializer
	fetch *jobtest.FakeFetch
	vdb   string
	reg   *prometheus.Registry
	// machine is what the gateway's listings fit (jobtest.Machine).
	machine *fit.Machine
}

func newGateway(t testing.TB) *gateway {
	t.Helper()
	net := memnet.New()
	gdir := t.TempDir()
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, filepath.Join(gdir, jobtest.HelloFile))
	g := &gateway{node: newNode(t, net, gdir, 2), net: net, fetch: jobtest.NewFakeFetch(), vdb: t.TempDir(), reg: prometheus.NewRegistry(), machine: jobtest.Machine()}
	g.start(t)

	adir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG2, adir)
	g.a = newNode(t, net, adir, 2)
	g.a.start(t) // gossips its two attestations to G

	bdir := t.TempDir()
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.LayoutFile, filepath.Join(bdir, jobtest.LayoutFile))
	g.b = newNode(t, net, bdir, 2)
	g.b.start(t)

	g.fetch.HoldLocal(t, g.a.Peer)
	g.fetch.HoldLocal(t, g.b.Peer)
	g.mz = materialize.New(materialize.Options{
		Store: g.Store, Votes: g.Book, Net: g.Node, Fetch: g.fetch.Fetch, Self: g.ID,
		Platform: jobtest.FixturePlatform(t), Mode: config.ModeShare, Files: xpak.DefaultLimits(),
	})
	return g
}

// listings are G's gateway listings under a prefetch mode.
func (g *gateway) listings(t testing.TB, prefetch string) *Listings {
	t.Helper()
	g.reg = prometheus.NewRegistry()
	return New(Options{
		Store: g.Store, Votes: g.Book, Materialize: g.mz, Platform: jobtest.FixturePlatform(t), Prefetch: prefetch,
		Installed: func() map[string]bool { return portagehook.InstalledPackages(g.vdb) },
		Machine:   func() (*fit.Machine, error) { return g.machine, nil },
		Registry:  g.reg,
	})
}

// install records cpv as installed in G's vdb (/var/db/pkg/CAT/PF).
func (g *gateway) install(t testing.TB, cpv string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(g.vdb, cpv), 0o755); err != nil {
		t.Fatal(err)
	}
}

// buildKey is the build key G's store knows for cpv (one expected).
func (g *gateway) buildKey(t testing.TB, cpv string) keys.Build {
	t.Helper()
	recs, err := g.Store.AttestationsByCPV(cpv)
	if err != nil {
		t.Fatal(err)
	}
	var bks []keys.Build
	for _, r := range recs {
		if bk := keys.Build(r.BuildKey); !slices.Contains(bks, bk) {
			bks = append(bks, bk)
		}
	}
	if len(bks) != 1 {
		t.Fatalf("%d build keys of %s, want 1", len(bks), cpv)
	}
	return bks[0]
}

func listedCPV(l portagehook.Listing) string {
	return l.Metadata.Get("CATEGORY") + "/" + l.Metadata.Get("PF")
}

func byCPV(t testing.TB, ls []portagehook.Listing) map[string]portagehook.Listing {
	t.Helper()
	out := map[string]portagehook.Listing{}
	for _, l := range ls {
		cpv := listedCPV(l)
		if _, dup := out[cpv]; dup {
			t.Fatalf("%s listed twice", cpv)
		}
		out[cpv] = l
	}
	return out
}
