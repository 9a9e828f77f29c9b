package portagehook

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// servedSizes computes a fixture's served sizes the way an attester does:
// the metadata tar of its served metadata (placeholder BUILD_ID and time
// of the served widths) and the image tar ReadFile measured.
func servedSizes(t *testing.T, path string) xpak.ServedSizes {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := RepackMetadata(pkg.Metadata, RepackOptions{Covered: testCovered, BuildID: 1_000_000_000, MTime: time.Unix(1_000_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := xpak.MetadataTarSize(m)
	if err != nil {
		t.Fatal(err)
	}
	return xpak.ServedSizes{MetadataTar: n, ImageTar: pkg.ImageTarSize}
}

// TestGatewayListsBeforeFetching: with served sizes, every build is in the
// index with its exact SIZE before anything is materialized; the file
// portage then asks for streams, has exactly that size, is signed and
// carries the build's image; a second request is served from the cache
// without materializing again.
func TestGatewayListsBeforeFetching(t *testing.T) {
	f := &gatewayFixture{cat: &fakeCatalog{}, reg: prometheus.NewRegistry(), cache: t.TempDir()}
	f.now.Store(repackTime.Add(time.Hour).Unix())
	srcs := map[string]string{}
	for i, p := range []string{
		"testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar",
		"testdata/xpak/layout-1.0-r1-1.xpak",
		"testdata/gpkg-xz/layout-1.0-r1.gpkg.tar",
	} {
		l := f.cat.add(t, p, 1_000_000_001+int64(i))
		f.cat.listings[i].Served = servedSizes(t, p)
		srcs[l.Content] = p
	}
	f.start(t)
	_, es, _ := f.index(t)
	if len(es) != 3 {
		t.Fatalf("index lists %d builds, want all 3 before any fetch", len(es))
	}
	if n := f.cat.calls.Load(); n != 0 {
		t.Fatalf("listing materialized %d builds; nothing may be fetched before portage asks", n)
	}
	for _, e := range es {
		if _, ok := e.Get("MD5"); ok {
			t.Errorf("%s: MD5 listed for a file not made yet", e.CPV())
		}
		resp, body := f.get(t, "/gentoo-p2pd/"+e.Value("PATH"), nil)
		if resp.StatusCode != http.StatusOK || e.Value("SIZE") != strconv.Itoa(len(body)) || resp.Header.Get("Content-Length") != e.Value("SIZE") {
			t.Fatalf("%s: %s, %d bytes (Content-Length %s), index SIZE %s", e.Value("PATH"), resp.Status, len(body), resp.Header.Get("Content-Length"), e.Value("SIZE"))
		}
		p := filepath.Join(t.TempDir(), "x.gpkg.tar")
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		pkg, err := xpak.ReadFile(p, xpak.Limits{})
		if err != nil {
			t.Fatalf("%s: served file: %v", e.CPV(), err)
		}
		if !pkg.Signed || pkg.Metadata.Get("BUILD_ID") != e.Value("BUILD_ID") || pkg.Metadata.Get("BUILD_TIME") != e.Value("BUILD_TIME") {
			t.Errorf("%s: served file (signed %v, BUILD_ID %s, BUILD_TIME %s) disagrees with its entry", e.CPV(), pkg.Signed, pkg.Metadata.Get("BUILD_ID"), pkg.Metadata.Get("BUILD_TIME"))
		}
		again, body2 := f.get(t, "/gentoo-p2pd/"+e.Value("PATH"), nil)
		if again.StatusCode != http.StatusOK || !bytes.Equal(body, body2) {
			t.Errorf("%s: second request %s, same bytes %v", e.CPV(), again.Status, bytes.Equal(body, body2))
		}
	}
	if n := f.cat.calls.Load(); n != 3 {
		t.Errorf("materialized %d times for 3 builds requested twice each", n)
	}
	// The producer renames its part file once it has checked it, which
	// may be just after the last byte reached the client.
	deadline := time.Now().Add(10 * time.Second)
	for len(f.gw.partFiles()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
	if left := f.gw.partFiles(); len(left) != 0 {
		t.Errorf("part files left behind: %v", left)
	}
}

// TestGatewayStreamRefusesWrongSize: served sizes that do not describe
// the build (a lie the counted voters agreed on, or a bug) never reach
// portage as a file: the response is cut short of its Content-Length.
func TestGatewayStreamRefusesWrongSize(t *testing.T) {
	f := &gatewayFixture{cat: &fakeCatalog{}, reg: prometheus.NewRegistry(), cache: t.TempDir()}
	p := "testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar"
	f.cat.add(t, p, 1_000_000_001)
	s := servedSizes(t, p)
	s.ImageTar += 10240
	f.cat.listings[0].Served = s
	f.start(t)
	_, es, _ := f.index(t)
	if len(es) != 1 {
		t.Fatalf("index lists %d builds", len(es))
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.srv.URL+"/gentoo-p2pd/"+es[0].Value("PATH"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return // refused outright: also no file
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	if err == nil && strconv.Itoa(buf.Len()) == es[0].Value("SIZE") {
		t.Fatalf("a wrong served size was served as a complete file of %d bytes", buf.Len())
	}
}

// TestServedFormStreamedEqualsSpooled: a source stored in the served order
// (portage's GPKG writer) is re-packed as it is read, and the result is
// byte for byte what the spooling path writes.
func TestServedFormStreamedEqualsSpooled(t *testing.T) {
	e := testKeyFixed(t)
	var ordered int
	for _, src := range repackSources {
		pkg, err := xpak.ReadFile(src, xpak.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if pkg.ServedOrder {
			ordered++
		}
		opts := repackOpts(t, e, 1_000_000_001)
		opts.Expect = servedSizes(t, src)
		var streamed, spooled bytes.Buffer
		if _, err := RepackTo(&streamed, src, opts); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		spoolAlways = true
		_, err = RepackTo(&spooled, src, opts)
		spoolAlways = false
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(streamed.Bytes(), spooled.Bytes()) {
			t.Errorf("%s (served order %v): streamed and spooled re-packs differ", src, pkg.ServedOrder)
		}
	}
	if ordered == 0 {
		t.Fatal("no source is in the served order: the streaming path was not exercised")
	}
}

// TestGatewayCacheBudget: re-packs beyond CacheBudget go, oldest first;
// the one just made stays, and a pruned build is made again on request.
func TestGatewayCacheBudget(t *testing.T) {
	f := &gatewayFixture{cat: &fakeCatalog{}, reg: prometheus.NewRegistry(), cache: t.TempDir()}
	f.opts.CacheBudget = 1 // smaller than any re-pack: only the newest stays
	for i, p := range []string{
		"testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar",
		"testdata/gpkg-xz/layout-1.0-r1.gpkg.tar",
	} {
		f.cat.add(t, p, 1_000_000_001+int64(i))
		f.cat.listings[i].Served = servedSizes(t, p)
	}
	f.start(t)
	_, es, _ := f.index(t)
	if len(es) != 2 {
		t.Fatalf("index lists %d builds", len(es))
	}
	repacks := func() int {
		m, _ := filepath.Glob(filepath.Join(f.cache, "*.gpkg.tar"))
		return len(m)
	}
	for _, e := range es {
		if resp, body := f.get(t, "/gentoo-p2pd/"+e.Value("PATH"), nil); resp.StatusCode != http.StatusOK || strconv.Itoa(len(body)) != e.Value("SIZE") {
			t.Fatalf("%s: %s", e.Value("PATH"), resp.Status)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(f.gw.partFiles()) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
		}
	}
	// The producer prunes just after the client has its last byte.
	deadline := time.Now().Add(10 * time.Second)
	for repacks() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
	if n := repacks(); n != 1 {
		t.Errorf("%d re-packs kept under a budget smaller than one", n)
	}
	before := f.cat.calls.Load()
	if resp, _ := f.get(t, "/gentoo-p2pd/"+es[0].Value("PATH"), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("pruned build: %s", resp.Status)
	}
	if f.cat.calls.Load() == before {
		t.Error("the first build was not pruned (served without materializing again)")
	}
}
