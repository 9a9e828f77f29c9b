package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
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
	// UploadSlots is how many peers are served at once (default 8). A peer
	// holds at most one slot, however many requests it runs in it (see
	// MaxRequestsPerPeer). A request from a peer without a slot waits up
	// to SlotWait for one, then gets a "busy" frame.
	UploadSlots int
	// MaxRequestsPerPeer caps concurrent requests (streams) from one peer,
	// served or waiting for a slot (default 8); more get "busy".
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
	// (default 30s): a fetcher that stops reading loses the request even
	// when no other peer wants its slot.
	WriteTimeout time.Duration
	// ProgressTimeout is how long a slot holder may go without accepting
	// 64 KiB, over all its requests, while we have data for it (default
	// 5s). Only time our writes spend blocked on the peer counts: waiting
	// on our own rate limits or disk does not, so a peer served slowly by
	// our caps never stalls. While another peer waits for a slot, a
	// stalled holder loses its slot at once: its streams are reset and the
	// slot goes to the waiter.
	ProgressTimeout time.Duration
	// SlotWait bounds how long a request from a peer without a slot waits
	// for one before it gets "busy" (default 2 × ProgressTimeout, so a
	// slot taken from a stalled holder comes free within it, but at most
	// 15s: fetchers take a provider silent for 20s for stalled).
	SlotWait time.Duration
	// SlotTenure is how long a peer keeps its slot while other peers wait
	// (default 30s): then it yields the slot to a waiting peer that has
	// not lost one recently. Requests it has in flight finish; its new
	// ones wait for a slot like anyone's.
	SlotTenure time.Duration
	// Metrics records served bytes, refusals and reclaimed slots; nil
	// records nothing.
	Metrics *Metrics
	// Logger receives per-request failures at debug level; nil discards.
	Logger *slog.Logger
}

// Server answers /gentoo-p2p/fetch/1 requests from a Source.
//
// Upload slots: a peer whose request arrives while it holds no slot takes
// a free one, or joins a queue. Queued peers get slots as they come free,
// in arrival order, except that a peer that lost its slot to preemption
// within the last minute waits behind every other peer. While peers that
// have not lost a slot recently are waiting, the server makes room: a
// holder that stalled (ProgressTimeout) loses its slot at once, and a
// holder that has had its slot for SlotTenure yields it once its requests
// in flight end. A peer whose last request went well keeps its slot for
// a second after it, so a fetcher moving from one request to its next
// (layer, then ranges) does not queue again.
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
	kick   chan struct{} // wakes the slot keeper to re-plan

	mu      sync.Mutex
	closed  bool
	peers   map[peer.ID]*servedPeer
	streams map[network.Stream]struct{} // every stream being handled
	holders []*servedPeer               // peers holding a slot
	queue   []*servedPeer               // peers waiting for a slot, oldest first
}

// servedPeer is the server's state for one fetching peer. It outlives the
// peer's requests by peerIdleTTL so a peer cannot reset its rate bucket by
// making requests one at a time, nor shed a preemption penalty.
type servedPeer struct {
	id        peer.ID
	limiter   *rate.Limiter               // nil when unlimited
	streams   map[network.Stream]struct{} // its streams, served or waiting
	active    int                         // requests admitted and not yet done
	wait      *slotWait                   // non-nil while queued
	idleSince time.Time

	slot        bool      // holds an upload slot
	since       time.Time // when it took the slot
	draining    bool      // yields the slot once active is 0
	lingerUntil time.Time // with active == 0: slot kept for its next request

	// Progress, for the stall rule: blocked counts its writes in
	// progress; stalled is the blocked time since its last progress up to
	// blockedAt, and accepted the bytes accepted since then.
	blocked   int
	blockedAt time.Time
	stalled   time.Duration
	accepted  int

	preemptedAt time.Time // when it last lost a slot to another peer
}

// slotWait is one queued stint of a peer: its requests waiting for a slot.
type slotWait struct {
	n       int           // requests waiting
	done    chan struct{} // closed when granted
	granted bool
}

const (
	peerIdleTTL = time.Minute
	// preemptPenalty is how long a peer that lost its slot waits behind
	// others and cannot take a slot from anyone.
	preemptPenalty = time.Minute
	// slotLinger keeps a slot for a peer whose request just ended well.
	slotLinger = time.Second
	// progressBytes is what a holder must accept to count as progressing;
	// a yamux peer that reads acknowledges at least half its window
	// (128 KiB) at a time, so any honest reader clears it at once.
	progressBytes = 64 << 10
	// writeUnit is the most one Write call sends, so progress is seen as
	// it happens, not only when a whole chunk went out.
	writeUnit = 64 << 10
)

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
	if opts.ProgressTimeout <= 0 {
		opts.ProgressTimeout = 5 * time.Second
	}
	if opts.SlotWait <= 0 {
		opts.SlotWait = min(2*opts.ProgressTimeout, 15*time.Second)
	}
	if opts.SlotTenure <= 0 {
		opts.SlotTenure = 30 * time.Second
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
		kick:    make(chan struct{}, 1),
		peers:   make(map[peer.ID]*servedPeer),
		streams: make(map[network.Stream]struct{}),
	}
	s.enabled.Store(opts.Enabled)
	s.wg.Add(1)
	go s.keep()
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
	streams := make([]network.Stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	s.cancel()
	resetAll(streams)
	s.wg.Wait()
	return nil
}

func resetAll(streams []network.Stream) {
	for _, st := range streams {
		_ = st.Reset() // shutting down: a stream already gone is fine
	}
}

// resetLater resets the streams of a peer that lost its slot, in the
// background: a reset queues a frame on the peer's connection, which a
// peer that stopped reading its connection altogether can hold up until
// the muxer gives up on it, and nobody should wait for that.
func (s *Server) resetLater(streams []network.Stream) {
	if len(streams) == 0 {
		return
	}
	s.wg.Go(func() { resetAll(streams) })
}

// poke wakes the slot keeper.
func (s *Server) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// keep runs the time-driven part of the slot rules: lingering slots that
// lapse, holders that stall or outstay SlotTenure while peers wait.
func (s *Server) keep() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		resets := s.dispatch(now)
		next := s.nextEvent(now)
		s.mu.Unlock()
		s.resetLater(resets)
		if !next.IsZero() {
			t.Reset(next.Sub(now))
		}
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-s.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// acquire admits a request of p: at once if p holds a slot, else once it
// gets one (waiting at most SlotWait). false means busy or closing.
func (s *Server) acquire(p peer.ID, st network.Stream) (*servedPeer, bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false
	}
	now := time.Now()
	s.expireIdle(now)
	sp := s.peers[p]
	if sp == nil {
		sp = &servedPeer{id: p, limiter: newLimiter(s.opts.PerPeerRate), streams: map[network.Stream]struct{}{}}
		s.peers[p] = sp
	}
	waiting := 0
	if sp.wait != nil {
		waiting = sp.wait.n
	}
	if sp.active+waiting >= s.opts.MaxRequestsPerPeer {
		s.mu.Unlock()
		return nil, false
	}
	sp.streams[st] = struct{}{}
	s.streams[st] = struct{}{}
	if sp.slot && !sp.draining {
		sp.active++
		sp.lingerUntil = time.Time{}
		s.mu.Unlock()
		return sp, true
	}
	if sp.wait == nil {
		if len(s.queue) >= 4*s.opts.UploadSlots {
			s.forget(sp, st)
			s.mu.Unlock()
			return nil, false
		}
		sp.wait = &slotWait{done: make(chan struct{})}
		s.queue = append(s.queue, sp)
	}
	w := sp.wait
	w.n++
	resets := s.dispatch(now)
	s.mu.Unlock()
	s.resetLater(resets)
	s.poke()

	t := time.NewTimer(s.opts.SlotWait)
	select {
	case <-w.done:
	case <-t.C:
	case <-s.ctx.Done():
	}
	t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.granted {
		return sp, true // grant counted this request as active
	}
	w.n--
	if sp.wait == w && w.n == 0 {
		sp.wait = nil
		s.queue = slices.DeleteFunc(s.queue, func(q *servedPeer) bool { return q == sp })
	}
	s.forget(sp, st)
	return nil, false
}

// forget drops a stream that was not admitted; s.mu is held.
func (s *Server) forget(sp *servedPeer, st network.Stream) {
	delete(sp.streams, st)
	delete(s.streams, st)
	if sp.active == 0 {
		sp.idleSince = time.Now()
	}
}

// release ends an admitted request; ok tells whether it went well, which
// earns the peer a short linger of its slot.
func (s *Server) release(sp *servedPeer, st network.Stream, ok bool) {
	s.mu.Lock()
	now := time.Now()
	sp.active--
	delete(sp.streams, st)
	delete(s.streams, st)
	if sp.active == 0 {
		sp.idleSince = now
		if sp.slot {
			if ok && !sp.draining {
				sp.lingerUntil = now.Add(slotLinger)
			} else {
				s.free(sp)
			}
		}
	}
	resets := s.dispatch(now)
	waiters := len(s.queue) > 0
	s.mu.Unlock()
	s.resetLater(resets)
	if waiters {
		s.poke()
	}
}

// expireIdle forgets peers idle for peerIdleTTL; s.mu is held.
func (s *Server) expireIdle(now time.Time) {
	for id, sp := range s.peers {
		if sp.active == 0 && sp.wait == nil && !sp.slot && len(sp.streams) == 0 &&
			now.Sub(sp.idleSince) > peerIdleTTL && now.Sub(sp.preemptedAt) > preemptPenalty {
			delete(s.peers, id)
		}
	}
}

// penalized reports whether sp lost a slot to preemption recently.
func penalized(sp *servedPeer, now time.Time) bool {
	return !sp.preemptedAt.IsZero() && now.Sub(sp.preemptedAt) < preemptPenalty
}

// stallTime is how long sp's writes have been blocked since its last
// progress.
func (sp *servedPeer) stallTime(now time.Time) time.Duration {
	if sp.blocked > 0 {
		return sp.stalled + now.Sub(sp.blockedAt)
	}
	return sp.stalled
}

// dispatch applies the slot rules as of now and returns the streams of
// peers that lost their slot for stalling, to be reset once s.mu is
// released; s.mu is held.
func (s *Server) dispatch(now time.Time) []network.Stream {
	for _, sp := range slices.Clone(s.holders) {
		if sp.active == 0 && (sp.draining || !now.Before(sp.lingerUntil)) {
			s.free(sp)
		}
	}
	for len(s.holders) < s.opts.UploadSlots && len(s.queue) > 0 {
		s.grant(s.nextWaiter(now), now)
	}
	var resets []network.Stream
	// Make room for waiters that did not lose a slot recently (a
	// preempted peer never preempts anyone: no chains of preemption), as
	// far as draining holders will not (unless they stalled: then their
	// requests may never end, and they lose the slot like any staller).
	for {
		want := 0
		for _, sp := range s.queue {
			if !penalized(sp, now) {
				want++
			}
		}
		for _, sp := range s.holders {
			if sp.draining && sp.stallTime(now) < s.opts.ProgressTimeout {
				want--
			}
		}
		if want <= 0 {
			return resets
		}
		if v := s.stalledHolder(now); v != nil {
			s.log.Debug("upload slot taken from a stalled peer", "peer", v.id, "stalled", v.stallTime(now))
			s.opts.Metrics.reclaimed("stalled")
			for st := range v.streams {
				resets = append(resets, st)
			}
			v.preemptedAt = now
			s.free(v)
			s.grant(s.nextWaiter(now), now)
			continue
		}
		v := s.longestTenure(now)
		if v == nil {
			return resets
		}
		s.log.Debug("upload slot handed on after its tenure", "peer", v.id, "held", now.Sub(v.since))
		s.opts.Metrics.reclaimed("tenure")
		v.preemptedAt = now
		v.draining = true
		if v.active == 0 {
			s.free(v)
			s.grant(s.nextWaiter(now), now)
		}
	}
}

// stalledHolder is the holder stalled longest past ProgressTimeout, or nil.
func (s *Server) stalledHolder(now time.Time) *servedPeer {
	var v *servedPeer
	for _, sp := range s.holders {
		if d := sp.stallTime(now); d >= s.opts.ProgressTimeout && (v == nil || d > v.stallTime(now)) {
			v = sp
		}
	}
	return v
}

// longestTenure is the holder, not already draining, that has held its
// slot longest past SlotTenure, or nil.
func (s *Server) longestTenure(now time.Time) *servedPeer {
	var v *servedPeer
	for _, sp := range s.holders {
		if !sp.draining && now.Sub(sp.since) >= s.opts.SlotTenure && (v == nil || sp.since.Before(v.since)) {
			v = sp
		}
	}
	return v
}

// nextWaiter is the queued peer to serve next: the oldest that did not
// lose a slot recently, else the oldest. The queue is not empty.
func (s *Server) nextWaiter(now time.Time) *servedPeer {
	for _, sp := range s.queue {
		if !penalized(sp, now) {
			return sp
		}
	}
	return s.queue[0]
}

// grant gives sp a slot (or, draining, lets it keep its own) and admits
// its waiting requests; s.mu is held.
func (s *Server) grant(sp *servedPeer, now time.Time) {
	s.queue = slices.DeleteFunc(s.queue, func(q *servedPeer) bool { return q == sp })
	if !sp.slot {
		s.holders = append(s.holders, sp)
	}
	sp.slot, sp.since, sp.draining, sp.lingerUntil = true, now, false, time.Time{}
	sp.stalled, sp.blockedAt, sp.accepted = 0, now, 0
	w := sp.wait
	sp.wait = nil
	sp.active += w.n
	w.granted = true
	close(w.done)
}

// free takes sp's slot away; s.mu is held.
func (s *Server) free(sp *servedPeer) {
	s.holders = slices.DeleteFunc(s.holders, func(q *servedPeer) bool { return q == sp })
	sp.slot, sp.draining = false, false
}

// nextEvent is when a slot rule may next apply on its own (a linger that
// lapses, a holder that reaches ProgressTimeout or SlotTenure, a queued
// peer's penalty that ends), or zero when nobody waits. Times already past
// were dealt with by dispatch, or wait for a new arrival, which runs it
// anyway. s.mu is held.
func (s *Server) nextEvent(now time.Time) time.Time {
	if len(s.queue) == 0 {
		return time.Time{}
	}
	var next time.Time
	earliest := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, sp := range s.holders {
		if sp.active == 0 {
			earliest(sp.lingerUntil)
		}
		if sp.blocked > 0 {
			earliest(now.Add(s.opts.ProgressTimeout - sp.stallTime(now)))
		}
		if !sp.draining {
			earliest(sp.since.Add(s.opts.SlotTenure))
		}
	}
	for _, sp := range s.queue {
		if penalized(sp, now) {
			earliest(sp.preemptedAt.Add(preemptPenalty))
		}
	}
	return next
}

// writing notes that one of sp's writes starts, and may block on the peer.
func (s *Server) writing(sp *servedPeer) {
	s.mu.Lock()
	sp.blocked++
	first := sp.blocked == 1
	if first {
		sp.blockedAt = time.Now()
	}
	waiters := len(s.queue) > 0
	s.mu.Unlock()
	if first && waiters {
		s.poke() // a stall clock started
	}
}

// wrote notes that a write of sp's ended with n bytes accepted.
func (s *Server) wrote(sp *servedPeer, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	sp.accepted += n
	if sp.accepted >= progressBytes {
		sp.accepted, sp.stalled, sp.blockedAt = 0, 0, now
	}
	sp.blocked--
	if sp.blocked == 0 {
		sp.stalled += now.Sub(sp.blockedAt)
	}
}

// handle serves one stream: one request, one response.
func (s *Server) handle(st network.Stream) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = st.Reset() // refused unread: nothing to report
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	p := st.Conn().RemotePeer()
	log := s.log.With("peer", p)
	if err := s.serve(st, p); err != nil {
		log.Debug("fetch request failed", "err", err)
		_ = st.Reset() // the error that made us reset is logged above
		return
	}
	if err := st.Close(); err != nil {
		log.Debug("closing served stream", "err", err)
	}
}

// serve reads the request and writes the response; an error means the
// stream must be reset.
func (s *Server) serve(st network.Stream, p peer.ID) (err error) {
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
	defer func() { s.release(sp, st, err == nil) }()

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
		if err := s.write(st, sp, b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// write sends b, a chunk whose tokens were taken, within WriteTimeout, in
// writes of at most writeUnit, and accounts the time they block and the
// bytes accepted to sp's progress.
func (s *Server) write(st network.Stream, sp *servedPeer, b []byte) error {
	if err := st.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err != nil {
		return err
	}
	for len(b) > 0 {
		n := min(len(b), writeUnit)
		s.writing(sp)
		w, err := st.Write(b[:n])
		s.wrote(sp, w)
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
