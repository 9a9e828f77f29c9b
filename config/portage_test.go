package config

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func fixtureRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("testdata/root")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestProbePortageFiles(t *testing.T) {
	root := fixtureRoot(t)
	ps, err := ProbePortage(context.Background(), ProbeOptions{Root: root, DisablePortageq: true})
	if err != nil {
		t.Fatal(err)
	}
	flags := "-O2 -pipe \t-march=x86-64-v3"
	got := ps.Settings
	got.Sources = nil
	want := PortageConfig{
		PkgDir:   "/srv/binpkgs",
		Repo:     filepath.Join(root, "var/db/repos/gentoo"),
		CHOST:    "x86_64-pc-linux-gnu",
		CFLAGS:   flags,
		CXXFLAGS: flags,
		FFLAGS:   "-O2 -pipe",
		FCFLAGS:  flags,
		// The profile's LDFLAGS were in scope when make.conf appended.
		LDFLAGS: "-Wl,-O1 -Wl,--as-needed -Wl,-z,pack-relative-relocs",
		ARCH:    "amd64",
	}
	if !equalPortage(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	wantSources := map[string]string{
		"pkgdir": SourceMakeConf, "repo": SourceReposConf, "chost": SourceProfile, "cflags": SourceMakeConf,
		"cxxflags": SourceMakeConf, "fflags": SourceProfile, "fcflags": SourceMakeConf, "ldflags": SourceMakeConf, "arch": SourceProfile,
	}
	if !maps.Equal(ps.Sources, wantSources) {
		t.Errorf("sources %v\nwant    %v", ps.Sources, wantSources)
	}
	if len(ps.Warnings) != 0 {
		t.Errorf("warnings: %q", ps.Warnings)
	}
}

func equalPortage(a, b PortageConfig) bool {
	a.Sources, b.Sources = nil, nil
	fa, fb := portageFields(&a), portageFields(&b)
	for k := range fa {
		if *fa[k] != *fb[k] {
			return false
		}
	}
	return true
}

func TestProbePortageNothingInstalled(t *testing.T) {
	root := t.TempDir()
	ps, err := ProbePortage(context.Background(), ProbeOptions{Root: root, DisablePortageq: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Settings.PkgDir != filepath.Join(root, DefaultPKGDIR) || ps.Sources["pkgdir"] != SourceDefault {
		t.Errorf("pkgdir %q from %q", ps.Settings.PkgDir, ps.Sources["pkgdir"])
	}
	if ps.Settings.CHOST != "" || ps.Settings.Repo != "" || len(ps.Sources) != 1 {
		t.Errorf("settings %+v", ps.Settings)
	}
	if len(ps.Warnings) != 1 || !strings.Contains(ps.Warnings[0], "no portage configuration found") {
		t.Errorf("warnings %q", ps.Warnings)
	}
}

func TestProbePortageBadMakeConf(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"etc/portage/make.conf": "CFLAGS=\"-O2\nMAKEOPTS=-j2\n"})
	_, err := ProbePortage(context.Background(), ProbeOptions{Root: root, DisablePortageq: true})
	if !errors.Is(err, ErrMakeConf) || !strings.Contains(err.Error(), "etc/portage/make.conf:1: unterminated double quote") {
		t.Fatalf("err = %v", err)
	}
}

// writePortageq writes a fake portageq: a shell script that answers like
// the real one (bin/portageq envvar -v prints NAME=shlex.quote(value) and
// exits 1 when a variable is unset).
func writePortageq(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portageq")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

const realisticPortageq = `case "$1" in
envvar)
	[ "$2" = -v ] || { echo "want -v" >&2; exit 3; }
	cat <<'END'
PKGDIR=/var/cache/binpkgs
CHOST=x86_64-pc-linux-gnu
CFLAGS='-O2 -pipe -march=native'
CXXFLAGS='-O2 -pipe -march=native'
FFLAGS='-O2 -pipe'
FCFLAGS=''
LDFLAGS='-Wl,-O1 -Wl,--as-needed -Wl,-z,pack-relative-relocs'
ARCH=amd64
EROOT=/
END
	exit 1;;
get_repo_path)
	[ "$2" = / ] && [ "$3" = gentoo ] || exit 2
	echo /var/db/repos/gentoo;;
*) exit 2;;
esac
`

func TestProbePortageq(t *testing.T) {
	cmd := writePortageq(t, realisticPortageq)
	// Root points at the fixture: portageq must win over its make.conf.
	ps, err := ProbePortage(context.Background(), ProbeOptions{Root: fixtureRoot(t), Portageq: cmd})
	if err != nil {
		t.Fatal(err)
	}
	want := PortageConfig{
		PkgDir: "/var/cache/binpkgs", Repo: "/var/db/repos/gentoo", CHOST: "x86_64-pc-linux-gnu",
		CFLAGS: "-O2 -pipe -march=native", CXXFLAGS: "-O2 -pipe -march=native", FFLAGS: "-O2 -pipe",
		LDFLAGS: "-Wl,-O1 -Wl,--as-needed -Wl,-z,pack-relative-relocs", ARCH: "amd64",
	}
	if !equalPortage(ps.Settings, want) {
		t.Errorf("got  %+v\nwant %+v", ps.Settings, want)
	}
	for name, src := range ps.Sources {
		if src != SourcePortageq {
			t.Errorf("%s from %q", name, src)
		}
	}
	if _, ok := ps.Sources["fcflags"]; ok || len(ps.Sources) != 8 {
		t.Errorf("sources %v: want all but the unset FCFLAGS", ps.Sources)
	}
	if len(ps.Warnings) != 0 {
		t.Errorf("warnings %q", ps.Warnings)
	}
}

func TestProbePortageqFallsBack(t *testing.T) {
	tests := []struct {
		name, script, warning string
		timeout               time.Duration
	}{
		{"crashes", "echo 'Traceback: ImportError: No module named portage' >&2\nexit 1\n", "No module named portage", 0},
		{"prints garbage", "echo 'CFLAGS=\"unterminated'\n", "unterminated double quote", 0},
		{"misses a variable", "echo PKGDIR=/x\n", "printed no CHOST", 0},
		{"hangs", "exec sleep 30\n", "deadline exceeded", 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := writePortageq(t, tt.script)
			ps, err := ProbePortage(context.Background(), ProbeOptions{Root: fixtureRoot(t), Portageq: cmd, Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			if ps.Settings.PkgDir != "/srv/binpkgs" || ps.Sources["pkgdir"] != SourceMakeConf {
				t.Errorf("no make.conf fallback: %+v", ps.Settings)
			}
			if !slices.ContainsFunc(ps.Warnings, func(w string) bool {
				return strings.Contains(w, tt.warning) && strings.Contains(w, "reading make.conf instead")
			}) {
				t.Errorf("warnings %q lack %q", ps.Warnings, tt.warning)
			}
		})
	}
}

func TestLoadPortage(t *testing.T) {
	e := newFakeEnv(t)
	e.opts.Root = fixtureRoot(t)
	e.writeUserConfig(t, "[portage]\ncflags = \"-O3\"\n")
	e.opts.Environ = append(e.opts.Environ, "GENTOO_P2PD_PORTAGE_ARCH=arm64")
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Portage
	if p.CFLAGS != "-O3" || p.Sources["cflags"] != SourceConfig || p.ARCH != "arm64" || p.Sources["arch"] != SourceConfig {
		t.Errorf("config must beat portage: %+v", p)
	}
	if p.PkgDir != "/srv/binpkgs" || p.Sources["pkgdir"] != SourceMakeConf || p.CHOST != "x86_64-pc-linux-gnu" || p.Sources["chost"] != SourceProfile {
		t.Errorf("probed values: %+v", p)
	}

	// With every portage key set, portage is not consulted at all: a
	// make.conf that would fail to parse is never read.
	e2 := newFakeEnv(t)
	writeTree(t, e2.root, map[string]string{"etc/portage/make.conf": "CFLAGS=$(broken\n"})
	var b strings.Builder
	b.WriteString("[portage]\n")
	for _, k := range []string{"pkgdir", "repo"} {
		b.WriteString(k + " = \"/x\"\n")
	}
	for _, k := range []string{"chost", "cflags", "cxxflags", "fflags", "fcflags", "ldflags", "arch"} {
		b.WriteString(k + " = \"v\"\n")
	}
	e2.writeUserConfig(t, b.String())
	if _, err := Load(e2.opts); err != nil {
		t.Fatalf("probe ran although every key was set: %v", err)
	}
	e2.writeUserConfig(t, "")
	if _, err := Load(e2.opts); !errors.Is(err, ErrMakeConf) || !strings.Contains(err.Error(), "set the portage.* keys") {
		t.Fatalf("broken make.conf: err = %v", err)
	}
	// SkipPortageProbe never reads it either, and still defaults PKGDIR.
	e2.opts.SkipPortageProbe = true
	c, err = Load(e2.opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.Portage.PkgDir != filepath.Join(e2.root, DefaultPKGDIR) || c.Portage.Sources["cflags"] != SourceUnset {
		t.Errorf("skip probe: %+v", c.Portage)
	}
}

func TestProfileCycleAndForeignRepo(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"etc/portage/make.profile":      "->../../repo/profiles/a",
		"repo/profiles/a/parent":        "../b\nguru:x\n",
		"repo/profiles/b/parent":        "../a\n", // a cycle: visited once
		"repo/profiles/b/make.defaults": "CHOST=\"b\"\n",
		"repo/profiles/a/make.defaults": "ARCH=\"a\"\n",
	})
	stack, warnings := profileStack(root, filepath.Join(root, "repo"))
	want := []string{filepath.Join(root, "repo/profiles/b"), filepath.Join(root, "repo/profiles/a")}
	if !slices.Equal(stack, want) {
		t.Errorf("stack %q, want %q", stack, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `repository "guru"`) {
		t.Errorf("warnings %q", warnings)
	}
}

func TestProbeLegacyMakeConf(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"etc/make.conf":         "CHOST=legacy\nLDFLAGS=\"${LDFLAGS} -a\"\n",
		"etc/portage/make.conf": "->../make.conf",
	})
	ps, err := ProbePortage(context.Background(), ProbeOptions{Root: root, DisablePortageq: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Settings.CHOST != "legacy" || ps.Settings.LDFLAGS != " -a" {
		t.Errorf("a make.conf linked from both places must be read once: %+v", ps.Settings)
	}
	// Two distinct files: both are read, /etc/portage/make.conf last.
	root = t.TempDir()
	writeTree(t, root, map[string]string{
		"etc/make.conf":         "CHOST=legacy\nARCH=x\n",
		"etc/portage/make.conf": "CHOST=current\n",
	})
	if ps, err = ProbePortage(context.Background(), ProbeOptions{Root: root, DisablePortageq: true}); err != nil {
		t.Fatal(err)
	}
	if ps.Settings.CHOST != "current" || ps.Settings.ARCH != "x" {
		t.Errorf("both make.conf files: %+v", ps.Settings)
	}
}
