package own

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

const fixtureCHOST = "x86_64-pc-linux-gnu"

// testSystem is a ROOT with a vdb, as portage leaves it.
type testSystem struct{ root string }

func newTestSystem(t *testing.T) testSystem { return testSystem{root: t.TempDir()} }

func (s testSystem) vdb() string { return filepath.Join(s.root, "var/db/pkg") }

// install records cpv in the vdb as merged at merged.
func (s testSystem) install(t *testing.T, cpv string, merged time.Time) {
	t.Helper()
	dir := filepath.Join(s.vdb(), cpv)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	contents := filepath.Join(dir, "CONTENTS")
	if err := os.WriteFile(contents, []byte("dir /usr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(contents, merged, merged); err != nil {
		t.Fatal(err)
	}
}

// selectTool writes what gcc-config or binutils-config leave in env.d.
func (s testSystem) selectTool(t *testing.T, tool, current string, at time.Time) {
	t.Helper()
	path := filepath.Join(s.root, "etc/env.d", tool, "config-"+fixtureCHOST)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("CURRENT="+current+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// fixtureBuilt is when the repro fixtures were built (their BUILD_TIME).
func fixtureBuilt(t *testing.T, path string) time.Time {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(pkg.Metadata.BuildTime(), 0)
}

// ownBuilder is the Builder of p's one attestation of the build of cpv.
func ownBuilder(t *testing.T, p *testPeer, cpv string) trust.Builder {
	t.Helper()
	atts := p.ownAtts(t, keys.Build(p.Local(t, cpv).BuildKey))
	if len(atts) != 1 {
		t.Fatalf("%s: %d own attestations, want 1", cpv, len(atts))
	}
	return atts[0].Attestation.Builder
}

// TestBuilderStatesTheToolchainThatShapedTheBytes: real portage builds.
// hello's program (stripped by portage: no .comment) was shaped by a
// compiler, binutils and a C library, so its attestation states those
// installed before it was built (two gccs: the one gcc-config selects);
// layout holds only data and a script, so it states none, and builders
// that differ only in their toolchains are one class for it.
func TestBuilderStatesTheToolchainThatShapedTheBytes(t *testing.T) {
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())
	built := fixtureBuilt(t, files[jobtest.HelloFile])
	sys := newTestSystem(t)
	before := built.Add(-24 * time.Hour)
	sys.install(t, "sys-devel/binutils-2.42-r1", before)
	sys.install(t, "sys-devel/gcc-13.2.1_p20240210", before)
	sys.install(t, "sys-devel/gcc-14.2.1_p20241116", before)
	sys.install(t, "sys-libs/glibc-2.40-r5", before)
	sys.install(t, "app-misc/gcc-unrelated-1", before)
	sys.selectTool(t, "gcc", fixtureCHOST+"-13", before)
	a := newPeer(t, memnet.New(), filepath.Dir(filepath.Dir(files[jobtest.HelloFile])), peerOptions{vdb: sys.vdb()})
	a.start(t)

	want := trust.Builder{GCC: "13.2.1_p20240210", Binutils: "2.42-r1", Libc: "glibc-2.40-r5"}
	if got := ownBuilder(t, a, jobtest.HelloCPV); got.GCC != want.GCC || got.Binutils != want.Binutils || got.Libc != want.Libc || got.BuildDir != "" {
		t.Errorf("hello states %+v, want %+v", got, want)
	}
	if got := ownBuilder(t, a, jobtest.LayoutCPV); got.Class() != "" || got.GCC+got.Binutils+got.Libc+got.BuildDir != "" {
		t.Errorf("data-only layout states %+v (class %q), want no toolchain", got, got.Class())
	}

	// The facts are stored with the package: a restart states them
	// without reading the file or the vdb again.
	var ex localExtra
	if err := json.Unmarshal(a.Local(t, jobtest.HelloCPV).Extra, &ex); err != nil || ex.Toolchain == nil || !ex.Toolchain.matches(want) {
		t.Fatalf("stored toolchain %+v (%v), want %+v", ex.Toolchain, err, want)
	}
	if err := os.RemoveAll(sys.vdb()); err != nil {
		t.Fatal(err)
	}
	again := newPeer(t, memnet.New(), a.pkgdir, peerOptions{st: a.Store, key: a.Key, vdb: sys.vdb()})
	again.start(t)
	if got := ownBuilder(t, again, jobtest.HelloCPV); got.GCC != want.GCC || got.Binutils != want.Binutils || got.Libc != want.Libc {
		t.Errorf("after a restart hello states %+v, want %+v", got, want)
	}
	if n := again.Node.Published(); n != 0 {
		t.Errorf("restart re-signed: %d messages gossiped", n)
	}
}

// TestOlderStoredPackageGetsItsToolchain: a package indexed before the
// toolchain was derived is read again once, its facts stored, and its
// attestation signed anew with them.
func TestOlderStoredPackageGetsItsToolchain(t *testing.T) {
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())
	sys := newTestSystem(t)
	sys.install(t, "sys-devel/binutils-2.42", fixtureBuilt(t, files[jobtest.HelloFile]).Add(-time.Hour))
	a := newPeer(t, memnet.New(), filepath.Dir(filepath.Dir(files[jobtest.HelloFile])), peerOptions{vdb: sys.vdb()})
	a.start(t)
	// Make the stored record and attestation what an older daemon left.
	lp := a.Local(t, jobtest.HelloCPV)
	var ex localExtra
	if err := json.Unmarshal(lp.Extra, &ex); err != nil {
		t.Fatal(err)
	}
	ex.Toolchain = nil
	lp.Extra, _ = json.Marshal(ex)
	if err := a.Store.PutLocal(lp); err != nil {
		t.Fatal(err)
	}
	old, err := a.ob.signOwn(lp, ex, trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}.String())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := a.Store.AttestationsBy(a.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.BuildKey == lp.BuildKey {
			if _, err := a.Store.DeleteAttestation(r.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Book.StoreOwn(old); err != nil {
		t.Fatal(err)
	}

	again := newPeer(t, memnet.New(), a.pkgdir, peerOptions{st: a.Store, key: a.Key, vdb: sys.vdb()})
	again.start(t)
	// The older attestation stays (peers hold it anyway); the new one
	// states the toolchain.
	var states []trust.Builder
	for _, s := range again.ownAtts(t, keys.Build(lp.BuildKey)) {
		states = append(states, s.Attestation.Builder)
	}
	if len(states) != 2 || states[0].Binutils+states[1].Binutils != "2.42" {
		t.Errorf("own attestations after a restart state %+v, want the older one and one with binutils 2.42", states)
	}
	var now localExtra
	if err := json.Unmarshal(again.Local(t, jobtest.HelloCPV).Extra, &now); err != nil || now.Toolchain == nil || now.Toolchain.Binutils != "2.42" {
		t.Errorf("toolchain not stored: %+v (%v)", now.Toolchain, err)
	}
}

// writeToolchainGPKG writes app-misc/hello-1.0 (the fixture's metadata)
// with an image of the given files from testdata.
func writeToolchainGPKG(t *testing.T, pkgdir string, image, meta map[string]string) string {
	t.Helper()
	src := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())[jobtest.HelloFile]
	pkg, err := xpak.ReadFile(src, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range meta {
		pkg.Metadata.Set(k, []byte(v+"\n"))
	}
	var out bytes.Buffer
	opts := xpak.GPKGOptions{Basename: "hello-1.0", MTime: time.Unix(pkg.Metadata.BuildTime(), 0), TempDir: t.TempDir()}
	err = xpak.WriteGPKG(&out, opts, pkg.Metadata, func(add xpak.ImageAdder) error {
		if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: "usr", Mode: 0o755}, nil); err != nil {
			return err
		}
		for _, dir := range []string{"usr/bin", "usr/lib64"} {
			if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755}, nil); err != nil {
				return err
			}
			for name, file := range image {
				if filepath.Dir(name) != dir {
					continue
				}
				b, err := os.ReadFile(filepath.Join("testdata", file))
				if err != nil {
					return err
				}
				if err := add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(pkgdir, "app-misc", "hello-1.0.gpkg.tar")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGCCAndBuildDirFromTheImage: a static archive keeps its objects'
// .comment, so the compiler is the one the image names (gcc 12.2.0, not
// the gcc 14 installed and selected here), and its objects hold the
// package's build directory (assert's __FILE__), so the build directory
// is stated and logged once. The same build directory in a stripped
// program alone is stated too; without it nothing is.
func TestGCCAndBuildDirFromTheImage(t *testing.T) {
	const buildDir = "/tmp/tc/elf/var/tmp/portage" // where testdata's objects were compiled
	tests := []struct {
		name  string
		image map[string]string
		meta  map[string]string
		want  trust.Builder
	}{
		{"static archive", map[string]string{"usr/lib64/libhello.a": "libhello.a"}, nil, trust.Builder{GCC: "12.2.0", Binutils: "2.42", BuildDir: buildDir}},
		{"stripped program", map[string]string{"usr/bin/hello": "hello-stripped"}, nil, trust.Builder{GCC: "14.2.1", Binutils: "2.42", BuildDir: buildDir}},
		// CC names the gcc slot the build used, not the selected one.
		{"stripped program, CC=gcc-13", map[string]string{"usr/bin/hello": "hello-stripped"}, map[string]string{"CC": "gcc-13"}, trust.Builder{GCC: "13.3.1", Binutils: "2.42", BuildDir: buildDir}},
		// Files the ebuild installs prebuilt were shaped by no local
		// toolchain (but the build directory is in their bytes).
		{"prebuilt", map[string]string{"usr/bin/hello": "hello-stripped", "usr/lib64/libhello.a": "libhello.a"}, map[string]string{"QA_PREBUILT": "*"}, trust.Builder{BuildDir: buildDir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkgdir := t.TempDir()
			path := writeToolchainGPKG(t, pkgdir, tt.image, tt.meta)
			built := fixtureBuilt(t, path)
			sys := newTestSystem(t)
			sys.install(t, "sys-devel/binutils-2.42", built.Add(-time.Hour))
			sys.install(t, "sys-devel/gcc-13.3.1", built.Add(-time.Hour))
			sys.install(t, "sys-devel/gcc-14.2.1", built.Add(-time.Hour))
			sys.selectTool(t, "gcc", fixtureCHOST+"-14", built.Add(-time.Hour))
			rec := newLogRecorder()
			a := newPeer(t, memnet.New(), pkgdir, peerOptions{vdb: sys.vdb(), logger: slog.New(rec)})
			a.start(t)
			got := ownBuilder(t, a, jobtest.HelloCPV)
			got.Portage = ""
			if got != tt.want {
				t.Errorf("states %+v, want %+v", got, tt.want)
			}
			logged := rec.matching("build directory compiled into the build")
			if len(logged) != 1 || !strings.Contains(logged[0], buildDir) || !strings.Contains(logged[0], "PORTAGE_TMPDIR=/var/tmp") {
				t.Errorf("logged %q, want one line naming %s and the canonical PORTAGE_TMPDIR", logged, buildDir)
			}
		})
	}
}

// TestInstalledToolchain: what the vdb can show built a binpkg, and when
// it cannot (merged or selected since, several and none selected, another
// compiler in CC), "" rather than a guess.
func TestInstalledToolchain(t *testing.T) {
	built := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	before, after := built.Add(-time.Hour), built.Add(time.Hour)
	sys := newTestSystem(t)
	sys.install(t, "sys-devel/gcc-13.3.1_p20241220", before)
	sys.install(t, "sys-devel/gcc-14.2.1_p20241221", before)
	sys.install(t, "sys-devel/gcc-15.1.0", after)
	sys.install(t, "sys-devel/binutils-2.43-r2", after)
	sys.install(t, "sys-libs/glibc-2.40-r5", before)
	sys.install(t, "sys-libs/musl-1.2.5-r3", before)
	s := installedSystem{vdb: sys.vdb(), root: sys.root, chost: fixtureCHOST, built: built}

	if got := s.gcc(""); got != "" {
		t.Errorf("gcc with none selected = %q, want unknown", got)
	}
	sys.selectTool(t, "gcc", fixtureCHOST+"-14", before)
	for _, c := range []struct {
		cc   string
		want string
	}{
		{"", "14.2.1_p20241221"},
		{"gcc", "14.2.1_p20241221"},
		{fixtureCHOST + "-gcc", "14.2.1_p20241221"},
		{"gcc-13", "13.3.1_p20241220"},
		{"g++-13", "13.3.1_p20241220"},
		{"/usr/bin/" + fixtureCHOST + "-gcc-13 -m64", "13.3.1_p20241220"},
		{"gcc-15", ""}, // merged after the build
		{"gcc-12", ""}, // not installed
		{"clang", ""},  // not a gcc
	} {
		if got := s.gcc(c.cc); got != c.want {
			t.Errorf("gcc with CC=%q = %q, want %q", c.cc, got, c.want)
		}
	}
	sys.selectTool(t, "gcc", fixtureCHOST+"-13", after)
	if got := s.gcc(""); got != "" {
		t.Errorf("gcc selected after the build = %q, want unknown", got)
	}
	if got := s.binutils(); got != "" {
		t.Errorf("binutils merged after the build = %q, want unknown", got)
	}
	if got := s.libc(); got != "glibc-2.40-r5" {
		t.Errorf("libc = %q, want glibc-2.40-r5", got)
	}
	musl := s
	musl.chost = "x86_64-gentoo-linux-musl"
	if got := musl.libc(); got != "musl-1.2.5-r3" {
		t.Errorf("libc of a musl CHOST = %q, want musl-1.2.5-r3", got)
	}
	unknown := s
	unknown.built = time.Time{}
	if got := unknown.libc(); got != "" {
		t.Errorf("libc of a binpkg without BUILD_TIME = %q, want unknown", got)
	}
	if vdbRoot("/var/db/pkg") != "/" || vdbRoot(sys.vdb()) != sys.root || vdbRoot("/srv/vdb") != "/" {
		t.Error("vdbRoot does not find the root of a vdb")
	}
}
