package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// newHost starts a real libp2p host on 127.0.0.1 (TCP + TLS + yamux, no
// mDNS), closed at test end.
func newHost(tb testing.TB) host.Host {
	tb.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Security(tls.ID, tls.New),
		libp2p.DisableRelay(),
	)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

func addrInfo(h host.Host) peer.AddrInfo {
	return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
}

// testFile is deterministic content with its Want.
type testFile struct {
	data   []byte
	leaves [][32]byte
	want   Want
}

func makeFile(tb testing.TB, size int, seed uint64) *testFile {
	tb.Helper()
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(data)
	leaves, _, err := pieces.Layer(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	return &testFile{data: data, leaves: leaves, want: Want{
		SHA256:    sha256.Sum256(data),
		Size:      int64(size),
		PieceRoot: pieces.RootOf(leaves),
		PieceSize: pieces.Size,
	}}
}

// memSource serves test files from memory and counts what it reads.
// Hooks let a test corrupt, gate, stall or watch reads.
type memSource struct {
	mu         sync.Mutex
	files      map[[32]byte]*testFile
	opens      int
	reads      int
	pieceBytes map[int]int64 // bytes read per piece index

	leavesFor  func(f *testFile) [][32]byte // optional: lie about the layer
	beforeRead func(off int64, n int)       // optional: called before every ReadAt
	mutate     func(p []byte, off int64)    // optional: corrupt what is read
}

func newMemSource(files ...*testFile) *memSource {
	s := &memSource{files: map[[32]byte]*testFile{}, pieceBytes: map[int]int64{}}
	for _, f := range files {
		s.files[f.want.SHA256] = f
	}
	return s
}

func (s *memSource) Open(sha [32]byte) (File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens++
	f, ok := s.files[sha]
	if !ok {
		return nil, ErrNotFound
	}
	leaves := f.leaves
	if s.leavesFor != nil {
		leaves = s.leavesFor(f)
	}
	return &memFile{src: s, f: f, leaves: leaves}, nil
}

func (s *memSource) readCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

func (s *memSource) bytesOfPiece(i int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pieceBytes[i]
}

type memFile struct {
	src    *memSource
	f      *testFile
	leaves [][32]byte
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if m.src.beforeRead != nil {
		m.src.beforeRead(off, len(p))
	}
	n, err := bytes.NewReader(m.f.data).ReadAt(p, off)
	if m.src.mutate != nil {
		m.src.mutate(p[:n], off)
	}
	m.src.mu.Lock()
	m.src.reads++
	for o := off; o < off+int64(n); {
		i := int(o / pieces.Size)
		end := min(int64(i+1)*pieces.Size, off+int64(n))
		m.src.pieceBytes[i] += end - o
		o = end
	}
	m.src.mu.Unlock()
	return n, err
}
func (m *memFile) Size() int64        { return int64(len(m.f.data)) }
func (m *memFile) Leaves() [][32]byte { return m.leaves }
func (m *memFile) Close() error       { return nil }

// provider is a host serving a source.
type provider struct {
	h   host.Host
	src *memSource
	srv *Server
}

func newProvider(tb testing.TB, src *memSource, opts ServerOptions) *provider {
	tb.Helper()
	h := newHost(tb)
	srv := NewServer(h, src, opts)
	tb.Cleanup(func() { srv.Close() })
	return &provider{h: h, src: src, srv: srv}
}

// gate blocks callers until opened (or a bounded time passes, so a broken
// test fails instead of hanging).
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *gate) wait() {
	select {
	case <-g.ch:
	case <-time.After(30 * time.Second):
	}
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func faultOf(res Result, p peer.ID) (PeerFault, bool) {
	for _, f := range res.BadPeers {
		if f.Peer == p {
			return f, true
		}
	}
	return PeerFault{}, false
}

// dropLogger returns a logger that opens g when the fetcher logs that it
// drops a provider (or learns that one does not hold the file), so a test
// can hold honest providers back until the misbehaving one has been dealt
// with.
func dropLogger(g *gate) *slog.Logger {
	return slog.New(&signalHandler{g: g})
}

type signalHandler struct{ g *gate }

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "dropping provider" || r.Message == "provider does not hold the file" {
		h.g.open()
	}
	return nil
}
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *signalHandler) WithGroup(string) slog.Handler      { return h }

var errTest = errors.New("test hook refused")

// slotState reports slots held, peers queued and requests admitted.
func (s *Server) slotState() (holders, queued, active int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.peers {
		active += sp.active
	}
	return len(s.holders), len(s.queue), active
}
