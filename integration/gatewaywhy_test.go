package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// TestGatewaySaysWhyNothingListed: status says why the gateway lists
// nothing or leaves builds out: the builds of this platform are known but
// none is allowed yet (one builder, threshold 3), or one is allowed but
// does not fit this machine (hello's ELF files need a glibc its vdb does
// not hold; layout, which has none, is listed). TestWalkthrough shows the
// third case, no build of this platform at all.
func TestGatewaySaysWhyNothingListed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dir := t.TempDir()
	builder := startNetwork(t, dir, []peerSpec{{name: "builder", sets: []string{fixtures.ReproGPKG1}}})[0]
	start := func(name string, threshold int, vdb string) *testnet.Node {
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: name, Dir: dir, Bootstrap: []string{builder.Addr()},
			Threshold: threshold, VDB: vdb, Logger: testLogger(),
			Configure: func(c *config.Config) { c.Mode = config.ModeConsume }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopNode(t, n) })
		return n
	}
	waiting := start("waiting", 3, "")
	unfit := start("unfit", 1, filepath.Join(dir, "empty-vdb"))
	for _, tc := range []struct {
		n      *testnet.Node
		listed int
		want   string
	}{
		{waiting, 0, "nothing listed: 2 builds of this platform known, none allowed yet"},
		{unfit, 1, "1 allowed build left out: gentoo-p2pd trust explain CPV says why"},
	} {
		waitCatalog(t, tc.n, 2)
		// The listing follows the votes once their verdicts are
		// evaluated, which may be a moment after the catalog holds them.
		var st api.Status
		if err := testnet.WaitFor(ctx, waitTimeout, tc.n.Name+"'s gateway note", func() bool {
			st = tc.n.Daemon.API().Status(ctx)
			return st.GatewayListed == tc.listed && strings.HasPrefix(st.GatewayNote, tc.want)
		}); err != nil {
			t.Errorf("%s: gateway lists %d, note %q; want %d, %q", tc.n.Name, st.GatewayListed, st.GatewayNote, tc.listed, tc.want)
		}
	}
	// trust explain names the build left out and why: it needs a glibc.
	ex, err := unfit.Daemon.API().Explain(ctx, "app-misc/hello-1.0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.NotListed) != 1 {
		t.Fatalf("trust explain hello on unfit: not listed %v, want one build", ex.NotListed)
	}
	for _, why := range ex.NotListed {
		if !strings.Contains(why, "does not fit this machine") || !strings.Contains(why, "libc.so.6") {
			t.Errorf("trust explain hello on unfit: %q", why)
		}
	}
}
