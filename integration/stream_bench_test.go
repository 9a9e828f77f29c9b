package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// BenchmarkGatewayStream compares, for one 256 MiB build a peer holds,
// what portage feels through the gateway with default settings — the
// index lists it before anything is fetched; the GET fetches it from the
// peer, verifies it and streams the signed served form — with
// `gentoo-p2pd fetch` of the same build by another fresh daemon. Each
// iteration uses fresh consumers (nothing cached). Reported: fetch-s (the
// fetch), stream-s (portage's whole GET, written to disk), ttfb-ms (first
// body byte after the GET), ratio (fetch-s / stream-s: the streamed
// throughput relative to fetch).
//
//	go test -run '^$' -bench GatewayStream -benchtime 1x -count 3 ./integration/
func BenchmarkGatewayStream(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := b.TempDir()
	pkg := xferBigGPKG(b, dir, 256<<20, 7, "")
	a := xferStart(b, ctx, dir, xferNodeSpec{Name: "a", Pkgs: []xferPkg{pkg}})
	for i := 0; i < b.N; i++ {
		f := xferStart(b, ctx, dir, xferNodeSpec{Name: fmt.Sprintf("f%d", i), Threshold: 1}, a.Addr())
		s := xferStart(b, ctx, dir, xferNodeSpec{Name: fmt.Sprintf("s%d", i), Threshold: 1}, a.Addr())
		for _, n := range []string{"f", "s"} {
			node := f
			if n == "s" {
				node = s
			}
			xferWait(b, ctx, "catalog", func() bool { return node.Daemon.API().Status(ctx).CatalogAttestations >= 1 })
		}
		start := time.Now()
		if _, err := f.Daemon.API().Fetch(ctx, api.FetchRequest{Query: pkg.CPV}); err != nil {
			b.Fatal(err)
		}
		fetch := time.Since(start)

		entries := gatewayIndex(b, ctx, s)
		e, ok := entries[pkg.CPV]
		if !ok {
			b.Fatalf("gateway lists %v", entryNames(entries))
		}
		if st := s.Daemon.API().Status(ctx); st.BytesFetched != 0 {
			b.Fatalf("listing fetched %d bytes", st.BytesFetched)
		}
		out, err := os.Create(filepath.Join(dir, fmt.Sprintf("served-%d.gpkg.tar", i)))
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Daemon.GatewayURL()+"/"+e.Value("PATH"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		first := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			b.Fatal(err)
		}
		ttfb := time.Since(start)
		n, err := io.Copy(out, resp.Body)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		if err := out.Close(); err != nil {
			b.Fatal(err)
		}
		stream := time.Since(start)
		if strconv.FormatInt(n+1, 10) != e.Value("SIZE") {
			b.Fatalf("served %d bytes, SIZE %s", n+1, e.Value("SIZE"))
		}
		b.ReportMetric(fetch.Seconds(), "fetch-s")
		b.ReportMetric(stream.Seconds(), "stream-s")
		b.ReportMetric(float64(ttfb.Milliseconds()), "ttfb-ms")
		b.ReportMetric(fetch.Seconds()/stream.Seconds(), "ratio")
		xferStop(b, f)
		xferStop(b, s)
	}
}
