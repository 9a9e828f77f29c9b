//go:build portage

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestPortageBuildEnvironmentClasses: real packages built by stock
// portage in two playgrounds whose PORTAGE_TMPDIRs differ, each held by a
// daemon that reads its playground's vdb. libxcrypt-4.4.33 compiles no
// build directory in: both builds have one content, and both daemons
// state one build environment (Builder.Class): the compiler its static
// archive's objects name (the gcc the harness builds with) and no build
// directory, so their votes are compared with each other, not split.
// p2pbuilddir compiles its build directory in (assert's __FILE__): the
// two builds differ, and each daemon states the build prefix its
// playground used, so the two are two builds, not a dispute.
func TestPortageBuildEnvironmentClasses(t *testing.T) {
	h := needPortage(t)
	b := builtBinpkgs(t, h)
	playgrounds := []struct{ name, pkgdir string }{
		{"pg-a", "pg-a/pkgdirs/gpkg-zstd"},
		{"pg-b", "pg-b/pkgdirs/gpkg-xz"},
	}
	gcc, err := exec.Command("gcc", "-dumpfullversion", "-dumpversion").Output()
	if err != nil {
		t.Fatalf("the gcc portage built with: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dir := t.TempDir()
	// states[playground][cp] is the playground's daemon's attestation.
	states := map[string]map[string]trust.Attestation{}
	tmpdirs := map[string]string{}
	for _, pg := range playgrounds {
		ep := filepath.Join(b.out, pg.name)
		tmpdirs[pg.name] = portageTmpdir(t, ep)
		pkgdir := filepath.Join(dir, pg.name+"-pkgdir")
		for src, cp := range map[string]string{pg.pkgdir: "sys-libs/libxcrypt", pg.name + "/pkgdirs/builddir": "app-misc/p2pbuilddir"} {
			if err := copyTree(filepath.Join(b.out, src, cp), filepath.Join(pkgdir, cp)); err != nil {
				t.Fatal(err)
			}
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: pg.name, Dir: dir, Logger: testLogger(),
			VDB:       filepath.Join(ep, "var", "db", "pkg"),
			Configure: func(c *config.Config) { c.Portage.PkgDir = pkgdir }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopNode(t, n) })
		lps, err := n.Daemon.Store().ListLocal()
		if err != nil || len(lps) != 2 {
			t.Fatalf("%s indexed %d builds (%v), want libxcrypt and p2pbuilddir", pg.name, len(lps), err)
		}
		states[pg.name] = map[string]trust.Attestation{}
		for _, lp := range lps {
			own := ownAttestations(t, n.Daemon.Store(), lp.BuildKey, n.Daemon.ID().String())
			if len(own) != 1 {
				t.Fatalf("%s signed %d attestations of %s, want 1", pg.name, len(own), lp.CPV)
			}
			a := own[0].Attestation
			t.Logf("%s (PORTAGE_TMPDIR %s): %s content %s, build environment %q", pg.name, tmpdirs[pg.name], a.CPV, a.Content, a.Builder.Class())
			// Multi-instance PKGDIR: category/name/name-version-N.gpkg.tar.
			rel, err := filepath.Rel(pkgdir, lp.Path)
			if err != nil {
				t.Fatal(err)
			}
			states[pg.name][filepath.ToSlash(filepath.Dir(rel))] = a
		}
	}
	if tmpdirs["pg-a"] == tmpdirs["pg-b"] {
		t.Fatalf("the playgrounds share one PORTAGE_TMPDIR (%s): nothing to compare", tmpdirs["pg-a"])
	}

	a, b2 := states["pg-a"]["sys-libs/libxcrypt"], states["pg-b"]["sys-libs/libxcrypt"]
	if a.BuildKey != b2.BuildKey || a.Content != b2.Content {
		t.Fatalf("libxcrypt: the two builds differ: build key %s / %s, content %s / %s", a.BuildKey, b2.BuildKey, a.Content, b2.Content)
	}
	if a.Builder.Class() != b2.Builder.Class() {
		t.Errorf("libxcrypt: one content, two build environments: %q and %q", a.Builder.Class(), b2.Builder.Class())
	}
	if want := strings.TrimSpace(string(gcc)); a.Builder.GCC != want {
		t.Errorf("libxcrypt states gcc %q, want %q (its static archive's .comment)", a.Builder.GCC, want)
	}
	if a.Builder.BuildDir != "" {
		t.Errorf("libxcrypt states build directory %q, though it compiles none in", a.Builder.BuildDir)
	}

	a, b2 = states["pg-a"]["app-misc/p2pbuilddir"], states["pg-b"]["app-misc/p2pbuilddir"]
	if a.BuildKey != b2.BuildKey || a.Content == b2.Content {
		t.Fatalf("p2pbuilddir: build keys %s / %s, contents %s / %s: want one build key, two contents", a.BuildKey, b2.BuildKey, a.Content, b2.Content)
	}
	for pg, st := range map[string]trust.Attestation{"pg-a": a, "pg-b": b2} {
		if want := tmpdirs[pg] + "/portage"; st.Builder.BuildDir != want {
			t.Errorf("%s: p2pbuilddir states build directory %q, want %q", pg, st.Builder.BuildDir, want)
		}
	}
	if a.Builder.Class() == b2.Builder.Class() {
		t.Errorf("p2pbuilddir: two contents from two build directories, one build environment %q", a.Builder.Class())
	}
}

// portageTmpdir is the PORTAGE_TMPDIR the playground at ep set.
func portageTmpdir(t *testing.T, ep string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ep, "etc", "portage", "make.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PORTAGE_TMPDIR="); ok {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatalf("%s sets no PORTAGE_TMPDIR", ep)
	return ""
}
