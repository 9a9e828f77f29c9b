package transfer

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// MaxFileSize bounds what Fetch accepts (64 GiB, far above any binary
// package), so a bogus size cannot make it allocate a huge piece layer or
// bitfield.
const MaxFileSize = 64 << 30

// Want names the file to fetch as an attestation describes it.
type Want struct {
	// SHA256 is the whole container file's SHA-256, which addresses it on
	// the wire and is checked over the verified pieces as they come in.
	SHA256 [32]byte
	// Size is the file size in bytes.
	Size int64
	// PieceRoot is the Merkle root (package pieces) every piece is proven
	// against.
	PieceRoot [32]byte
	// PieceSize must be pieces.Size; it is carried so an attestation made
	// with another piece size is refused instead of failing every piece.
	PieceSize int64
}

// FetchOptions tune one Fetch. Only Dir is required.
type FetchOptions struct {
	// Dir holds the partial file <sha>.part and its bitfield <sha>.bits;
	// a later Fetch of the same file into the same Dir resumes.
	Dir string
	// Path is where the complete file appears (by rename, so on the same
	// file system as Dir); default Dir/<sha hex>.
	Path string
	// Check, when set, verifies the content while it downloads, so no
	// byte is read again after the last piece: it runs beside the
	// transfer on a reader of the part file whose reads wait until every
	// piece they touch was verified against the piece root and written
	// (the last piece is fetched first, for formats with a trailer). It
	// must read the whole file and return the SHA-256 of what it read
	// (xpak.Read computes it while parsing); Fetch compares that with
	// want.SHA256 instead of hashing the file itself. An error stops the
	// fetch at once, deletes the partial files and fails it with
	// ErrVerify: pieces that match the attested root but not the content
	// will never do.
	Check func(r io.ReaderAt, size int64) (sha256 [32]byte, err error)
	// Verify, when set, runs on the complete, hash-checked part file
	// before the rename; an error deletes the file and fails the fetch.
	// It reads the file once more: prefer Check.
	Verify func(path string) error
	// Progress, when set, is called after every verified piece. It must
	// be quick; calls are serialized.
	Progress func(Progress)
	// StallTimeout drops a provider that sends no bytes for this long
	// (default 20s).
	StallTimeout time.Duration
	// ConnectTimeout bounds connecting to one provider (default 10s).
	ConnectTimeout time.Duration
	// MaxInFlightPerPeer is how many range requests (streams) run at once
	// against one provider (default 4). Several streams keep the
	// provider's pipe full while the fetcher verifies and writes.
	MaxInFlightPerPeer int
	// BatchPieces is the number of pieces per range request (default 8,
	// 2 MiB; at most MaxPiecesPerRequest). Larger batches open fewer
	// streams; smaller ones keep the verified prefix contiguous, so the
	// running whole-file hash does not lag behind at the end.
	BatchPieces int
	// MaxPeers caps providers used at once (default 8); the others stand
	// by and replace dropped ones.
	MaxPeers int
	// DownloadLimit caps the bytes this fetch receives, over all its
	// providers and streams together, and over every other fetch given
	// the same Limit; nil is unlimited. Reads wait on the cap after they
	// return, so time spent waiting never counts against StallTimeout.
	DownloadLimit *Limit
	// SyncBytes and SyncInterval bound how much verified data a crash can
	// lose: the part file and bitfield are fsynced after this many bytes
	// or this much time, whichever comes first (defaults 64 MiB, 2s).
	SyncBytes    int64
	SyncInterval time.Duration
	// Metrics records fetched bytes, peer faults and durations; nil
	// records nothing.
	Metrics *Metrics
	// Logger receives dropped providers at info level; nil discards.
	Logger *slog.Logger

	// openFile opens the part file and bitfield; nil is os.OpenFile.
	// Tests set it to make writes fail as on a full disk.
	openFile openFileFunc
}

// Limit is a download cap in bytes per second that any number of fetches
// share: pass the same *Limit in their FetchOptions.DownloadLimit. A nil
// *Limit is unlimited.
type Limit struct{ l *rate.Limiter }

// NewLimit returns a cap of bytesPerSec, or nil (unlimited) for 0 or less.
// Its burst is that of the upload caps: about 1/8 s of traffic, 16 KiB to
// 1 MiB.
func NewLimit(bytesPerSec int64) *Limit {
	if bytesPerSec <= 0 {
		return nil
	}
	return &Limit{l: newLimiter(bytesPerSec)}
}

func (l *Limit) limiter() *rate.Limiter {
	if l == nil {
		return nil
	}
	return l.l
}

// Progress is a snapshot reported to FetchOptions.Progress.
type Progress struct {
	// Done counts bytes verified and written (reused ones included).
	Done int64
	// Total is the file size.
	Total int64
	// Peers is the number of providers currently sending.
	Peers int
}

// FaultKind says why a provider was dropped from a fetch.
type FaultKind string

// Fault kinds. BadPiece, BadLayer and Protocol are misbehaviour the daemon
// may hold against the peer; Stall, Unavailable and Connection are not.
const (
	FaultBadPiece    FaultKind = "bad_piece"   // sent a piece that failed verification
	FaultBadLayer    FaultKind = "bad_layer"   // sent a piece layer not matching the attested root or size
	FaultProtocol    FaultKind = "protocol"    // sent malformed frames
	FaultStall       FaultKind = "stall"       // sent nothing for StallTimeout
	FaultUnavailable FaultKind = "unavailable" // refused: consume mode, busy, internal error
	FaultConnection  FaultKind = "connection"  // could not connect, or the connection broke
)

// PeerFault records one dropped provider.
type PeerFault struct {
	Peer peer.ID
	Kind FaultKind
	Err  error
}

// Result describes a Fetch, complete or not.
type Result struct {
	// Path is the final path of the complete file ("" if incomplete).
	Path string
	// Size is the file size.
	Size int64
	// Pieces is the number of pieces of the file.
	Pieces int
	// PiecesFetched counts pieces received, verified and written by this
	// call; PiecesReused counts pieces taken from an earlier partial
	// fetch (re-verified from disk, not re-downloaded).
	PiecesFetched int
	PiecesReused  int
	// DuplicatePieces counts verified pieces that arrived after another
	// provider's copy (endgame duplication), and were discarded.
	DuplicatePieces int
	// BytesFetched counts all piece bytes received, including duplicates
	// and bad pieces.
	BytesFetched int64
	// PeerPieces counts the pieces each provider contributed.
	PeerPieces map[peer.ID]int
	// BadPeers lists the providers dropped and why.
	BadPeers []PeerFault
	// NotHeld lists the providers that answered "not found": they do not
	// hold the file. That is no fault (a provider index can be stale), so
	// they are not in BadPeers; the fetch just goes on without them.
	NotHeld []peer.ID
	// Duration is the wall time of the call.
	Duration time.Duration
	// Leaves is the verified piece layer (nil before a provider sent one),
	// so a caller that keeps the file can cache it for serving without
	// hashing the file again.
	Leaves [][32]byte
}

var (
	// ErrWant reports an unusable Want or FetchOptions.
	ErrWant = errors.New("transfer: invalid fetch request")
	// ErrNoProviders reports that every provider failed or was dropped
	// before the file was complete; the partial file is kept for resume.
	ErrNoProviders = errors.New("transfer: no usable provider left")
	// ErrHashMismatch reports a file whose pieces all verified against the
	// piece root but whose SHA-256 differs: the attestation is
	// inconsistent. The partial file is deleted.
	ErrHashMismatch = errors.New("transfer: file SHA-256 does not match")
	// ErrVerify wraps the error of FetchOptions.Check or Verify; the
	// file is deleted.
	ErrVerify = errors.New("transfer: verify hook rejected the file")
	// errStall marks a read that hit StallTimeout.
	errStall = errors.New("transfer: provider stalled")
)

// Fetch downloads want from providers into opts.Dir, verifying every piece
// against want.PieceRoot, and renames it to its final path only when every
// piece verified, the whole-file SHA-256 matches and opts.Check and
// opts.Verify accepted it. Nothing incomplete ever appears at the final
// path.
//
// Scheduling: each provider first sends its piece layer, which must match
// want (else it is dropped as FaultBadLayer). Then every provider runs
// MaxInFlightPerPeer workers that each take the next batch of missing
// pieces from one shared queue, so a fast provider takes more batches than
// a slow one. When the queue is empty but pieces are still in flight
// (endgame), idle workers duplicate in-flight pieces (at most two copies of
// a piece at a time); the first verified copy is written, later ones are
// dropped. A provider that sends a bad piece, stalls or breaks is dropped
// and its unfinished pieces go back to the queue.
//
// Resume: pieces are marked in <sha>.bits only after they were verified,
// written and fsynced. A later Fetch trusts the bitfield only if the part
// file has the right size and the bitfield header names the same file,
// root and size, and it re-hashes each marked piece against the layer
// before reusing it (a cheap local read, which guards against a disk that
// lost writes); failing pieces are fetched again. On cancellation the
// written pieces are committed before Fetch returns.
//
// Local write failures: if writing or syncing the part file or bitfield
// fails (a full disk, an I/O error), Fetch stops at once, removes both
// files and returns an ErrDiskWrite that wraps the cause (errors.Is(err,
// syscall.ENOSPC) for a full disk). No provider is blamed.
//
// The Result is meaningful on error too (faults, pieces fetched so far).
func Fetch(ctx context.Context, h host.Host, want Want, providers []peer.AddrInfo, opts FetchOptions) (Result, error) {
	start := time.Now()
	res, err := fetch(ctx, h, want, providers, opts)
	res.Duration = time.Since(start)
	result := "ok"
	switch {
	case err == nil:
	case ctx.Err() != nil:
		result = "canceled"
	default:
		result = "error"
	}
	opts.Metrics.fetchDone(result, res.Duration.Seconds())
	return res, err
}

func fetch(ctx context.Context, h host.Host, want Want, providers []peer.AddrInfo, opts FetchOptions) (Result, error) {
	res := Result{Size: want.Size, Pieces: pieces.Count(want.Size), PeerPieces: map[peer.ID]int{}}
	if err := checkWant(want, &opts); err != nil {
		return res, err
	}
	if opts.Path == "" {
		opts.Path = filepath.Join(opts.Dir, hex.EncodeToString(want.SHA256[:]))
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return res, fmt.Errorf("transfer: creating %s: %w", opts.Dir, err)
	}
	pf, err := openPart(opts.Dir, want, opts.openFile)
	if err != nil {
		return res, err
	}
	f := &fetcher{
		h: h, want: want, opts: opts, log: opts.Logger, pf: pf, res: &res,
		written: make(chan int, res.Pieces), limit: opts.DownloadLimit.limiter(),
	}
	defer pf.close()

	if res.Pieces == 0 {
		if want.PieceRoot != pieces.RootOf(nil) {
			f.discard()
			return res, fmt.Errorf("%w: empty file with piece root %x", pieces.ErrLayerMismatch, want.PieceRoot[:8])
		}
		sum := hashResult{sum: sha256.Sum256(nil)}
		if opts.Check != nil {
			sum = f.checkLoop(nil)
		}
		if sum.err != nil {
			f.discard()
			return res, sum.err
		}
		err := f.finish(sum.sum) // sets res.Path: call before reading res
		return res, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.cancel = cancel
	f.layers = make(chan [][32]byte, len(providers))
	f.ready = make(chan struct{})
	peersDone := f.startPeers(runCtx, providers)

	// Phase 1: the first provider whose layer matches want initializes
	// the fetch (resume check, scheduler).
	select {
	case leaves := <-f.layers:
		if err := f.init(leaves); err != nil {
			cancel()
			<-peersDone
			return res, err
		}
		close(f.ready)
	case <-peersDone:
		return res, f.noProviders()
	case <-ctx.Done():
		cancel()
		<-peersDone
		return res, ctx.Err()
	}

	committerDone := make(chan error, 1)
	go func() { committerDone <- f.commitLoop() }()
	// The whole-file SHA-256 is computed while the download runs, over the
	// verified prefix, so it costs no wall time at the end: by Check with
	// everything else it verifies, or else by hashLoop.
	hashStop := make(chan struct{})
	hashDone := make(chan hashResult, 1)
	if opts.Check != nil {
		go func() { hashDone <- f.checkLoop(hashStop) }()
	} else {
		go func() { hashDone <- f.hashLoop(hashStop) }()
	}

	// Phase 2: until complete, every provider gone, or cancelled.
	select {
	case <-f.sched.complete:
	case <-peersDone:
	case <-runCtx.Done():
	}
	cancel()
	<-peersDone
	close(f.written)
	commitErr := <-committerDone
	close(hashStop)
	hashed := <-hashDone

	f.mu.Lock()
	fatal := f.fatal
	res.BytesFetched = f.received.Load()
	f.mu.Unlock()
	switch {
	case fatal != nil, commitErr != nil:
		// Writing here failed (every fatal error is an ErrDiskWrite): the
		// files go, so a full disk is not kept full by a download that
		// cannot finish, and no provider is blamed.
		f.discard()
		return res, cmp.Or(fatal, commitErr)
	case hashed.rejected:
		// Check proved the content wrong, possibly before the last piece:
		// no provider can make it right.
		f.discard()
		return res, hashed.err
	case !f.sched.isComplete():
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, f.noProviders()
	case hashed.err != nil:
		return res, hashed.err
	}
	err = f.finish(hashed.sum) // sets res.Path: call before reading res
	return res, err
}

func checkWant(want Want, opts *FetchOptions) error {
	if want.PieceSize != pieces.Size {
		return fmt.Errorf("%w: piece size %d, this engine uses %d", ErrWant, want.PieceSize, pieces.Size)
	}
	if want.Size < 0 || want.Size > MaxFileSize {
		return fmt.Errorf("%w: size %d outside 0..%d", ErrWant, want.Size, int64(MaxFileSize))
	}
	if opts.Dir == "" {
		return fmt.Errorf("%w: FetchOptions.Dir is empty", ErrWant)
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 20 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.MaxInFlightPerPeer <= 0 {
		opts.MaxInFlightPerPeer = 4
	}
	if opts.BatchPieces <= 0 {
		opts.BatchPieces = 8
	}
	opts.BatchPieces = min(opts.BatchPieces, MaxPiecesPerRequest)
	if opts.MaxPeers <= 0 {
		opts.MaxPeers = 8
	}
	if opts.SyncBytes <= 0 {
		opts.SyncBytes = 64 << 20
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.openFile == nil {
		opts.openFile = osOpenFile
	}
	return nil
}

// fetcher is the state of one Fetch call.
type fetcher struct {
	h      host.Host
	want   Want
	opts   FetchOptions
	log    *slog.Logger
	pf     *partFile
	cancel context.CancelFunc
	limit  *rate.Limiter // DownloadLimit's bucket; nil when unlimited

	layers chan [][32]byte // verified layers from providers
	ready  chan struct{}   // closed once leaves and sched are set
	leaves [][32]byte
	sched  *scheduler

	written chan int // pieces verified and written, for the committer

	active   atomic.Int32 // providers past their layer check
	received atomic.Int64 // piece bytes received

	mu         sync.Mutex // guards res, fatal, doneBytes, progress calls
	res        *Result
	fatal      error
	doneBytes  int64
	progressMu sync.Mutex
}

// init adopts the first verified layer, re-verifies pieces a previous
// fetch marked done, and builds the scheduler.
func (f *fetcher) init(leaves [][32]byte) error {
	f.leaves = leaves
	n := len(leaves)
	done := make([]bool, n)
	buf := make([]byte, pieces.Size)
	reused := 0
	var doneBytes int64
	for i := 0; i < n; i++ {
		if !f.pf.has(i) {
			continue
		}
		data, err := f.pf.readPiece(f.want.Size, i, buf)
		if err != nil {
			return err
		}
		if pieces.VerifyPiece(leaves, i, data) != nil {
			f.log.Warn("piece marked done on disk fails verification; fetching it again", "file", f.pf.partPath, "piece", i)
			f.pf.clear(i)
			continue
		}
		done[i] = true
		reused++
		doneBytes += int64(len(data))
	}
	f.mu.Lock()
	f.res.PiecesReused = reused
	f.res.Leaves = leaves
	f.doneBytes = doneBytes
	f.mu.Unlock()
	f.sched = newScheduler(done)
	if f.opts.Check != nil {
		f.sched.first = n - 1 // see scheduler.first
	}
	return nil
}

func (f *fetcher) noProviders() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := []error{ErrNoProviders}
	for _, pf := range f.res.BadPeers {
		errs = append(errs, fmt.Errorf("%s: %s: %w", pf.Peer, pf.Kind, pf.Err))
	}
	for _, p := range f.res.NotHeld {
		errs = append(errs, fmt.Errorf("%s: does not hold the file", p))
	}
	return errors.Join(errs...)
}

// fail records a local (not provider) error, an ErrDiskWrite, and stops
// the fetch; fetch discards the partial files once every writer stopped.
func (f *fetcher) fail(err error) {
	f.mu.Lock()
	if f.fatal == nil {
		f.fatal = err
	}
	f.mu.Unlock()
	f.cancel()
}

// dropped records why runPeer gave up on p: a provider that does not hold
// the file, or a fault.
func (f *fetcher) dropped(p peer.ID, err error) {
	var re *RemoteError
	if errors.As(err, &re) && re.Code == statusNotFound {
		f.log.Debug("provider does not hold the file", "peer", p)
		f.mu.Lock()
		f.res.NotHeld = append(f.res.NotHeld, p)
		f.mu.Unlock()
		return
	}
	f.fault(p, err)
}

// fault records a dropped provider.
func (f *fetcher) fault(p peer.ID, err error) {
	kind := classify(err)
	f.opts.Metrics.fault(string(kind))
	f.log.Info("dropping provider", "peer", p, "reason", kind, "err", err)
	f.mu.Lock()
	f.res.BadPeers = append(f.res.BadPeers, PeerFault{Peer: p, Kind: kind, Err: err})
	f.mu.Unlock()
}

func classify(err error) FaultKind {
	var re *RemoteError
	switch {
	case errors.Is(err, pieces.ErrBadPiece):
		return FaultBadPiece
	case errors.Is(err, pieces.ErrLayerMismatch):
		return FaultBadLayer
	case errors.Is(err, errStall):
		return FaultStall
	case errors.As(err, &re):
		return FaultUnavailable
	case errors.Is(err, ErrProtocol):
		return FaultProtocol
	}
	return FaultConnection
}

// startPeers runs one goroutine per distinct provider, at most MaxPeers at
// once; the returned channel is closed when all have returned.
func (f *fetcher) startPeers(ctx context.Context, providers []peer.AddrInfo) <-chan struct{} {
	done := make(chan struct{})
	sem := make(chan struct{}, f.opts.MaxPeers)
	var wg sync.WaitGroup
	seen := map[peer.ID]bool{f.h.ID(): true}
	for _, ai := range providers {
		if seen[ai.ID] {
			continue
		}
		seen[ai.ID] = true
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if err := f.runPeer(ctx, ai); err != nil && ctx.Err() == nil {
				f.dropped(ai.ID, err)
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// runPeer fetches from one provider until the file is complete, the fetch
// is cancelled or the provider fails; the error is the reason to drop it.
func (f *fetcher) runPeer(ctx context.Context, ai peer.AddrInfo) error {
	cctx, ccancel := context.WithTimeout(ctx, f.opts.ConnectTimeout)
	err := f.h.Connect(cctx, ai)
	ccancel()
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	leaves, err := f.fetchLayer(ctx, ai.ID)
	if err != nil {
		return err
	}
	f.layers <- leaves
	select {
	case <-f.ready:
	case <-ctx.Done():
		return nil
	}

	f.active.Add(1)
	defer f.active.Add(-1)
	f.sched.addWorkers(f.opts.MaxInFlightPerPeer)
	defer f.sched.addWorkers(-f.opts.MaxInFlightPerPeer)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		peerErr  error
		inflight = map[int]struct{}{} // guarded by f.sched.mu
	)
	for range f.opts.MaxInFlightPerPeer {
		wg.Go(func() {
			if err := f.worker(pctx, ai.ID, inflight); err != nil && pctx.Err() == nil {
				errOnce.Do(func() { peerErr = err })
				pcancel()
			}
		})
	}
	wg.Wait()
	return peerErr
}

// worker takes batches from the shared queue and fetches them over one
// stream each.
func (f *fetcher) worker(ctx context.Context, p peer.ID, inflight map[int]struct{}) error {
	busy := 0
	for {
		first, count, wait := f.sched.next(inflight, f.opts.BatchPieces)
		if count == 0 {
			if wait == nil {
				return nil // complete
			}
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		err := f.fetchRange(ctx, p, first, count)
		f.sched.release(inflight, first, count)
		var re *RemoteError
		if errors.As(err, &re) && re.Code == statusBusy && busy < 4 {
			// The provider's slots or per-peer request cap are full: back
			// off and retry, unless the fetch ends meanwhile.
			busy++
			t := time.NewTimer(time.Duration(100<<busy) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		if err != nil {
			return err
		}
		busy = 0
	}
}

// openStream opens a fetch stream, sends req and half-closes. The stream is
// reset when ctx ends.
func (f *fetcher) openStream(ctx context.Context, p peer.ID, req request) (network.Stream, *bufio.Reader, func(), error) {
	st, err := f.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening stream: %w", err)
	}
	// Reset and Close errors mean the stream is already gone: nothing to do.
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	cleanup := func() { stop(); _ = st.Close() }
	if err := st.SetWriteDeadline(time.Now().Add(f.opts.StallTimeout)); err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("setting deadline: %w", err)
	}
	if _, err := st.Write(appendRequest(nil, req)); err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("sending request: %w", stallErr(err))
	}
	if err := st.CloseWrite(); err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("closing request: %w", err)
	}
	br := bufio.NewReaderSize(&stallReader{ctx: ctx, s: st, timeout: f.opts.StallTimeout, limit: f.limit}, 64<<10)
	return st, br, cleanup, nil
}

// fetchLayer asks p for the piece layer and checks it against want.
func (f *fetcher) fetchLayer(ctx context.Context, p peer.ID) ([][32]byte, error) {
	for busy := 0; ; busy++ {
		leaves, err := f.tryLayer(ctx, p)
		var re *RemoteError
		if errors.As(err, &re) && re.Code == statusBusy && busy < 4 {
			t := time.NewTimer(time.Duration(100<<busy) * time.Millisecond)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		return leaves, err
	}
}

func (f *fetcher) tryLayer(ctx context.Context, p peer.ID) ([][32]byte, error) {
	_, br, cleanup, err := f.openStream(ctx, p, request{Op: opLayer, File: f.want.SHA256})
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if err := readStatus(br); err != nil {
		return nil, stallErr(err)
	}
	n := pieces.Count(f.want.Size)
	hdr, leaves, err := readLayer(br, n)
	if err != nil {
		if errors.Is(err, ErrProtocol) && hdr.Leaves > uint64(n) {
			return nil, fmt.Errorf("%w: %w", pieces.ErrLayerMismatch, err)
		}
		return nil, stallErr(err)
	}
	if hdr.PieceSize != pieces.Size {
		return nil, fmt.Errorf("%w: provider uses piece size %d", pieces.ErrLayerMismatch, hdr.PieceSize)
	}
	if hdr.Size != uint64(f.want.Size) {
		return nil, fmt.Errorf("%w: provider says size %d, want %d", pieces.ErrLayerMismatch, hdr.Size, f.want.Size)
	}
	if err := pieces.VerifyLayer(leaves, f.want.Size, f.want.PieceRoot); err != nil {
		return nil, err
	}
	return leaves, nil
}

var pieceBufPool = sync.Pool{New: func() any { b := make([]byte, pieces.Size); return &b }}

// fetchRange fetches pieces first..first+count-1 from p over one stream,
// verifying and writing each as it arrives.
func (f *fetcher) fetchRange(ctx context.Context, p peer.ID, first, count int) error {
	st, br, cleanup, err := f.openStream(ctx, p, request{Op: opRange, File: f.want.SHA256, First: uint64(first), Count: uint64(count)})
	if err != nil {
		return err
	}
	defer cleanup()
	if err := readStatus(br); err != nil {
		return stallErr(err)
	}
	bp := pieceBufPool.Get().(*[]byte)
	defer pieceBufPool.Put(bp)
	end := first + count
	for i := first; i < end; i++ {
		if f.sched.doneFrom(i, end) {
			// Endgame: another provider delivered the rest already.
			_ = st.Reset() // abandoning the stream: an error changes nothing
			return nil
		}
		buf := (*bp)[:pieces.PieceLen(f.want.Size, i)]
		n, err := io.ReadFull(br, buf)
		f.received.Add(int64(n))
		f.opts.Metrics.addFetched(n)
		if err != nil {
			return fmt.Errorf("reading piece %d: %w", i, stallErr(err))
		}
		if err := pieces.VerifyPiece(f.leaves, i, buf); err != nil {
			return err
		}
		f.store(p, i, buf)
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// store writes a verified piece unless another copy won, and hands it to
// the committer.
func (f *fetcher) store(p peer.ID, i int, data []byte) {
	if f.sched.isDone(i) {
		f.mu.Lock()
		f.res.DuplicatePieces++
		f.mu.Unlock()
		return
	}
	// Two providers may race here in the endgame; both write the same
	// verified bytes, and only the first markDone counts.
	if err := f.pf.writePiece(i, data); err != nil {
		f.fail(err)
		return
	}
	if !f.sched.markDone(i) {
		f.mu.Lock()
		f.res.DuplicatePieces++
		f.mu.Unlock()
		return
	}
	f.written <- i
	f.mu.Lock()
	f.res.PiecesFetched++
	f.res.PeerPieces[p]++
	f.doneBytes += int64(len(data))
	prog := Progress{Done: f.doneBytes, Total: f.want.Size, Peers: int(f.active.Load())}
	f.mu.Unlock()
	if f.opts.Progress != nil {
		f.progressMu.Lock()
		f.opts.Progress(prog)
		f.progressMu.Unlock()
	}
}

// commitLoop makes written pieces durable in batches (see partFile.commit)
// until f.written is closed, then commits the rest.
func (f *fetcher) commitLoop() error {
	tick := time.NewTicker(f.opts.SyncInterval)
	defer tick.Stop()
	var pending []int
	var pendingBytes int64
	flush := func() error {
		err := f.pf.commit(pending)
		pending, pendingBytes = pending[:0], 0
		return err
	}
	for {
		select {
		case i, ok := <-f.written:
			if !ok {
				return flush()
			}
			pending = append(pending, i)
			pendingBytes += int64(pieces.PieceLen(f.want.Size, i))
			if pendingBytes >= f.opts.SyncBytes {
				if err := flush(); err != nil {
					f.fail(err)
					return err
				}
			}
		case <-tick.C:
			if err := flush(); err != nil {
				f.fail(err)
				return err
			}
		}
	}
}

type hashResult struct {
	sum [32]byte
	err error
	// rejected marks an error of FetchOptions.Check about the content
	// (not a read cut short by the fetch ending).
	rejected bool
}

// hashLoop feeds the part file to SHA-256 in order, piece by piece, as soon
// as each piece is done (reused or verified and written; a piece's bytes
// never change after that). It reads from the part file (the page cache),
// so pieces may arrive in any order. When stop is closed it finishes the
// done prefix and returns the sum if every piece was hashed.
func (f *fetcher) hashLoop(stop <-chan struct{}) (res hashResult) {
	// A part file truncated behind our back (the flock is advisory) would
	// fault the mapping with SIGBUS; turn that into an error, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			res = hashResult{err: fmt.Errorf("transfer: %s changed while hashing: %v", f.pf.partPath, r)}
		}
	}()
	h := sha256.New()
	// Hash straight from a read-only shared mapping of the part file (the
	// same page cache pwrite fills), which saves copying every byte once
	// more; fall back to pread if mapping fails.
	var mapped []byte
	if m, err := syscall.Mmap(int(f.pf.part.Fd()), 0, int(f.want.Size), syscall.PROT_READ, syscall.MAP_SHARED); err == nil {
		mapped = m
		defer func() { _ = syscall.Munmap(m) }()        // fails only for a bad range: m is the whole mapping
		_ = syscall.Madvise(m, syscall.MADV_SEQUENTIAL) // a hint: hashing is correct without it
	}
	var buf []byte
	if mapped == nil {
		buf = make([]byte, 4*pieces.Size)
	}
	n := len(f.leaves)
	next := 0
	stopped := false
	for {
		f.sched.mu.Lock()
		end := next
		for end < n && end-next < 4 && f.sched.done[end] {
			end++
		}
		wait := f.sched.changed
		f.sched.mu.Unlock()
		if end > next {
			off := int64(next) * pieces.Size
			l := min(int64(end)*pieces.Size, f.want.Size) - off
			if mapped != nil {
				h.Write(mapped[off : off+l])
				// Unmap what was hashed (the page cache keeps it), so the
				// process RSS does not grow with the file.
				_ = syscall.Madvise(mapped[off:off+l], syscall.MADV_DONTNEED) // a hint, as above
			} else {
				if _, err := f.pf.part.ReadAt(buf[:l], off); err != nil && !errors.Is(err, io.EOF) {
					return hashResult{err: fmt.Errorf("transfer: reading %s to hash it: %w", f.pf.partPath, err)}
				}
				h.Write(buf[:l])
			}
			next = end
			continue
		}
		if next == n {
			var r hashResult
			h.Sum(r.sum[:0])
			return r
		}
		if stopped {
			return hashResult{err: fmt.Errorf("transfer: hashing stopped at piece %d of %d", next, n)}
		}
		select {
		case <-wait:
		case <-stop:
			stopped = true
		}
	}
}

// discard removes the partial download (see partFile.discard); files it
// cannot remove are logged, as the error the fetch returns is the reason
// for discarding them.
func (f *fetcher) discard() {
	if err := f.pf.discard(); err != nil {
		f.log.Warn("partial download left on disk", "err", err)
	}
}

// finish checks the whole-file SHA-256, runs the Verify hook and renames
// the part file into place.
func (f *fetcher) finish(sum [32]byte) error {
	pf := f.pf
	if sum != f.want.SHA256 {
		f.discard()
		return fmt.Errorf("%w: %s has %x, want %x", ErrHashMismatch, pf.partPath, sum, f.want.SHA256)
	}
	if err := pf.part.Sync(); err != nil {
		f.discard()
		return diskErr("syncing", pf.partPath, err)
	}
	if f.opts.Verify != nil {
		if err := f.opts.Verify(pf.partPath); err != nil {
			f.discard()
			return fmt.Errorf("%w: %s: %w", ErrVerify, pf.partPath, err)
		}
	}
	if err := os.Rename(pf.partPath, f.opts.Path); err != nil {
		return fmt.Errorf("transfer: renaming %s to %s: %w", pf.partPath, f.opts.Path, err)
	}
	syncDir(filepath.Dir(f.opts.Path))
	// The bitfield of a finished file: left behind, it is ignored (the next
	// part file at this path starts empty) but takes space.
	if err := os.Remove(pf.bitsPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.log.Warn("cannot remove the bitfield of a finished download", "file", pf.bitsPath, "err", err)
	}
	f.res.Path = f.opts.Path
	return nil
}

// syncDir makes a rename durable; failures are ignored because some file
// systems refuse fsync on directories and the rename itself succeeded.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// stallReader sets a fresh read deadline before every read, so a provider
// that sends nothing for the timeout fails the read. With a limit, each
// read takes at most one burst and then waits for its bytes' tokens, so
// the fetch as a whole receives no faster than FetchOptions.DownloadLimit.
type stallReader struct {
	ctx     context.Context
	s       network.Stream
	timeout time.Duration
	limit   *rate.Limiter // nil when unlimited
}

func (r *stallReader) Read(p []byte) (int, error) {
	if r.limit != nil && len(p) > r.limit.Burst() {
		p = p[:r.limit.Burst()]
	}
	if err := r.s.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
		return 0, err
	}
	n, err := r.s.Read(p)
	if r.limit != nil && n > 0 {
		if werr := r.limit.WaitN(r.ctx, n); werr != nil && err == nil {
			err = fmt.Errorf("download rate limit: %w", werr)
		}
	}
	return n, stallErr(err)
}

// stallErr turns a deadline error into errStall.
func stallErr(err error) error {
	if err == nil || errors.Is(err, errStall) {
		return err
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("%w: %w", errStall, err)
	}
	return err
}
