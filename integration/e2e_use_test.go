//go:build portage

package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
)

// TestPortageUSEVariants: the gateway lists two USE variants of
// app-misc/hello (IUSE="foo +bar"; built with USE=-foo, the profile's
// default, and USE=foo), each under its own BUILD_ID with its exact IUSE
// and USE, and stock portage never installs the variant the client's
// configuration does not ask for:
//
//   - `emerge --getbinpkg` (the default, --binpkg-respect-use=auto, on
//     without --usepkgonly) skips every instance whose IUSE or enabled
//     flags differ from the configuration, whatever their BUILD_TIME order,
//     and compiles when none matches, saying so;
//   - `emerge --getbinpkgonly --binpkg-respect-use=y` installs the matching
//     variant and refuses when none matches;
//   - plain `emerge --getbinpkgonly` ignores USE (respect-use stays off with
//     --usepkgonly): it installs the instance with the newest BUILD_TIME, on
//     a tie the one listed last. The gateway's BUILD_TIME (the voters'
//     median attestation time) then decides which variant such a client
//     gets, whatever its USE.
func TestPortageUSEVariants(t *testing.T) {
	h := needPortage(t)
	guardHostVDB(t)
	b := builtBinpkgs(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	client := newPortageClient(t, ctx, h, t.TempDir())
	net := startE2ENetwork(t, b, e2eOptions{VDB: client.VDB()})
	assertDefaultConsumer(t, net.consumer)
	waitAllowed(t, net.consumer, "app-misc/hello-1.0", 2)
	client.useGateway(t, ctx, net.consumer)

	const cpv = "app-misc/hello-1.0"
	es := indexOf(t, ctx, net.consumer)[cpv]
	var plain, foo portagehook.Entry // USE=-foo, USE=foo
	for _, e := range es {
		if e.Value("IUSE") != "foo +bar" {
			t.Errorf("hello listed with IUSE %q, want the ebuild's \"foo +bar\" (respect-use compares it)", e.Value("IUSE"))
		}
		switch use := strings.Fields(e.Value("USE")); {
		case slices.Contains(use, "foo"):
			foo = e
		case slices.Contains(use, "bar"):
			plain = e
		}
	}
	if len(es) != 2 || plain.Fields == nil || foo.Fields == nil || plain.Value("BUILD_ID") == foo.Value("BUILD_ID") {
		t.Fatalf("the gateway lists %v; want hello twice, USE=foo and USE=-foo, under two BUILD_IDs", indexNames(map[string][]portagehook.Entry{cpv: es}))
	}
	packageUse := func(t *testing.T, line string) {
		t.Helper()
		dir := filepath.Join(client.ep, "etc", "portage", "package.use")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hello"), []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantBinary := func(t *testing.T, want portagehook.Entry, out string) {
		t.Helper()
		got, ok := client.installedPkg(t, cpv)
		if !ok || client.mergeType(t, cpv) != "binary" || got.buildID != want.Value("BUILD_ID") {
			t.Fatalf("installed %+v (merge %q); want the listed build %s with USE %q\n%s", got, client.mergeType(t, cpv), want.Value("BUILD_ID"), want.Value("USE"), tail(out, 30))
		}
	}

	t.Run("getbinpkg installs the variant the configuration asks for", func(t *testing.T) {
		packageUse(t, "")
		wantBinary(t, plain, client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/hello"))
		packageUse(t, "app-misc/hello foo")
		wantBinary(t, foo, client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/hello"))
	})
	t.Run("getbinpkg compiles when no variant matches", func(t *testing.T) {
		packageUse(t, "app-misc/hello -bar")
		out := client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/hello")
		got, _ := client.installedPkg(t, cpv)
		if client.mergeType(t, cpv) != "source" || got.buildID != "" || slices.Contains(got.use, "bar") {
			t.Fatalf("with USE=-bar portage installed %+v (merge %q); want a source build\n%s", got, client.mergeType(t, cpv), tail(out, 30))
		}
		if !strings.Contains(out, "have been ignored due to non matching USE") {
			t.Errorf("portage did not say why it ignored the listed builds\n%s", tail(out, 30))
		}
	})
	t.Run("getbinpkgonly with binpkg-respect-use=y", func(t *testing.T) {
		packageUse(t, "")
		wantBinary(t, plain, client.emerge(t, ctx, "--oneshot", "--getbinpkgonly", "--binpkg-respect-use=y", "app-misc/hello"))
		packageUse(t, "app-misc/hello -bar")
		if out, err := h.emerge(ctx, client.ep, "--oneshot", "--getbinpkgonly", "--binpkg-respect-use=y", "app-misc/hello"); err == nil {
			t.Fatalf("with USE=-bar, --getbinpkgonly --binpkg-respect-use=y installed something\n%s", tail(out, 30))
		}
	})
	t.Run("getbinpkgonly ignores USE: the newest BUILD_TIME wins", func(t *testing.T) {
		packageUse(t, "")
		// Portage's order of instances of one version: BUILD_TIME, then
		// (stable sort) index order; it takes the last.
		newest := es[0]
		for _, e := range es[1:] {
			if buildTime(t, e) >= buildTime(t, newest) {
				newest = e
			}
		}
		out := client.emerge(t, ctx, "--oneshot", "--getbinpkgonly", "app-misc/hello")
		wantBinary(t, newest, out)
		if newest.Value("BUILD_ID") != plain.Value("BUILD_ID") {
			t.Logf("as predicted, plain --getbinpkgonly installed the USE=foo variant (BUILD_TIME %s) on a client configured USE=-foo", newest.Value("BUILD_TIME"))
		}
	})
}

func buildTime(t *testing.T, e portagehook.Entry) int64 {
	t.Helper()
	n, err := strconv.ParseInt(e.Value("BUILD_TIME"), 10, 64)
	if err != nil {
		t.Fatalf("BUILD_TIME %q: %v", e.Value("BUILD_TIME"), err)
	}
	return n
}
