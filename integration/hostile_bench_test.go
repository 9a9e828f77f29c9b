package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
)

// BenchmarkHostileFlood runs the attack of the hostile-peers review against
// one real gentoo-p2pd process with its default limits: one identity
// gossips 3,000 valid junk attestations of about 54 KiB, then eight
// identities make 16 catalog requests (8 at a time). It reports the
// victim's state.db growth and peak RSS, how long `GET /Packages` takes
// afterwards, and whether an honest peer's catalog request is answered.
// Goals: growth ≤ 32 MB, peak RSS ≤ 256 MB, Packages ≤ 2 s.
//
//	go test -run '^$' -bench BenchmarkHostileFlood -benchtime 1x ./integration/
func BenchmarkHostileFlood(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := b.TempDir()
	honest := startNetwork(b, filepath.Join(dir, "peers"), []peerSpec{{name: "honest", sets: []string{fixtures.ReproGPKG2}}})[0]

	root := filepath.Join(dir, "victim")
	fp := testnet.FixturePortage
	env := append(procEnv(root),
		"GENTOO_P2PD_PORTAGE_CHOST="+fp.CHOST, "GENTOO_P2PD_PORTAGE_CFLAGS="+fp.CFLAGS,
		"GENTOO_P2PD_PORTAGE_CXXFLAGS="+fp.CXXFLAGS, "GENTOO_P2PD_PORTAGE_LDFLAGS="+fp.LDFLAGS,
		"GENTOO_P2PD_PORTAGE_ARCH="+fp.ARCH, "GENTOO_P2PD_GATEWAY_PREFETCH=all", "GENTOO_P2PD_TRUST_THRESHOLD=2")
	pkgdir := filepath.Join(root, "binpkgs")
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, pkgdir); err != nil {
		b.Fatal(err)
	}
	args := append(loopbackFlags, "--pkgdir", pkgdir, "--bootstrap", honest.Addr(), "--metrics-listen", "127.0.0.1:0")
	p := startProcess(b, env, args...)
	st := waitStatus(b, p, env, "the victim to hold its own and the honest peer's builds", func(s api.Status) bool {
		return s.PackagesShared == 2 && s.CatalogAttestations >= 4 && s.MetricsURL != ""
	})
	victimAddr := st.Addrs[0] + "/p2p/" + st.PeerID
	dbPath := filepath.Join(root, "state", "gentoo-p2pd", store.DBFile)
	db0 := fileSize(b, dbPath)
	if got := packages(b, st.GatewayURL); got < 0 {
		b.Fatal("no Packages before the attack")
	}

	b.ResetTimer()
	for range b.N {
		h, err := hostile.New(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		if err := h.Connect(ctx, victimAddr); err != nil {
			b.Fatal(err)
		}
		if err := h.Node.JoinPlatform(st.Platform); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "the attacker to see the victim on the topic", func() bool { return len(h.Node.TopicPeers(st.Platform)) > 0 })
		// In batches the victim's validation queue takes whole; each batch
		// waits until the victim has judged it.
		const total, batch = 3000, 25
		seen0 := metricSum(b, st.MetricsURL, "gentoo_p2pd_attestations_received_total")
		seen := seen0
		for i := 0; i < total; i += batch {
			for j := i; j < i+batch; j++ {
				s, err := hostile.Junk(h.Key, fixturePlatform, j, 54<<10, time.Now().Add(-time.Hour))
				if err != nil {
					b.Fatal(err)
				}
				if err := h.PublishAttestation(ctx, st.Platform, s.Marshal()); err != nil {
					b.Fatal(err)
				}
			}
			// Wait until the victim took the batch, or a few seconds: what
			// it ignored (over limits.peer_gossip_rate) never arrives.
			want := seen + batch
			_ = testnet.WaitFor(ctx, 3*time.Second, "the victim to judge a batch", func() bool {
				seen = metricSum(b, st.MetricsURL, "gentoo_p2pd_attestations_received_total")
				return seen >= want
			})
		}
		got := metricSum(b, st.MetricsURL, "gentoo_p2pd_attestations_received_total") - seen0
		victimID := addrInfo(b, victimAddr).ID
		// 16 catalog requests, 8 at a time, from 8 identities.
		var wg sync.WaitGroup
		var mu sync.Mutex
		answered := 0
		for range 8 {
			a, err := hostile.New(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			if err := a.Connect(ctx, victimAddr); err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2 {
					if _, err := a.Node.SyncCatalog(ctx, victimID, st.Platform, p2p.CatalogCursor{}); err == nil {
						mu.Lock()
						answered++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		honestOK := 0
		if bs, err := honest.Daemon.Node().SyncCatalog(ctx, victimID, st.Platform, p2p.CatalogCursor{}); err == nil && len(bs) > 0 {
			honestOK = 1
		}
		start := time.Now()
		n := packages(b, st.GatewayURL)
		took := time.Since(start)
		hwm, err := procStatus(p.cmd.Process.Pid, "VmHWM:")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(got, "junk_received")
		b.ReportMetric(float64(fileSize(b, dbPath)-db0)/(1<<20), "db_growth_MB")
		b.ReportMetric(float64(hwm)/(1<<20), "peak_rss_MB")
		b.ReportMetric(float64(answered), "attacker_catalog_answers")
		b.ReportMetric(float64(honestOK), "honest_catalog_ok")
		b.ReportMetric(float64(took.Milliseconds()), "packages_ms")
		b.ReportMetric(float64(n), "packages_entries")
	}
}

// packages fetches the gateway's Packages and returns its entry count.
func packages(tb testing.TB, gateway string) int {
	tb.Helper()
	resp, err := http.Get(gateway + "/Packages")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET Packages: %s %v", resp.Status, err)
	}
	return strings.Count(string(body), "\nCPV: ")
}

// metricSum adds up every series of a counter (all its label values) on a
// Prometheus text endpoint.
func metricSum(tb testing.TB, url, name string) float64 {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sum := 0.0
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest == "" || rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		if err != nil {
			tb.Fatal(err)
		}
		sum += f
	}
	return sum
}

// procStatus reads one "kB" line of /proc/PID/status, in bytes.
func procStatus(pid int, key string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// BenchmarkHostileSlots measures how long an honest daemon's fetch waits
// for its first verified byte while eight attacker identities hold every
// upload slot of the only provider with requests they never read (the
// provider's defaults: 8 slots, 5 s stall timeout). Goal: ≤ 5 s.
//
//	go test -run '^$' -bench BenchmarkHostileSlots -benchtime 3x ./integration/
func BenchmarkHostileSlots(b *testing.B) {
	var firsts, totals []float64
	for range b.N {
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		fetcher, pkg, _ := slotSiege(b, ctx)
		b.StartTimer()
		start := time.Now()
		var first time.Duration
		_, err := fetcher.Daemon.API().FetchWithProgress(ctx, api.FetchRequest{Query: pkg.BuildKey}, func(p transfer.Progress) {
			if first == 0 && p.Done > 0 {
				first = time.Since(start)
			}
		})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		firsts = append(firsts, first.Seconds())
		totals = append(totals, time.Since(start).Seconds())
	}
	slices.Sort(firsts)
	slices.Sort(totals)
	b.ReportMetric(firsts[len(firsts)/2], "first_byte_s_median")
	b.ReportMetric(firsts[len(firsts)-1], "first_byte_s_max")
	b.ReportMetric(totals[len(totals)/2], "fetch_s_median")
}
