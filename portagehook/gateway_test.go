package portagehook

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// fakeCatalog is the hand-written Catalog: builds are fixture files, and
// Materialize counts its calls.
type fakeCatalog struct {
	mu       sync.Mutex
	listings []Listing
	files    map[string]string // Content → path
	calls    atomic.Int32
	fail     error
}

func (c *fakeCatalog) Entries(context.Context) ([]Listing, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, c.fail
	}
	return append([]Listing(nil), c.listings...), nil
}

func (c *fakeCatalog) Materialize(_ context.Context, l Listing) (string, *xpak.Package, error) {
	c.calls.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.files[l.Content]
	if !ok {
		return "", nil, errors.New("no provider")
	}
	// As a verifying materializer does: the package as read.
	pkg, err := xpak.ReadFile(p, xpak.Limits{})
	return p, pkg, err
}

func (c *fakeCatalog) add(t *testing.T, path string, id int64) Listing {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	l := Listing{
		Content:     hex.EncodeToString(pkg.FileSHA256[:]),
		ImageDigest: pkg.ImageDigest,
		Metadata:    pkg.Metadata,
		BuildID:     id,
		Time:        repackTime.Add(time.Duration(id) * time.Minute),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]string{}
	}
	c.files[l.Content] = path
	c.listings = append(c.listings, l)
	return l
}

type gatewayFixture struct {
	opts  GatewayOptions // PrepareOnIndex, IndexWait
	cat   *fakeCatalog
	gw    *Gateway
	srv   *httptest.Server
	reg   *prometheus.Registry
	cache string
	now   atomic.Int64
}

func newGatewayFixture(t *testing.T, opts GatewayOptions) *gatewayFixture {
	t.Helper()
	f := &gatewayFixture{opts: opts, cat: &fakeCatalog{}, reg: prometheus.NewRegistry(), cache: t.TempDir()}
	f.now.Store(repackTime.Add(time.Hour).Unix())
	f.cat.add(t, "testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar", 1)
	f.cat.add(t, "testdata/xpak/layout-1.0-r1-1.xpak", 4)
	f.cat.add(t, "testdata/gpkg-signed/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar", 2)
	f.start(t)
	return f
}

func (f *gatewayFixture) start(t *testing.T) {
	e := testKeyFixed(t)
	opts := f.opts
	opts.CacheDir = f.cache
	opts.Signer = NewSigner(e, time.Time{})
	opts.Covered = testCovered
	opts.Header = Fields{{"ARCH", "amd64"}, {"CHOST", "x86_64-pc-linux-gnu"}}
	opts.Registerer = f.reg
	opts.Now = func() time.Time { return time.Unix(f.now.Load(), 0) }
	f.gw = NewGateway(f.cat, opts)
	f.srv = httptest.NewServer(f.gw)
	gw, srv := f.gw, f.srv
	t.Cleanup(func() {
		srv.Close()
		gw.Close()
	})
}

var fixedKey struct {
	once sync.Once
	dir  string
}

// testKeyFixed returns one key per test binary run, so gateways restarted
// within a test sign with the same key.
func testKeyFixed(t *testing.T) *openpgp.Entity {
	fixedKey.once.Do(func() {
		fixedKey.dir, _ = os.MkdirTemp("", "gw-key-")
	})
	e, err := LoadOrCreateSigningKey(filepath.Join(fixedKey.dir, "k.asc"), "gateway test")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (f *gatewayFixture) get(t *testing.T, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func (f *gatewayFixture) index(t *testing.T) (Header, []Entry, *http.Response) {
	t.Helper()
	resp, gz := f.get(t, "/gentoo-p2pd/Packages.gz", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Packages.gz: %s", resp.Status)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !f.opts.PrepareOnIndex || f.opts.IndexWait > 0 {
		// Stable between the two requests unless re-packs run behind.
		_, direct := f.get(t, "/gentoo-p2pd/Packages", nil)
		if !bytes.Equal(plain, direct) {
			t.Fatalf("Packages.gz does not decompress to Packages")
		}
	}
	h, es, err := ParseIndex(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	return h, es, resp
}

var fixturePaths = map[string]string{
	"app-misc/hello-1.0":     "app-misc/hello/hello-1.0-1.gpkg.tar",
	"app-misc/layout-1.0-r1": "app-misc/layout/layout-1.0-r1-4.gpkg.tar",
	"dev-libs/libfoo-2.1":    "dev-libs/libfoo/libfoo-2.1-2.gpkg.tar",
}

// checkEntries checks index entries against the files the gateway serves
// for them: SIZE, MD5, SHA1 and MTIME must describe those files exactly,
// and metadata must agree with the package's own.
func (f *gatewayFixture) checkEntries(t *testing.T, es []Entry) map[string][]byte {
	t.Helper()
	served := map[string][]byte{}
	for _, e := range es {
		if fixturePaths[e.CPV()] != e.Value("PATH") || e.BuildID() == 0 {
			t.Errorf("entry %v: want multi-instance PATH %q and BUILD_ID", e, fixturePaths[e.CPV()])
		}
		for _, k := range []string{"CHOST", "FEATURES"} {
			if _, ok := e.Get(k); ok {
				t.Errorf("%s: %s must not be in the entry (header-inherited or uncovered)", e.CPV(), k)
			}
		}
		resp, body := f.get(t, "/gentoo-p2pd/"+e.Value("PATH"), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", e.Value("PATH"), resp.Status)
		}
		m5, s1 := md5.Sum(body), sha1.Sum(body)
		if e.Value("SIZE") != strconv.Itoa(len(body)) || e.Value("MD5") != hex.EncodeToString(m5[:]) || e.Value("SHA1") != hex.EncodeToString(s1[:]) {
			t.Errorf("%s: SIZE/MD5/SHA1 %s/%s/%s do not describe the served file", e.CPV(), e.Value("SIZE"), e.Value("MD5"), e.Value("SHA1"))
		}
		if lm, _ := http.ParseTime(resp.Header.Get("Last-Modified")); strconv.FormatInt(lm.Unix(), 10) != e.Value("MTIME") {
			t.Errorf("%s Last-Modified %v, index MTIME %s", e.CPV(), lm, e.Value("MTIME"))
		}
		p := filepath.Join(t.TempDir(), "pkg.gpkg.tar")
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		pkg, err := xpak.ReadFile(p, xpak.Limits{})
		if err != nil {
			t.Fatalf("served %s: %v", e.CPV(), err)
		}
		if !pkg.Signed || pkg.Metadata.CPV() != e.CPV() || pkg.Metadata.Get("BUILD_ID") != e.Value("BUILD_ID") ||
			pkg.Metadata.Get("BUILD_TIME") != e.Value("BUILD_TIME") || pkg.Metadata.Get("USE") != e.Value("USE") {
			t.Errorf("served package disagrees with its index entry: %v", e)
		}
		served[e.CPV()] = body
	}
	return served
}

func TestGatewayOnDemand(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{})
	h, es, resp := f.index(t)
	if h.Value("VERSION") != "0" || h.Value("PACKAGES") != "0" || len(es) != 0 || h.Value("ARCH") != "amd64" {
		t.Fatalf("index before any re-pack: header %v, %d entries (only re-packed builds may be listed)", h, len(es))
	}
	ts, _ := strconv.ParseInt(h.Value("TIMESTAMP"), 10, 64)
	if lm, _ := http.ParseTime(resp.Header.Get("Last-Modified")); lm.Unix() != ts {
		t.Errorf("Last-Modified %q, TIMESTAMP %d: portage takes the timestamp from Last-Modified", resp.Header.Get("Last-Modified"), ts)
	}
	r304, _ := f.get(t, "/gentoo-p2pd/Packages.gz", map[string]string{"If-Modified-Since": time.Unix(ts, 0).UTC().Format(http.TimeFormat)})
	if r304.StatusCode != http.StatusNotModified {
		t.Errorf("If-Modified-Since TIMESTAMP: %s, want 304", r304.Status)
	}

	// portage asks for a listed build: materialized, re-packed, served.
	resp, body := f.get(t, "/gentoo-p2pd/dev-libs/libfoo/libfoo-2.1-2.gpkg.tar", nil)
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("on-demand package: %s", resp.Status)
	}
	h2, es2, _ := f.index(t)
	ts2, _ := strconv.ParseInt(h2.Value("TIMESTAMP"), 10, 64)
	if ts2 <= ts {
		t.Errorf("TIMESTAMP %d after the index changed, was %d: portage would keep its stale copy", ts2, ts)
	}
	if len(es2) != 1 || es2[0].CPV() != "dev-libs/libfoo-2.1" || es2[0].Value("SLOT") != "0/2.1" || es2[0].Value("PROVIDES") != "x86_64: libfoo.so.2" {
		t.Fatalf("index after one re-pack: %v", es2)
	}
	served := f.checkEntries(t, es2)
	if !bytes.Equal(served["dev-libs/libfoo-2.1"], body) {
		t.Error("second download differs from the first")
	}
	rr, part := f.get(t, "/gentoo-p2pd/"+es2[0].Value("PATH"), map[string]string{"Range": "bytes=0-511"})
	if rr.StatusCode != http.StatusPartialContent || !bytes.Equal(part, body[:512]) {
		t.Errorf("Range request (portage's remote metadata reader): %s", rr.Status)
	}
	if n := f.cat.calls.Load(); n != 1 {
		t.Errorf("Materialize called %d times, want 1", n)
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "gentoo_p2pd_gateway_requests_total") || !strings.Contains(got, "gentoo_p2pd_gateway_repacks_total") {
		t.Errorf("metrics registered: %s", got)
	}
}

func TestGatewayPrepareOnIndex(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{PrepareOnIndex: true, IndexWait: time.Minute})
	h, es, _ := f.index(t)
	if len(es) != 3 || h.Value("PACKAGES") != "3" {
		t.Fatalf("index after waiting for re-packs: %d entries", len(es))
	}
	f.checkEntries(t, es)
	if n := f.cat.calls.Load(); n != 3 {
		t.Errorf("Materialize called %d times for 3 builds", n)
	}
	// A restarted gateway keeps the TIMESTAMP of unchanged content.
	f.now.Add(100)
	f.start(t)
	h2, _, _ := f.index(t)
	if h2.Value("TIMESTAMP") != h.Value("TIMESTAMP") {
		t.Errorf("restart moved TIMESTAMP %s -> %s for the same index", h.Value("TIMESTAMP"), h2.Value("TIMESTAMP"))
	}
}

func TestGatewayPrepareInBackground(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{PrepareOnIndex: true, PrepareWorkers: 1})
	_, es, _ := f.index(t)
	if len(es) != 0 {
		t.Fatalf("first index lists %d builds before they were re-packed", len(es))
	}
	deadline := time.Now().Add(time.Minute)
	last := int64(0)
	for {
		h, es, _ := f.index(t)
		ts, _ := strconv.ParseInt(h.Value("TIMESTAMP"), 10, 64)
		if ts < last {
			t.Fatalf("TIMESTAMP went backwards: %d after %d", ts, last)
		}
		last = ts
		if len(es) == 3 {
			f.checkEntries(t, es)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background re-packs did not finish: %d of 3 listed", len(es))
		}
		time.Sleep(20 * time.Millisecond) // polling with a bounded deadline
	}
	if n := f.cat.calls.Load(); n != 3 {
		t.Errorf("Materialize called %d times for 3 builds", n)
	}
}

func TestGatewayRefuses(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{})
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/gentoo-p2pd/", 404},
		{"GET", "/gentoo-p2pd/app-misc/", 404},
		{"GET", "/gentoo-p2pd/app-misc/hello/", 404},
		{"GET", "/gentoo-p2pd/app-misc/hello/hello-1.0-9.gpkg.tar", 404},
		{"GET", "/gentoo-p2pd/app-misc/hello/hello-1.0-1.xpak", 404},
		{"GET", "/gentoo-p2pd/app-misc/hello/../../Packages", 404},
		{"GET", "/gentoo-p2pd/..%2f..%2fetc/passwd", 404},
		{"GET", "/Packages", 404},
		{"GET", "/gentoo-p2pdPackages", 404},
		{"POST", "/gentoo-p2pd/Packages", 405},
		{"PUT", "/gentoo-p2pd/app-misc/hello/hello-1.0-1.gpkg.tar", 405},
	} {
		req, _ := http.NewRequest(tc.method, f.srv.URL+tc.path, nil)
		req.URL.Opaque = tc.path // send the path as written, unnormalised
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	if f.cat.calls.Load() != 0 {
		t.Error("a refused request materialized a package")
	}
	resp, err := http.Head(f.srv.URL + "/gentoo-p2pd/Packages")
	if err != nil || resp.StatusCode != 200 || resp.ContentLength <= 0 {
		t.Errorf("HEAD Packages: %v %v", resp, err)
	}
	f.cat.mu.Lock()
	f.cat.fail = errors.New("store closed")
	f.cat.mu.Unlock()
	if r, _ := f.get(t, "/gentoo-p2pd/Packages", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("catalog failure: %s", r.Status)
	}
}

// TestGatewayRefusesHostileMaterialized: a listed build whose materialized
// file writes through a symlink is never served, whatever the votes said.
func TestGatewayRefusesHostileMaterialized(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{PrepareOnIndex: true, IndexWait: time.Minute})
	evil := hostileGPKG(t, []tar.Header{
		{Typeflag: tar.TypeDir, Name: "image/etc/", Mode: 0o755},
		{Typeflag: tar.TypeSymlink, Name: "image/etc/cron.d", Linkname: "/etc/cron.d", Mode: 0o777},
		{Typeflag: tar.TypeReg, Name: "image/etc/cron.d/evil", Mode: 0o644},
	}, map[string]string{"image/etc/cron.d/evil": "x\n"})
	l := f.cat.add(t, "testdata/gpkg-signed/app-misc/consumer/consumer-1.0-1.gpkg.tar", 5)
	f.cat.mu.Lock()
	f.cat.files[l.Content] = evil // the peer delivered something else
	f.cat.mu.Unlock()
	resp, body := f.get(t, "/gentoo-p2pd/app-misc/consumer/consumer-1.0-5.gpkg.tar", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("hostile build: %s %q", resp.Status, body)
	}
	_, es, _ := f.index(t)
	if len(es) != 3 {
		t.Errorf("index lists %d builds, want the 3 good ones", len(es))
	}
	for _, e := range es {
		if e.CPV() == "app-misc/consumer-1.0" {
			t.Error("a refused build is listed")
		}
	}
	calls := f.cat.calls.Load()
	f.index(t)
	if f.cat.calls.Load() != calls {
		t.Error("a refused build is materialized again on every index request")
	}
}

func TestGatewayMaterializesOnce(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{})
	var wg sync.WaitGroup
	bodies := make([][]byte, 8)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(f.srv.URL + "/gentoo-p2pd/app-misc/hello/hello-1.0-1.gpkg.tar")
			if err != nil {
				return
			}
			defer resp.Body.Close()
			bodies[i], _ = io.ReadAll(resp.Body)
		}()
	}
	wg.Wait()
	if n := f.cat.calls.Load(); n != 1 {
		t.Errorf("Materialize called %d times for concurrent requests of one build", n)
	}
	for i := range bodies {
		if len(bodies[i]) == 0 || !bytes.Equal(bodies[i], bodies[0]) {
			t.Fatalf("response %d differs", i)
		}
	}
}

func TestGatewaySkipsBadListings(t *testing.T) {
	f := newGatewayFixture(t, GatewayOptions{PrepareOnIndex: true, IndexWait: time.Minute})
	f.cat.mu.Lock()
	good := f.cat.listings[0]
	noTime, noID := good, good
	noTime.Time, noTime.BuildID = time.Time{}, 9
	noID.BuildID = 0
	f.cat.listings = append(f.cat.listings, noTime, noID, good) // and a duplicate PATH
	f.cat.mu.Unlock()
	_, es, _ := f.index(t)
	if len(es) != 3 {
		t.Fatalf("index lists %d builds, want the 3 valid ones", len(es))
	}
}

func TestSplitPN(t *testing.T) {
	for pf, pn := range map[string]string{
		"hello-1.0": "hello", "layout-1.0-r1": "layout", "libfoo-2.1": "libfoo",
		"font-adobe-100dpi-1.0.4": "font-adobe-100dpi", "gtk+-2.24.33-r3": "gtk+",
		"foo-1.2_rc3_p4": "foo", "python-3.12.1_p1-r2": "python", "x264-0.0.20240513": "x264",
	} {
		if got, ok := SplitPN(pf); !ok || got != pn {
			t.Errorf("SplitPN(%q) = %q, %v; want %q", pf, got, ok, pn)
		}
	}
	for _, bad := range []string{"hello", "hello-", "-1.0", "hello-a1"} {
		if _, ok := SplitPN(bad); ok {
			t.Errorf("SplitPN(%q) accepted", bad)
		}
	}
}

// TestGatewayIndexFromServedFile: a listing's metadata is the attester's
// claim; once the file is re-packed, the index describes the served file's
// own metadata, whatever the claim said.
func TestGatewayIndexFromServedFile(t *testing.T) {
	f := &gatewayFixture{opts: GatewayOptions{PrepareOnIndex: true, IndexWait: time.Minute}, cat: &fakeCatalog{}, reg: prometheus.NewRegistry(), cache: t.TempDir()}
	f.now.Store(repackTime.Add(time.Hour).Unix())
	l := f.cat.add(t, "testdata/gpkg-signed/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar", 2)
	lying := xpak.NewMetadata(nil)
	for _, k := range l.Metadata.Keys() {
		v, _ := l.Metadata.Raw(k)
		lying.Set(k, v)
	}
	lying.Set("RDEPEND", []byte("sys-apps/claimed-by-attester\n"))
	lying.Set("SLOT", []byte("9\n"))
	f.cat.mu.Lock()
	f.cat.listings[0].Metadata = lying
	f.cat.mu.Unlock()
	f.start(t)
	_, es, _ := f.index(t)
	if len(es) != 1 {
		t.Fatalf("%d entries", len(es))
	}
	if got := es[0].Value("SLOT"); got != "0/2.1" {
		t.Errorf("SLOT %q in the index, the served file says 0/2.1", got)
	}
	if got := es[0].Value("RDEPEND"); got != "" {
		t.Errorf("RDEPEND %q in the index comes from the attester's claim, not the served file", got)
	}
	f.checkEntries(t, es)
}

// TestIndexKeptUntilChanged: the gateway renders its index once and serves
// it while nothing changed; a new listing, a listing with other metadata
// and a re-pack that finished each show in the next request, with a later
// TIMESTAMP.
func TestIndexKeptUntilChanged(t *testing.T) {
	f := &gatewayFixture{cat: &fakeCatalog{}, reg: prometheus.NewRegistry(), cache: t.TempDir()}
	f.now.Store(repackTime.Add(time.Hour).Unix())
	served := []string{"testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar", "testdata/gpkg-xz/layout-1.0-r1.gpkg.tar"}
	for i, p := range served {
		f.cat.add(t, p, 1_000_000_001+int64(i))
		f.cat.listings[i].Served = servedSizes(t, p)
	}
	f.start(t)
	rendered := func() *renderedIndex {
		f.gw.imu.Lock()
		defer f.gw.imu.Unlock()
		return f.gw.rendered
	}
	cpvs := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.CPV())
		}
		return out
	}
	h, es, _ := f.index(t)
	first, ts := rendered(), h.Value("TIMESTAMP")
	if len(es) != 2 || first == nil {
		t.Fatalf("index lists %v", cpvs(es))
	}
	f.now.Add(60)
	if h, _, _ := f.index(t); rendered() != first || h.Value("TIMESTAMP") != ts {
		t.Fatalf("nothing changed, and the index was rendered again (TIMESTAMP %s → %s)", ts, h.Value("TIMESTAMP"))
	}

	// A new listing with served sizes.
	p := "testdata/gpkg-signed/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar"
	f.cat.add(t, p, 1_000_000_003)
	f.cat.mu.Lock()
	f.cat.listings[2].Served = servedSizes(t, p)
	f.cat.mu.Unlock()
	f.now.Add(60)
	h, es, _ = f.index(t)
	if len(es) != 3 || h.Value("TIMESTAMP") <= ts {
		t.Fatalf("after a new listing: %v, TIMESTAMP %s → %s", cpvs(es), ts, h.Value("TIMESTAMP"))
	}
	ts = h.Value("TIMESTAMP")

	// Other metadata for the first listing (a new *xpak.Metadata).
	f.cat.mu.Lock()
	md := xpak.NewMetadata(nil)
	for _, k := range f.cat.listings[0].Metadata.Keys() {
		v, _ := f.cat.listings[0].Metadata.Raw(k)
		md.Set(k, v)
	}
	md.Set("DESCRIPTION", []byte("another description\n"))
	f.cat.listings[0].Metadata = md
	f.cat.mu.Unlock()
	f.now.Add(60)
	h, es, _ = f.index(t)
	var desc string
	for _, e := range es {
		if e.CPV() == "app-misc/hello-1.0" {
			desc = e.Value("DESCRIPTION")
		}
	}
	if desc != "another description" || h.Value("TIMESTAMP") <= ts {
		t.Fatalf("after new metadata: DESCRIPTION %q, TIMESTAMP %s → %s", desc, ts, h.Value("TIMESTAMP"))
	}
	ts = h.Value("TIMESTAMP")

	// A listing without served sizes is listed once re-packed.
	l := f.cat.add(t, "testdata/xpak/layout-1.0-r1-1.xpak", 4)
	f.now.Add(60)
	if h, es, _ = f.index(t); len(es) != 3 || h.Value("TIMESTAMP") != ts {
		t.Fatalf("a listing not re-packed yet: %v, TIMESTAMP %s → %s", cpvs(es), ts, h.Value("TIMESTAMP"))
	}
	if _, err := f.gw.Prepare(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	f.now.Add(60)
	if h, es, _ = f.index(t); len(es) != 4 || h.Value("TIMESTAMP") <= ts {
		t.Fatalf("after the re-pack: %v, TIMESTAMP %s → %s", cpvs(es), ts, h.Value("TIMESTAMP"))
	}
}
