package integration

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// idleWait is how long the measured daemon idles among its peers before
// its resident memory is read.
const idleWait = 60 * time.Second

// BenchmarkIdleRSS measures the resident memory of one gentoo-p2pd process
// (default configuration apart from loopback-only networking and the
// fixtures' platform, so it holds the peers' catalog) sharing two
// builds among ten in-process peer daemons, after it has joined the DHT,
// synced catalogs and idled for a minute. The goal is at most 40 MB.
//
//	go test -run '^$' -bench BenchmarkIdleRSS ./integration/
func BenchmarkIdleRSS(b *testing.B) {
	sets := []string{fixtures.ReproGPKG1, fixtures.ReproGPKG2, fixtures.ReproXPAK1, fixtures.ReproXPAK2, fixtures.XPAKBzip2}
	var specs []peerSpec
	for i := range 10 {
		specs = append(specs, peerSpec{name: fmt.Sprintf("peer%d", i), sets: []string{sets[i%len(sets)]}})
	}
	dir := b.TempDir()
	peers := startNetwork(b, filepath.Join(dir, "peers"), specs)

	root := filepath.Join(dir, "proc")
	// The fixtures' platform, so the daemon joins the peers' catalog.
	fp := testnet.FixturePortage
	env := append(procEnv(root),
		"GENTOO_P2PD_PORTAGE_CHOST="+fp.CHOST, "GENTOO_P2PD_PORTAGE_CFLAGS="+fp.CFLAGS,
		"GENTOO_P2PD_PORTAGE_CXXFLAGS="+fp.CXXFLAGS, "GENTOO_P2PD_PORTAGE_LDFLAGS="+fp.LDFLAGS,
		"GENTOO_P2PD_PORTAGE_ARCH="+fp.ARCH)
	pkgdir := filepath.Join(root, "binpkgs")
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, pkgdir); err != nil {
		b.Fatal(err)
	}
	args := append(loopbackFlags, "--pkgdir", pkgdir, "--bootstrap", peers[0].Addr())
	p := startProcess(b, env, args...)
	st := waitStatus(b, p, env, "the daemon shares its builds and sees the peers", func(s api.Status) bool {
		return s.PackagesShared == 2 && s.Peers >= len(peers)/2 && s.CatalogAttestations > 2
	})

	b.ResetTimer()
	var rss int64
	for i := 0; i < b.N; i++ {
		select {
		case <-time.After(idleWait):
		case <-p.done:
			b.Fatalf("daemon exited while idling: %v\n%s", p.err, p.stderr)
		}
		var err error
		if rss, err = vmRSS(p.cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st = waitStatus(b, p, env, "status after idling", func(api.Status) bool { return true })
	b.ReportMetric(float64(rss)/(1<<20), "rss_MB")
	b.ReportMetric(float64(st.Peers), "peers")
	b.ReportMetric(float64(st.CatalogAttestations), "catalog_attestations")
}
