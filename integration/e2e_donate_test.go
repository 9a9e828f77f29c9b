//go:build portage

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// tamperedPostinst is what the third builder's portage adds to
// libxcrypt: a pkg_postinst that would run as root on every machine
// installing its build.
const tamperedPostinst = `pkg_postinst() { touch "${EROOT}/gentoo-p2pd-owned"; }` + "\n"

// TestPortageDonatedBuilds is the donated-CPU story end to end, with
// stock portage everywhere and real upstream code (libxcrypt-4.4.33):
//
//  1. A user emerges libxcrypt with --getbinpkg; nobody built it, so
//     portage compiles it, and the FEATURES="binary_sharing" bashrc hook
//     tells the user's daemon, which records signed demand for the
//     variant (from the vdb entry portage just wrote) and gossips it.
//  2. Three builder daemons (build.donate) see the demand for their
//     platform and build it with the shipped gentoo-p2pd-build, each in
//     a root of its own, from playgrounds at different paths and with
//     different make jobs. Two are honest and agree; the third's portage
//     adds a pkg_postinst (/etc/portage/env, so its .ebuild is the same
//     file and its build the same build key) and disagrees.
//  3. The honest builders report the third's rebuild in trust explain,
//     naming pkg_postinst; the user's daemon, vouching for its two
//     builders only, allows their build (threshold 2), and the user's
//     next emerge installs it as a binary through the gateway, with no
//     pkg_postinst run.
func TestPortageDonatedBuilds(t *testing.T) {
	h := needPortage(t)
	guardHostVDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*commandTimeout)
	defer cancel()
	dir := t.TempDir()
	const cpv = "sys-libs/libxcrypt-4.4.33"

	// The builders: each its own host configuration (a playground at its
	// own path) and builder root.
	specs := []struct {
		name     string
		jobs     int
		tampered bool
	}{{"honest-a", 1, false}, {"honest-b", 2, false}, {"tampered", 1, true}}
	var builders []*testnet.Node
	for _, s := range specs {
		ep := builderHost(t, ctx, h, filepath.Join(dir, s.name+"-host"))
		if s.tampered {
			env := filepath.Join(ep, "etc", "portage", "env", "sys-libs")
			if err := os.MkdirAll(env, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(env, "libxcrypt"), []byte(tamperedPostinst), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var boot []string
		if len(builders) > 0 {
			boot = []string{builders[0].Addr()}
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: s.name, Dir: dir, Bootstrap: boot, Logger: testLogger(),
			Configure: func(c *config.Config) {
				donate(t, h, c, ep, filepath.Join(dir, s.name, "build"))
				c.Build.Jobs = s.jobs
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopNode(t, n) })
		builders = append(builders, n)
	}

	// The user: a playground whose one binhost is its daemon's gateway,
	// with the project's bashrc hook. Its daemon runs the open network's
	// policy (fresh keys weigh nothing) and vouches for the two builders
	// it knows, at threshold 2.
	c := newPortageClient(t, ctx, h, filepath.Join(dir, "user"))
	user, err := testnet.Start(ctx, testnet.NodeOptions{Name: "user", Dir: dir, Bootstrap: []string{builders[0].Addr()},
		VDB: c.VDB(), Logger: testLogger(),
		Configure: func(cfg *config.Config) {
			cfg.Gateway.Prefetch = config.Defaults().Gateway.Prefetch
			cfg.Trust.Threshold = 2
			cfg.Trust.FreshWeight = config.Defaults().Trust.FreshWeight
			cfg.Trust.VouchedPeers = []string{builders[0].Daemon.ID().String(), builders[1].Daemon.ID().String()}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, user) })
	c.useGateway(t, ctx, user)
	c.shareBuilds(t, gentooP2pd(t), user)

	// 1. Nobody built it: portage compiles it, and the hook records demand.
	c.emerge(t, ctx, "--oneshot", "--getbinpkg", "--quiet-build=y", "="+cpv)
	if got := c.mergeType(t, cpv); got != "source" {
		t.Fatalf("first emerge merged %s as %q; want a source build (nothing shared yet)", cpv, got)
	}
	variant := wantedVariant(t, user, cpv)
	for _, b := range builders {
		waitFor(t, b.Name+" to hear the user's demand", func() bool { return wants(ctx, b, cpv) == variant })
	}

	// 2. The builders build it.
	for _, b := range builders {
		waitForLong(t, 3*commandTimeout, b.Name+"'s donated build of "+cpv, func() bool {
			st := b.Daemon.API().Status(ctx).Builder
			return st != nil && st.Done+st.Failed >= 1
		})
		st := b.Daemon.API().Status(ctx).Builder
		if st.Failed != 0 || st.Done != 1 || st.Recent[0].CPV != cpv || st.Recent[0].Variant != variant || st.Recent[0].Built != "" {
			logBuilder(t, b)
			t.Fatalf("%s: %d done, %d failed, %+v; want one build of the wanted variant %s", b.Name, st.Done, st.Failed, st.Recent, variant)
		}
		if st.CPUSeconds <= 0 {
			t.Errorf("%s donated %.2f s of CPU", b.Name, st.CPUSeconds)
		}
		t.Logf("%s built %s in %s, %.1f CPU-s", b.Name, cpv, st.Recent[0].Took, st.Recent[0].CPUSeconds)
	}

	// 3. The honest builders report the tampered rebuild, naming what it
	// changed; the user allows the honest build and installs it.
	tampered := builders[2].Daemon.ID()
	for _, b := range builders[:2] {
		var report trust.Disagreement
		waitFor(t, b.Name+" to report the tampered rebuild", func() bool {
			ex, err := b.Daemon.API().Explain(ctx, cpv)
			if err != nil {
				return false
			}
			for _, d := range ex.Disagreements {
				for _, a := range d.OtherAttesters {
					if a == tampered {
						report = d
						return true
					}
				}
			}
			return false
		})
		text := report.Explain()
		if !strings.Contains(text, "pkg_postinst") {
			t.Fatalf("%s's report does not name pkg_postinst:\n%s", b.Name, text)
		}
		t.Logf("%s reports:\n%s", b.Name, text)
	}
	waitAllowed(t, user, cpv, 1)
	ex, err := user.Daemon.API().Explain(ctx, cpv)
	if err != nil {
		t.Fatal(err)
	}
	honest := allowedContent(t, ex)
	for _, b := range builders[:2] {
		if !attestedContent(honest, b.Daemon.ID().String()) {
			t.Fatalf("the allowed content is not %s's build:\n%s", b.Name, ex.Text)
		}
	}
	if attestedContent(honest, tampered.String()) {
		t.Fatalf("the allowed content is the tampered build:\n%s", ex.Text)
	}

	c.emerge(t, ctx, "--oneshot", "--getbinpkgonly", "="+cpv)
	if got := c.mergeType(t, cpv); got != "binary" {
		t.Fatalf("second emerge merged %s as %q; want the builders' binary", cpv, got)
	}
	if inst, ok := c.installedPkg(t, cpv); !ok || inst.buildID == "" {
		t.Fatalf("%s not installed from the gateway: %+v", cpv, inst)
	}
	if _, err := os.Lstat(filepath.Join(c.ep, "gentoo-p2pd-owned")); err == nil {
		t.Fatal("the tampered pkg_postinst ran on the user's machine")
	}
}

// builderHost makes a playground standing in for a builder's own Gentoo
// host: its portage configuration and repository (the real libxcrypt
// ebuild, its distfile and Manifest), which gentoo-p2pd-build copies.
func builderHost(t *testing.T, ctx context.Context, h *portageHarness, ep string) string {
	t.Helper()
	h.run(t, ctx, nil, h.python, filepath.Join(h.dir, "setup_playground.py"), ep,
		"--extra-ebuilds", filepath.Join("testdata", "portage", "ebuilds.py"),
		"--extra-ebuilds", filepath.Join(h.real, "ebuilds.py"))
	distdir := filepath.Join(ep, "var", "portage", "distfiles")
	if err := os.MkdirAll(distdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := xferCopy(filepath.Join(h.real, "distfiles", "libxcrypt-4.4.33.tar.xz"), filepath.Join(distdir, "libxcrypt-4.4.33.tar.xz")); err != nil {
		t.Fatal(err)
	}
	h.run(t, ctx, nil, filepath.Join(h.dir, "pns.sh"), ep, "ebuild",
		filepath.Join(ep, "var", "repositories", "test_repo", "sys-libs", "libxcrypt", "libxcrypt-4.4.33.ebuild"), "manifest")
	return ep
}

// donate makes c a donating builder whose root is root and whose host
// configuration is playground ep's: the shipped gentoo-p2pd-build with
// the harness's portage (testdata/portage/builder-emerge.sh).
func donate(t *testing.T, h *portageHarness, c *config.Config, ep, root string) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "packaging", "gentoo-p2pd-build"))
	if err != nil {
		t.Fatal(err)
	}
	wrapper, err := filepath.Abs(filepath.Join("testdata", "portage", "builder-emerge.sh"))
	if err != nil {
		t.Fatal(err)
	}
	c.Build.Donate = true
	c.Build.Root = root
	c.Build.Command = []string{"env",
		"GENTOO_P2PD_BUILD_CONFIG_FROM=" + ep,
		"GENTOO_P2PD_BUILD_EMERGE=" + wrapper + " " + h.dir + " " + h.work,
		script}
	// The test machine is shared with other work: its load says nothing
	// of these tests (builder's TestLimitsHoldBuilds covers the bound),
	// and at niceness 19 (builder's TestBuilderBuildsAndAnnounces) a
	// build on a busy CI machine would wait for idle CPU.
	c.Build.WhenIdle = 0
	c.Build.Nice = 0
}

// shareBuilds turns on FEATURES="binary_sharing" in the client with the
// project's own bashrc hook after the test's logging one, calling the
// real gentoo-p2pd binary on n's socket, as setup-portage installs it.
func (c *portageClient) shareBuilds(t *testing.T, bin string, n *testnet.Node) {
	t.Helper()
	bashrc := filepath.Join(c.ep, "etc", "portage", "bashrc")
	old, err := os.ReadFile(bashrc)
	if err != nil {
		t.Fatal(err)
	}
	hook := fmt.Sprintf("if [[ ${EBUILD_PHASE} == postinst ]]; then gentoo_p2pd_socket='%s'; GENTOO_P2PD_COMMAND='%s'; fi\n",
		n.Config.API.Socket, bin) + portagehook.BashrcSnippet
	if err := os.WriteFile(bashrc, append(old, hook...), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(c.makeConf(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("FEATURES=\"${FEATURES} binary_sharing\"\n"); err != nil {
		t.Fatal(err)
	}
}

// wantedVariant waits for n to hold its own demand for cpv and returns the
// variant it wants.
func wantedVariant(t *testing.T, n *testnet.Node, cpv string) keys.Variant {
	t.Helper()
	var v keys.Variant
	waitFor(t, n.Name+" to record demand for "+cpv, func() bool {
		v = wants(context.Background(), n, cpv)
		return v != ""
	})
	return v
}

// wants is the variant of cpv n's search says peers want ("" if none).
func wants(ctx context.Context, n *testnet.Node, cpv string) keys.Variant {
	res, err := n.Daemon.API().Search(ctx, cpv)
	if err != nil {
		return ""
	}
	for _, w := range res.Wanted {
		if w.CPV == cpv && w.Wanters >= 1 {
			return w.VariantKey
		}
	}
	return ""
}

// allowedContent is the one allowed content of the explanation's verdicts.
func allowedContent(t *testing.T, ex api.Explanation) *trust.ContentTally {
	t.Helper()
	for _, v := range ex.Verdicts {
		if v.Decision != trust.Allowed {
			continue
		}
		for i := range v.Tally {
			if v.Tally[i].Content == *v.Content {
				return &v.Tally[i]
			}
		}
	}
	t.Fatalf("no allowed content:\n%s", ex.Text)
	return nil
}

// attestedContent reports whether peer attested the tally's content.
func attestedContent(c *trust.ContentTally, peer string) bool {
	for _, v := range c.Voters {
		if v.Peer.String() == peer {
			return true
		}
	}
	return false
}

// logBuilder logs what a builder's jobs said, for a failed test.
func logBuilder(t *testing.T, n *testnet.Node) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(n.Config.Build.Root, "logs", "*"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		t.Logf("%s:\n%s", l, tail(string(b), 40))
	}
}
