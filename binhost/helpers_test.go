package binhost

import (
	"context"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

const (
	helloCPV  = "app-misc/hello-1.0"
	layoutCPV = "app-misc/layout-1.0-r1"
	helloRel  = "app-misc/hello-1.0.gpkg.tar"
	layoutRel = "app-misc/layout-1.0-r1.gpkg.tar"
)

var (
	platformOnce sync.Once
	platformOf   string
)

// fixturePlatform is the platform the portage fixtures were built for.
func fixturePlatform(t testing.TB) string {
	t.Helper()
	platformOnce.Do(func() {
		b, err := fixtures.Read(fixtures.ReproGPKG1, helloRel)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "hello-1.0.gpkg.tar")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
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

// node is one daemon on the in-memory network: store, votes, own builds,
// its node serving the book as the daemon's p2p node does.
type node struct {
	id     peer.ID
	key    crypto.PrivKey
	st     *store.Store
	vb     *votes.Book
	nd     *memnet.Node
	own    *own.Builds
	pkgdir string
}

func newNode(t testing.TB, net *memnet.Network, pkgdir string, threshold int) *node {
	t.Helper()
	key, err := hostile.Identity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	platform := fixturePlatform(t)
	policy := trust.DefaultPolicy()
	policy.Threshold = threshold
	nd := net.Join(id)
	vb := votes.New(votes.Options{
		Store: st, Policy: policy, Self: id, Platform: platform,
		Limits: config.Defaults().Limits, Files: xpak.DefaultLimits(), Net: nd,
	})
	nd.Serve(p2p.Handlers{Attestations: vb.ServeAttestations, Catalog: vb.ServeCatalog, OnGossip: vb.OnGossip})
	if err := nd.JoinPlatform(platform); err != nil {
		t.Fatal(err)
	}
	ob := own.New(own.Options{
		Store: st, Votes: vb, Net: nd, Key: key, Self: id, PkgDir: pkgdir,
		Mode: config.ModeShare, Files: xpak.DefaultLimits(),
	})
	return &node{id: id, key: key, st: st, vb: vb, nd: nd, own: ob, pkgdir: pkgdir}
}

func (n *node) start(t testing.TB) {
	t.Helper()
	if err := n.own.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// fakeFetch "downloads" a file by copying it from the PKGDIR of a peer
// the materializer found as a holder, then runs the caller's
// verification, as transfer.Fetch does once every piece is in.
type fakeFetch struct {
	mu      sync.Mutex
	holders map[[32]byte]map[peer.ID]string // file → holder → path
	fail    error
	calls   atomic.Int32
}

func (f *fakeFetch) add(t testing.TB, n *node) {
	t.Helper()
	lps, err := n.st.ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holders == nil {
		f.holders = map[[32]byte]map[peer.ID]string{}
	}
	for _, lp := range lps {
		if f.holders[lp.FileSHA256] == nil {
			f.holders[lp.FileSHA256] = map[peer.ID]string{}
		}
		f.holders[lp.FileSHA256][n.id] = lp.Path
	}
}

func (f *fakeFetch) fetch(ctx context.Context, want transfer.Want, peers []peer.AddrInfo, o transfer.FetchOptions) (transfer.Result, error) {
	f.calls.Add(1)
	f.mu.Lock()
	fail, holders := f.fail, f.holders[want.SHA256]
	f.mu.Unlock()
	if fail != nil {
		return transfer.Result{}, fail
	}
	var src string
	for _, p := range peers {
		if path, ok := holders[p.ID]; ok {
			src = path
			break
		}
	}
	if src == "" {
		return transfer.Result{}, transfer.ErrNotFound
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return transfer.Result{}, err
	}
	dst := filepath.Join(o.Dir, hex.EncodeToString(want.SHA256[:]))
	if err := copyFile(src, dst); err != nil {
		return transfer.Result{}, err
	}
	if o.Verify != nil {
		if err := o.Verify(dst); err != nil {
			os.Remove(dst)
			return transfer.Result{}, err
		}
	}
	return transfer.Result{Path: dst, Size: want.Size, BytesFetched: want.Size}, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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
	fetch *fakeFetch
	vdb   string
	reg   *prometheus.Registry
}

func newGateway(t testing.TB) *gateway {
	t.Helper()
	net := memnet.New()
	gdir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(gdir, "app-misc"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := fixtures.Read(fixtures.ReproGPKG1, helloRel)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gdir, helloRel), b, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &gateway{node: newNode(t, net, gdir, 2), net: net, fetch: &fakeFetch{}, vdb: t.TempDir(), reg: prometheus.NewRegistry()}
	g.start(t)

	adir := t.TempDir()
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG2, adir); err != nil {
		t.Fatal(err)
	}
	g.a = newNode(t, net, adir, 2)
	g.a.start(t) // gossips its two attestations to G

	bdir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bdir, "app-misc"), 0o755); err != nil {
		t.Fatal(err)
	}
	lb, err := fixtures.Read(fixtures.ReproGPKG1, layoutRel)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bdir, layoutRel), lb, 0o644); err != nil {
		t.Fatal(err)
	}
	g.b = newNode(t, net, bdir, 2)
	g.b.start(t)

	g.fetch.add(t, g.a)
	g.fetch.add(t, g.b)
	g.mz = materialize.New(materialize.Options{
		Store: g.st, Votes: g.vb, Net: g.nd, Fetch: g.fetch.fetch, Self: g.id,
		Platform: fixturePlatform(t), Mode: config.ModeShare, Files: xpak.DefaultLimits(),
	})
	return g
}

// listings are G's gateway listings under a prefetch mode.
func (g *gateway) listings(t testing.TB, prefetch string) *Listings {
	t.Helper()
	g.reg = prometheus.NewRegistry()
	return New(Options{
		Store: g.st, Votes: g.vb, Materialize: g.mz, Platform: fixturePlatform(t), Prefetch: prefetch,
		Installed: func() map[string]bool { return portagehook.InstalledPackages(g.vdb) },
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
func (g *gateway) buildKey(t testing.TB, cpv string) string {
	t.Helper()
	recs, err := g.st.AttestationsByCPV(cpv)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range recs {
		if !slices.Contains(keys, r.BuildKey) {
			keys = append(keys, r.BuildKey)
		}
	}
	if len(keys) != 1 {
		t.Fatalf("%d build keys of %s, want 1", len(keys), cpv)
	}
	return keys[0]
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
