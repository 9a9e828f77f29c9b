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

// TestPortageHonestBuildersOneClass: real libxcrypt-4.4.33, built by
// stock portage in two playgrounds whose PORTAGE_TMPDIRs differ, held by
// two daemons that each read their playground's vdb. Both builds have
// one content, and both daemons state one build environment
// (Builder.Class): the compiler its static archive's objects name (the
// gcc the harness builds with), and no build directory, as libxcrypt
// compiles none in. Votes of honest builders that differ only where the
// bytes do not are compared with each other, not split.
func TestPortageHonestBuildersOneClass(t *testing.T) {
	h := needPortage(t)
	b := builtBinpkgs(t, h)
	const cp = "sys-libs/libxcrypt"
	playgrounds := []struct{ name, pkgdir string }{
		{"pg-a", "pg-a/pkgdirs/gpkg-zstd"},
		{"pg-b", "pg-b/pkgdirs/gpkg-xz"},
	}
	tmpdirs := map[string]bool{}
	for _, pg := range playgrounds {
		tmpdirs[portageTmpdir(t, filepath.Join(b.out, pg.name))] = true
	}
	if len(tmpdirs) != 2 {
		t.Fatalf("the playgrounds share one PORTAGE_TMPDIR (%v): nothing to compare", tmpdirs)
	}
	gcc, err := exec.Command("gcc", "-dumpfullversion", "-dumpversion").Output()
	if err != nil {
		t.Fatalf("the gcc portage built with: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dir := t.TempDir()
	var builders []trust.Attestation
	for _, pg := range playgrounds {
		pkgdir := filepath.Join(dir, pg.name+"-pkgdir")
		if err := copyTree(filepath.Join(b.out, pg.pkgdir, cp), filepath.Join(pkgdir, cp)); err != nil {
			t.Fatal(err)
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: pg.name, Dir: dir, Logger: testLogger(),
			VDB:       filepath.Join(b.out, pg.name, "var", "db", "pkg"),
			Configure: func(c *config.Config) { c.Portage.PkgDir = pkgdir }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopNode(t, n) })
		lps, err := n.Daemon.Store().ListLocal()
		if err != nil || len(lps) != 1 {
			t.Fatalf("%s indexed %d builds (%v), want libxcrypt alone", pg.name, len(lps), err)
		}
		own := ownAttestations(t, n.Daemon.Store(), lps[0].BuildKey, n.Daemon.ID().String())
		if len(own) != 1 {
			t.Fatalf("%s signed %d attestations of libxcrypt, want 1", pg.name, len(own))
		}
		a := own[0].Attestation
		t.Logf("%s (PORTAGE_TMPDIR %s): content %s, build environment %q", pg.name, portageTmpdir(t, filepath.Join(b.out, pg.name)), a.Content, a.Builder.Class())
		builders = append(builders, a)
	}
	first, second := builders[0], builders[1]
	if first.BuildKey != second.BuildKey || first.Content != second.Content {
		t.Fatalf("the two builds differ: build key %s / %s, content %s / %s", first.BuildKey, second.BuildKey, first.Content, second.Content)
	}
	if first.Builder.Class() != second.Builder.Class() {
		t.Errorf("one content, two build environments: %q and %q", first.Builder.Class(), second.Builder.Class())
	}
	if want := strings.TrimSpace(string(gcc)); first.Builder.GCC != want {
		t.Errorf("libxcrypt states gcc %q, want %q (its static archive's .comment)", first.Builder.GCC, want)
	}
	if first.Builder.BuildDir != "" {
		t.Errorf("libxcrypt states build directory %q, though it compiles none in", first.Builder.BuildDir)
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
