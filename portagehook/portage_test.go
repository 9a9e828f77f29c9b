//go:build portage

// Portage-in-the-loop checks run real portage 3.0.82 from a checkout
// (GENTOO_P2PD_PORTAGE_LIB=<checkout>/lib go test -tags portage ./portagehook/):
// CI has no portage, so they are a tagged suite run by hand, never skipped.

package portagehook

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// TestPortageAcceptsServedGPKG runs portage's own GPKG verification and
// extraction (lib/portage/gpkg.py from a portage checkout named by
// GENTOO_P2PD_PORTAGE_LIB) on re-packed files, against the keyring
// SetupPortage made, with portage's default of dropping to nobody for gpg.
// Re-packs must pass; an unsigned portage GPKG, a tampered re-pack and a
// re-pack signed by an unknown key must be refused.
func TestPortageAcceptsServedGPKG(t *testing.T) {
	lib := os.Getenv("GENTOO_P2PD_PORTAGE_LIB")
	if lib == "" {
		t.Fatal("GENTOO_P2PD_PORTAGE_LIB not set: portage-in-the-loop check (set it to a portage checkout's lib/)")
	}
	for _, tool := range []string{"python3", "gpg", "tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: portage-in-the-loop check needs it", tool)
		}
	}
	root, err := os.MkdirTemp("", "portage-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755) // gpg runs as nobody and must reach the keyring
	e := testKey(t)
	pub, _ := ExportPublic(e)
	if err := SetupPortage(SetupOptions{Root: root, GatewayURL: "http://127.0.0.1:1/gentoo-p2pd", PublicKeyArmored: pub, TrustHelper: "none"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", filepath.Join(root, "etc/portage/gnupg"), "--kill", "all").Run()
	})
	pkgs := filepath.Join(root, "pkgs")
	os.MkdirAll(pkgs, 0o755)

	type want struct {
		ok    bool
		cpv   string
		files []string
	}
	cases := map[string]want{}
	for i, src := range []string{
		"testdata/gpkg-signed/app-misc/layout/layout-1.0-r1-1.gpkg.tar",
		"testdata/xpak/hello-1.0.tbz2",
		"testdata/gpkg-signed/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar",
	} {
		in, err := xpak.ReadFile(src, xpak.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(pkgs, strings.TrimSuffix(strings.TrimSuffix(filepath.Base(src), ".tbz2"), ".gpkg.tar")+"-served.gpkg.tar")
		if _, err := Repack(src, dst, repackOpts(t, e, int64(i+1))); err != nil {
			t.Fatal(err)
		}
		var files []string
		f, _ := os.Open(src)
		payload, _ := imagePayload(f, in)
		xpak.WalkImage(payload, in.Format, xpak.Limits{}, func(ie xpak.ImageEntry, _ io.Reader) error {
			files = append(files, ie.Name)
			return nil
		})
		f.Close()
		cases[dst] = want{true, in.Metadata.CPV(), files}
	}
	// Refusals: portage's own unsigned GPKG; a re-pack with one image byte
	// changed; a re-pack signed by a key the keyring does not hold.
	cases["testdata/gpkg-xz/layout-1.0-r1.gpkg.tar"] = want{ok: false}
	good, _ := os.ReadFile(filepath.Join(pkgs, "layout-1.0-r1-1-served.gpkg.tar"))
	i := bytes.Index(good, []byte("image.tar.zst\x00"))
	tampered := append([]byte(nil), good...)
	tampered[i+512+10] ^= 0xff // inside the image member's data
	os.WriteFile(filepath.Join(pkgs, "tampered.gpkg.tar"), tampered, 0o644)
	cases[filepath.Join(pkgs, "tampered.gpkg.tar")] = want{ok: false}
	stranger, err := LoadOrCreateSigningKey(filepath.Join(t.TempDir(), "stranger.asc"), "stranger")
	if err != nil {
		t.Fatal(err)
	}
	strangerDst := filepath.Join(pkgs, "stranger.gpkg.tar")
	if _, err := Repack("testdata/xpak/hello-1.0.tbz2", strangerDst, repackOpts(t, stranger, 1)); err != nil {
		t.Fatal(err)
	}
	cases[strangerDst] = want{ok: false}

	bin := t.TempDir()
	tar, _ := exec.LookPath("tar")
	os.Symlink(tar, filepath.Join(bin, "gtar")) // ResolverPlayground wants gtar
	var args []string
	for p := range cases {
		args = append(args, p)
	}
	script, _ := filepath.Abs("testdata/portage_gpkg_check.py")
	home := filepath.Join(root, "etc/portage/gnupg")
	cmd := exec.Command("python3", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "PORTAGE_LIB="+lib, "GPG_HOME="+home, "PORTAGE_GNUPGHOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("portage driver: %v\n%s", err, stderr.String())
	}
	t.Logf("portage checked %d files in %v", len(cases), time.Since(start).Round(time.Millisecond))
	var res map[string]struct {
		OK    bool     `json:"ok"`
		CPV   string   `json:"CPV"`
		Files []string `json:"files"`
		Error string   `json:"error"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("driver output: %v\n%s\n%s", err, out, stderr.String())
	}
	for p, w := range cases {
		r := res[p]
		if r.OK != w.ok {
			t.Errorf("%s: portage ok=%v (%s), want %v\n%s", filepath.Base(p), r.OK, r.Error, w.ok, stderr.String())
			continue
		}
		if !w.ok {
			t.Logf("%s refused by portage: %s", filepath.Base(p), r.Error)
			continue
		}
		if r.CPV != w.cpv || strings.Join(r.Files, " ") != strings.Join(sorted(w.files), " ") {
			t.Errorf("%s: portage unpacked %s %v, want %s %v", filepath.Base(p), r.CPV, r.Files, w.cpv, sorted(w.files))
		}
	}
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// fixtureHeader is the header portage's playground wrote for the fixtures:
// the implicit IUSE and USE_EXPAND settings a consumer merges from a
// remote index.
var fixtureHeader = Fields{
	{"ACCEPT_KEYWORDS", "amd64"}, {"ARCH", "amd64"}, {"CHOST", "x86_64-pc-linux-gnu"},
	{"IUSE_IMPLICIT", "prefix prefix-guest prefix-stack"}, {"KERNEL", "linux"},
	{"USE_EXPAND", "KERNEL"}, {"USE_EXPAND_HIDDEN", "KERNEL"}, {"USE_EXPAND_IMPLICIT", "ARCH KERNEL"},
	{"USE_EXPAND_UNPREFIXED", "ARCH"}, {"USE_EXPAND_VALUES_ARCH", "amd64 x86"}, {"USE_EXPAND_VALUES_KERNEL", "linux"},
}

// TestEmergeInstallsFromGateway is the mission in one test: unmodified
// portage (a checkout named by GENTOO_P2PD_PORTAGE_LIB) with a binrepo
// whose verify-signature = true installs builds from the gateway — index,
// on-demand materialization, re-pack, the daemon's signature checked by
// gpg against the keyring SetupPortage made — including one that reached
// the daemon as an XPAK.
func TestEmergeInstallsFromGateway(t *testing.T) {
	lib := os.Getenv("GENTOO_P2PD_PORTAGE_LIB")
	if lib == "" {
		t.Fatal("GENTOO_P2PD_PORTAGE_LIB not set: emerge-in-the-loop check (set it to a portage checkout's lib/)")
	}
	for _, tool := range []string{"python3", "gpg", "tar", "zstd", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: emerge-in-the-loop check needs it", tool)
		}
	}
	root, err := os.MkdirTemp("", "portage-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	e := testKeyFixed(t)
	pub, _ := ExportPublic(e)
	if err := SetupPortage(SetupOptions{Root: root, GatewayURL: "http://127.0.0.1:1/gentoo-p2pd", PublicKeyArmored: pub, TrustHelper: "none"}); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(root, "etc/portage/gnupg")
	t.Cleanup(func() { exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() })

	cat := &fakeCatalog{}
	cat.add(t, "testdata/gpkg-signed/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar", 1)
	cat.add(t, "testdata/gpkg-signed/app-misc/consumer/consumer-1.0-1.gpkg.tar", 1)
	cat.add(t, "testdata/xpak/hello-1.0.tbz2", 3)
	gw := NewGateway(cat, GatewayOptions{CacheDir: t.TempDir(), Signer: NewSigner(e, time.Time{}), Covered: testCovered,
		Header: fixtureHeader, PrepareOnIndex: true, IndexWait: time.Minute})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	defer gw.Close()

	res := runEmerge(t, lib, home, srv.URL+"/gentoo-p2pd", "app-misc/hello", "app-misc/consumer")
	if res.ReturnCode != 0 {
		t.Fatalf("emerge --getbinpkgonly failed (%d):\n%s", res.ReturnCode, res.Output)
	}
	want := "app-misc/consumer-1.0 app-misc/hello-1.0 dev-libs/libfoo-2.1"
	if got := strings.Join(res.Installed, " "); got != want {
		t.Fatalf("installed %q, want %q\n%s", got, want, res.Output)
	}
	for _, p := range []string{"usr/bin/hello", "usr/share/hello/greeting.txt", "usr/lib/libfoo.so.2.1", "usr/share/consumer/README"} {
		if _, err := os.Lstat(filepath.Join(res.ERoot, p)); err != nil {
			t.Errorf("not installed: %s", p)
		}
	}
	if n := cat.calls.Load(); n != 3 {
		t.Errorf("Materialize called %d times for 3 packages", n)
	}
	t.Logf("emerge output:\n%s", res.Output)

	// The same builds signed by a key the keyring does not trust: portage's
	// own verification must refuse them, so nothing is installed.
	stranger, err := LoadOrCreateSigningKey(filepath.Join(t.TempDir(), "stranger.asc"), "stranger")
	if err != nil {
		t.Fatal(err)
	}
	bad := NewGateway(cat, GatewayOptions{CacheDir: t.TempDir(), Signer: NewSigner(stranger, time.Time{}), Covered: testCovered,
		Header: fixtureHeader, PrepareOnIndex: true, IndexWait: time.Minute})
	badSrv := httptest.NewServer(bad)
	defer badSrv.Close()
	defer bad.Close()
	refused := runEmerge(t, lib, home, badSrv.URL+"/gentoo-p2pd", "app-misc/hello")
	if refused.ReturnCode == 0 || len(refused.Installed) != 0 {
		t.Fatalf("emerge installed a build signed by an untrusted key (exit %d, installed %v):\n%s", refused.ReturnCode, refused.Installed, refused.Output)
	}
	if !strings.Contains(refused.Output, "[GNUPG:] NO_PUBKEY") {
		t.Errorf("emerge failed for another reason than the signature:\n%s", refused.Output)
	}
}

type emergeResult struct {
	ReturnCode int      `json:"returncode"`
	EPrefix    string   `json:"eprefix"`
	ERoot      string   `json:"eroot"`
	Installed  []string `json:"installed"`
	Output     string   `json:"output"`
}

// runEmerge runs testdata/portage_emerge_check.py: real emerge
// --getbinpkgonly against binhost, verifying with the keyring at home.
func runEmerge(t *testing.T, lib, home, binhost string, atoms ...string) emergeResult {
	t.Helper()
	bin := t.TempDir()
	tar, _ := exec.LookPath("tar")
	os.Symlink(tar, filepath.Join(bin, "gtar")) // the playground wants gtar
	script, _ := filepath.Abs("testdata/portage_emerge_check.py")
	cmd := exec.Command("python3", append([]string{script}, atoms...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "PORTAGE_LIB="+lib,
		"GPG_HOME="+home, "PORTAGE_GNUPGHOME="+home, "BINHOST="+binhost)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("emerge driver: %v\n%s", err, stderr.String())
	}
	var res emergeResult
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("driver output: %v\n%s\n%s", err, out, stderr.String())
	}
	if res.EPrefix != "" && strings.HasPrefix(res.EPrefix, os.TempDir()) {
		t.Cleanup(func() { os.RemoveAll(res.EPrefix) })
	}
	t.Logf("emerge %v ran %v, exit %d", atoms, time.Since(start).Round(time.Millisecond), res.ReturnCode)
	return res
}

// TestBashrcHookInEmerge installs the hook as /etc/portage/bashrc of a real
// portage and builds a package with FEATURES="buildpkg binary_sharing": the
// hook must announce the binpkg portage just wrote (source build) and the
// installed CPV (binary reinstall), and none of its functions may end up
// in the environment.bz2 packed into the binpkg (peers compare it).
func TestBashrcHookInEmerge(t *testing.T) {
	lib := os.Getenv("GENTOO_P2PD_PORTAGE_LIB")
	if lib == "" {
		t.Fatal("GENTOO_P2PD_PORTAGE_LIB not set: emerge-in-the-loop check (set it to a portage checkout's lib/)")
	}
	for _, tool := range []string{"python3", "tar", "bash", "bzip2"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: emerge-in-the-loop check needs it", tool)
		}
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "gentoo-p2pd")
	os.WriteFile(fake, []byte(fakeDaemons["up"]), 0o755)
	logf := filepath.Join(dir, "log")
	bin := t.TempDir()
	tar, _ := exec.LookPath("tar")
	os.Symlink(tar, filepath.Join(bin, "gtar"))
	script, _ := filepath.Abs("testdata/portage_build_check.py")
	snippet, _ := filepath.Abs("bashrc.sh")
	cmd := exec.Command("python3", script)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "PORTAGE_LIB="+lib,
		"PORTAGE_GNUPGHOME="+dir, "HOOK_SNIPPET="+snippet, "FAKE_DAEMON="+fake, "HOOK_LOG="+logf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("build driver: %v\n%s", err, stderr.String())
	}
	var res struct {
		EPrefix     string `json:"eprefix"`
		PKGDIR      string `json:"pkgdir"`
		ReturnCodes []int  `json:"returncodes"`
		Output      string `json:"output"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("driver output: %v\n%s", err, out)
	}
	if strings.HasPrefix(res.EPrefix, os.TempDir()) {
		t.Cleanup(func() { os.RemoveAll(res.EPrefix) })
	}
	if len(res.ReturnCodes) != 2 || res.ReturnCodes[0] != 0 || res.ReturnCodes[1] != 0 {
		t.Fatalf("emerge exit codes %v:\n%s", res.ReturnCodes, res.Output)
	}
	binpkg := filepath.Join(res.PKGDIR, "dev-libs/A/A-1-1.xpak")
	raw, _ := os.ReadFile(logf)
	want := "gentoo-p2pd announce --timeout 2s " + binpkg + "\n" +
		"gentoo-p2pd announce --timeout 2s --installed dev-libs/A-1\n"
	if string(raw) != want {
		t.Fatalf("hook calls:\n%s\nwant:\n%s\nemerge output:\n%s", raw, want, res.Output)
	}
	pkg, err := xpak.ReadFile(binpkg, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	env, err := pkg.Metadata.Environment(xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(env) == 0 || bytes.Contains(env, []byte("gentoo_p2pd")) || bytes.Contains(env, []byte("post_pkg_postinst")) {
		t.Errorf("environment.bz2 (%d bytes) carries the hook: builds with and without binary_sharing would differ", len(env))
	}
}
