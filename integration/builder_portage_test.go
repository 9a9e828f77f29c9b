//go:build portage

package integration

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/builder"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

// builderDemand is the demand the test's builder is given: the network's
// is not in the test.
type builderDemand []builder.Want

func (d builderDemand) Wanted(_ context.Context, n int) ([]builder.Want, error) {
	return append([]builder.Want(nil), d[:min(n, len(d))]...), nil
}

// TestPortageBuilderDonates: a daemon with build.donate builds what it is
// asked for with stock portage, through the shipped gentoo-p2pd-build, in
// its builder root: sys-libs/libxcrypt-4.4.33 (real upstream source) first
// (the most wanted), then app-misc/p2pbuilddir. Each binpkg lands in the
// builder's PKGDIR, and the daemon indexes it and signs its attestation
// like any local build; p2pbuilddir, which compiles its build directory
// in, states portage's default /var/tmp/portage, the one every builder
// uses. Nothing outside the builder's root changes: the host's /etc,
// /usr, /var/db, portage's state and cache directories, /root, the
// harness, the portage checkout and the playground whose configuration
// the builder copies are the same file by file (path, size, mode,
// mtime) before and after, and /var/tmp/portage never appears.
func TestPortageBuilderDonates(t *testing.T) {
	h := needPortage(t)
	guardHostVDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*commandTimeout)
	defer cancel()
	dir := t.TempDir()

	// The playground stands in for the host's portage configuration and
	// repository: gentoo-p2pd-build copies its etc/portage.
	ep := builderHost(t, ctx, h, filepath.Join(dir, "host"))
	root := filepath.Join(dir, "node", "build")
	// What must not change; the builder root and the test's daemon state
	// are below dir, which is not in the list (but the playground is).
	watched := []string{"/etc", "/usr", "/var/db", "/var/cache/edb", "/var/cache/distfiles", "/var/lib/portage", "/var/log/portage",
		h.dir, h.work, ep}
	before := snapshotHost(t, watched)
	if _, err := os.Lstat("/var/tmp/portage"); err == nil {
		t.Fatal("/var/tmp/portage exists before the build: the test cannot tell the builder's writes from earlier ones")
	}

	// Which variant a build gives is known only once it is built: the
	// wants name a variant key no build has, so the builder reports what
	// it built instead (Built) and does not build it again.
	demand := builderDemand{
		{Variant: unbuiltVariant(t, "p2pbuilddir"), CPV: "app-misc/p2pbuilddir-1", Wanters: 1},
		{Variant: unbuiltVariant(t, "libxcrypt"), CPV: "sys-libs/libxcrypt-4.4.33", Wanters: 2},
	}
	n, err := testnet.Start(ctx, testnet.NodeOptions{Name: "node", Dir: dir, Logger: testLogger(), Demand: demand,
		VDB:       filepath.Join(ep, "var", "db", "pkg"),
		Configure: func(c *config.Config) { donate(t, h, c, ep, root) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, n) })

	var st *api.Builds
	waitForLong(t, 2*commandTimeout, "two donated builds", func() bool {
		s := n.Daemon.API().Status(ctx)
		st = s.Builder
		return st != nil && st.Done+st.Failed >= 2
	})
	if st.Failed != 0 || st.Done != 2 {
		for _, j := range st.Recent {
			t.Logf("%s: %s", j.CPV, j.Error)
		}
		logs, _ := filepath.Glob(filepath.Join(root, "logs", "*"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", l, tail(string(b), 40))
		}
		t.Fatalf("builder: %d done, %d failed; want 2 done", st.Done, st.Failed)
	}
	// Newest first: libxcrypt (2 wanting it) was built before p2pbuilddir.
	if st.Recent[1].CPV != "sys-libs/libxcrypt-4.4.33" || st.Recent[0].CPV != "app-misc/p2pbuilddir-1" {
		t.Fatalf("built %s then %s; want the most wanted, libxcrypt, first", st.Recent[1].CPV, st.Recent[0].CPV)
	}
	self := n.Daemon.ID().String()
	for _, j := range st.Recent {
		t.Logf("donated build of %s: %s wall, %.1f s CPU, %s", j.CPV, j.Took.Round(100*time.Millisecond), j.CPUSeconds, j.Path)
		if !strings.HasPrefix(j.Path, filepath.Join(root, "pkgdir")+"/") || j.CPUSeconds <= 0 {
			t.Errorf("%s: written to %s with %.2f s CPU; want the builder's PKGDIR", j.CPV, j.Path, j.CPUSeconds)
		}
		lp, ok, err := n.Daemon.Store().GetLocal(j.Path)
		if err != nil || !ok || lp.CPV != j.CPV {
			t.Fatalf("%s: %s not indexed (%v, %+v)", j.CPV, j.Path, err, lp)
		}
		if j.Built != keys.Variant(lp.VariantKey) {
			t.Errorf("%s: status says it built %s, the index %s", j.CPV, j.Built, lp.VariantKey)
		}
		own := ownAttestations(t, n.Daemon.Store(), lp.BuildKey, self)
		if len(own) != 1 {
			t.Fatalf("%s: %d attestations of this node, want 1", j.CPV, len(own))
		}
		a := own[0].Attestation
		if j.CPV == "app-misc/p2pbuilddir-1" && a.Builder.BuildDir != "/var/tmp/portage" {
			t.Errorf("p2pbuilddir states build directory %q; want portage's default /var/tmp/portage", a.Builder.BuildDir)
		}
	}

	after := snapshotHost(t, watched)
	if diff := diffSnapshots(before, after); diff != "" {
		t.Errorf("the builder changed the host outside its root:\n%s", diff)
	}
	if _, err := os.Lstat("/var/tmp/portage"); err == nil {
		t.Error("the builder left /var/tmp/portage on the host")
	}
	// The job's scratch (its overlays, the config root) went after it.
	if es, err := os.ReadDir(filepath.Join(root, "jobs")); err != nil || len(es) != 0 {
		t.Errorf("scratch left in the builder root: %v, %v", es, err)
	}
}

// unbuiltVariant is a well-formed variant key no build has.
func unbuiltVariant(t *testing.T, name string) keys.Variant {
	t.Helper()
	mh, err := multihash.Sum([]byte("no build of "+name), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return keys.VariantFromCID(cid.NewCidV1(cid.Raw, mh))
}

// fileState is what the snapshot records of one path.
type fileState struct {
	size  int64
	mode  fs.FileMode
	mtime time.Time
	link  string
}

// snapshotHost records every path below roots (those that exist), without
// following symlinks or other mounts.
func snapshotHost(t *testing.T, roots []string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	for _, root := range roots {
		if _, err := os.Lstat(root); os.IsNotExist(err) {
			out[root] = fileState{mode: fs.ModeIrregular} // absent, and must stay so
			continue
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			s := fileState{size: fi.Size(), mode: fi.Mode(), mtime: fi.ModTime()}
			if fi.Mode()&fs.ModeSymlink != 0 {
				s.link, _ = os.Readlink(p)
			}
			if fi.IsDir() {
				s.size = 0 // a directory's size follows its entries, compared one by one
			}
			out[p] = s
			return nil
		})
		if err != nil {
			t.Fatalf("snapshot %s: %v", root, err)
		}
	}
	return out
}

func diffSnapshots(before, after map[string]fileState) string {
	var lines []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok && b.mode == fs.ModeIrregular:
		case !ok:
			lines = append(lines, "removed "+p)
		case a != b:
			lines = append(lines, fmt.Sprintf("changed %s: %+v → %+v", p, b, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			lines = append(lines, "added "+p)
		}
	}
	sort.Strings(lines)
	if len(lines) > 40 {
		lines = append(lines[:40], fmt.Sprintf("… and %d more", len(lines)-40))
	}
	return strings.Join(lines, "\n")
}

// waitForLong is waitFor with its own bound (a build takes longer than
// waitTimeout on a loaded machine).
func waitForLong(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := testnet.WaitFor(context.Background(), timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}
