//go:build portage

package integration

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// The end-to-end portage tests: stock emerge (portage 3.0.82, default
// client settings, verify-signature on) installs through a consumer
// daemon's gateway packages that three builder daemons built with real
// portage at test time (testdata/portage, cached under $ORACLE_WORK) and
// that the consumer never fetched. Run as root:
//
//	GENTOO_P2PD_PORTAGE_HARNESS=../shared/portage-harness ORACLE_WORK=$(mktemp -d /var/tmp/x.XXXX) \
//	  ../shared/portage-harness/get_portage.sh && go test -tags portage -count=1 -run '^TestPortage' ./integration/

// The long path p2pfiles installs (testdata/portage/ebuilds.py).
const p2pLongDir = "usr/share/p2pfiles/a-directory-name-long-enough-that-tar-needs-long-name-records/and-a-second-level-directory-to-make-sure-of-it"

// TestPortageAnyPackage: a consumer with the default configuration lists
// every allowed build that fits its machine, with its exact SIZE, before
// fetching a byte of it (list before download), and stock `emerge
// --getbinpkg` installs them — hardlinks, setuid and setgid programs,
// paths longer than 100 bytes, a subslotted library and the program
// linking it through :=, and libxcrypt — each under the BUILD_ID the
// gateway listed, fetched from the builders only when portage asked.
func TestPortageAnyPackage(t *testing.T) {
	testAnyPackage(t, true, nil)
}

// TestPortageAnyPackagePrefetchAll installs the same packages through a
// gateway that fetches and re-packs every allowed build ahead
// (gateway.prefetch = all), so portage downloads finished re-packs rather
// than one streamed as it is written: what portage merges — hardlinks,
// modes, long paths, the := library — is still what the builders built.
func TestPortageAnyPackagePrefetchAll(t *testing.T) {
	testAnyPackage(t, false, func(c *config.Config) { c.Gateway.Prefetch = config.PrefetchAll })
}

func testAnyPackage(t *testing.T, listBeforeDownload bool, configure func(*config.Config)) {
	h := needPortage(t)
	guardHostVDB(t)
	b := builtBinpkgs(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	client := newPortageClient(t, ctx, h, dir)
	net := startE2ENetwork(t, b, e2eOptions{VDB: client.VDB(), Configure: configure})
	consumer := net.consumer
	if listBeforeDownload {
		assertDefaultConsumer(t, consumer)
	}
	for _, cpv := range []string{"app-misc/p2pfiles-1.0", "dev-libs/p2plib-1", "app-misc/p2puse-1", "sys-libs/libxcrypt-4.4.33"} {
		waitAllowed(t, consumer, cpv, 1)
	}
	if listBeforeDownload {
		if st := consumer.Daemon.API().Status(ctx); st.BytesFetched != 0 || st.BuildsFetched != 0 {
			t.Fatalf("the consumer fetched %d bytes (%d builds) before portage asked for anything", st.BytesFetched, st.BuildsFetched)
		}
	}
	client.useGateway(t, ctx, consumer)

	// Everything allowed that this machine can run is listed, with SIZE,
	// before any byte of it is fetched.
	first := []string{"app-misc/p2pfiles-1.0", "dev-libs/p2plib-1", "sys-libs/libxcrypt-4.4.33"}
	idx := indexOf(t, ctx, consumer)
	for _, cpv := range first {
		if len(idx[cpv]) != 1 || idx[cpv][0].Value("SIZE") == "" {
			t.Fatalf("the gateway lists %q for %s before the first emerge; want one entry with SIZE. Index: %v", idx[cpv], cpv, indexNames(idx))
		}
	}
	if listBeforeDownload {
		if st := consumer.Daemon.API().Status(ctx); st.BytesFetched != 0 {
			t.Fatalf("answering portage's index request fetched %d bytes: listing must not download", st.BytesFetched)
		}
	}
	out := client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/p2pfiles", "=dev-libs/p2plib-1", "sys-libs/libxcrypt")
	for _, cpv := range first {
		checkBinaryInstall(t, client, idx, cpv, out)
	}

	// With p2plib-1 (subslot 0/1, libp2plib.so.1) installed, the program
	// built against it fits and is listed (it may be listed before, as
	// p2plib-1 is listed alongside it); portage installs it.
	idx = indexOf(t, ctx, consumer)
	if len(idx["app-misc/p2puse-1"]) != 1 || idx["app-misc/p2puse-1"][0].Value("SIZE") == "" {
		t.Fatalf("with dev-libs/p2plib-1 installed the gateway lists %q for app-misc/p2puse-1; want one entry with SIZE. Index: %v", idx["app-misc/p2puse-1"], indexNames(idx))
	}
	out = client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/p2puse")
	checkBinaryInstall(t, client, idx, "app-misc/p2puse-1", out)

	checkP2PFiles(t, client.ep)
	if _, err := os.Stat(filepath.Join(client.ep, "usr", "lib", "libcrypt.so.1")); err != nil {
		t.Errorf("libxcrypt's library is not installed: %v", err)
	}
	use, _ := client.installedPkg(t, "app-misc/p2puse-1")
	if rdep, _ := os.ReadFile(filepath.Join(use.dir, "RDEPEND")); !strings.Contains(string(rdep), "dev-libs/p2plib:0/1=") {
		t.Errorf("p2puse's RDEPEND in the vdb is %q, want the resolved dev-libs/p2plib:0/1=", rdep)
	}
	// The installed program runs against the installed library.
	run := exec.CommandContext(ctx, filepath.Join(client.ep, "usr", "bin", "p2puse"))
	run.Env = []string{"LD_LIBRARY_PATH=" + filepath.Join(client.ep, "usr", "lib")}
	if got, err := run.CombinedOutput(); err != nil || strings.TrimSpace(string(got)) != "1" {
		t.Errorf("the installed p2puse printed %q (%v), want 1 from libp2plib.so.1", got, err)
	}
	if st := consumer.Daemon.API().Status(ctx); st.BytesFetched <= 0 || st.BuildsFetched < 4 {
		t.Errorf("after the installs the consumer fetched %d bytes in %d builds, want the four builds portage installed", st.BytesFetched, st.BuildsFetched)
	}
}

// checkBinaryInstall fails unless portage merged cpv from the gateway:
// the vdb carries the BUILD_ID the index listed and the merge was binary.
func checkBinaryInstall(t *testing.T, c *portageClient, idx map[string][]portagehook.Entry, cpv, out string) {
	t.Helper()
	got, ok := c.installedPkg(t, cpv)
	if !ok {
		t.Errorf("%s is not installed\n%s", cpv, tail(out, 40))
		return
	}
	if mt := c.mergeType(t, cpv); mt != "binary" {
		t.Errorf("%s merged with MERGE_TYPE=%q, want binary (portage compiled it instead of installing the listed build)\n%s", cpv, mt, tail(out, 40))
	}
	if len(idx[cpv]) != 1 || got.buildID != idx[cpv][0].Value("BUILD_ID") {
		t.Errorf("%s installed with BUILD_ID %q; the gateway listed %v", cpv, got.buildID, indexNames(map[string][]portagehook.Entry{cpv: idx[cpv]}))
	}
}

// checkP2PFiles checks what p2pfiles installed into root: hardlinks are one
// inode, the setuid and setgid programs keep their modes, the long paths
// and the symlink to one are there.
func checkP2PFiles(t *testing.T, root string) {
	t.Helper()
	at := func(rel string) string { return filepath.Join(root, rel) }
	mode := func(rel string, want fs.FileMode) {
		fi, err := os.Lstat(at(rel))
		if err != nil {
			t.Error(err)
			return
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeType); got != want {
			t.Errorf("%s: mode %v, want %v", rel, got, want)
		}
	}
	sameFile := func(a, b string) {
		fa, errA := os.Lstat(at(a))
		fb, errB := os.Lstat(at(b))
		if errA != nil || errB != nil {
			t.Errorf("hardlink pair %s, %s: %v %v", a, b, errA, errB)
			return
		}
		if !os.SameFile(fa, fb) {
			t.Errorf("%s and %s are two files, want one inode", a, b)
		}
	}
	mode("usr/bin/p2pfiles", fs.ModeSetuid|0o711)
	mode("usr/bin/p2pfiles-hardlink", fs.ModeSetuid|0o711)
	sameFile("usr/bin/p2pfiles", "usr/bin/p2pfiles-hardlink")
	mode("usr/libexec/p2pfiles/p2pfiles-setgid", fs.ModeSetgid|0o755)
	sameFile("usr/share/p2pfiles/data.txt", "usr/share/p2pfiles/data-hardlink.txt")
	long := p2pLongDir + "/file-at-the-end-of-a-path-longer-than-one-hundred-bytes.txt"
	if len("/"+long) <= 100 {
		t.Fatalf("the long path is only %d bytes", len(long)+1)
	}
	mode(long, 0o644)
	sameFile(long, p2pLongDir+"/hardlink-with-a-long-target-at-the-end-of-the-same-long-path.txt")
	if target, err := os.Readlink(at("usr/share/p2pfiles/symlink-to-the-long-path")); err != nil || target != "/"+long {
		t.Errorf("symlink to the long path: %q %v", target, err)
	}
	if b, err := os.ReadFile(at(long)); err != nil || string(b) != "long path\n" {
		t.Errorf("%s: %q %v", long, b, err)
	}
}

// TestPortageNotListed: what a default consumer must not offer portage —
// builds below the trust threshold, and allowed builds this machine cannot
// run: one whose := library (subslot 0/1, libp2plib.so.1) is neither
// installed nor offered by another listed build, or is installed in
// another subslot; one needing a soname no package provides; one needing
// a glibc symbol version newer than the installed glibc; one needing an
// ISA level the CPU lacks. Portage then compiles from the ebuild. The same
// gateway lists fitting builds first, so "not listed" is not the gateway
// listing nothing.
func TestPortageNotListed(t *testing.T) {
	h := needPortage(t)
	guardHostVDB(t)
	b := builtBinpkgs(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	client := newPortageClient(t, ctx, h, t.TempDir())
	// One builder alone holds layout and p2plib-1: neither is allowed, so
	// nothing installed or listed offers libp2plib.so.1 or p2plib:0/1 (a
	// listed build providing them could count as installed alongside).
	net := startE2ENetwork(t, b, e2eOptions{VDB: client.VDB(), SoleBuilder: []string{"app-misc/layout", "dev-libs/p2plib"}})
	consumer := net.consumer
	assertDefaultConsumer(t, consumer)
	fitting := []string{"app-misc/p2pfiles-1.0", "sys-libs/libxcrypt-4.4.33"}
	for _, cpv := range append([]string{"app-misc/p2puse-1", "app-misc/p2porphan-1", "app-misc/p2pfuture-1", "app-misc/p2pisa-1"}, fitting...) {
		waitAllowed(t, consumer, cpv, 1)
	}
	client.useGateway(t, ctx, consumer)
	idx := indexOf(t, ctx, consumer)
	for _, cpv := range fitting {
		if len(idx[cpv]) != 1 || idx[cpv][0].Value("SIZE") == "" {
			t.Fatalf("the gateway lists %q for %s, which fits; want one entry with SIZE (without it the checks below prove nothing). Index: %v", idx[cpv], cpv, indexNames(idx))
		}
	}

	t.Run("below threshold", func(t *testing.T) {
		for _, cpv := range []string{"app-misc/layout-1.0-r1", "dev-libs/p2plib-1"} {
			ex, err := consumer.Daemon.API().Explain(ctx, cpv)
			if err != nil || len(ex.Verdicts) != 1 || ex.Verdicts[0].Decision == trust.Allowed {
				t.Fatalf("the consumer's verdicts on %s (one builder): %+v %v; want one, not allowed", cpv, ex.Verdicts, err)
			}
			if es := indexOf(t, ctx, consumer)[cpv]; len(es) != 0 {
				t.Fatalf("the gateway lists %s, which one builder attested: %v", cpv, indexNames(map[string][]portagehook.Entry{cpv: es}))
			}
		}
		out := client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/layout")
		checkSourceInstall(t, client, "app-misc/layout-1.0-r1", out)
	})
	// notListed fails unless the gateway left cpv out for the reason
	// naming what, as trust explain tells the user.
	notListed := func(t *testing.T, cpv, need, what string) {
		t.Helper()
		if es := indexOf(t, ctx, consumer)[cpv]; len(es) != 0 {
			t.Fatalf("the gateway lists %s, which needs %s: %v", cpv, need, indexNames(map[string][]portagehook.Entry{cpv: es}))
		}
		why := whyNotListed(t, consumer, cpv)
		if !strings.Contains(why, what) {
			t.Errorf("trust explain says the gateway left %s out because %q; want a reason naming %s", cpv, why, what)
		}
		t.Logf("not listed: %s", why)
	}
	t.Run("soname nobody provides", func(t *testing.T) {
		notListed(t, "app-misc/p2porphan-1", "libp2pghost.so.1, which no package provides", "libp2pghost.so.1")
	})
	t.Run("glibc symbol version", func(t *testing.T) {
		notListed(t, "app-misc/p2pfuture-1", "libc.so.6 version GLIBC_2.99 (glibc 2.36 installed)", "GLIBC_2.99")
	})
	t.Run("ISA level", func(t *testing.T) {
		if cpuHasX8664V4(t) {
			if es := indexOf(t, ctx, consumer)["app-misc/p2pisa-1"]; len(es) != 1 {
				t.Errorf("this CPU runs x86-64-v4, yet the gateway lists %v for p2pisa (ISA needed: x86-64-v4); trust explain: %q",
					indexNames(map[string][]portagehook.Entry{"p2pisa": es}), whyNotListed(t, consumer, "app-misc/p2pisa-1"))
			}
			return
		}
		notListed(t, "app-misc/p2pisa-1", "x86-64-v4, which this CPU lacks", "x86-64-v4")
	})
	t.Run("slot operator: library neither installed nor listed", func(t *testing.T) {
		notListed(t, "app-misc/p2puse-1", "dev-libs/p2plib:0/1= and libp2plib.so.1, with no p2plib installed or listed", "libp2plib.so.1")
	})
	t.Run("slot operator: other subslot installed", func(t *testing.T) {
		// p2plib-2 (subslot 0/2, libp2plib.so.2), built here.
		client.mask(t)
		client.emerge(t, ctx, "--oneshot", "=dev-libs/p2plib-2")
		notListed(t, "app-misc/p2puse-1", "dev-libs/p2plib:0/1= and libp2plib.so.1, with p2plib:0/2 installed", "libp2plib.so.1")
		out := client.emerge(t, ctx, "--oneshot", "--getbinpkg", "app-misc/p2puse")
		checkSourceInstall(t, client, "app-misc/p2puse-1", out)
		use, _ := client.installedPkg(t, "app-misc/p2puse-1")
		if rdep, _ := os.ReadFile(filepath.Join(use.dir, "RDEPEND")); !strings.Contains(string(rdep), "dev-libs/p2plib:0/2=") {
			t.Errorf("p2puse's RDEPEND in the vdb is %q, want dev-libs/p2plib:0/2= (built here against the installed subslot)", rdep)
		}
	})
}

// checkSourceInstall fails unless portage compiled cpv here: it is
// installed, the merge was a source merge, and the vdb has no BUILD_ID
// (a binpkg's).
func checkSourceInstall(t *testing.T, c *portageClient, cpv, out string) {
	t.Helper()
	got, ok := c.installedPkg(t, cpv)
	if !ok {
		t.Fatalf("%s is not installed\n%s", cpv, tail(out, 40))
	}
	if mt := c.mergeType(t, cpv); mt != "source" || got.buildID != "" {
		t.Errorf("%s merged with MERGE_TYPE=%q and BUILD_ID %q, want a source build\n%s", cpv, mt, got.buildID, tail(out, 40))
	}
}

// cpuHasX8664V4 reports whether this CPU runs x86-64-v4 code (the AVX-512
// subsets the level requires).
func cpuHasX8664V4(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags := strings.Fields(v)
			for _, need := range []string{"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} {
				if !slices.Contains(flags, need) {
					return false
				}
			}
			return true
		}
	}
	return false
}
