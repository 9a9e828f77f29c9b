package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// ServerOptions configure what a node gives away. The zero value is consume
// mode: Enabled is false and the server refuses every request.
type ServerOptions struct {
	// Enabled turns serving on; false is consume mode, where every request
	// gets a "disabled" error frame so fetchers move on at once.
	Enabled bool
	// UploadSlots is how many peers are served at once (default 8); more
	// get a "busy" frame.
	UploadSlots int
	// MaxRequestsPerPeer caps concurrent requests (streams) from one peer
	// (default 8), so one greedy fetcher cannot take every slot's worth.
	MaxRequestsPerPeer int
	// GlobalRate caps upload over all peers in bytes per second; 0 is
	// unlimited.
	GlobalRate int64
	// PerPeerRate caps upload to one peer in bytes per second; 0 is
	// unlimited.
	PerPeerRate int64
	// RequestTimeout bounds reading a request (default 10s).
	RequestTimeout time.Duration
	// WriteTimeout bounds each write of at most one chunk to a fetcher
	// (default 30s): a fetcher that stops reading loses its slot.
	WriteTimeout time.Duration
	// Metrics records served bytes and refusals; nil records nothing.
	Metrics *Metrics
	// Logger receives per-request failures at debug level; nil discards.
	Logger *slog.Logger
}

// Server answers /gentoo-p2p/fetch/1 requests from a Source.
type Server struct {
	h    host.Host
	src  Source
	opts ServerOptions
	log  *slog.Logger

	enabled  atomic.Bool
	global   *rate.Limiter // nil when unlimited
	warnings *rate.Limiter // paces warnings a peer can trigger per request

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	peers   map[peer.ID]*servedPeer
	streams map[network.Stream]struct{}
}

// servedPeer is the server's state for one fetching peer. It outlives the
// peer's requests by peerIdleTTL so a peer cannot reset its rate bucket by
// making requests one at a time.
type servedPeer struct {
	active    int
	limiter   *rate.Limiter // nil when unlimited
	idleSince time.Time
}

const peerIdleTTL = time.Minute

// maxChunk is the largest single write; rate buckets hold at least one chunk.
const maxChunk = 1 << 20

var chunkPool = sync.Pool{New: func() any { b := make([]byte, maxChunk); return &b }}

// NewServer registers the fetch protocol handler on h and serves files from
// src. Close unregisters it.
func NewServer(h host.Host, src Source, opts ServerOptions) *Server {
	if opts.UploadSlots <= 0 {
		opts.UploadSlots = 8
	}
	if opts.MaxRequestsPerPeer <= 0 {
		opts.MaxRequestsPerPeer = 8
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		h: h, src: src, opts: opts, log: log,
		global:   newLimiter(opts.GlobalRate),
		warnings: rate.NewLimiter(rate.Every(10*time.Second), 3),
		ctx:      ctx, cancel: cancel,
		peers:   make(map[peer.ID]*servedPeer),
		streams: make(map[network.Stream]struct{}),
	}
	s.enabled.Store(opts.Enabled)
	h.SetStreamHandler(ProtocolID, s.handle)
	return s
}

// newLimiter returns a token bucket for bytesPerSec, or nil for unlimited.
// The burst is one chunk (at most 1 MiB, at least 16 KiB, about 1/8 s of
// traffic), so a peer can never get more than one chunk ahead of its cap.
func newLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), burstFor(bytesPerSec))
}

func burstFor(bytesPerSec int64) int {
	b := bytesPerSec / 8
	return int(min(max(b, 16<<10), maxChunk))
}

// SetEnabled switches between serving and consume mode at run time, for a
// configuration reload; requests already being served finish.
func (s *Server) SetEnabled(on bool) { s.enabled.Store(on) }

// Close unregisters the handler, resets streams being served and waits for
// their handlers to return.
func (s *Server) Close() error {
	s.h.RemoveStreamHandler(ProtocolID)
	s.mu.Lock()
	s.closed = true
	for st := range s.streams {
		st.Reset()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// acquire takes an upload slot for p, or reports busy.
func (s *Server) acquire(p peer.ID, st network.Stream) (*servedPeer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	now := time.Now()
	active := 0
	for id, sp := range s.peers {
		if sp.active > 0 {
			active++
		} else if now.Sub(sp.idleSince) > peerIdleTTL {
			delete(s.peers, id)
		}
	}
	sp := s.peers[p]
	if sp == nil {
		sp = &servedPeer{limiter: newLimiter(s.opts.PerPeerRate)}
		s.peers[p] = sp
	}
	if sp.active == 0 && active >= s.opts.UploadSlots {
		return nil, false
	}
	if sp.active >= s.opts.MaxRequestsPerPeer {
		return nil, false
	}
	sp.active++
	s.streams[st] = struct{}{}
	return sp, true
}

func (s *Server) release(sp *servedPeer, st network.Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp.active--
	if sp.active == 0 {
		sp.idleSince = time.Now()
	}
	delete(s.streams, st)
}

// handle serves one stream: one request, one response.
func (s *Server) handle(st network.Stream) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Reset()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	p := st.Conn().RemotePeer()
	log := s.log.With("peer", p)
	if err := s.serve(st, p); err != nil {
		log.Debug("fetch request failed", "err", err)
		st.Reset()
		return
	}
	st.Close()
}

// serve reads the request and writes the response; an error means the
// stream must be reset.
func (s *Server) serve(st network.Stream, p peer.ID) error {
	if err := st.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout)); err != nil {
		return fmt.Errorf("setting request deadline: %w", err)
	}
	req, err := readRequest(bufio.NewReaderSize(io.LimitReader(st, maxRequestLen), maxRequestLen))
	if err != nil {
		return s.refuse(st, statusBadRequest, err.Error())
	}
	if !s.enabled.Load() {
		return s.refuse(st, statusDisabled, "this node serves nothing (consume mode)")
	}
	sp, ok := s.acquire(p, st)
	if !ok {
		return s.refuse(st, statusBusy, "no free upload slot")
	}
	defer s.release(sp, st)

	f, err := s.src.Open(req.File)
	if errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		// Any peer may ask for any hash: neither a fault nor worth a log.
		return s.refuse(st, statusNotFound, fmt.Sprintf("file %x not held", req.File[:8]))
	}
	if err != nil {
		// A broken file a peer keeps asking for must not flood the log.
		lvl := slog.LevelDebug
		if s.warnings.Allow() {
			lvl = slog.LevelWarn
		}
		s.log.Log(s.ctx, lvl, "opening file to serve failed", "file", fmt.Sprintf("%x", req.File), "err", err)
		return s.refuse(st, statusInternal, "cannot open file")
	}
	defer f.Close()

	switch req.Op {
	case opLayer:
		b := appendLayer(nil, f.Size(), pieces.Size, f.Leaves())
		if err := s.send(st, sp, b); err != nil {
			return err
		}
		return nil
	case opRange:
		n := uint64(pieces.Count(f.Size()))
		if req.First >= n || req.Count > n-req.First {
			return s.refuse(st, statusBadRequest, fmt.Sprintf("pieces %d+%d outside file of %d pieces", req.First, req.Count, n))
		}
		return s.sendRange(st, sp, f, int(req.First), int(req.Count))
	}
	return fmt.Errorf("%w: unreachable op %d", ErrProtocol, req.Op)
}

func (s *Server) refuse(st network.Stream, code byte, msg string) error {
	s.opts.Metrics.refused(code)
	if err := st.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err != nil {
		return err
	}
	if _, err := st.Write(appendError(nil, code, msg)); err != nil {
		return fmt.Errorf("writing error frame: %w", err)
	}
	return nil
}

// wait takes n bytes of tokens from the peer's and the global bucket.
func (s *Server) wait(sp *servedPeer, n int) error {
	if sp.limiter != nil {
		if err := sp.limiter.WaitN(s.ctx, n); err != nil {
			return fmt.Errorf("per-peer rate limit: %w", err)
		}
	}
	if s.global != nil {
		if err := s.global.WaitN(s.ctx, n); err != nil {
			return fmt.Errorf("global rate limit: %w", err)
		}
	}
	return nil
}

// chunkFor is the largest write that fits every bucket's burst.
func (s *Server) chunkFor(sp *servedPeer) int {
	c := maxChunk
	if sp.limiter != nil {
		c = min(c, sp.limiter.Burst())
	}
	if s.global != nil {
		c = min(c, s.global.Burst())
	}
	return c
}

// send writes b in rate-limited chunks.
func (s *Server) send(st network.Stream, sp *servedPeer, b []byte) error {
	chunk := s.chunkFor(sp)
	for len(b) > 0 {
		n := min(len(b), chunk)
		if err := s.wait(sp, n); err != nil {
			return err
		}
		if err := st.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err != nil {
			return err
		}
		w, err := st.Write(b[:n])
		s.opts.Metrics.addServed(w)
		if err != nil {
			return fmt.Errorf("writing response: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// sendRange writes the status byte and pieces first..first+count-1.
func (s *Server) sendRange(st network.Stream, sp *servedPeer, f File, first, count int) error {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := (*bp)[:s.chunkFor(sp)]

	off := int64(first) * pieces.Size
	end := min(int64(first+count)*pieces.Size, f.Size())
	// The status byte travels with the first chunk: one write, one frame.
	buf[0] = statusOK
	head := 1
	for off < end {
		n := int(min(int64(len(buf)-head), end-off))
		r, err := f.ReadAt(buf[head:head+n], off)
		if r < n {
			return fmt.Errorf("reading file at %d: %w", off, err)
		}
		if err := s.send(st, sp, buf[:head+n]); err != nil {
			return err
		}
		off += int64(n)
		head = 0
	}
	return nil
}
