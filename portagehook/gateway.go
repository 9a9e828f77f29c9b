package portagehook

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Listing is one build the daemon allows portage to install. The gateway
// trusts the Catalog's list and nothing else: it serves exactly these.
type Listing struct {
	// Content identifies the attested content (the content id as hex);
	// with BuildID it keys the re-pack cache.
	Content string
	// ImageDigest is the attested image digest; a materialized file with
	// another image is refused.
	ImageDigest [32]byte
	// MetadataDigest, when not zero, is the attested metadata digest: a
	// materialized file whose metadata hashes otherwise, or names another
	// CPV than Metadata, is refused. A cached file is trusted on its
	// database record until here, and its environment.bz2 runs as root.
	MetadataDigest [32]byte
	// Metadata is the build's metadata as read from its container; the
	// gateway keeps the covered keys only. It must not change once listed:
	// the gateway keeps the entry it rendered from it while Entries lists
	// the same *xpak.Metadata.
	Metadata *xpak.Metadata
	// BuildID is the BUILD_ID the build is served under, unique per CPV.
	BuildID int64
	// Time fixes everything time-like in the served file — BUILD_TIME, tar
	// and file mtimes (the index MTIME), signature creation time — so a
	// re-pack is reproducible. The attestation time suits.
	Time time.Time
	// Served are the served form's tar sizes the voters agree on: with
	// them the index lists the build with its exact SIZE before any byte
	// of it is here, and the file streams to portage as it is re-packed.
	// Zero (older attestations) lists the build only once re-packed.
	Served xpak.ServedSizes
	// Prefetch asks for the file to be fetched and re-packed in the
	// background when the index is read (gateway.prefetch), before
	// portage asks for it.
	Prefetch bool
}

// Listings are what the gateway needs from the daemon: what portage may
// see, and its files.
type Listings interface {
	// Entries lists the builds portage may install: Allowed builds for the
	// local platform only. The gateway serves nothing else. It is asked on
	// every index and package request: keep the listings of builds that
	// did not change (the same Metadata), and the gateway renders nothing
	// again.
	Entries(ctx context.Context) ([]Listing, error)
	// Materialize returns the path of a local, verified container file
	// (XPAK or GPKG) of l, fetching it from peers when needed, and the
	// package as its verification read it (nil when it was not read
	// now), which spares the re-pack a second read.
	Materialize(ctx context.Context, l Listing) (path string, pkg *xpak.Package, err error)
}

// GatewayOptions configure NewGateway.
type GatewayOptions struct {
	// Path is the URL path the binhost lives under ("/gentoo-p2pd"):
	// portage caches remote indexes per host and path, not per port.
	Path string
	// CacheDir holds re-packed GPKGs and what the index says of them.
	CacheDir string
	// Signer signs the served GPKGs (with Listing.Time as creation time).
	Signer *OpenPGPSigner
	// Covered selects the metadata keys served (identity.IsCovered).
	Covered func(key string) bool
	// Canonical rewrites covered values before serving (RepackOptions).
	Canonical func(key string, raw []byte) ([]byte, error)
	// DigestMetadata computes a metadata digest (identity.MetadataDigest);
	// required to serve listings with a MetadataDigest.
	DigestMetadata func(*xpak.Metadata) ([32]byte, error)
	// Header adds index header keys (ARCH, CHOST, ACCEPT_KEYWORDS,
	// USE_EXPAND…), which portage merges into its implicit IUSE settings.
	Header Fields
	// Limits bound reading materialized files.
	Limits xpak.Limits
	// Logger receives request and re-pack events; nil discards them.
	Logger *slog.Logger
	// Registerer receives the gateway's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock for index timestamps; nil is time.Now.
	Now func() time.Time
	// PrepareOnIndex makes an index request start re-packing (in the
	// background, PrepareWorkers at a time) every listed build not
	// re-packed yet that has no served sizes or asks for Prefetch. A build
	// without served sizes enters the index only once re-packed, because
	// portage 3.0.82 needs SIZE (see doc.go).
	PrepareOnIndex bool
	// PrepareWorkers bounds concurrent background re-packs; 0 means 2.
	PrepareWorkers int
	// IndexWait is how long an index request waits for the re-packs it
	// started before answering with what is ready; 0 answers at once.
	IndexWait time.Duration
	// CacheBudget bounds the bytes of re-packs kept in CacheDir: portage
	// keeps its own copy of what it downloaded, so the oldest re-packs
	// go first (a request makes them again). 0 keeps everything.
	CacheBudget int64
}

// Gateway is the loopback binhost portage fetches from. It implements
// http.Handler.
type Gateway struct {
	cat     Listings
	opts    GatewayOptions
	log     *slog.Logger
	group   singleflight.Group
	metrics *gatewayMetrics

	mu        sync.Mutex
	indexHash [32]byte
	indexTime int64

	// Background re-packs: owned by the gateway, stopped by Close.
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	workers chan struct{}
	pending sync.Map // cache key → chan struct{} closed when done
	// failed holds, per cache key, when a failed background re-pack may be
	// retried; expired entries go when the next failure is recorded.
	failed  sync.Map           // cache key → time.Time
	flights map[string]*flight // under mu: re-packs under way
	streams map[string]*stream // under mu: served-form re-packs being written
	sizes   sync.Map           // sizeKey → predicted size (int64)

	// The index is kept, not recomputed: each listing's entry while the
	// listing and its re-pack are the same, and the rendered index while
	// its entries are.
	imu      sync.Mutex
	memo     map[listingID]*memoEntry // under imu
	memoKeys map[string]listingID     // under imu: re-pack cache key → listing
	serial   uint64                   // under imu: numbers memo entries
	rendered *renderedIndex           // under imu
}

// listingID identifies a listing as the gateway renders it: the same
// content, BUILD_ID, time, served sizes, prefetch flag and metadata (the
// same *xpak.Metadata: the Listings keep it while the listing is
// unchanged, and nobody modifies it) make the same index entry.
type listingID struct {
	content  string
	buildID  int64
	time     int64
	served   xpak.ServedSizes
	prefetch bool
	metadata *xpak.Metadata
}

func idOf(l Listing) listingID {
	return listingID{l.Content, l.BuildID, l.Time.UnixNano(), l.Served, l.Prefetch, l.Metadata}
}

// memoEntry is a listing's index entry; serial changes whenever it is
// computed again.
type memoEntry struct {
	e      entry
	err    error // not kept: tried again next time
	serial uint64
}

// renderedIndex is the index as served for one list of entries (sig) and
// its TIMESTAMP; its gzip is made on the first request for it.
type renderedIndex struct {
	sig    [32]byte
	ts     int64
	plain  []byte
	gzOnce sync.Once
	gz     []byte
	gzErr  error
}

// retryAfter is how long a failed background re-pack is not retried (an
// index request must not re-fetch a refused build every time).
const retryAfter = 10 * time.Minute

// NewGateway returns the binhost handler: GET/HEAD <Path>/Packages,
// <Path>/Packages.gz and <Path>/<CAT>/<PN>/<PF>-<BUILD_ID>.gpkg.tar for
// listed builds; 404 for everything else, 405 for other methods. The index
// lists the re-packed builds; a listed build not re-packed yet is
// materialized and re-packed when its file is requested, by Prepare, or in
// the background when PrepareOnIndex is set. Call Close to stop
// background work.
func NewGateway(cat Listings, opts GatewayOptions) *Gateway {
	if opts.Path == "" {
		opts.Path = "/gentoo-p2pd"
	}
	opts.Path = "/" + strings.Trim(opts.Path, "/")
	if opts.Now == nil {
		opts.Now = time.Now
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if opts.PrepareWorkers <= 0 {
		opts.PrepareWorkers = 2
	}
	g := &Gateway{cat: cat, opts: opts, log: lg, metrics: newGatewayMetrics(opts.Registerer), flights: map[string]*flight{}, streams: map[string]*stream{}}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.workers = make(chan struct{}, opts.PrepareWorkers)
	g.loadIndexState()
	for _, p := range g.partFiles() {
		_ = os.Remove(p) // a re-pack cut short by a crash: never served, redone on request
	}
	return g
}

// Close stops background re-packs and waits for them to end.
func (g *Gateway) Close() error {
	g.cancel()
	g.wg.Wait()
	return nil
}

type gatewayMetrics struct {
	requests *prometheus.CounterVec
	repacks  *prometheus.CounterVec
}

func newGatewayMetrics(reg prometheus.Registerer) *gatewayMetrics {
	m := &gatewayMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "gateway", Name: "requests_total",
			Help: "Binhost requests by kind (index, package, other) and HTTP status.",
		}, []string{"kind", "code"}),
		repacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "gateway", Name: "repacks_total",
			Help: "Re-packs of materialized builds into signed GPKGs, by result.",
		}, []string{"result"}),
	}
	if reg != nil {
		m.requests = registerOrReuse(reg, m.requests)
		m.repacks = registerOrReuse(reg, m.repacks)
	}
	return m
}

// registerOrReuse registers c, or returns the collector already
// registered under its name (a gateway re-created in the same process).
func registerOrReuse(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
	}
	return c
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	kind := g.serve(sw, r)
	g.metrics.requests.WithLabelValues(kind, strconv.Itoa(sw.code)).Inc()
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) string {
	rel, ok := strings.CutPrefix(r.URL.Path, g.opts.Path+"/")
	if !ok {
		http.NotFound(w, r)
		return "other"
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return "other"
	}
	switch rel {
	case "Packages", "Packages.gz":
		g.serveIndex(w, r, rel == "Packages.gz")
		return "index"
	}
	if strings.HasSuffix(rel, ".gpkg.tar") && strings.Count(rel, "/") == 2 {
		g.servePackage(w, r, rel)
		return "package"
	}
	http.NotFound(w, r)
	return "other"
}

// entry is a listing with what the index says of it.
type entry struct {
	l     Listing
	path  string // CAT/PN/PF-BUILDID.gpkg.tar
	key   string // re-pack cache key
	entry Entry
	ready bool // SIZE is known: predicted from the served form, or re-packed
	// cached is true when the re-pack is on disk (SIZE, MD5 and SHA1 are
	// the file's); predicted is the served form's SIZE, or 0.
	cached    bool
	predicted int64
}

// entries are the listings' index entries, and a signature of them that
// changes whenever one of them may have: an entry is computed once per
// listing, and again only when the listing or its re-pack changed.
func (g *Gateway) entries(ctx context.Context) ([]entry, [32]byte, error) {
	ls, err := g.cat.Entries(ctx)
	if err != nil {
		return nil, [32]byte{}, err
	}
	g.imu.Lock()
	defer g.imu.Unlock()
	// Listings not seen before are rendered on every CPU.
	var miss []int
	fresh := map[listingID]*memoEntry{}
	for i, l := range ls {
		id := idOf(l)
		if g.memo[id] == nil && fresh[id] == nil {
			fresh[id] = &memoEntry{}
			miss = append(miss, i)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(miss)) {
		wg.Go(func() {
			for k := int(next.Add(1)) - 1; k < len(miss); k = int(next.Add(1)) - 1 {
				l := ls[miss[k]]
				m := fresh[idOf(l)]
				m.e, m.err = g.indexEntry(l)
			}
		})
	}
	wg.Wait()
	memo := make(map[listingID]*memoEntry, len(ls))
	keys := make(map[string]listingID, len(ls))
	seen := make(map[string]bool, len(ls))
	out := make([]entry, 0, len(ls))
	var sig []byte
	for _, l := range ls {
		id := idOf(l)
		m := g.memo[id]
		if m == nil {
			if m = fresh[id]; m.err != nil {
				g.log.Warn("gateway: listing skipped", "content", l.Content, "err", m.err)
				continue
			}
			if m.serial == 0 {
				g.serial++
				m.serial = g.serial
			}
		}
		memo[id], keys[m.e.key] = m, id
		if seen[m.e.path] {
			g.log.Warn("gateway: duplicate CPV and BUILD_ID skipped", "path", m.e.path, "content", l.Content)
			continue
		}
		seen[m.e.path] = true
		out = append(out, m.e)
		sig = binary.BigEndian.AppendUint64(sig, m.serial)
	}
	g.memo, g.memoKeys = memo, keys
	return out, sha256.Sum256(sig), nil
}

// forget drops the kept index entry of the listing whose re-pack (cache
// key) just changed: the next index lists it as re-packed.
func (g *Gateway) forget(key string) {
	g.imu.Lock()
	defer g.imu.Unlock()
	if id, ok := g.memoKeys[key]; ok {
		delete(g.memo, id)
		delete(g.memoKeys, key)
	}
}

// IndexKey is a metadata key a Packages stanza carries: Meta is its name in
// the binpkg, Index its name in the index.
type IndexKey struct{ Meta, Index string }

// IndexKeys are the metadata keys portage's own index carries per package
// (binarytree's _pkgindex_aux_keys that come from the binpkg, and
// REPO_REVISIONS). It is the project's one list of
// them: attestations carry the covered ones (package votes).
var IndexKeys = []IndexKey{
	{"BDEPEND", "BDEPEND"}, {"CHOST", "CHOST"}, {"DEFINED_PHASES", "DEFINED_PHASES"},
	{"DEPEND", "DEPEND"}, {"DESCRIPTION", "DESCRIPTION"}, {"EAPI", "EAPI"}, {"IDEPEND", "IDEPEND"}, {"IUSE", "IUSE"},
	{"KEYWORDS", "KEYWORDS"}, {"LICENSE", "LICENSE"}, {"PDEPEND", "PDEPEND"},
	{"PROPERTIES", "PROPERTIES"}, {"PROVIDES", "PROVIDES"}, {"RDEPEND", "RDEPEND"},
	{"repository", "REPO"}, {"REQUIRES", "REQUIRES"}, {"RESTRICT", "RESTRICT"},
	{"SLOT", "SLOT"}, {"USE", "USE"}, {"REPO_REVISIONS", "REPO_REVISIONS"},
}

// cacheVersion changes when the re-pack output format changes, so old
// cached files are not served under new index digests.
const cacheVersion = "gentoo-p2pd repack v4"

func (g *Gateway) repackOptions(l Listing) RepackOptions {
	t := l.Time.Truncate(time.Second)
	return RepackOptions{
		BuildID:     l.BuildID,
		Signer:      g.opts.Signer.At(t),
		Covered:     g.opts.Covered,
		Canonical:   g.opts.Canonical,
		ImageDigest: l.ImageDigest,
		MTime:       t,
		CPV:         l.Metadata.CPV(),
		// The file is re-read here, whatever the materializer trusted.
		MetadataDigest: l.MetadataDigest,
		DigestMetadata: g.opts.DigestMetadata,
		Limits:         g.opts.Limits,
		TempDir:        g.opts.CacheDir,
		Expect:         l.Served,
	}
}

func (g *Gateway) indexEntry(l Listing) (entry, error) {
	if l.Metadata == nil || l.BuildID <= 0 || l.Content == "" || l.Time.Unix() <= 0 {
		return entry{}, fmt.Errorf("%w: listing lacks metadata, content, a positive BUILD_ID or a time", ErrIndex)
	}
	if g.opts.Signer == nil || g.opts.Covered == nil {
		return entry{}, fmt.Errorf("%w: gateway has no Signer or Covered rule", ErrIndex)
	}
	ro := g.repackOptions(l)
	m, err := RepackMetadata(l.Metadata, ro)
	if err != nil {
		return entry{}, err
	}
	pn, ok := SplitPN(m.PF())
	if !ok {
		return entry{}, fmt.Errorf("%w: PF %q has no version", ErrIndex, m.PF())
	}
	path := fmt.Sprintf("%s/%s/%s-%d.gpkg.tar", m.Category(), pn, m.PF(), l.BuildID)
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d\x00%d\x00%s\x00%d\x00%d", cacheVersion, l.Content, l.BuildID, ro.MTime.Unix(), Fingerprint(g.opts.Signer.entity), l.Served.MetadataTar, l.Served.ImageTar)))
	e := entry{l: l, path: path, key: hex.EncodeToString(sum[:16])}
	f := Fields{
		{"CPV", m.CPV()},
		{"BUILD_ID", strconv.FormatInt(l.BuildID, 10)},
		{"BUILD_TIME", strconv.FormatInt(ro.MTime.Unix(), 10)},
		{"PATH", path},
		{"MTIME", strconv.FormatInt(ro.MTime.Unix(), 10)},
	}
	fields := indexFields(m)
	s, ready := g.cached(e.key)
	if ready && s.Index != nil {
		// Once re-packed, the served file's own metadata replaces the
		// attester's claims.
		fields = s.Index
	}
	for _, k := range IndexKeys {
		if v, ok := fields[k.Index]; ok {
			f.Set(k.Index, v)
		}
	}
	switch {
	case l.Served != (xpak.ServedSizes{}):
		// The served form's size is known before the file is: portage
		// checks SIZE (and MD5/SHA1 only when listed, so they are not).
		size, err := g.predictedSize(m.PF(), l)
		if err != nil {
			return entry{}, err
		}
		if ready && s.Size != size {
			return entry{}, fmt.Errorf("%w: re-pack of %s is %d bytes, the served form %d", ErrIndex, path, s.Size, size)
		}
		f.Set("SIZE", strconv.FormatInt(size, 10))
		e.ready, e.predicted, e.cached = true, size, ready
	case ready:
		f.Set("SIZE", strconv.FormatInt(s.Size, 10))
		f.Set("MD5", s.MD5)
		f.Set("SHA1", s.SHA1)
		e.ready, e.cached = true, true
	}
	e.entry = Entry{f}
	return e, nil
}

// predictedSize is the served file's size from the listing's served
// sizes alone (xpak.ServedGPKGSize), remembered per basename and sizes: an
// index of thousands of builds asks for it on every request.
func (g *Gateway) predictedSize(pf string, l Listing) (int64, error) {
	basename := fmt.Sprintf("%s-%d", pf, l.BuildID)
	k := sizeKey{basename, l.Served}
	if v, ok := g.sizes.Load(k); ok {
		return v.(int64), nil
	}
	n, err := xpak.ServedGPKGSize(basename, l.Served, g.opts.Signer)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIndex, err)
	}
	g.sizes.Store(k, n)
	return n, nil
}

type sizeKey struct {
	basename string
	sizes    xpak.ServedSizes
}

// pfRE splits PF into PN and version (PMS 3.1.2 and 3.2): PN is the
// shortest prefix after which a valid version follows.
var pfRE = regexp.MustCompile(`^(.+?)-([0-9]+(\.[0-9]+)*[a-z]?((_alpha|_beta|_pre|_rc|_p)[0-9]*)*(-r[0-9]+)?)$`)

// SplitPN returns the PN of a PF ("layout-1.0-r1" → "layout"); ok is
// false when PF carries no valid version.
func SplitPN(pf string) (pn string, ok bool) {
	m := pfRE.FindStringSubmatch(pf)
	if m == nil {
		return "", false
	}
	return m[1], true
}

func (g *Gateway) sidecar(key string) string { return filepath.Join(g.opts.CacheDir, key+".json") }
func (g *Gateway) file(key string) string    { return filepath.Join(g.opts.CacheDir, key+".gpkg.tar") }

// cached returns what a finished re-pack recorded, if its file is intact.
func (g *Gateway) cached(key string) (Served, bool) {
	raw, err := os.ReadFile(g.sidecar(key))
	if err != nil {
		return Served{}, false
	}
	var s Served
	if json.Unmarshal(raw, &s) != nil {
		return Served{}, false
	}
	fi, err := os.Stat(g.file(key))
	if err != nil || fi.Size() != s.Size {
		return Served{}, false
	}
	return s, true
}

// serveIndex serves the index, rendered once per list of entries.
// TIMESTAMP (and Last-Modified, which portage prefers) only moves when the
// content changes, and then always forward by at least one second:
// portage re-reads a remote index only when its timestamp is newer than
// its cached copy's.
func (g *Gateway) serveIndex(w http.ResponseWriter, r *http.Request, gz bool) {
	es, sig, err := g.entries(r.Context())
	if err != nil {
		g.log.Error("gateway: catalog", "err", err)
		http.Error(w, "catalog unavailable", http.StatusServiceUnavailable)
		return
	}
	if g.opts.PrepareOnIndex {
		var started []chan struct{}
		for _, e := range es {
			switch {
			case !e.ready:
				started = append(started, g.prepareAsync(e))
			case e.l.Prefetch && !e.cached:
				g.prepareAsync(e) // listed already: nothing to wait for
			}
		}
		if len(started) > 0 && g.opts.IndexWait > 0 {
			g.waitAll(r.Context(), started, g.opts.IndexWait)
			if es, sig, err = g.entries(r.Context()); err != nil {
				http.Error(w, "catalog unavailable", http.StatusServiceUnavailable)
				return
			}
		}
	}
	idx, err := g.render(es, sig)
	if err != nil {
		g.log.Error("gateway: render index", "err", err)
		http.Error(w, "index", http.StatusInternalServerError)
		return
	}
	data := idx.plain
	name := "Packages"
	if gz {
		idx.gzOnce.Do(func() { idx.gz, idx.gzErr = gzipped(idx.plain) })
		if idx.gzErr != nil {
			g.log.Error("gateway: compress index", "err", idx.gzErr)
			http.Error(w, "index", http.StatusInternalServerError)
			return
		}
		data = idx.gz
		name = "Packages.gz"
		w.Header().Set("Content-Type", "application/gzip")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Unix(idx.ts, 0), bytes.NewReader(data))
}

// render returns the index of entries es (signature sig, from entries):
// the one rendered last when the entries are the same.
func (g *Gateway) render(es []entry, sig [32]byte) (*renderedIndex, error) {
	g.imu.Lock()
	defer g.imu.Unlock()
	if idx := g.rendered; idx != nil && idx.sig == sig {
		return idx, nil
	}
	h := Header{append(Fields(nil), g.opts.Header...)}
	h.Delete("TIMESTAMP")
	h.Set("VERSION", "0")
	entries := make([]Entry, 0, len(es))
	for _, e := range es {
		// portage 3.0.82 raises KeyError on an entry without SIZE once the
		// file is in its binhost cache: list re-packed builds only.
		if e.ready {
			entries = append(entries, e.entry)
		}
	}
	// The content is hashed with TIMESTAMP 0, then that line is set.
	h.Set("TIMESTAMP", "0")
	var body bytes.Buffer
	if err := WriteIndex(&body, h, entries); err != nil {
		return nil, err
	}
	ts := g.timestamp(sha256.Sum256(body.Bytes()))
	plain, err := setHeaderLine(body.Bytes(), "TIMESTAMP", strconv.FormatInt(ts, 10))
	if err != nil {
		return nil, err
	}
	g.rendered = &renderedIndex{sig: sig, ts: ts, plain: plain}
	return g.rendered, nil
}

// setHeaderLine replaces the value of key in an index's header (the first
// stanza), which must carry it.
func setHeaderLine(index []byte, key, value string) ([]byte, error) {
	header, _, _ := bytes.Cut(index, []byte("\n\n"))
	line := []byte(key + ": ")
	at := -1
	for off := 0; off < len(header); {
		end := bytes.IndexByte(header[off:], '\n')
		if end < 0 {
			end = len(header) - off
		}
		if bytes.HasPrefix(header[off:off+end], line) {
			at = off
			break
		}
		off += end + 1
	}
	if at < 0 {
		return nil, fmt.Errorf("%w: index header has no %s", ErrIndex, key)
	}
	end := at + bytes.IndexByte(index[at:], '\n')
	out := make([]byte, 0, len(index)+len(value))
	out = append(out, index[:at]...)
	out = append(out, line...)
	out = append(out, value...)
	return append(out, index[end:]...), nil
}

// gzipped compresses an index for Packages.gz.
func gzipped(data []byte) ([]byte, error) {
	var zb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&zb, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return zb.Bytes(), nil
}

func (g *Gateway) timestamp(h [32]byte) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if h == g.indexHash && g.indexTime != 0 {
		return g.indexTime
	}
	ts := g.opts.Now().Unix()
	if ts <= g.indexTime {
		ts = g.indexTime + 1
	}
	g.indexHash, g.indexTime = h, ts
	g.saveIndexState()
	return ts
}

type indexState struct {
	Hash      string `json:"hash"`
	Timestamp int64  `json:"timestamp"`
}

func (g *Gateway) loadIndexState() {
	raw, err := os.ReadFile(filepath.Join(g.opts.CacheDir, "index-state.json"))
	if err != nil {
		return
	}
	var s indexState
	if json.Unmarshal(raw, &s) != nil {
		return
	}
	if b, err := hex.DecodeString(s.Hash); err == nil && len(b) == 32 {
		copy(g.indexHash[:], b)
		g.indexTime = s.Timestamp
	}
}

// saveIndexState persists the last timestamp so a restart never moves
// TIMESTAMP backwards (portage would keep its stale copy).
func (g *Gateway) saveIndexState() {
	raw, _ := json.Marshal(indexState{Hash: hex.EncodeToString(g.indexHash[:]), Timestamp: g.indexTime})
	if err := writeFileAtomic(filepath.Join(g.opts.CacheDir, "index-state.json"), raw, 0o644); err != nil {
		g.log.Warn("gateway: index state not saved", "err", err)
	}
}

func (g *Gateway) servePackage(w http.ResponseWriter, r *http.Request, rel string) {
	es, _, err := g.entries(r.Context())
	if err != nil {
		http.Error(w, "catalog unavailable", http.StatusServiceUnavailable)
		return
	}
	var e *entry
	for i := range es {
		if es[i].path == rel {
			e = &es[i]
			break
		}
	}
	if e == nil {
		http.NotFound(w, r)
		return
	}
	if e.predicted > 0 && !e.cached {
		g.streamPackage(w, r, *e)
		return
	}
	s, err := g.repacked(r.Context(), *e)
	if err != nil {
		g.log.Error("gateway: package unavailable", "path", rel, "err", err)
		http.Error(w, "package unavailable", http.StatusBadGateway)
		return
	}
	f, err := os.Open(g.file(e.key))
	if err != nil {
		http.Error(w, "package unavailable", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != s.Size {
		http.Error(w, "package unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	http.ServeContent(w, r, filepath.Base(rel), s.MTime, f)
}

// repacked returns the cached re-pack of e, materializing and re-packing
// it first when needed: once, however many requests wait for it. The work
// runs under a context of its own that ends when the last caller waiting
// for it gives up (portage timing out, a client closing its connection),
// so an abandoned fetch stops; a client that retries starts it again and
// the transfer resumes from its part file.
func (g *Gateway) repacked(ctx context.Context, e entry) (Served, error) {
	if s, ok := g.cached(e.key); ok {
		return s, nil
	}
	if e.predicted > 0 {
		return g.waitStream(ctx, e)
	}
	wctx, leave := g.joinFlight(e.key)
	defer leave()
	ch := g.group.DoChan(e.key, func() (any, error) {
		if s, ok := g.cached(e.key); ok {
			return s, nil
		}
		src, _, err := g.cat.Materialize(wctx, e.l)
		if err != nil {
			g.metrics.repacks.WithLabelValues("materialize_error").Inc()
			return Served{}, fmt.Errorf("materialize %s: %w", e.path, err)
		}
		if err := os.MkdirAll(g.opts.CacheDir, 0o755); err != nil {
			return Served{}, err
		}
		start := time.Now()
		s, err := Repack(src, g.file(e.key), g.repackOptions(e.l))
		if err != nil {
			g.metrics.repacks.WithLabelValues("refused").Inc()
			return Served{}, err
		}
		raw, _ := json.Marshal(s)
		if err := writeFileAtomic(g.sidecar(e.key), raw, 0o644); err != nil {
			return Served{}, err
		}
		g.forget(e.key)
		g.pruneCache(e.key)
		g.metrics.repacks.WithLabelValues("ok").Inc()
		g.log.Info("gateway: re-packed", "path", e.path, "size", s.Size, "took", time.Since(start))
		return s, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Served{}, r.Err
		}
		return r.Val.(Served), nil
	case <-ctx.Done():
		return Served{}, ctx.Err()
	}
}

// flight is one re-pack under way and how many callers wait for it.
type flight struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiters int
}

// joinFlight registers a caller waiting for key's re-pack and returns the
// context the re-pack runs under; leave unregisters it, and the last one
// to leave cancels the re-pack's context (the gateway's Close cancels all).
func (g *Gateway) joinFlight(key string) (context.Context, func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.flights[key]
	if f == nil {
		ctx, cancel := context.WithCancel(g.ctx)
		f = &flight{ctx: ctx, cancel: cancel}
		g.flights[key] = f
	}
	f.waiters++
	return f.ctx, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if f.waiters--; f.waiters == 0 {
			f.cancel()
			if g.flights[key] == f {
				delete(g.flights, key)
			}
		}
	}
}

// prepareAsync starts re-packing e in the background (at most
// PrepareWorkers at a time) unless it is already under way, and returns a
// channel closed when that re-pack ends.
func (g *Gateway) prepareAsync(e entry) chan struct{} {
	done := make(chan struct{})
	if until, ok := g.failed.Load(e.key); ok && time.Now().Before(until.(time.Time)) {
		close(done)
		return done
	}
	if v, loaded := g.pending.LoadOrStore(e.key, done); loaded {
		return v.(chan struct{})
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer func() {
			g.pending.Delete(e.key)
			close(done)
		}()
		select {
		case g.workers <- struct{}{}:
		case <-g.ctx.Done():
			return
		}
		defer func() { <-g.workers }()
		if _, err := g.repacked(g.ctx, e); err != nil && g.ctx.Err() == nil {
			g.failed.Range(func(k, until any) bool {
				if time.Now().After(until.(time.Time)) {
					g.failed.Delete(k)
				}
				return true
			})
			g.failed.Store(e.key, time.Now().Add(retryAfter))
			g.log.Warn("gateway: background re-pack failed", "path", e.path, "err", err)
		}
	}()
	return done
}

func (g *Gateway) waitAll(ctx context.Context, chans []chan struct{}, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for _, c := range chans {
		select {
		case <-c:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		case <-g.ctx.Done():
			return
		}
	}
}

// Prepare materializes and re-packs a listed build ahead of portage's
// request, so the index can carry its SIZE and digests; the daemon calls
// it for builds it expects to be installed (e.g. after they become
// Allowed).
func (g *Gateway) Prepare(ctx context.Context, l Listing) (Served, error) {
	e, err := g.indexEntry(l)
	if err != nil {
		return Served{}, err
	}
	return g.repacked(ctx, e)
}
