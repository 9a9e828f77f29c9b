package builder_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/builder"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// demand is a fixed list of wants that counts how often it was read.
type demand struct {
	wants []builder.Want
	reads atomic.Int64
}

func (d *demand) Wanted(_ context.Context, n int) ([]builder.Want, error) {
	d.reads.Add(1)
	return append([]builder.Want(nil), d.wants[:min(n, len(d.wants))]...), nil
}

// fakeBuild is a build command: it burns some CPU, notes its niceness and
// the job's scratch directory, and writes the real binpkg of the wanted
// CPV (from the fixtures in $SRC) into the builder's PKGDIR, as portage
// would; FAIL names a CPV whose build fails, NOWRITE one whose build
// writes nothing.
const fakeBuild = `#!/bin/sh
set -eu
i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
echo "$GENTOO_P2PD_BUILD_CPV nice=$(cut -d' ' -f19 /proc/self/stat) use=$GENTOO_P2PD_BUILD_USE work=$GENTOO_P2PD_BUILD_WORK" >> "$LOG"
[ "$GENTOO_P2PD_BUILD_CPV" != "${FAIL:-}" ] || { echo "compile error in $GENTOO_P2PD_BUILD_CPV" >&2; exit 1; }
[ "$GENTOO_P2PD_BUILD_CPV" != "${NOWRITE:-}" ] || exit 0
cd "$GENTOO_P2PD_BUILD_WORK"
cp "$SRC/$GENTOO_P2PD_BUILD_CPV.gpkg.tar" part
mkdir -p "$GENTOO_P2PD_BUILD_PKGDIR/${GENTOO_P2PD_BUILD_CPV%%/*}"
mv part "$GENTOO_P2PD_BUILD_PKGDIR/$GENTOO_P2PD_BUILD_CPV.gpkg.tar"
`

// A builder builds the most wanted variant first, one at a time, with a
// real child process at build.nice; own indexes, attests and provides
// what it wrote as a local build, after which the planner no longer
// plans it. A build that fails, or writes nothing, is counted failed; one
// that gives another variant than the one wanted says which; none is
// retried at once. The CPU time donated adds up the children's.
func TestBuilderBuildsAndAnnounces(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, src)
	hello, layout := jobtest.Identify(t, files[jobtest.HelloFile]), jobtest.Identify(t, files[jobtest.LayoutFile])

	p := jobtest.NewPeer(t, memnet.New(), jobtest.WithThreshold(3))
	root := filepath.Join(dir, "build")
	ob := own.New(own.Options{
		Store: p.Store, Votes: p.Book, Net: p.Node, Key: p.Key, Self: p.ID,
		PkgDir: filepath.Join(dir, "pkgdir"), BuildDirs: []string{filepath.Join(root, "pkgdir")},
		Mode: config.ModeShare, Files: xpak.DefaultLimits(), VDB: filepath.Join(dir, "vdb"),
	})
	script := filepath.Join(dir, "build.sh")
	if err := os.WriteFile(script, []byte(fakeBuild), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "builds.log")
	t.Setenv("SRC", src)
	t.Setenv("LOG", log)
	t.Setenv("FAIL", "app-misc/broken-1")
	t.Setenv("NOWRITE", "app-misc/empty-1")
	d := &demand{wants: []builder.Want{
		{Variant: layout.VariantKey(), CPV: jobtest.LayoutCPV, Wanters: 7},
		{Variant: hello.VariantKey(), CPV: jobtest.HelloCPV, USE: []string{"amd64", "foo"}, Wanters: 9},
		{Variant: "v-broken", CPV: "app-misc/broken-1", Wanters: 5},
		{Variant: "v-empty", CPV: "app-misc/empty-1", Wanters: 3},
		// This machine builds hello's one variant, whatever is wanted.
		{Variant: "v-hello-static", CPV: jobtest.HelloCPV, USE: []string{"static"}, Wanters: 1},
	}}
	reg := prometheus.NewRegistry()
	b, err := builder.New(builder.Options{
		Demand: d, Supply: p.Book, Announcer: ob, Counters: p.Store,
		Command: []string{script}, Root: root, Nice: 19, Threshold: 3,
		Interval: 10 * time.Millisecond, Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Prepare(); err != nil {
		t.Fatal(err)
	}
	if err := ob.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, "five builds finished", func() bool { st := b.Status(); return st.Done+st.Failed == 5 })
	st := b.Status()
	if st.Done != 3 || st.Failed != 2 || len(st.Recent) != 5 {
		t.Fatalf("status %+v; want 3 done, 2 failed", st)
	}
	lines := readLines(t, log)
	if len(lines) != 5 || !strings.HasPrefix(lines[0], jobtest.HelloCPV+" nice=19 use=amd64 foo ") ||
		!strings.HasPrefix(lines[1], jobtest.LayoutCPV+" nice=19 use= ") || !strings.HasPrefix(lines[2], "app-misc/broken-1 ") ||
		!strings.HasPrefix(lines[3], "app-misc/empty-1 ") || !strings.HasPrefix(lines[4], jobtest.HelloCPV+" nice=19 use=static ") {
		t.Fatalf("builds ran as\n%s\nwant hello (9 wanters), layout (7), broken (5), empty (3), hello static (1), at niceness 19", strings.Join(lines, "\n"))
	}
	var cpu float64
	for _, j := range st.Recent {
		cpu += j.CPUSeconds
		want := keys.Variant("")
		if j.Variant == "v-hello-static" {
			want = hello.VariantKey()
		}
		if j.Kind != builder.KindBuild || j.Built != want {
			t.Errorf("build %s (%s): kind %s, built %q; want kind build, built %q", j.CPV, j.Variant, j.Kind, j.Built, want)
		}
	}
	if e := recentOf(st, "app-misc/empty-1").Error; !strings.Contains(e, "wrote no binpkg of app-misc/empty-1") {
		t.Errorf("a build that wrote nothing: error %q", e)
	}
	if cpu <= 0 || st.CPUSeconds < cpu-0.005 || st.CPUSeconds > cpu+0.005 { // kept in milliseconds
		t.Fatalf("CPU time donated %.3f s, the builds' add up to %.3f s", st.CPUSeconds, cpu)
	}
	if got := jobtest.Counter(t, reg, "gentoo_p2pd_builder_cpu_seconds_total"); math.Abs(got-cpu) > 1e-9 {
		t.Errorf("metric cpu_seconds_total %v, want %v", got, cpu)
	}
	if e := recentOf(st, "app-misc/broken-1").Error; !strings.Contains(e, "compile error in app-misc/broken-1") {
		t.Errorf("failed build's error %q does not show the log's tail", e)
	}
	for _, bp := range []jobtest.Binpkg{hello, layout} {
		lp := p.Local(t, bp.Local.CPV)
		if lp.Path != filepath.Join(root, "pkgdir", bp.Local.CPV+".gpkg.tar") || lp.BuildKey != bp.Local.BuildKey {
			t.Errorf("indexed %s as %s (%s)", bp.Local.CPV, lp.Path, lp.BuildKey)
		}
		if !p.Providing(t, lp.BuildKey) {
			t.Errorf("%s is not provided", bp.Local.CPV)
		}
		if _, _, self, err := p.Book.Supply(t.Context(), bp.VariantKey()); err != nil || !self {
			t.Errorf("%s: this node's attestation not in the book (%v)", bp.Local.CPV, err)
		}
	}
	// Later plans build nothing again: two built here, three waiting.
	reads := d.reads.Load()
	eventually(t, "five more plans", func() bool { return d.reads.Load() >= reads+5 })
	if n := len(readLines(t, log)); n != 5 || b.Status().Queued != 0 {
		t.Fatalf("%d builds ran, %d queued; want the 5 of before", n, b.Status().Queued)
	}
	if es, err := os.ReadDir(filepath.Join(root, "jobs")); err != nil || len(es) != 0 {
		t.Fatalf("scratch left behind: %v, %v", es, err)
	}
}

func recentOf(st *api.Builds, cpv string) api.BuildJob {
	for _, j := range st.Recent {
		if j.CPV == cpv {
			return j
		}
	}
	return api.BuildJob{}
}

// A build past build.timeout is killed with everything it started.
func TestBuildTimeoutKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := filepath.Join(dir, "build.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 600 &\necho $! > "+pidFile+"\nwait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := jobtest.NewPeer(t, memnet.New())
	b, err := builder.New(builder.Options{
		Demand: &demand{wants: []builder.Want{{Variant: "v", CPV: "app-misc/slow-1", Wanters: 1}}},
		Supply: p.Book, Announcer: own.New(own.Options{Store: p.Store, Votes: p.Book, Net: p.Node, Key: p.Key, Self: p.ID, PkgDir: dir}),
		Command: []string{script}, Root: filepath.Join(dir, "build"), Timeout: 300 * time.Millisecond,
		Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the build failed", func() bool { return len(b.Status().Recent) == 1 })
	if e := b.Status().Recent[0].Error; !strings.Contains(e, "build.timeout") {
		t.Fatalf("error %q, want a timeout", e)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(mustRead(t, pidFile))))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the build's child killed", func() bool {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err != nil || strings.Contains(string(stat), ") Z ")
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	return strings.Split(strings.TrimSpace(string(mustRead(t, path))), "\n")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
