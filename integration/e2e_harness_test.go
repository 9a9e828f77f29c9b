//go:build portage

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// This file holds what the end-to-end portage tests (e2e_portage_test.go)
// share: the harness's locations, binpkgs built by real portage at test
// time (cached under $ORACLE_WORK), builder and consumer daemons holding
// them, and client playgrounds that install from a consumer's gateway with
// stock emerge.

// portageHarness locates the portage harness (../shared/portage-harness),
// its scratch dir and portage checkout, and the real upstream packages
// beside it (../shared/real-packages).
type portageHarness struct {
	dir    string // the harness
	work   string // $ORACLE_WORK
	src    string // the portage checkout ($PORTAGE_SRC)
	real   string // ../shared/real-packages
	bin    string // $ORACLE_WORK/bin: gtar
	python string
}

// needPortage returns the harness the environment names, or fails the
// test: .ci/run sets GENTOO_P2PD_PORTAGE_HARNESS and ORACLE_WORK and runs
// get_portage.sh first. The tests need root (unshare, overlay mounts).
func needPortage(t *testing.T) *portageHarness {
	t.Helper()
	dir := os.Getenv("GENTOO_P2PD_PORTAGE_HARNESS")
	work := os.Getenv("ORACLE_WORK")
	if dir == "" || work == "" {
		t.Fatal("set GENTOO_P2PD_PORTAGE_HARNESS (../shared/portage-harness) and ORACLE_WORK; .ci/run shows how")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the portage tests need root: the harness runs portage in a private mount namespace")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	work, err = filepath.Abs(work)
	if err != nil {
		t.Fatal(err)
	}
	h := &portageHarness{
		dir:  dir,
		work: work,
		src:  cmpOr(os.Getenv("PORTAGE_SRC"), filepath.Join(work, "portage-src")),
		real: filepath.Join(filepath.Dir(dir), "real-packages"),
		bin:  filepath.Join(work, "bin"),
	}
	if _, err := os.Stat(filepath.Join(h.src, "bin", "emerge")); err != nil {
		t.Fatalf("no portage checkout at %s (run %s/get_portage.sh): %v", h.src, dir, err)
	}
	if _, err := os.Stat(filepath.Join(h.real, "ebuilds.py")); err != nil {
		t.Fatalf("the real upstream packages are not beside the harness: %v", err)
	}
	if h.python, err = exec.LookPath("python3"); err != nil {
		t.Fatal(err)
	}
	// Portage calls GNU tar as gtar; Debian has only tar.
	if _, err := exec.LookPath("gtar"); err != nil {
		tar, err := exec.LookPath("tar")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(h.bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(tar, filepath.Join(h.bin, "gtar")); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	// The playgrounds configure the harness's throwaway signing key.
	h.run(t, context.Background(), nil, filepath.Join(dir, "gen_gpg_key.sh"))
	t.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", filepath.Join(work, "gnupg"), "--kill", "gpg-agent").Run()
	})
	return h
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// env is the environment the harness's scripts run with.
func (h *portageHarness) env() []string {
	return append(os.Environ(), "PATH="+h.bin+":"+os.Getenv("PATH"), "LC_ALL=C.UTF-8",
		"ORACLE_WORK="+h.work, "PORTAGE_SRC="+h.src, "GENTOO_P2PD_PORTAGE_HARNESS="+h.dir, "REAL_PACKAGES="+h.real)
}

// run runs a command with the harness's environment and returns its
// combined output; a failure fails the test with the output's tail.
func (h *portageHarness) run(t *testing.T, ctx context.Context, extraEnv []string, name string, args ...string) string {
	t.Helper()
	out, err := h.try(ctx, extraEnv, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out, 60))
	}
	return out
}

// try is run without failing the test.
// A command gets at most commandTimeout: a hung emerge (a download that
// never ends) fails its test with the output so far instead of stalling
// the whole suite until go test's own timeout, which prints no output.
func (h *portageHarness) try(ctx context.Context, extraEnv []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(h.env(), extraEnv...)
	// Killing the script leaves its children (wget) holding the output
	// pipe; stop waiting for them soon after.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (gave up after %v)", err, commandTimeout)
	}
	return string(out), err
}

// commandTimeout bounds one harness command. A cold build of every
// fixture takes under two minutes on two cores; the package as a whole
// has go test's ten.
const commandTimeout = 5 * time.Minute

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// emerge runs the checkout's emerge in playground ep as pns.sh does (a
// private mount namespace, ROOT=PORTAGE_CONFIGROOT=ep), with SYSROOT=ep
// too: pns.sh drops SYSROOT from the environment, and with SYSROOT=/ an
// EAPI 7+ DEPEND (p2puse's on p2plib) would be merged into the host's own
// / when portage builds from source.
func (h *portageHarness) emerge(ctx context.Context, ep string, args ...string) (string, error) {
	argv := append([]string{ep, "env", "SYSROOT=" + ep, "PORTAGE_TRUST_HELPER=/bin/true", h.python, "-b", filepath.Join(h.src, "bin", "emerge"), "--color=n"}, args...)
	return h.try(ctx, nil, filepath.Join(h.dir, "pns.sh"), argv...)
}

// --- binpkgs built by real portage, cached per ORACLE_WORK ---

// e2eBuilds is what testdata/portage/build.sh produced: OUT, and how long
// each run took (empty when the cache answered).
type e2eBuilds struct {
	out     string
	timings string
	took    time.Duration
}

var (
	e2eBuildOnce sync.Once
	e2eBuilt     e2eBuilds
	e2eBuildErr  error
)

// builtBinpkgs builds the fixtures with testdata/portage/build.sh once per
// ORACLE_WORK and content: the cache key covers the ebuilds, the build
// script, the real packages' ebuilds and distfiles and the portage commit,
// so a second run in the same CI job (or by hand) reuses the binpkgs.
func builtBinpkgs(t *testing.T, h *portageHarness) e2eBuilds {
	t.Helper()
	e2eBuildOnce.Do(func() {
		key, err := e2eCacheKey(h)
		if err != nil {
			e2eBuildErr = err
			return
		}
		out := filepath.Join(h.work, "gentoo-p2pd-e2e", key)
		if _, err := os.Stat(filepath.Join(out, "done")); err == nil {
			e2eBuilt = e2eBuilds{out: out}
			return
		}
		if err := os.RemoveAll(out); err != nil {
			e2eBuildErr = err
			return
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			e2eBuildErr = err
			return
		}
		script, err := filepath.Abs(filepath.Join("testdata", "portage", "build.sh"))
		if err != nil {
			e2eBuildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		if o, err := h.try(ctx, nil, script, out); err != nil {
			e2eBuildErr = fmt.Errorf("%s: %w\n%s", script, err, tail(o, 60))
			return
		}
		took := time.Since(start)
		timings, _ := os.ReadFile(filepath.Join(out, "timings"))
		if err := os.WriteFile(filepath.Join(out, "done"), nil, 0o644); err != nil {
			e2eBuildErr = err
			return
		}
		e2eBuilt = e2eBuilds{out: out, timings: string(timings), took: took}
	})
	if e2eBuildErr != nil {
		t.Fatal(e2eBuildErr)
	}
	if e2eBuilt.took > 0 {
		t.Logf("built the binpkgs with real portage in %s (seconds per run, two playgrounds side by side):\n%s", e2eBuilt.took.Round(time.Second), e2eBuilt.timings)
		e2eBuilt.took = 0 // said once
	} else {
		t.Logf("binpkgs from the cache %s", e2eBuilt.out)
	}
	return e2eBuilt
}

func e2eCacheKey(h *portageHarness) (string, error) {
	sum := sha256.New()
	add := func(path string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(sum, "%s %d\n", filepath.Base(path), len(b))
		sum.Write(b)
		return nil
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "portage"))
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := add(filepath.Join("testdata", "portage", e.Name())); err != nil {
				return "", err
			}
		}
	}
	if err := add(filepath.Join(h.real, "ebuilds.py")); err != nil {
		return "", err
	}
	dist, err := os.ReadDir(filepath.Join(h.real, "distfiles"))
	if err != nil {
		return "", err
	}
	for _, d := range dist {
		fi, err := d.Info()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(sum, "distfile %s %d\n", d.Name(), fi.Size())
	}
	fmt.Fprintf(sum, "portage %s\n", cmpOr(os.Getenv("PORTAGE_COMMIT"), "a20ef27af"))
	return hex.EncodeToString(sum.Sum(nil))[:16], nil
}

// The three builders and what build.sh made for each: two playgrounds at
// different paths, XPAK and GPKG, three compressions. The builds made once
// (in gpkg-zstd) are copied to the other two, except layout, which one
// builder holds alone.
var e2eBuilders = []struct{ name, pkgdir string }{
	{"zstd", "pg-a/pkgdirs/gpkg-zstd"},
	{"bzip2", "pg-a/pkgdirs/xpak-bzip2"},
	{"xz", "pg-b/pkgdirs/gpkg-xz"},
}

// e2eOnce are the builds made once and copied to every builder: allowed
// by three votes, but fit for no machine lacking what they need.
var e2eOnce = []string{"app-misc/p2porphan", "app-misc/p2pfuture", "app-misc/p2pisa"}

// builderPKGDIR copies builder i's binpkgs (and the copied builds) into a
// PKGDIR of its own below dir, so no test changes the cache. Packages
// (category/name) in soleBuilder stay with builder 0 alone. It returns the
// PKGDIR and the number of binpkgs in it (the attestations it signs).
func builderPKGDIR(t *testing.T, b e2eBuilds, i int, dir string, soleBuilder []string) (string, int) {
	t.Helper()
	dst := filepath.Join(dir, e2eBuilders[i].name+"-pkgdir")
	if err := copyTree(filepath.Join(b.out, e2eBuilders[i].pkgdir), dst); err != nil {
		t.Fatal(err)
	}
	if i > 0 {
		for _, cp := range e2eOnce {
			src := filepath.Join(b.out, e2eBuilders[0].pkgdir, cp)
			if err := copyTree(src, filepath.Join(dst, cp)); err != nil {
				t.Fatal(err)
			}
		}
		for _, cp := range soleBuilder {
			if err := os.RemoveAll(filepath.Join(dst, cp)); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := 0
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst, n
}

// copyTree copies the binpkgs below src (not portage's Packages index).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !strings.HasSuffix(p, ".gpkg.tar") && !strings.HasSuffix(p, ".xpak") && !strings.HasSuffix(p, ".tbz2") {
			return nil
		}
		return xferCopy(p, target)
	})
}

// e2eNetwork is three builders of the built binpkgs and one consumer.
type e2eNetwork struct {
	builders []*testnet.Node
	consumer *testnet.Node
}

// e2eOptions shape a test network.
type e2eOptions struct {
	// VDB is portage's installed-package database the consumer reads.
	VDB string
	// Configure, when set, changes the consumer's configuration last.
	Configure func(*config.Config)
	// SoleBuilder are packages (category/name) only the first builder
	// holds: one vote, below the default threshold.
	SoleBuilder []string
}

// startE2ENetwork starts the three builders and a consumer whose
// configuration is the default one — no fetch, gateway.prefetch and
// trust.threshold (3) as shipped — except what keeps it on loopback, its
// dirs, and what o.Configure changes. It returns once the consumer holds
// every builder's attestations.
func startE2ENetwork(t *testing.T, b e2eBuilds, o e2eOptions) *e2eNetwork {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dir := t.TempDir()
	net := &e2eNetwork{}
	stop := func(n *testnet.Node) { t.Cleanup(func() { stopNode(t, n) }) }
	attestations := 0
	for i, spec := range e2eBuilders {
		pkgdir, held := builderPKGDIR(t, b, i, dir, o.SoleBuilder)
		attestations += held
		var boot []string
		if i > 0 {
			boot = []string{net.builders[0].Addr()}
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: spec.name, Dir: dir, Bootstrap: boot, Logger: testLogger(),
			Configure: func(c *config.Config) { c.Portage.PkgDir = pkgdir }})
		if err != nil {
			t.Fatal(err)
		}
		stop(n)
		net.builders = append(net.builders, n)
	}
	c, err := testnet.Start(ctx, testnet.NodeOptions{Name: "consumer", Dir: dir, Bootstrap: []string{net.builders[0].Addr()}, VDB: o.VDB, Logger: testLogger(),
		Configure: func(c *config.Config) {
			// testnet fetches every allowed build ahead (prefetch = all):
			// back to the shipped default.
			c.Gateway.Prefetch = config.Defaults().Gateway.Prefetch
			if o.Configure != nil {
				o.Configure(c)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	stop(c)
	net.consumer = c
	waitCatalog(t, c, attestations)
	return net
}

// assertDefaultConsumer fails unless n runs the shipped defaults in
// everything that decides what portage sees and what is fetched.
func assertDefaultConsumer(t *testing.T, n *testnet.Node) {
	t.Helper()
	d, c := config.Defaults(), n.Config
	switch {
	case c.Mode != d.Mode:
		t.Fatalf("consumer mode %s, default %s", c.Mode, d.Mode)
	case c.Gateway.Prefetch != d.Gateway.Prefetch || c.Gateway.Path != d.Gateway.Path:
		t.Fatalf("consumer gateway %+v, default %+v", c.Gateway, d.Gateway)
	case c.Trust.Threshold != d.Trust.Threshold || c.Trust.Dispute != d.Trust.Dispute ||
		c.Trust.DistinctNetworks != d.Trust.DistinctNetworks || c.Trust.RequireSigner != d.Trust.RequireSigner ||
		len(c.Trust.Signers)+len(c.Trust.TrustedPeers)+len(c.Trust.Overrides) != 0:
		t.Fatalf("consumer trust %+v, default %+v", c.Trust, d.Trust)
	case c.Cache.DiskBudget != d.Cache.DiskBudget:
		t.Fatalf("consumer cache budget %d, default %d", c.Cache.DiskBudget, d.Cache.DiskBudget)
	}
}

// waitAllowed waits until n's verdicts allow want builds of cpv (one per
// USE variant).
func waitAllowed(t *testing.T, n *testnet.Node, cpv string, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to allow %d build(s) of %s", n.Name, want, cpv), func() bool {
		ex, err := n.Daemon.API().Explain(context.Background(), cpv)
		if err != nil {
			return false
		}
		allowed := 0
		for _, v := range ex.Verdicts {
			if v.Decision == trust.Allowed {
				allowed++
			}
		}
		return allowed >= want
	})
}

// whyNotListed is what n's trust explain says of why its gateway's last
// index left cpv out ("" when it says nothing).
func whyNotListed(t *testing.T, n *testnet.Node, cpv string) string {
	t.Helper()
	ex, err := n.Daemon.API().Explain(context.Background(), cpv)
	if err != nil {
		t.Fatalf("trust explain %s: %v", cpv, err)
	}
	var why []string
	for _, w := range ex.NotListed {
		why = append(why, w)
	}
	sort.Strings(why)
	return strings.Join(why, "; ")
}

// indexOf fetches the gateway's Packages index as portage does, with every
// entry (several per CPV for USE variants), keyed by CPV.
func indexOf(t *testing.T, ctx context.Context, n *testnet.Node) map[string][]portagehook.Entry {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Daemon.GatewayURL()+"/Packages", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: Packages: %s %v", n.Name, resp.Status, err)
	}
	_, es, err := portagehook.ParseIndex(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: index does not parse: %v", n.Name, err)
	}
	out := map[string][]portagehook.Entry{}
	for _, e := range es {
		out[e.CPV()] = append(out[e.CPV()], e)
	}
	return out
}

func indexNames(idx map[string][]portagehook.Entry) []string {
	var out []string
	for cpv, es := range idx {
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s (BUILD_ID %s, USE %q, SIZE %q)", cpv, e.Value("BUILD_ID"), e.Value("USE"), e.Value("SIZE")))
		}
	}
	sort.Strings(out)
	return out
}

// --- client playgrounds ---

// portageClient is a portage config root and ROOT (a harness playground
// with this package's ebuilds and libxcrypt's) whose one binhost is a
// consumer's gateway, with verify-signature on and its key trusted as
// setup-portage trusts it.
type portageClient struct {
	h    *portageHarness
	ep   string
	hook string // log of the phase hooks: MERGE_TYPE per package
}

// newPortageClient makes the playground below dir and installs, from
// source, the stand-in glibc every Gentoo vdb has (its PROVIDES name
// libc.so.6, which every compiled package REQUIRES).
func newPortageClient(t *testing.T, ctx context.Context, h *portageHarness, dir string) *portageClient {
	t.Helper()
	c := &portageClient{h: h, ep: filepath.Join(dir, "client"), hook: filepath.Join(dir, "hooks.log")}
	h.run(t, ctx, nil, h.python, filepath.Join(h.dir, "setup_playground.py"), c.ep,
		"--extra-ebuilds", filepath.Join("testdata", "portage", "ebuilds.py"),
		"--extra-ebuilds", filepath.Join(h.real, "ebuilds.py"))
	// libxcrypt's distfile and Manifest: portage may build it from source.
	mc, err := os.ReadFile(c.makeConf())
	if err != nil {
		t.Fatal(err)
	}
	var distdir string
	for _, l := range strings.Split(string(mc), "\n") {
		if v, ok := strings.CutPrefix(l, "DISTDIR="); ok {
			distdir = strings.Trim(v, `"`)
		}
	}
	if distdir == "" {
		t.Fatal("the playground's make.conf sets no DISTDIR")
	}
	if err := os.MkdirAll(distdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := xferCopy(filepath.Join(h.real, "distfiles", "libxcrypt-4.4.33.tar.xz"), filepath.Join(distdir, "libxcrypt-4.4.33.tar.xz")); err != nil {
		t.Fatal(err)
	}
	h.run(t, ctx, nil, filepath.Join(h.dir, "pns.sh"), c.ep, "ebuild",
		filepath.Join(c.ep, "var", "repositories", "test_repo", "sys-libs", "libxcrypt", "libxcrypt-4.4.33.ebuild"), "manifest")
	// p2puse's builds link p2plib-1 (subslot 0/1). With version 2 visible,
	// portage would rather build both from source (--rebuild-if-new-slot,
	// on by default, moves a := consumer to the newest subslot): the
	// client sees version 2 only where a test unmasks it.
	c.mask(t, ">=dev-libs/p2plib-2")
	if out, err := h.emerge(ctx, c.ep, "--oneshot", "--quiet-build=y", "sys-libs/glibc"); err != nil {
		t.Fatalf("install the stand-in glibc: %v\n%s", err, tail(out, 40))
	}
	return c
}

// mask writes the client's package.mask: atoms, nothing else.
func (c *portageClient) mask(t *testing.T, atoms ...string) {
	t.Helper()
	body := strings.Join(atoms, "\n") + "\n"
	if len(atoms) == 0 {
		body = ""
	}
	if err := os.WriteFile(filepath.Join(c.ep, "etc", "portage", "package.mask"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *portageClient) makeConf() string { return filepath.Join(c.ep, "etc", "portage", "make.conf") }

// VDB is the client's installed-package database.
func (c *portageClient) VDB() string { return filepath.Join(c.ep, "var", "db", "pkg") }

// useGateway points the client at n's gateway, as consume_binhost.sh does
// (one binrepos.conf entry, verify-signature = true, a bashrc logging
// every phase hook's MERGE_TYPE), and trusts the gateway's key in the
// verify keyring the way setup-portage does (ultimate ownertrust).
func (c *portageClient) useGateway(t *testing.T, ctx context.Context, n *testnet.Node) {
	t.Helper()
	info, err := n.Daemon.API().GatewayInfo()
	if err != nil {
		t.Fatal(err)
	}
	keyring := filepath.Join(filepath.Dir(c.ep), "gnupg")
	if err := os.MkdirAll(keyring, 0o700); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(filepath.Dir(c.ep), "gateway.asc")
	if err := os.WriteFile(pub, []byte(info.PublicKey), 0o644); err != nil {
		t.Fatal(err)
	}
	c.h.run(t, ctx, nil, "gpg", "--homedir", keyring, "--batch", "--quiet", "--import", pub)
	trustIn := filepath.Join(filepath.Dir(c.ep), "ownertrust")
	if err := os.WriteFile(trustIn, []byte(info.Fingerprint+":6:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.h.run(t, ctx, nil, "gpg", "--homedir", keyring, "--batch", "--import-ownertrust", trustIn)
	// Recompute validity so the ownertrust counts (gpg may exit non-zero
	// here with nothing wrong, as the harness also allows).
	_ = exec.CommandContext(ctx, "gpg", "--homedir", keyring, "--batch", "--check-trustdb").Run()
	t.Cleanup(func() { _ = exec.Command("gpgconf", "--homedir", keyring, "--kill", "gpg-agent").Run() })
	c.setMakeConf(t, "BINPKG_GPG_VERIFY_GPG_HOME", `"`+keyring+`"`)

	name := "gentoo-p2pd-" + n.Name
	conf := fmt.Sprintf("[%s]\npriority = 9999\nsync-uri = %s/\nlocation = %s\nverify-signature = true\n",
		name, n.Daemon.GatewayURL(), filepath.Join(c.ep, "var", "cache", "binhost", name))
	if err := os.WriteFile(filepath.Join(c.ep, "etc", "portage", "binrepos.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	bashrc := `post_pkg_postinst() { echo "${CATEGORY}/${PF} MERGE_TYPE=${MERGE_TYPE} BUILD_ID=${BUILD_ID}" >> "` + c.hook + `"; }` + "\n"
	if err := os.WriteFile(filepath.Join(c.ep, "etc", "portage", "bashrc"), []byte(bashrc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setMakeConf replaces (or adds) one variable of the client's make.conf.
func (c *portageClient) setMakeConf(t *testing.T, name, value string) {
	t.Helper()
	mc, err := os.ReadFile(c.makeConf())
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(mc), "\n"), "\n") {
		if !strings.HasPrefix(l, name+"=") {
			lines = append(lines, l)
		}
	}
	lines = append(lines, name+"="+value)
	if err := os.WriteFile(c.makeConf(), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// emerge runs stock emerge in the client and returns its output; a
// failure fails the test.
func (c *portageClient) emerge(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	start := time.Now()
	out, err := c.h.emerge(ctx, c.ep, args...)
	if err != nil {
		t.Fatalf("emerge %s: %v\n%s", strings.Join(args, " "), err, tail(out, 60))
	}
	t.Logf("emerge %s: %s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
	return out
}

// installed is what the client's vdb says of one installed package.
type installed struct {
	cpv     string
	dir     string
	buildID string // empty: built here from source
	use     []string
}

// installedPkg reads the vdb entry of cpv; ok is false when cpv is not
// installed.
func (c *portageClient) installedPkg(t *testing.T, cpv string) (installed, bool) {
	t.Helper()
	dir := filepath.Join(c.VDB(), cpv)
	if _, err := os.Stat(dir); err != nil {
		return installed{}, false
	}
	read := func(k string) string {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return installed{cpv: cpv, dir: dir, buildID: read("BUILD_ID"), use: strings.Fields(read("USE"))}, true
}

// mergeType is the MERGE_TYPE the client's bashrc logged for cpv's last
// merge ("binary" or "source"), "" if it never merged.
func (c *portageClient) mergeType(t *testing.T, cpv string) string {
	t.Helper()
	b, err := os.ReadFile(c.hook)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var last string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == cpv {
			last = strings.TrimPrefix(f[1], "MERGE_TYPE=")
		}
	}
	return last
}

// guardHostVDB fails the test if portage merged anything into the host's
// own vdb while it ran: every merge must stay inside a playground.
func guardHostVDB(t *testing.T) {
	t.Helper()
	before := hostVDB()
	t.Cleanup(func() {
		for _, p := range hostVDB() {
			if !slices.Contains(before, p) {
				t.Errorf("portage merged %s into the host's /var/db/pkg", p)
			}
		}
	})
}

func hostVDB() []string {
	var out []string
	cats, _ := os.ReadDir("/var/db/pkg")
	for _, c := range cats {
		pkgs, _ := os.ReadDir(filepath.Join("/var/db/pkg", c.Name()))
		for _, p := range pkgs {
			out = append(out, c.Name()+"/"+p.Name())
		}
	}
	return out
}
