package localapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

const testPlatform = "x86_64-pc-linux-gnu-test"

// xpakMultiInstance is portage's multi-instance XPAK PKGDIR.
const xpakMultiInstance = "portage/xpak/zstd-multi-instance"

// node is one daemon's jobs on the in-memory network.
type node struct {
	*jobtest.Peer
	own    *own.Builds
	mz     *materialize.Materializer
	pkgdir string
}

// world is the daemon under test (a) and its peers: b shares consumer and
// libfoo (XPAK) that a has not built; c holds the backdoored layout. a
// starts first, so it hears b's and c's attestations by gossip as they
// start.
type world struct {
	t       *testing.T
	mn      *memnet.Network
	a, b, c *node
	nodes   map[peer.ID]*node
	reg     *prometheus.Registry
	cfg     *config.Config
	signer  ed25519.PrivateKey
	trusted peer.ID
	fetches atomic.Int32 // transfers the fake fetch made (read across the socket)
	// dropAll makes the fake fetch lose every provider after progress.
	dropAll bool
}

func intp(i int) *int    { return &i }
func boolp(b bool) *bool { return &b }

// newNode starts a node whose PKGDIR holds the binpkgs of set, less those
// drop names.
func (w *world) newNode(set string, policy trust.Policy, drop ...string) *node {
	t := w.t
	pkgdir := filepath.Join(t.TempDir(), "binpkgs")
	for _, f := range jobtest.WriteSet(t, set, pkgdir) {
		for _, d := range drop {
			if strings.Contains(f, d) {
				os.Remove(f)
			}
		}
	}
	n := &node{Peer: jobtest.NewPeer(t, w.mn, jobtest.WithPolicy(policy), jobtest.WithPlatform(testPlatform)), pkgdir: pkgdir}
	n.own = own.New(own.Options{
		Store: n.Store, Votes: n.Book, Net: n.Node, Key: n.Key, Self: n.ID, PkgDir: pkgdir,
		Mode: config.ModeShare, Files: xpak.DefaultLimits(),
	})
	n.mz = materialize.New(materialize.Options{
		Store: n.Store, Votes: n.Book, Net: n.Node, Fetch: w.fetch, Self: n.ID, Platform: testPlatform,
		Mode: config.ModeShare, Files: xpak.DefaultLimits(),
	})
	if err := n.own.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	w.nodes[n.ID] = n
	return n
}

// fetch stands in for transfer.Fetch: it copies the wanted file from the
// first online peer that holds it, reporting progress at half and at the
// end, and runs the Check and Verify hooks as the real transfer does.
func (w *world) fetch(ctx context.Context, want transfer.Want, peers []peer.AddrInfo, o transfer.FetchOptions) (transfer.Result, error) {
	w.fetches.Add(1)
	for _, p := range peers {
		src := w.nodes[p.ID]
		if _, online := w.a.Node.DirectAddr(p.ID); !online || src == nil {
			continue
		}
		lps, _ := src.Store.LocalBySHA(want.SHA256)
		if len(lps) == 0 {
			continue
		}
		b, err := os.ReadFile(lps[0].Path)
		if err != nil {
			return transfer.Result{}, err
		}
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return transfer.Result{}, err
		}
		path := filepath.Join(o.Dir, fmt.Sprintf("%x", want.SHA256))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return transfer.Result{}, err
		}
		if o.Progress != nil {
			o.Progress(transfer.Progress{Done: want.Size / 2, Total: want.Size, Peers: 1})
			o.Progress(transfer.Progress{Done: want.Size, Total: want.Size, Peers: 1})
		}
		if w.dropAll {
			return transfer.Result{}, transfer.ErrNoProviders
		}
		if o.Check != nil {
			sum, err := o.Check(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				return transfer.Result{}, fmt.Errorf("%w: %w", transfer.ErrVerify, err)
			}
			if sum != want.SHA256 {
				return transfer.Result{}, transfer.ErrHashMismatch
			}
		}
		if o.Verify != nil {
			if err := o.Verify(path); err != nil {
				return transfer.Result{}, fmt.Errorf("%w: %w", transfer.ErrVerify, err)
			}
		}
		return transfer.Result{Path: path, Size: want.Size, BytesFetched: want.Size, PeerPieces: map[peer.ID]int{p.ID: 1}}, nil
	}
	return transfer.Result{}, transfer.ErrNoProviders
}

// newWorld builds the daemon under test: PKGDIR holds hello and layout
// (GPKG); hello, layout, consumer and libfoo are allowed by one vote
// (overrides), everything else needs the default three. Layout is
// disputed by c's backdoored build, so it is not allowed either.
func newWorld(t *testing.T) *world {
	w := &world{t: t, mn: memnet.New(), nodes: map[peer.ID]*node{}, reg: prometheus.NewRegistry()}
	pub, priv := jobtest.NewSigner(t)
	w.signer = priv
	_, w.trusted = jobtest.NewKey(t)
	_, blocked := jobtest.NewKey(t)
	policy := jobtest.LabPolicy()
	policy.Signers = []ed25519.PublicKey{pub}
	policy.TrustedPeers = []peer.ID{w.trusted}
	policy.BlockedPeers = []peer.ID{blocked}
	policy.Overrides = []trust.Override{
		{Glob: "app-misc/hello-*", Threshold: intp(1)},
		{Glob: "app-misc/layout-*", Threshold: intp(1)},
		{Glob: "app-misc/consumer-*", Threshold: intp(1)},
		{Glob: "dev-libs/libfoo-*", Threshold: intp(1)},
		{Glob: "sys-apps/*", Dispute: intp(2), RequireSigner: boolp(true)},
	}
	w.a = w.newNode(fixtures.ReproGPKG1, policy)
	w.b = w.newNode(xpakMultiInstance, jobtest.LabPolicy(), "hello", "layout")
	w.c = w.newNode(fixtures.Backdoored, jobtest.LabPolicy())

	cfg := config.Defaults()
	cfg.Mode = config.ModeShare
	cfg.Portage.PkgDir = w.a.pkgdir
	cfg.API.Socket = filepath.Join(t.TempDir(), "api.sock")
	cfg.Cache.DiskBudget = 1 << 30
	w.cfg = cfg
	served := prometheus.NewCounter(prometheus.CounterOpts{Name: "gentoo_p2pd_transfer_served_bytes_total", Help: "served"})
	w.reg.MustRegister(served)
	served.Add(4096)
	return w
}

// server is the local API of a, with the gateway on or off.
func (w *world) server(gateway func() (api.GatewayInfo, error)) *Server {
	return New(Options{
		Store: w.a.Store, Votes: w.a.Book, Own: w.a.own, Materialize: w.a.mz, Net: w.a.Node,
		Self: w.a.ID, Platform: testPlatform, Config: w.cfg, Version: "1.2.3",
		Started:    time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC),
		Gatherer:   w.reg,
		GatewayURL: func() string { return "http://127.0.0.1:7854/gentoo-p2pd" },
		MetricsURL: func() string { return "" },
		Gateway:    gateway,
		VDB:        w.vdb(),
	})
}

// vdb is the daemon's portage vdb (/var/db/pkg), empty until a test
// installs into it (jobtest.WriteVDB).
func (w *world) vdb() string { return filepath.Join(filepath.Dir(w.a.pkgdir), "vdb") }

func gatewayOn() (api.GatewayInfo, error) {
	return api.GatewayInfo{URL: "http://127.0.0.1:7854/gentoo-p2pd", Fingerprint: "ABCD", PublicKey: "-----BEGIN PGP PUBLIC KEY BLOCK-----"}, nil
}

// serve answers the API on a real unix socket and returns its client.
func serve(t *testing.T, srv *Server) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	return api.NewClient(sock)
}

// do runs one request through the handler and returns the recorder.
func do(h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	h.ServeHTTP(rec, r)
	return rec
}

// wantError checks a typed failure: its code, and the status and body the
// handler answered it with.
func wantError(t *testing.T, what string, rec *httptest.ResponseRecorder, code api.Code, msgPart string) {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("%s: body %q: %v", what, rec.Body.String(), err)
	}
	if rec.Code != code.HTTPStatus() || e.Code != code || !strings.Contains(e.Message, msgPart) {
		t.Errorf("%s: answered %d %+v, want %d %s containing %q", what, rec.Code, e, code.HTTPStatus(), code, msgPart)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: content type %q", what, ct)
	}
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if rec.Code != http.StatusOK {
		t.Fatalf("answered %d: %s", rec.Code, rec.Body.String())
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStatusAndPeers(t *testing.T) {
	w := newWorld(t)
	h := w.server(gatewayOn).Handler()

	st := decode[api.Status](t, do(h, "GET", api.PathStatus, ""))
	want := api.Status{
		Version: "1.2.3", Mode: "share", PeerID: w.a.ID.String(), Reachability: "public",
		Peers: 2, StartedAt: time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC), Platform: testPlatform,
		PKGDIR: w.a.pkgdir, PackagesShared: 2, KeysProvided: 4,
		// a's hello and layout, c's layout (disputing it), b's consumer
		// and libfoo.
		CatalogAttestations: 5, CatalogBuilds: 4, Disputes: 1, Threshold: trust.DefaultThreshold, FreshWeight: 100,
		BytesServed: 4096, CacheLimit: 1 << 30,
		GatewayURL: "http://127.0.0.1:7854/gentoo-p2pd", Socket: w.cfg.API.Socket,
	}
	if len(st.Addrs) != 1 || !strings.HasPrefix(st.Addrs[0], "/ip4/127.0.0.") {
		t.Errorf("addrs %v", st.Addrs)
	}
	st.Addrs = nil
	if fmt.Sprintf("%+v", st) != fmt.Sprintf("%+v", want) {
		t.Errorf("status\n got %+v\nwant %+v", st, want)
	}

	peers := decode[api.PeersResponse](t, do(h, "GET", api.PathPeers, ""))
	if len(peers.Peers) != 2 {
		t.Fatalf("peers %+v", peers)
	}
	for _, p := range peers.Peers {
		if (p.ID != w.b.ID.String() && p.ID != w.c.ID.String()) || p.Direction != "outbound" || len(p.Addrs) != 1 {
			t.Errorf("peer %+v", p)
		}
	}
	// Off the network: no peers, an empty list (not null).
	w.a.Node.SetOnline(false)
	if rec := do(h, "GET", api.PathPeers, ""); !strings.Contains(rec.Body.String(), `"peers": []`) {
		t.Errorf("offline peers: %s", rec.Body.String())
	}
}

func TestFind(t *testing.T) {
	w := newWorld(t)
	h := w.server(nil).Handler()
	hello := w.a.Local(t, "app-misc/hello-1.0")

	for _, q := range []string{"app-misc/hello-1.0", "=app-misc/hello-1.0", hello.BuildKey, hello.VariantKey} {
		res := decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q="+url.QueryEscape(q), ""))
		if res.Query != q || len(res.Builds) != 1 {
			t.Fatalf("find %s: %+v", q, res)
		}
		b := res.Builds[0]
		if b.BuildKey != keys.Build(hello.BuildKey) || b.VariantKey != keys.Variant(hello.VariantKey) || b.CPV != "app-misc/hello-1.0" || b.Verdict != "allowed" {
			t.Errorf("find %s: %+v", q, b)
		}
		if len(b.Providers) != 1 || b.Providers[0] != w.a.ID.String()+" (self)" {
			t.Errorf("find %s: providers %v", q, b.Providers)
		}
		if len(b.Attestations) != 1 || b.Attestations[0].Attester != w.a.ID.String() || b.Attestations[0].Format != "gpkg" {
			t.Errorf("find %s: attestations %+v", q, b.Attestations)
		}
	}

	// A build key only b provides: a learns its attestation from b.
	consumer := w.b.Local(t, "app-misc/consumer-1.0")
	res := decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q="+consumer.BuildKey, ""))
	if len(res.Builds) != 1 || len(res.Builds[0].Providers) != 1 || res.Builds[0].Providers[0] != w.b.ID.String() ||
		res.Builds[0].CPV != "app-misc/consumer-1.0" || len(res.Builds[0].Attestations) != 1 {
		t.Errorf("find a build b provides: %+v", res)
	}

	// Nothing known: an answer with no builds, not an error.
	res = decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q=app-misc/nope-1.0", ""))
	if len(res.Builds) != 0 || res.Query != "app-misc/nope-1.0" {
		t.Errorf("find unknown CPV: %+v", res)
	}
	// An unknown build key is kept: providers may still turn up.
	res = decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q="+unknownKey(t), ""))
	if len(res.Builds) != 1 || res.Builds[0].BuildKey != keys.Build(unknownKey(t)) || len(res.Builds[0].Providers) != 0 {
		t.Errorf("find an unknown key: %+v", res)
	}
	wantError(t, "find with no query", do(h, "GET", api.PathFind, ""), api.CodeBadRequest, "empty query")

	// The network failing is noted, and what the catalog holds is still shown.
	w.a.Node.SetOnline(false)
	res = decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q=app-misc/hello-1.0", ""))
	if len(res.Builds) != 1 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "offline") {
		t.Errorf("find offline: %+v", res)
	}
}

func TestAnnounce(t *testing.T) {
	w := newWorld(t)
	srv := w.server(nil)
	h := srv.Handler()
	hello := w.a.Local(t, "app-misc/hello-1.0")

	body := func(req api.AnnounceRequest) string { b, _ := json.Marshal(req); return string(b) }
	res := decode[api.AnnounceResult](t, do(h, "POST", api.PathAnnounce, body(api.AnnounceRequest{Path: hello.Path})))
	wantContent := trust.ContentID{Image: hello.ImageDigest, Metadata: hello.MetadataDigest}.String()
	if res.Path != hello.Path || res.CPV != hello.CPV || res.BuildKey != keys.Build(hello.BuildKey) || res.VariantKey != keys.Variant(hello.VariantKey) ||
		res.Content != wantContent || !res.Provided {
		t.Errorf("announce by path: %+v", res)
	}
	res = decode[api.AnnounceResult](t, do(h, "POST", api.PathAnnounce, body(api.AnnounceRequest{Path: "app-misc/layout-1.0-r1"})))
	if res.CPV != "app-misc/layout-1.0-r1" || !res.Provided {
		t.Errorf("announce by CPV: %+v", res)
	}
	// A source build with a binpkg is demand for its variant.
	if !res.DemandRecorded || w.a.Book.WantCount(keys.Variant(hello.VariantKey)) != 1 {
		t.Errorf("announce by path recorded no demand: %+v", res)
	}
	// A binary install not in the vdb is recorded; its demand cannot be.
	res = decode[api.AnnounceResult](t, do(h, "POST", api.PathAnnounce, body(api.AnnounceRequest{Installed: "app-misc/hello-1.0"})))
	if res.CPV != "app-misc/hello-1.0" || res.DemandRecorded || !strings.HasPrefix(res.Note, "install recorded; demand not recorded: vdb: app-misc/hello-1.0 not installed") {
		t.Errorf("announce installed, not in the vdb: %+v", res)
	}
	// A binary install of consumer (b's build, not in a's PKGDIR): the vdb
	// entry portage wrote says which variant, and the demand reaches b.
	consumerFile := filepath.Join(w.b.pkgdir, "app-misc", "consumer", "consumer-1.0-1.xpak")
	consumer := jobtest.Identify(t, consumerFile).Local
	if err := w.b.Node.JoinPlatform(consumer.Platform); err != nil {
		t.Fatal(err)
	}
	if cpv := jobtest.WriteVDB(t, w.vdb(), consumerFile); cpv != "app-misc/consumer-1.0" {
		t.Fatalf("installed %s", cpv)
	}
	res = decode[api.AnnounceResult](t, do(h, "POST", api.PathAnnounce, body(api.AnnounceRequest{Installed: "app-misc/consumer-1.0"})))
	if !res.DemandRecorded || res.VariantKey != keys.Variant(consumer.VariantKey) || res.Note != "install recorded; demand recorded" {
		t.Errorf("announce installed: %+v", res)
	}
	for _, n := range []*node{w.a, w.b} {
		if got := n.Book.WantCount(keys.Variant(consumer.VariantKey)); got != 1 {
			t.Errorf("%s counts %d wanters of consumer, want 1", n.ID, got)
		}
	}
	// A source build without a binpkg (the hook's CAT/PF announce): no
	// binpkg to share, demand recorded from the vdb.
	res = decode[api.AnnounceResult](t, do(h, "POST", api.PathAnnounce, body(api.AnnounceRequest{Path: "app-misc/consumer-1.0"})))
	if !res.DemandRecorded || res.Provided || res.Note != "no binpkg in PKGDIR to share; demand recorded" {
		t.Errorf("announce a source build without a binpkg: %+v", res)
	}
	if got := w.a.Book.WantCount(keys.Variant(consumer.VariantKey)); got != 1 {
		t.Errorf("one identity counts %d times", got)
	}
	// A source build with a binpkg and a vdb entry (the hook after
	// `emerge --buildpkg`): shared, and its demand read from the vdb.
	jobtest.WriteVDB(t, w.vdb(), hello.Path)
	res = decode[api.AnnounceResult](t, do(h, "POST", api.PathAnnounce, body(api.AnnounceRequest{Path: "app-misc/hello-1.0"})))
	if !res.Provided || !res.DemandRecorded || res.BuildKey != keys.Build(hello.BuildKey) || res.Note != "demand recorded" {
		t.Errorf("announce a CPV built and installed: %+v", res)
	}
	if c, _ := w.a.Store.Counters(); c["installs"] != 2 {
		t.Errorf("installs counter %d", c["installs"])
	}
	if st := decode[api.Status](t, do(h, "GET", api.PathStatus, "")); st.Installs != 2 || st.Demands != 3 {
		t.Errorf("status shows %d installs and %d demand records, want the two reported and hello's, layout's and consumer's", st.Installs, st.Demands)
	}

	outside := filepath.Join(t.TempDir(), "hello-1.0.gpkg.tar")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		req  api.AnnounceRequest
		code api.Code
		msg  string
	}{
		{"outside PKGDIR", api.AnnounceRequest{Path: outside}, api.CodeRejected, "not inside PKGDIR"},
		{"missing file", api.AnnounceRequest{Path: filepath.Join(w.a.pkgdir, "app-misc", "gone-1.0.gpkg.tar")}, api.CodeNotFound, "no such file"},
		{"CPV not in PKGDIR", api.AnnounceRequest{Path: "app-misc/nope-1.0"}, api.CodeNotFound, "no binpkg of app-misc/nope-1.0"},
		{"nothing", api.AnnounceRequest{}, api.CodeBadRequest, "give the path"},
	} {
		wantError(t, "announce "+tc.what, do(h, "POST", api.PathAnnounce, body(tc.req)), tc.code, tc.msg)
	}
	wantError(t, "announce with a bad body", do(h, "POST", api.PathAnnounce, `{"path":`), api.CodeBadRequest, "bad request body")
	wantError(t, "announce with an unknown field", do(h, "POST", api.PathAnnounce, `{"file":"x"}`), api.CodeBadRequest, "unknown field")

	// The store failing is the daemon's fault.
	w.a.Store.Close()
	_, err := srv.Announce(t.Context(), api.AnnounceRequest{Installed: "app-misc/hello-1.0"})
	if !api.IsInternal(err) || !errors.Is(err, store.ErrClosed) {
		t.Errorf("announce on a closed store: %v (code %q)", err, api.CodeOf(err))
	}
}

func TestFetch(t *testing.T) {
	w := newWorld(t)
	srv := w.server(nil)
	h := srv.Handler()
	c := serve(t, srv)
	hello := w.a.Local(t, "app-misc/hello-1.0")

	// An own build is copied from PKGDIR, nothing fetched.
	dir := t.TempDir()
	var res api.FetchResult
	if err := c.Post(t.Context(), api.PathFetch, api.FetchRequest{Query: "app-misc/hello-1.0", Dir: dir}, &res); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "hello-1.0.gpkg.tar")
	if res.Path != dst || res.BuildKey != keys.Build(hello.BuildKey) || res.CPV != hello.CPV || res.Size != hello.Size || w.fetches.Load() != 0 {
		t.Errorf("fetch of an own build: %+v (%d fetches)", res, w.fetches.Load())
	}
	got, _ := os.ReadFile(dst)
	orig, _ := os.ReadFile(hello.Path)
	if len(got) == 0 || !bytes.Equal(got, orig) {
		t.Errorf("%s differs from the own build", dst)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("copied file: %v %v", fi, err)
	}
	// Without Dir: the path the daemon holds.
	if err := c.Post(t.Context(), api.PathFetch, api.FetchRequest{Query: hello.BuildKey}, &res); err != nil || res.Path != hello.Path {
		t.Errorf("fetch without dir: %+v %v", res, err)
	}

	// Layout: disputed by c's backdoored build.
	err := c.Post(t.Context(), api.PathFetch, api.FetchRequest{Query: "app-misc/layout-1.0-r1"}, &res)
	if !api.IsNotAllowed(err) || !strings.Contains(err.Error(), "not allowed by the trust policy") {
		t.Errorf("fetch of a build not allowed: %v (code %q)", err, api.CodeOf(err))
	}
	_, err = srv.Fetch(t.Context(), api.FetchRequest{Query: "app-misc/layout-1.0-r1"})
	if !errors.Is(err, materialize.ErrNotAllowed) || !api.IsNotAllowed(err) {
		t.Errorf("Fetch: %v does not wrap materialize.ErrNotAllowed", err)
	}

	for _, tc := range []struct {
		what string
		req  api.FetchRequest
		code api.Code
		msg  string
	}{
		{"of nothing", api.FetchRequest{Query: "app-misc/nope-1.0"}, api.CodeNotFound, `nothing in the catalog matches "app-misc/nope-1.0"`},
		{"with no query", api.FetchRequest{Query: " "}, api.CodeBadRequest, "empty query"},
		{"to a relative dir", api.FetchRequest{Query: "app-misc/hello-1.0", Dir: "out"}, api.CodeBadRequest, "not an absolute path"},
		{"to a missing dir", api.FetchRequest{Query: "app-misc/hello-1.0", Dir: filepath.Join(dir, "missing")}, api.CodeBadRequest, "no such file or directory"},
		{"to a file", api.FetchRequest{Query: "app-misc/hello-1.0", Dir: dst}, api.CodeBadRequest, "is not a directory"},
	} {
		err := c.Post(t.Context(), api.PathFetch, tc.req, &res)
		if api.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("fetch %s: %v (code %q), want %s %q", tc.what, err, api.CodeOf(err), tc.code, tc.msg)
		}
	}
	_, err = srv.Fetch(t.Context(), api.FetchRequest{Query: "app-misc/nope-1.0"})
	if !errors.Is(err, ErrNoMatch) {
		t.Errorf("Fetch of nothing: %v does not wrap ErrNoMatch", err)
	}
	wantError(t, "fetch with a bad body", do(h, "POST", api.PathFetch, "[]"), api.CodeBadRequest, "bad request body")
	wantError(t, "fetch by GET", do(h, "GET", api.PathFetch, ""), api.CodeNotFound, "no such endpoint: GET "+api.PathFetch)
}

// TestFetchProgress: a build only b holds comes as an ndjson stream of
// progress lines and the result; a failure before the stream is an
// ordinary typed error, and one without a reachable provider says so.
func TestFetchProgress(t *testing.T) {
	w := newWorld(t)
	srv := w.server(nil)
	h := srv.Handler()
	c := serve(t, srv)
	consumer := w.b.Local(t, "app-misc/consumer-1.0")
	dir := t.TempDir()

	var lines []api.FetchEvent
	err := c.PostStream(t.Context(), api.PathFetch, api.FetchRequest{Query: consumer.BuildKey, Dir: dir, Progress: true}, func(b []byte) error {
		var ev api.FetchEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			return err
		}
		lines = append(lines, ev)
		return ev.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || lines[0].Progress == nil || lines[1].Progress == nil || lines[2].Result == nil {
		t.Fatalf("stream: %+v", lines)
	}
	if p := *lines[0].Progress; p.Done != consumer.Size/2 || p.Total != consumer.Size || p.Peers != 1 {
		t.Errorf("first progress %+v", p)
	}
	if p := *lines[1].Progress; p.Done != consumer.Size {
		t.Errorf("last progress %+v", p)
	}
	r := lines[2].Result
	if r.Path != filepath.Join(dir, "consumer-1.0.xpak") || r.CPV != "app-misc/consumer-1.0" || r.Providers != 1 || r.Size != consumer.Size {
		t.Errorf("result %+v", r)
	}
	if got, _ := os.ReadFile(r.Path); !bytes.Equal(got, mustRead(t, consumer.Path)) {
		t.Error("fetched file differs from b's")
	}
	// Now in the cache: by CPV, no second transfer.
	var res api.FetchResult
	if err := c.Post(t.Context(), api.PathFetch, api.FetchRequest{Query: "app-misc/consumer-1.0"}, &res); err != nil || w.fetches.Load() != 1 {
		t.Errorf("second fetch: %+v %v, %d transfers", res, err, w.fetches.Load())
	}

	// Refused before any progress: the status and body of the error.
	rec := do(h, "POST", api.PathFetch, `{"query":"app-misc/layout-1.0-r1","progress":true}`)
	wantError(t, "progress fetch not allowed", rec, api.CodeNotAllowed, "not allowed")

	// libfoo is allowed (a heard b's vote) but b went away.
	w.b.Node.SetOnline(false)
	err = c.PostStream(t.Context(), api.PathFetch, api.FetchRequest{Query: "dev-libs/libfoo-2.1", Progress: true}, func([]byte) error { return nil })
	if !api.IsUnavailable(err) || !strings.Contains(err.Error(), "no reachable peer") {
		t.Errorf("fetch with no provider: %v (code %q)", err, api.CodeOf(err))
	}
	st := srv.Status(t.Context())
	if !strings.Contains(st.LastFetchError, "no reachable peer") || st.LastFetchErrorAt.IsZero() || st.BuildsFetched != 1 {
		t.Errorf("status after the failed fetch: %q at %v, %d fetched", st.LastFetchError, st.LastFetchErrorAt, st.BuildsFetched)
	}
}

// TestFetchStreamErrorAfterProgress: a failure after progress lines were
// sent ends the stream with an error line carrying its code.
func TestFetchStreamErrorAfterProgress(t *testing.T) {
	w := newWorld(t)
	w.dropAll = true
	srv := w.server(nil)
	consumer := w.b.Local(t, "app-misc/consumer-1.0")
	rec := do(srv.Handler(), "POST", api.PathFetch, fmt.Sprintf(`{"query":%q,"progress":true}`, consumer.BuildKey))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("answered %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var evs []api.FetchEvent
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		var ev api.FetchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 || evs[0].Progress == nil || evs[1].Progress == nil || evs[2].Result != nil {
		t.Fatalf("stream %+v", evs)
	}
	if err := evs[2].Err(); !api.IsUnavailable(err) || !strings.Contains(err.Error(), "no usable provider") {
		t.Errorf("last line: %v (code %q)", err, api.CodeOf(err))
	}
}

// unknownKey is a well-formed build key nobody attested.
func unknownKey(t *testing.T) string {
	mh, err := multihash.Sum([]byte("nobody built this"), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, mh).String()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExplainAndPolicy(t *testing.T) {
	w := newWorld(t)
	h := w.server(nil).Handler()
	hello := w.a.Local(t, "app-misc/hello-1.0")

	ex := decode[api.Explanation](t, do(h, "GET", api.PathTrustExplain+"?q=app-misc/hello-1.0", ""))
	if ex.Query != "app-misc/hello-1.0" || len(ex.Verdicts) != 1 || ex.Verdicts[0].Decision != trust.Allowed ||
		ex.Verdicts[0].BuildKey != keys.Build(hello.BuildKey) || !strings.Contains(ex.Text, hello.BuildKey) {
		t.Errorf("explain hello: %+v", ex)
	}
	ex = decode[api.Explanation](t, do(h, "GET", api.PathTrustExplain+"?q=app-misc/layout-1.0-r1", ""))
	if len(ex.Verdicts) != 1 || ex.Verdicts[0].Decision != trust.Disputed {
		t.Errorf("explain layout: %+v", ex)
	}
	// A build key with no votes is explained as such.
	ex = decode[api.Explanation](t, do(h, "GET", api.PathTrustExplain+"?q="+unknownKey(t), ""))
	if len(ex.Verdicts) != 1 || ex.Verdicts[0].Decision == trust.Allowed {
		t.Errorf("explain an unknown key: %+v", ex)
	}
	wantError(t, "explain of nothing", do(h, "GET", api.PathTrustExplain+"?q=app-misc/nope-1.0", ""), api.CodeNotFound, `nothing in the catalog matches "app-misc/nope-1.0"`)
	wantError(t, "explain with no query", do(h, "GET", api.PathTrustExplain, ""), api.CodeBadRequest, "empty query")

	p := decode[api.PolicyView](t, do(h, "GET", api.PathTrustPolicy, ""))
	pol := w.a.Book.Policy()
	if p.Threshold != trust.DefaultThreshold || p.Dispute != trust.DefaultDispute || p.RequireSigner || p.Self != w.a.ID.String() ||
		len(p.Signers) != 1 || p.Signers[0] != fmt.Sprintf("%x", pol.Signers[0]) ||
		len(p.TrustedPeers) != 1 || p.TrustedPeers[0] != w.trusted.String() || len(p.BlockedPeers) != 1 || len(p.PGPKeys) != 0 {
		t.Errorf("policy %+v", p)
	}
	wantOverrides := []string{"app-misc/hello-*: threshold=1", "app-misc/layout-*: threshold=1", "app-misc/consumer-*: threshold=1", "dev-libs/libfoo-*: threshold=1",
		"sys-apps/*: dispute=2 require_signer=true"}
	if fmt.Sprint(p.Overrides) != fmt.Sprint(wantOverrides) {
		t.Errorf("overrides %q, want %q", p.Overrides, wantOverrides)
	}
}

func TestEndorse(t *testing.T) {
	w := newWorld(t)
	srv := w.server(nil)
	c := serve(t, srv)
	hello := w.a.Local(t, "app-misc/hello-1.0")
	e, err := votes.EndorsePackage(jobtest.Identify(t, hello.Path).Pkg, w.signer)
	if err != nil {
		t.Fatal(err)
	}
	var res api.EndorseResult
	if err := c.Post(t.Context(), api.PathEndorse, api.EndorseRequest{Blob: e.Marshal()}, &res); err != nil || !res.Stored {
		t.Fatalf("endorse: %+v %v", res, err)
	}
	if err := c.Post(t.Context(), api.PathEndorse, api.EndorseRequest{Blob: e.Marshal()}, &res); err != nil || res.Stored {
		t.Errorf("endorse again: %+v %v, want not stored", res, err)
	}
	ends, _ := w.a.Store.EndorsementsFor(hello.BuildKey)
	if len(ends) != 1 {
		t.Errorf("%d endorsements stored", len(ends))
	}

	forged := e
	forged.Content.Image[0] ^= 1
	for what, blob := range map[string][]byte{
		"junk":            []byte("junk"),
		"bad signature":   forged.Marshal(),
		"empty":           nil,
		"bad build key":   votes.NewEndorsement("not-a-cid", testPlatform, e.Content, w.signer).Marshal(),
		"truncated magic": e.Marshal()[:3],
	} {
		err := c.Post(t.Context(), api.PathEndorse, api.EndorseRequest{Blob: blob}, &res)
		if !api.IsBadRequest(err) || !strings.HasPrefix(err.Error(), "endorse: ") {
			t.Errorf("endorse %s: %v (code %q)", what, err, api.CodeOf(err))
		}
	}
	wantError(t, "endorse with a bad body", do(srv.Handler(), "POST", api.PathEndorse, `{"blob":"%%%"}`), api.CodeBadRequest, "bad request body")

	// A valid endorsement the store cannot keep.
	w.a.Store.Close()
	_, err = srv.Endorse(t.Context(), api.EndorseRequest{Blob: e.Marshal()})
	if !api.IsInternal(err) {
		t.Errorf("endorse on a closed store: %v (code %q)", err, api.CodeOf(err))
	}
}

func TestGatewayAndUnknownEndpoint(t *testing.T) {
	w := newWorld(t)
	on := serve(t, w.server(gatewayOn))
	var info api.GatewayInfo
	if err := on.Get(t.Context(), api.PathGateway, nil, &info); err != nil || info.Fingerprint != "ABCD" {
		t.Errorf("gateway on: %+v %v", info, err)
	}

	off := serve(t, w.server(nil))
	err := off.Get(t.Context(), api.PathGateway, nil, &info)
	if !api.IsUnavailable(err) || !strings.Contains(err.Error(), "gateway is disabled") {
		t.Errorf("gateway off: %v (code %q)", err, api.CodeOf(err))
	}
	_, err = w.server(nil).GatewayInfo()
	if !errors.Is(err, ErrGatewayDisabled) {
		t.Errorf("GatewayInfo: %v does not wrap ErrGatewayDisabled", err)
	}

	broken := w.server(func() (api.GatewayInfo, error) { return api.GatewayInfo{}, errors.New("no signing key") })
	wantError(t, "gateway failing", do(broken.Handler(), "GET", api.PathGateway, ""), api.CodeInternal, "no signing key")

	err = off.Get(t.Context(), "/api/v0/nope", nil, nil)
	if !api.IsNotFound(err) || err.Error() != "no such endpoint: GET /api/v0/nope" {
		t.Errorf("unknown endpoint: %v (code %q)", err, api.CodeOf(err))
	}
	wantError(t, "unknown endpoint", do(broken.Handler(), "DELETE", api.PathStatus, ""), api.CodeNotFound, "no such endpoint: DELETE")
}

// TestClassify covers the codes shared by every endpoint.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code api.Code
	}{
		{fmt.Errorf("x: %w", context.DeadlineExceeded), api.CodeUnavailable},
		{fmt.Errorf("x: %w", materialize.ErrNotAllowed), api.CodeNotAllowed},
		{fmt.Errorf("x: %w", store.ErrCorrupt), api.CodeInternal},
		{fmt.Errorf("x: %w", transfer.ErrDiskWrite), api.CodeInternal},
		{errors.New("anything"), api.CodeRejected},
		{api.Errorf(api.CodeNotFound, "kept"), api.CodeNotFound},
	} {
		if got := api.CodeOf(classify(tc.err, api.CodeRejected)); got != tc.code {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.code)
		}
	}
	if classify(nil, api.CodeInternal) != nil {
		t.Error("classify(nil) is not nil")
	}
}

// TestPeersAdd: `peers add` dials through the network and answers a bad
// address as bad_request, a failed dial as unavailable.
func TestPeersAdd(t *testing.T) {
	w := newWorld(t)
	h := w.server(nil).Handler()
	addr := w.c.Node.Addrs()[0].String() + "/p2p/" + w.c.ID.String()
	res := decode[api.PeersAddResult](t, do(h, "POST", api.PathPeersAdd, `{"addr":"`+addr+`"}`))
	if res.ID != w.c.ID.String() || len(res.Addrs) != 1 || res.Addrs[0] != w.c.Node.Addrs()[0].String() {
		t.Errorf("peers add: %+v", res)
	}
	if got := w.a.Node.KnownAddrs(w.c.ID); len(got) != 1 || got[0].String() != res.Addrs[0] {
		t.Errorf("address not remembered: %v", got)
	}
	for _, tc := range []struct{ body, part string }{
		{`{"addr":""}`, "/p2p/ID"},
		{`{"addr":"nonsense"}`, "not a multiaddr"},
		{`{"addr":"/ip4/127.0.0.1/tcp/4001"}`, "/p2p/ID"},
		{`{"addr":"/ip4/127.0.0.1/tcp/4001/p2p/` + w.a.ID.String() + `"}`, "this daemon"},
		{`{"address":"x"}`, "bad request body"},
	} {
		wantError(t, tc.body, do(h, "POST", api.PathPeersAdd, tc.body), api.CodeBadRequest, tc.part)
	}
	_, stranger := jobtest.NewKey(t)
	wantError(t, "stranger", do(h, "POST", api.PathPeersAdd, `{"addr":"/ip4/127.0.0.9/tcp/4001/p2p/`+stranger.String()+`"}`),
		api.CodeUnavailable, "peers add")

	// Through the socket, as the CLI sends it.
	c := serve(t, w.server(nil))
	var out api.PeersAddResult
	if err := c.Post(context.Background(), api.PathPeersAdd, api.PeersAddRequest{Addr: addr}, &out); err != nil || out.ID != w.c.ID.String() {
		t.Errorf("peers add over the socket: %+v, %v", out, err)
	}
	w.c.Node.SetOnline(false)
	err := c.Post(context.Background(), api.PathPeersAdd, api.PeersAddRequest{Addr: addr}, &out)
	if api.CodeOf(err) != api.CodeUnavailable {
		t.Errorf("peers add to an offline peer: %v, want unavailable", err)
	}
}

// A rebuild that disagrees with a's layout (c's trojaned pkg_postinst) is
// compared by a's materializer and shown by trust explain: both contents
// and attesters, what differs in the image and the metadata, and what it
// means; status counts it.
func TestExplainRebuildDisagrees(t *testing.T) {
	w := newWorld(t)
	h := w.server(nil).Handler()
	layout := w.a.Local(t, "app-misc/layout-1.0-r1")
	if n, err := w.a.mz.CheckDisagreements(t.Context()); err != nil || n != 1 {
		t.Fatalf("CheckDisagreements: %d reports, %v; want 1", n, err)
	}
	ex := decode[api.Explanation](t, do(h, "GET", api.PathTrustExplain+"?q=app-misc/layout-1.0-r1", ""))
	if len(ex.Disagreements) != 1 {
		t.Fatalf("explain layout: %d reports\n%s", len(ex.Disagreements), ex.Text)
	}
	d := ex.Disagreements[0]
	own := trust.ContentID{Image: layout.ImageDigest, Metadata: layout.MetadataDigest}
	if d.BuildKey != keys.Build(layout.BuildKey) || d.Own != own || d.Other == own ||
		len(d.OtherAttesters) != 1 || d.OtherAttesters[0] != w.c.ID || d.OwnAttesters[0] != w.a.ID {
		t.Errorf("report %+v", d)
	}
	for _, want := range []string{
		"rebuild disagrees: content " + d.Other.String() + " by " + w.c.ID.String(),
		"this node built " + own.String(),
		"image: the same entries",
		"metadata: function pkg_postinst added, key DEFINED_PHASES differs",
		"a non-reproducible package or a backdoor; it is not allowed while disputed",
	} {
		if !strings.Contains(ex.Text, want) {
			t.Errorf("explain text lacks %q:\n%s", want, ex.Text)
		}
	}
	// hello has no report.
	if ex := decode[api.Explanation](t, do(h, "GET", api.PathTrustExplain+"?q=app-misc/hello-1.0", "")); len(ex.Disagreements) != 0 || strings.Contains(ex.Text, "rebuild disagrees") {
		t.Errorf("explain hello: %+v", ex.Disagreements)
	}
	st := decode[api.Status](t, do(h, "GET", api.PathStatus, ""))
	if st.RebuildDisagreements != 1 {
		t.Errorf("status counts %d rebuild disagreements", st.RebuildDisagreements)
	}
}
