package integration

import (
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

// TestDownloadRateApplied: transfer.download_rate set in a daemon's
// config caps its fetches. One uncapped provider on loopback delivers a
// 24 MiB build in well under a second; at 8 MiB/s the fetch cannot take
// less than the bytes beyond the limiter's burst divided by the rate.
// Only that lower bound is checked: a loaded machine makes a fetch slower,
// never faster. (The issue it guards: the key was parsed and never
// applied, and a 4 MiB/s cap fetched at 38 MB/s.)
func TestDownloadRateApplied(t *testing.T) {
	const rateCap = 8 << 20
	ctx := t.Context()
	dir := t.TempDir()
	pkg := xferBigGPKG(t, dir, xferBigSize, 7, "")
	holder := xferStart(t, ctx, dir, xferNodeSpec{Name: "holder", Threshold: 1, Pkgs: []xferPkg{pkg}})
	capped := xferStart(t, ctx, dir, xferNodeSpec{Name: "capped", Threshold: 1,
		Configure: func(c *config.Config) { c.Transfer.DownloadRate = rateCap }}, holder.Addr())
	xferWait(t, ctx, "the capped daemon finds the holder", func() bool {
		return xferProviders(ctx, capped, pkg.BuildKey)[holder.Daemon.ID().String()]
	})
	start := time.Now()
	res, err := capped.Daemon.API().Fetch(ctx, api.FetchRequest{Query: pkg.BuildKey})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	xferCheckFile(t, res.Path, pkg)
	// The limiter lets a burst of rate/8 through at once (transfer's
	// burstFor); everything else waits for tokens.
	least := time.Duration(float64(pkg.Size-rateCap/8) / rateCap * float64(time.Second))
	t.Logf("fetched %d bytes in %s (%.1f MiB/s) under a %d MiB/s cap", pkg.Size, elapsed, float64(pkg.Size)/elapsed.Seconds()/(1<<20), rateCap>>20)
	if elapsed < least {
		t.Fatalf("fetched %d bytes in %s with transfer.download_rate = %d B/s: at least %s expected", pkg.Size, elapsed, rateCap, least)
	}
}
