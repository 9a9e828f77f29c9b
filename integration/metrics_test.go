package integration

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// TestMetricsEndpoint: with metrics.listen set, /metrics carries the
// series operators watch — lookups, announces, fetch bytes and durations,
// piece failures, verdicts, peers — with the values a fetch produced.
func TestMetricsEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "builder", sets: []string{fixtures.ReproGPKG1}, configure: func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }},
		{name: "fetcher", configure: func(c *config.Config) { c.Trust.Threshold = 1; c.Metrics.Listen = "127.0.0.1:0" }},
	})
	builder, fetcher := nodes[0], nodes[1]
	waitCatalog(t, fetcher, 2)
	res, err := fetcher.Daemon.API().Fetch(ctx, api.FetchRequest{Query: "app-misc/hello-1.0"})
	if err != nil {
		t.Fatal(err)
	}

	scrape := func(n *testnet.Node) string {
		t.Helper()
		url := n.Daemon.MetricsURL()
		if url == "" {
			t.Fatalf("%s: no metrics URL although metrics.listen is set", n.Name)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	value := func(body, series string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(series)+`(?:\{[^}]*\})? ([0-9.e+-]+)$`).FindAllStringSubmatch(body, -1)
		if m == nil {
			t.Errorf("/metrics lacks %s", series)
			return 0
		}
		var sum float64
		for _, x := range m {
			v, _ := strconv.ParseFloat(x[1], 64)
			sum += v
		}
		return sum
	}
	// One index request, so the gateway's own series exist too.
	if r, err := http.Get(fetcher.Daemon.GatewayURL() + "/Packages"); err != nil {
		t.Fatal(err)
	} else {
		r.Body.Close()
	}
	fb := scrape(fetcher)
	if v := value(fb, "gentoo_p2pd_gateway_requests_total"); v < 1 {
		t.Errorf("gateway_requests_total = %v after an index request", v)
	}
	if v := value(fb, "gentoo_p2pd_lookups_total"); v < 1 {
		t.Errorf("lookups_total = %v after a fetch", v)
	}
	if v := value(fb, "gentoo_p2pd_transfer_fetched_bytes_total"); v < float64(res.Size) {
		t.Errorf("fetched_bytes_total = %v, fetched a %d-byte file", v, res.Size)
	}
	if v := value(fb, "gentoo_p2pd_transfer_fetch_duration_seconds_count"); v < 1 {
		t.Errorf("fetch_duration_seconds_count = %v", v)
	}
	value(fb, "gentoo_p2pd_transfer_peer_faults_total")
	if v := value(fb, "gentoo_p2pd_verdicts_total"); v < 1 {
		t.Errorf("verdicts_total = %v", v)
	}
	if v := value(fb, "gentoo_p2pd_peers"); v < 1 {
		t.Errorf("peers = %v with a connected builder", v)
	}
	bb := scrape(builder)
	if v := value(bb, "gentoo_p2pd_announces_total"); v < 2 {
		t.Errorf("builder announces_total = %v for 2 builds", v)
	}
	if v := value(bb, "gentoo_p2pd_transfer_served_bytes_total"); v < float64(res.Size) {
		t.Errorf("builder served_bytes_total = %v, served a %d-byte file", v, res.Size)
	}
}
