package materialize

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Names of the fixture files used here.
const (
	hello  = "app-misc/hello-1.0.gpkg.tar"
	layout = "app-misc/layout-1.0-r1.gpkg.tar"
)

// binpkg is one real fixture binpkg on disk with its identities, as
// own.identify computes them.
type binpkg struct {
	lp    store.LocalPackage
	data  []byte
	desc  json.RawMessage
	index map[string]string
}

func (b binpkg) content() trust.ContentID {
	return trust.ContentID{Image: b.lp.ImageDigest, Metadata: b.lp.MetadataDigest}
}

// readPkg writes the fixture set into dir (a PKGDIR) and identifies name.
func readPkg(t testing.TB, set, dir, name string) binpkg {
	t.Helper()
	if _, err := fixtures.WritePKGDIR(set, dir); err != nil {
		t.Fatal(err)
	}
	return identify(t, filepath.Join(dir, name))
}

// identify mirrors own.identify: the file's identities and piece layer.
func identify(t testing.TB, path string) binpkg {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	leaves, size, err := pieces.Layer(bytes.NewReader(data))
	if err != nil || size != pkg.Size {
		t.Fatalf("piece layer of %s: %v (size %d, want %d)", path, err, size, pkg.Size)
	}
	descJSON, err := json.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	index := map[string]string{}
	for _, k := range votes.IndexKeys() {
		if v := strings.Join(strings.Fields(pkg.Metadata.Get(k)), " "); v != "" {
			index[k] = v
		}
	}
	buildID, _ := pkg.Metadata.BuildID()
	return binpkg{
		lp: store.LocalPackage{
			Path: path, Size: pkg.Size, FileSHA256: pkg.FileSHA256, Format: string(pkg.Format),
			CPV: pkg.Metadata.CPV(), BuildID: buildID,
			BuildKey: desc.BuildKey().String(), VariantKey: desc.VariantKey().String(),
			ImageDigest: pkg.ImageDigest, MetadataDigest: md,
			PieceRoot: pieces.RootOf(leaves), Platform: desc.Platform(),
			IndexedAt: time.Now().UTC(), Extra: json.RawMessage(`{}`),
		},
		data: data, desc: descJSON, index: index,
	}
}

// attest signs, as a builder of b, an attestation of b's file and content.
func attest(t testing.TB, key crypto.PrivKey, b binpkg, at time.Time) *trust.Signed {
	t.Helper()
	return attestFile(t, key, b, b, at)
}

// attestFile signs an attestation that claims claim's build and content
// but names file's container (SHA-256, size, piece root): what an attacker
// signs to get its own file fetched under an honest content id.
func attestFile(t testing.TB, key crypto.PrivKey, claim, file binpkg, at time.Time) *trust.Signed {
	t.Helper()
	lp := claim.lp
	s, err := trust.Sign(trust.Attestation{
		Version: trust.AttestationVersion, BuildKey: lp.BuildKey, VariantKey: lp.VariantKey,
		CPV: lp.CPV, Platform: lp.Platform, Descriptor: claim.desc, Index: claim.index,
		Content:    claim.content(),
		FileSHA256: file.lp.FileSHA256, Size: file.lp.Size, PieceRoot: file.lp.PieceRoot,
		PieceSize: pieces.Size, Format: lp.Format, Time: at,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCID(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// world is an in-memory network with one daemon under test (self) and
// remote peers that serve attestations; fetch is the transfer every
// Materializer of the world uses.
type world struct {
	t     *testing.T
	net   *memnet.Network
	fetch *fakeFetch
	// The fixture files: hello and layout of two independent builds, and
	// the trojaned layout (same build key, other content).
	hello1, hello2, layout1, layout2, evil binpkg
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, net: memnet.New(), fetch: newFakeFetch()}
	fx := loadFixtures(t)
	w.hello1, w.layout1, w.hello2, w.layout2, w.evil = fx.hello1, fx.layout1, fx.hello2, fx.layout2, fx.evil
	return w
}

// fixtureSet is the fixture files, identified once for all tests (reading
// them is most of a test's work); tests only read them.
type fixtureSet struct {
	hello1, hello2, layout1, layout2, evil binpkg
}

var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureErr  error
	fixtureData fixtureSet
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

func loadFixtures(t *testing.T) fixtureSet {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtureDir, fixtureErr = os.MkdirTemp("", "materialize-fixtures-")
		if fixtureErr != nil {
			return
		}
		var fx fixtureSet
		ok := t.Run("fixtures", func(t *testing.T) {
			d1, d2, d3 := filepath.Join(fixtureDir, "1"), filepath.Join(fixtureDir, "2"), filepath.Join(fixtureDir, "evil")
			fx.hello1 = readPkg(t, fixtures.ReproGPKG1, d1, hello)
			fx.layout1 = identify(t, filepath.Join(d1, layout))
			fx.hello2 = readPkg(t, fixtures.ReproGPKG2, d2, hello)
			fx.layout2 = identify(t, filepath.Join(d2, layout))
			fx.evil = readPkg(t, fixtures.Backdoored, d3, layout)
			if fx.hello1.lp.BuildKey != fx.hello2.lp.BuildKey || fx.hello1.content() != fx.hello2.content() || fx.hello1.lp.FileSHA256 == fx.hello2.lp.FileSHA256 {
				t.Fatal("fixtures: the two hello builds should be two files of one build and content")
			}
			if fx.evil.lp.BuildKey != fx.layout1.lp.BuildKey || fx.evil.content() == fx.layout1.content() {
				t.Fatal("fixtures: the backdoored layout should claim layout's build key with another content")
			}
		})
		if !ok {
			fixtureErr = fmt.Errorf("reading the fixtures failed")
		}
		fixtureData = fx
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureData
}

// remote is a peer that answers attest/1 with its attestations and holds
// files in the fake transfer.
type remote struct {
	w    *world
	key  crypto.PrivKey
	id   peer.ID
	node *memnet.Node

	mu    sync.Mutex
	blobs [][]byte // served for any key they name
}

func (w *world) remote() *remote {
	w.t.Helper()
	key, err := hostile.Identity()
	if err != nil {
		w.t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		w.t.Fatal(err)
	}
	r := &remote{w: w, key: key, id: id, node: w.net.Join(id)}
	r.node.Serve(p2p.Handlers{Attestations: r.serve})
	return r
}

// serve answers attest/1: the blobs naming key as build or variant key
// (endorsements are served with any key).
func (r *remote) serve(_ context.Context, key cid.Cid) ([][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, b := range r.blobs {
		if votes.IsEndorsement(b) {
			out = append(out, b)
			continue
		}
		s, err := trust.Decode(b)
		if err == nil && (s.Attestation.BuildKey == key.String() || s.Attestation.VariantKey == key.String()) {
			out = append(out, b)
		}
	}
	return out, nil
}

// builds makes r an honest builder of b: it attests b (signed at), provides
// its keys, and serves the file.
func (r *remote) builds(b binpkg, at time.Time) *trust.Signed {
	r.w.t.Helper()
	s := attest(r.w.t, r.key, b, at)
	r.says(s.Marshal())
	r.provides(b)
	r.holds(b)
	return s
}

// says adds blobs r serves.
func (r *remote) says(blobs ...[]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs = append(r.blobs, blobs...)
}

// provides announces b's build and variant key.
func (r *remote) provides(b binpkg) {
	r.w.t.Helper()
	if err := r.node.Provide(mustCID(r.w.t, b.lp.BuildKey), mustCID(r.w.t, b.lp.VariantKey)); err != nil {
		r.w.t.Fatal(err)
	}
}

// holds makes the fake transfer serve b's file from r.
func (r *remote) holds(b binpkg) { r.w.fetch.hold(r.id, b.data) }

// self is the daemon under test.
type self struct {
	w      *world
	key    crypto.PrivKey
	id     peer.ID
	node   *memnet.Node
	st     *store.Store
	book   *votes.Book
	mz     *Materializer
	pkgdir string
}

type selfOpts struct {
	mode       config.Mode
	threshold  int
	budget     int64
	platform   string
	policyHook func(*trust.Policy)
}

func (w *world) self(o selfOpts) *self {
	w.t.Helper()
	key, err := hostile.Identity()
	if err != nil {
		w.t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		w.t.Fatal(err)
	}
	st, err := store.Open(w.t.TempDir(), store.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { st.Close() })
	if o.mode == "" {
		o.mode = config.ModeShare
	}
	if o.threshold == 0 {
		o.threshold = 2
	}
	if o.platform == "" {
		o.platform = w.hello1.lp.Platform
	}
	pol := trust.DefaultPolicy()
	pol.Threshold = o.threshold
	if o.policyHook != nil {
		o.policyHook(&pol)
	}
	s := &self{w: w, key: key, id: id, node: w.net.Join(id), st: st, pkgdir: w.t.TempDir()}
	s.book = votes.New(votes.Options{
		Store: st, Policy: pol, Self: id, Platform: o.platform,
		Limits: config.Defaults().Limits, Files: xpak.DefaultLimits(), Net: s.node,
	})
	s.node.Serve(p2p.Handlers{Attestations: s.book.ServeAttestations})
	s.mz = New(Options{
		Store: st, Votes: s.book, Net: s.node, Fetch: w.fetch.fetch, Self: id,
		Platform: o.platform, Mode: o.mode, DiskBudget: o.budget, Files: xpak.DefaultLimits(),
	})
	return s
}

// learn ingests attestations as if their attesters had sent them.
func (s *self) learn(atts ...*trust.Signed) {
	s.w.t.Helper()
	for _, a := range atts {
		if _, err := s.book.IngestFrom(context.Background(), a.Marshal(), a.Attester); err != nil {
			s.w.t.Fatalf("ingest attestation of %s: %v", a.Attester, err)
		}
	}
}

// local puts b into PKGDIR as an own build.
func (s *self) local(b binpkg) string {
	s.w.t.Helper()
	path := filepath.Join(s.pkgdir, filepath.Base(b.lp.Path))
	if err := os.WriteFile(path, b.data, 0o644); err != nil {
		s.w.t.Fatal(err)
	}
	lp := b.lp
	lp.Path = path
	if err := s.st.PutLocal(lp); err != nil {
		s.w.t.Fatal(err)
	}
	return path
}

// cache commits b's file into the content cache.
func (s *self) cache(b binpkg) store.CacheEntry {
	s.w.t.Helper()
	f, err := s.st.Cache().CreateTemp()
	if err != nil {
		s.w.t.Fatal(err)
	}
	if _, err := f.Write(b.data); err != nil {
		s.w.t.Fatal(err)
	}
	f.Close()
	e, err := s.st.Cache().Commit(f.Name(), b.lp.FileSHA256, store.CacheMeta{CPV: b.lp.CPV, BuildKey: b.lp.BuildKey})
	if err != nil {
		s.w.t.Fatal(err)
	}
	return e
}

func (s *self) cached(b binpkg) bool {
	s.w.t.Helper()
	ok, err := s.st.Cache().Has(b.lp.FileSHA256)
	if err != nil {
		s.w.t.Fatal(err)
	}
	return ok
}

// providing reports whether self announces b's build and variant keys.
func (s *self) providing(b binpkg) (build, variant bool) {
	return s.node.Providing(mustCID(s.w.t, b.lp.BuildKey)), s.node.Providing(mustCID(s.w.t, b.lp.VariantKey))
}

// fakeFetch stands in for transfer.Fetch: it "downloads" a file by its
// SHA-256 from the first listed peer that holds it, honouring Fetch's
// contract: a part file in opts.Dir, opts.Verify on the complete part
// file (ErrVerify, file deleted, on refusal), a rename to opts.Path or
// Dir/<sha hex>, NotHeld for providers without the file, BadPeers for one
// sending other bytes, ErrNoProviders when none delivered.
type fakeFetch struct {
	mu    sync.Mutex
	held  map[peer.ID]map[[32]byte][]byte
	calls int
	wants [][32]byte
	peers [][]peer.ID
	// fail, when set, is returned by the next calls instead of fetching
	// (after removing the part file, as Fetch does on ErrDiskWrite).
	fail error
	// gate, when set, blocks each call (after started is signalled) until
	// it is closed or the call's context ends.
	gate    chan struct{}
	started chan context.Context
}

func newFakeFetch() *fakeFetch {
	return &fakeFetch{held: map[peer.ID]map[[32]byte][]byte{}}
}

func (f *fakeFetch) hold(p peer.ID, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held[p] == nil {
		f.held[p] = map[[32]byte][]byte{}
	}
	f.held[p][sha256.Sum256(data)] = data
}

// holdAs makes p serve data under sha whatever data hashes to: a peer
// sending other bytes than the file asked for.
func (f *fakeFetch) holdAs(p peer.ID, sha [32]byte, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held[p] == nil {
		f.held[p] = map[[32]byte][]byte{}
	}
	f.held[p][sha] = data
}

func (f *fakeFetch) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeFetch) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeFetch) fetch(ctx context.Context, want transfer.Want, providers []peer.AddrInfo, opts transfer.FetchOptions) (transfer.Result, error) {
	f.mu.Lock()
	f.calls++
	f.wants = append(f.wants, want.SHA256)
	var ids []peer.ID
	for _, p := range providers {
		ids = append(ids, p.ID)
	}
	f.peers = append(f.peers, ids)
	gate, started, fail := f.gate, f.started, f.fail
	f.mu.Unlock()
	start := time.Now()
	res := transfer.Result{Size: want.Size, Pieces: pieces.Count(want.Size), PeerPieces: map[peer.ID]int{}}
	defer func() { res.Duration = time.Since(start) }()
	if opts.Dir == "" || want.PieceSize != pieces.Size || want.Size <= 0 {
		return res, fmt.Errorf("%w: dir %q, piece size %d, size %d", transfer.ErrWant, opts.Dir, want.PieceSize, want.Size)
	}
	if started != nil {
		started <- ctx
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	name := hex.EncodeToString(want.SHA256[:])
	part := filepath.Join(opts.Dir, name+".part")
	if fail != nil {
		os.Remove(part)
		return res, fail
	}
	if opts.Path == "" {
		opts.Path = filepath.Join(opts.Dir, name)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return res, err
	}
	for _, p := range providers {
		f.mu.Lock()
		data, ok := f.held[p.ID][want.SHA256]
		f.mu.Unlock()
		if !ok {
			res.NotHeld = append(res.NotHeld, p.ID)
			continue
		}
		leaves, size, _ := pieces.Layer(bytes.NewReader(data))
		res.BytesFetched += size
		if size != want.Size || pieces.RootOf(leaves) != want.PieceRoot {
			res.BadPeers = append(res.BadPeers, transfer.PeerFault{Peer: p.ID, Kind: transfer.FaultBadLayer, Err: pieces.ErrLayerMismatch})
			continue
		}
		if err := os.WriteFile(part, data, 0o644); err != nil {
			return res, fmt.Errorf("%w: %v", transfer.ErrDiskWrite, err)
		}
		res.PeerPieces[p.ID] = len(leaves)
		res.PiecesFetched = len(leaves)
		res.Leaves = leaves
		if opts.Progress != nil {
			opts.Progress(transfer.Progress{Done: size, Total: size, Peers: 1})
		}
		if sha256.Sum256(data) != want.SHA256 {
			os.Remove(part)
			return res, transfer.ErrHashMismatch
		}
		if opts.Verify != nil {
			if err := opts.Verify(part); err != nil {
				os.Remove(part)
				return res, fmt.Errorf("%w: %w", transfer.ErrVerify, err)
			}
		}
		if err := os.Rename(part, opts.Path); err != nil {
			return res, err
		}
		res.Path = opts.Path
		return res, nil
	}
	return res, transfer.ErrNoProviders
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitingCallers counts goroutines blocked in Materialize's select: the
// callers waiting for a transfer another caller started.
func waitingCallers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		if !strings.Contains(lines[0], "[select") {
			continue
		}
		// The first frame outside the runtime (frames alternate with
		// their file:line lines).
		for i := 1; i < len(lines); i += 2 {
			if strings.HasPrefix(lines[i], "runtime.") {
				continue
			}
			if strings.Contains(lines[i], "(*Materializer).Materialize(") {
				n++
			}
			break
		}
	}
	return n
}
