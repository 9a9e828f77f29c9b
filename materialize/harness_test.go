package materialize

import (
	"context"
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
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// world is an in-memory network with one daemon under test (self) and
// remote peers that serve attestations; fetch is the transfer every
// Materializer of the world uses.
type world struct {
	t     *testing.T
	net   *memnet.Network
	fetch *jobtest.FakeFetch
	// The fixture files: hello and layout of two independent builds, and
	// the trojaned layout (same build key, other content).
	hello1, hello2, layout1, layout2, evil jobtest.Binpkg
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, net: memnet.New(), fetch: jobtest.NewFakeFetch()}
	fx := loadFixtures(t)
	w.hello1, w.layout1, w.hello2, w.layout2, w.evil = fx.hello1, fx.layout1, fx.hello2, fx.layout2, fx.evil
	return w
}

// fixtureSet is the fixture files, identified once for all tests (reading
// them is most of a test's work); tests only read them.
type fixtureSet struct {
	hello1, hello2, layout1, layout2, evil jobtest.Binpkg
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
			set1, set2 := jobtest.WriteSet(t, fixtures.ReproGPKG1, d1), jobtest.WriteSet(t, fixtures.ReproGPKG2, d2)
			fx.hello1 = jobtest.Identify(t, set1[jobtest.HelloFile])
			fx.layout1 = jobtest.Identify(t, set1[jobtest.LayoutFile])
			fx.hello2 = jobtest.Identify(t, set2[jobtest.HelloFile])
			fx.layout2 = jobtest.Identify(t, set2[jobtest.LayoutFile])
			fx.evil = jobtest.Identify(t, jobtest.WriteSet(t, fixtures.Backdoored, d3)[jobtest.LayoutFile])
			if fx.hello1.Local.BuildKey != fx.hello2.Local.BuildKey || fx.hello1.Content() != fx.hello2.Content() || fx.hello1.Local.FileSHA256 == fx.hello2.Local.FileSHA256 {
				t.Fatal("fixtures: the two hello builds should be two files of one build and content")
			}
			if fx.evil.Local.BuildKey != fx.layout1.Local.BuildKey || fx.evil.Content() == fx.layout1.Content() {
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
	Key  crypto.PrivKey
	ID   peer.ID
	Node *memnet.Node

	mu    sync.Mutex
	blobs [][]byte // served for any key they name
}

func (w *world) remote() *remote {
	w.t.Helper()
	key, id := jobtest.NewKey(w.t)
	r := &remote{w: w, Key: key, ID: id, Node: w.net.Join(id)}
	r.Node.Serve(p2p.Handlers{Attestations: r.serve})
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
		if err == nil && (s.Attestation.BuildKey == keys.BuildFromCID(key) || s.Attestation.VariantKey == keys.VariantFromCID(key)) {
			out = append(out, b)
		}
	}
	return out, nil
}

// builds makes r an honest builder of b: it attests b (signed at), provides
// its keys, and serves the file.
func (r *remote) builds(b jobtest.Binpkg, at time.Time) *trust.Signed {
	r.w.t.Helper()
	s := jobtest.Attest(r.w.t, r.Key, b, at)
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
func (r *remote) provides(b jobtest.Binpkg) {
	r.w.t.Helper()
	if err := r.Node.Provide(jobtest.CID(r.w.t, b.Local.BuildKey), jobtest.CID(r.w.t, b.Local.VariantKey)); err != nil {
		r.w.t.Fatal(err)
	}
}

// holds makes the fake transfer serve b's file from r.
func (r *remote) holds(b jobtest.Binpkg) { r.w.fetch.Hold(r.ID, b.Data) }

// self is the daemon under test.
type self struct {
	*jobtest.Peer
	w      *world
	mz     *Materializer
	pkgdir string
}

type selfOpts struct {
	mode       config.Mode
	threshold  int
	budget     int64
	platform   string
	policyHook func(*trust.Policy)
	// downloadRate is Options.DownloadRate; seenOpts, when set, gets the
	// FetchOptions of every transfer before the fake runs it.
	downloadRate int64
	seenOpts     func(transfer.FetchOptions)
}

func (w *world) self(o selfOpts) *self {
	w.t.Helper()
	if o.mode == "" {
		o.mode = config.ModeShare
	}
	if o.threshold == 0 {
		o.threshold = 2
	}
	if o.platform == "" {
		o.platform = w.hello1.Local.Platform
	}
	pol := jobtest.LabPolicy()
	pol.Threshold = o.threshold
	if o.policyHook != nil {
		o.policyHook(&pol)
	}
	s := &self{Peer: jobtest.NewPeer(w.t, w.net, jobtest.WithPolicy(pol), jobtest.WithPlatform(o.platform)), w: w, pkgdir: w.t.TempDir()}
	fetch := w.fetch.Fetch
	if o.seenOpts != nil {
		fetch = func(ctx context.Context, want transfer.Want, peers []peer.AddrInfo, fo transfer.FetchOptions) (transfer.Result, error) {
			o.seenOpts(fo)
			return w.fetch.Fetch(ctx, want, peers, fo)
		}
	}
	s.mz = New(Options{
		Store: s.Store, Votes: s.Book, Net: s.Node, Fetch: fetch, Self: s.ID,
		Platform: o.platform, Mode: o.mode, DiskBudget: o.budget, Files: xpak.DefaultLimits(),
		DownloadRate: o.downloadRate,
	})
	return s
}

// learn ingests attestations as if their attesters had sent them.
func (s *self) learn(atts ...*trust.Signed) {
	s.w.t.Helper()
	for _, a := range atts {
		if _, err := s.Book.IngestFrom(context.Background(), a.Marshal(), a.Attester); err != nil {
			s.w.t.Fatalf("ingest attestation of %s: %v", a.Attester, err)
		}
	}
}

// local puts b into PKGDIR as an own build.
func (s *self) local(b jobtest.Binpkg) string {
	s.w.t.Helper()
	path := filepath.Join(s.pkgdir, filepath.Base(b.Local.Path))
	if err := os.WriteFile(path, b.Data, 0o644); err != nil {
		s.w.t.Fatal(err)
	}
	lp := b.Local
	lp.Path = path
	if err := s.Store.PutLocal(lp); err != nil {
		s.w.t.Fatal(err)
	}
	return path
}

// cache commits b's file into the content cache with its content
// recorded, as a fetch does.
func (s *self) cache(b jobtest.Binpkg) store.CacheEntry {
	s.w.t.Helper()
	return s.cacheWith(b, true)
}

// cacheWith commits b's file into the content cache, with its content
// recorded or, as in entries made before it was, not.
func (s *self) cacheWith(b jobtest.Binpkg, record bool) store.CacheEntry {
	s.w.t.Helper()
	f, err := s.Store.Cache().CreateTemp()
	if err != nil {
		s.w.t.Fatal(err)
	}
	if _, err := f.Write(b.Data); err != nil {
		s.w.t.Fatal(err)
	}
	f.Close()
	meta := store.CacheMeta{CPV: b.Local.CPV, BuildKey: b.Local.BuildKey}
	if record {
		meta.ImageDigest, meta.MetadataDigest = b.Local.ImageDigest, b.Local.MetadataDigest
	}
	e, err := s.Store.Cache().Commit(f.Name(), b.Local.FileSHA256, meta)
	if err != nil {
		s.w.t.Fatal(err)
	}
	return e
}

func (s *self) cached(b jobtest.Binpkg) bool {
	s.w.t.Helper()
	ok, err := s.Store.Cache().Has(b.Local.FileSHA256)
	if err != nil {
		s.w.t.Fatal(err)
	}
	return ok
}

// providing reports whether self announces b's build and variant keys.
func (s *self) providing(b jobtest.Binpkg) (build, variant bool) {
	return s.Providing(s.w.t, b.Local.BuildKey), s.Providing(s.w.t, b.Local.VariantKey)
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
