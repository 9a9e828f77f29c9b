package own

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// The builder's PKGDIR (BuildDirs) is indexed, attested and provided like
// PKGDIR; when it goes missing nothing is withdrawn, from it or from
// PKGDIR; and a file there is announced while PKGDIR itself is missing
// (a machine that only donates builds).
func TestBuildDirsAreOwnBuilds(t *testing.T) {
	dir := t.TempDir()
	pkgdir, built := filepath.Join(dir, "pkgdir"), filepath.Join(dir, "build", "pkgdir")
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, filepath.Join(pkgdir, jobtest.HelloFile))
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.LayoutFile, filepath.Join(built, jobtest.LayoutFile))
	p := jobtest.NewPeer(t, memnet.New(), jobtest.WithThreshold(1))
	ob := New(Options{
		Store: p.Store, Votes: p.Book, Net: p.Node, Key: p.Key, Self: p.ID, PkgDir: pkgdir, BuildDirs: []string{built},
		Mode: config.ModeShare, Files: xpak.DefaultLimits(), VDB: filepath.Join(dir, "vdb"),
	})
	ctx := context.Background()
	if err := ob.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hello, layout := p.Local(t, jobtest.HelloCPV), p.Local(t, jobtest.LayoutCPV)
	if layout.Path != filepath.Join(built, jobtest.LayoutFile) {
		t.Fatalf("layout indexed at %s", layout.Path)
	}
	for _, lp := range []string{hello.BuildKey, layout.BuildKey} {
		if !p.Providing(t, lp) {
			t.Fatalf("%s not provided", lp)
		}
	}

	if err := os.Rename(built, built+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.SyncNow(ctx); err != nil {
		t.Fatal(err)
	}
	if !p.Providing(t, hello.BuildKey) || !p.Providing(t, layout.BuildKey) {
		t.Fatal("a missing builder PKGDIR withdrew a build")
	}
	if err := os.Rename(built+".away", built); err != nil {
		t.Fatal(err)
	}

	if err := os.RemoveAll(pkgdir); err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(built, "app-misc", "hello-1.0.gpkg.tar")
	jobtest.CopyFixture(t, fixtures.ReproGPKG2, jobtest.HelloFile, second)
	lp, err := ob.Announce(ctx, second)
	if err != nil || lp.Path != second || !p.Providing(t, lp.BuildKey) {
		t.Fatalf("announce in the builder's PKGDIR without PKGDIR: %+v, %v", lp, err)
	}
	if _, err := ob.Announce(ctx, filepath.Join(dir, "elsewhere.gpkg.tar")); err == nil {
		t.Fatal("announced a file outside both directories")
	}
}
