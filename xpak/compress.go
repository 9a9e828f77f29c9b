package xpak

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	dbzip2 "github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// ioBufSize is the buffer size used for every streaming copy: large enough
// that per-call overhead vanishes next to hashing, small enough to be
// irrelevant in memory.
const ioBufSize = 256 << 10

// bufPool recycles ioBufSize buffers: a daemon scanning a PKGDIR reads
// thousands of small packages, and fresh 256 KiB buffers for each would
// dominate their cost.
var bufPool = sync.Pool{New: func() any { b := make([]byte, ioBufSize); return &b }}

func getBuf() *[]byte {
	b := bufPool.Get().(*[]byte)
	*b = (*b)[:cap(*b)]
	return b
}
func putBuf(b *[]byte) { bufPool.Put(b) }

// asyncThreshold is the payload size from which decoding runs ahead in its
// own goroutine; below it the hand-off costs more than it saves.
const asyncThreshold = 1 << 20

// magicPeek is how many leading bytes compression detection looks at: the
// ustar magic of an uncompressed tar sits at offset 257.
const magicPeek = 262

// detectCompression names the compression of a payload from its leading
// bytes. Names (".zst", ".xz") are never trusted: portage itself probes
// magic bytes, and a renamed payload must not pick a different decoder.
func detectCompression(head []byte) (Compression, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressionZstd, nil
	case len(head) >= 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18:
		// A zstd skippable frame (pzstd writes one first).
		return CompressionZstd, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return CompressionXZ, nil
	case len(head) >= 4 && head[0] == 'B' && head[1] == 'Z' && head[2] == 'h' && head[3] >= '1' && head[3] <= '9':
		return CompressionBzip2, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return CompressionGzip, nil
	case bytes.HasPrefix(head, []byte{0x04, 0x22, 0x4d, 0x18}):
		return CompressionLZ4, nil
	case len(head) >= 262 && bytes.Equal(head[257:262], []byte("ustar")):
		return CompressionNone, nil
	}
	n := min(len(head), 8)
	return "", fmt.Errorf("%w: leading bytes %s", ErrUnknownCompression, hex.EncodeToString(head[:n]))
}

// decoderWindow is the zstd window / xz dictionary bound for lim: the
// configured cap, clamped to what the decoders accept.
func decoderWindow(lim Limits) int64 {
	w := lim.MaxDecoderWindow
	w = max(w, 1<<20)
	w = min(w, zstd.MaxWindowSize)
	return w
}

// newDecoder wraps r (positioned at the payload's first byte) in the
// decoder for c, behind the xz structure guard for xz. The returned closer
// releases decoder goroutines and memory; it does not close r. Readers of
// hostile input go through openPayload, which adds the bounds and the
// error classification.
func newDecoder(r io.Reader, c Compression, lim Limits) (io.ReadCloser, error) {
	if c == CompressionXZ {
		r = newXZGuard(r, lim)
	}
	return rawDecoder(r, c, lim)
}

// rawDecoder is newDecoder without the xz guard, for callers that put the
// guard in place themselves.
func rawDecoder(r io.Reader, c Compression, lim Limits) (io.ReadCloser, error) {
	switch c {
	case CompressionNone:
		return io.NopCloser(r), nil
	case CompressionZstd:
		return newZstdReader(r, uint64(decoderWindow(lim)))
	case CompressionXZ:
		d, err := newXZReader(r)
		if err != nil {
			return nil, decodeError(c, err)
		}
		return d, nil
	case CompressionBzip2:
		return newBzip2Reader(r), nil
	case CompressionGzip:
		d, err := gzip.NewReader(r)
		if err != nil {
			return nil, decodeError(c, err)
		}
		return d, nil
	case CompressionLZ4:
		return io.NopCloser(lz4.NewReader(r)), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownCompression, c)
}

// bzip2Readers recycles bzip2 decoders. compress/bzip2 allocates a 3.6
// MB block buffer for every stream bzip2 -9 writes (portage's
// environment.bz2, .tbz2 images), and a daemon indexing a PKGDIR decodes
// one or more per package: at ten thousand packages those buffers were
// three quarters of everything it allocated. dsnet's Reset keeps the
// buffers; only a decoder that read its stream to the end is recycled
// (Reset does not clear what an abandoned block left to be read).
var bzip2Readers sync.Pool

func newBzip2Reader(r io.Reader) io.ReadCloser {
	d, _ := bzip2Readers.Get().(*dbzip2.Reader)
	if d == nil {
		d, _ = dbzip2.NewReader(r, nil) // a nil config: cannot fail
	} else {
		_ = d.Reset(r) // cannot fail
	}
	return &bzip2Closer{d: d}
}

type bzip2Closer struct {
	d     *dbzip2.Reader
	ended bool // the stream was read to its end, without an error
}

func (b *bzip2Closer) Read(p []byte) (int, error) {
	if b.d == nil {
		return 0, io.ErrClosedPipe
	}
	n, err := b.d.Read(p)
	b.ended = err == io.EOF
	return n, err
}

// Close detaches the decoder from its source and recycles it if its
// stream ended well.
func (b *bzip2Closer) Close() error {
	if b.d == nil {
		return nil
	}
	d := b.d
	b.d = nil
	if b.ended {
		_ = d.Reset(eofReader{}) // cannot fail
		bzip2Readers.Put(d)
	}
	return nil
}

// zstdPools recycles zstd stream decoders, one pool per window bound. A
// fresh decoder allocates its history and block buffers (megabytes); a
// PKGDIR index reads two or three zstd payloads per package, and for the
// small packages most PKGDIRs hold those allocations cost more than the
// decoding. Decoders run synchronously (concurrency 1), so a pooled one
// holds no goroutine, and Reset clears every state a previous, possibly
// hostile, stream left.
var zstdPools sync.Map // uint64 window → *sync.Pool of *zstd.Decoder

func newZstdReader(r io.Reader, window uint64) (io.ReadCloser, error) {
	pi, _ := zstdPools.LoadOrStore(window, &sync.Pool{})
	pool := pi.(*sync.Pool)
	d, _ := pool.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(window),
			zstd.WithDecoderMaxMemory(window))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
	}
	if err := d.Reset(r); err != nil {
		d.Close()
		return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	return &zstdCloser{d: d, pool: pool}, nil
}

type zstdCloser struct {
	d    *zstd.Decoder
	pool *sync.Pool
}

func (z *zstdCloser) Read(p []byte) (int, error) {
	if z.d == nil {
		return 0, io.ErrClosedPipe
	}
	return z.d.Read(p)
}

// Close detaches the decoder from its source (Reset(nil): the source is
// never touched again) and recycles it.
func (z *zstdCloser) Close() error {
	if z.d == nil {
		return nil
	}
	d := z.d
	z.d = nil
	if err := d.Reset(nil); err != nil {
		d.Close()
		return nil
	}
	z.pool.Put(d)
	return nil
}

// hasSentinel reports whether err already wraps one of this package's
// sentinels, so classification never relabels a precise error.
func hasSentinel(err error) bool {
	for _, s := range allSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// decodeError classifies a decoder's error: an early end is truncation,
// our own sentinels pass through, anything else is corruption.
func decodeError(c Compression, err error) error {
	switch {
	case err == nil || err == io.EOF:
		return err
	case hasSentinel(err):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s stream ends early", ErrTruncated, c)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return fmt.Errorf("%w: zstd window: %v", ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, c, err)
}

// sourceError classifies an error of the reader a payload is read from
// (a GPKG member, the XPAK image range, a WalkImage caller's reader): one
// that already names a sentinel passes, an early end is truncation, and
// anything else is the source's own failure (a disk, a network), returned
// as it is so callers do not mistake it for a hostile package.
func sourceError(err error) error {
	switch {
	case err == nil || err == io.EOF || hasSentinel(err):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: payload source ends early", ErrTruncated)
	}
	return &sourceFailure{err}
}

// sourceFailure is a payload source's own error (a disk, a network),
// marked so that no later classification calls it corruption.
type sourceFailure struct{ err error }

func (s *sourceFailure) Error() string { return "reading payload: " + s.err.Error() }
func (s *sourceFailure) Unwrap() error { return s.err }

// payloadSource is the compressed side of a payload. It classifies the
// source's errors as they happen and remembers the first: a decoder may
// flatten an error it passes on into text, and a container that ended
// early must still read as ErrTruncated, not as a corrupt stream.
type payloadSource struct {
	r   io.Reader
	n   int64 // compressed bytes handed to the decoder
	err error
}

func (s *payloadSource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		if s.err == nil {
			s.err = sourceError(err)
		}
		err = s.err
	}
	return n, err
}

// payload is the decoded side of one compressed payload: the image tar,
// metadata.tar, environment.bz2. It is the single point every decoded
// byte passes, so it is where bombs are refused and where errors are
// classified: whatever the decoder, the source or the bounds go wrong
// with, a reader of a payload gets an error wrapping a sentinel (or, only
// for a failing source, that source's own error) and never a bare
// io.ErrUnexpectedEOF or decoder message.
//
// Two bounds apply as bytes arrive, never after the fact:
//   - max decompressed bytes (Limits.MaxImageBytes for an image), exact;
//   - the expansion ratio: past Limits.CompressionRatioGrace decompressed
//     bytes, no more than Limits.MaxCompressionRatio decompressed bytes
//     per compressed byte the decoder has consumed so far. max alone stops
//     a 16 GiB bomb only after 16 GiB of work (tens of seconds); the ratio
//     stops it after a small prefix, and bounds the work any payload can
//     cause by what its sender had to send.
type payload struct {
	c        Compression
	src      *payloadSource
	consumed func() int64 // compressed bytes the decoder has taken
	dec      io.ReadCloser
	what     string
	out      int64 // decompressed bytes served
	max      int64
	ratio    int64
	grace    int64
	err      error // sticky
}

// openPayload starts decoding r, compressed with c, as what ("image tar",
// "metadata tar"…), allowing at most max decompressed bytes and the
// expansion ratio of lim. Close releases the decoder; it does not close r.
func openPayload(r io.Reader, c Compression, what string, max int64, lim Limits) (*payload, error) {
	lim = lim.withDefaults() // a zero ratio would divide by zero below
	src := &payloadSource{r: r}
	p := &payload{c: c, src: src, what: what, max: max, ratio: lim.MaxCompressionRatio, grace: lim.CompressionRatioGrace}
	var in io.Reader = src
	p.consumed = func() int64 { return src.n }
	if c == CompressionXZ {
		// The xz decoder takes its input a byte at a time from the guard,
		// which reads ahead from src: count what the guard served.
		g := newXZGuard(src, lim)
		in, p.consumed = g, g.servedBytes
	}
	dec, err := rawDecoder(in, c, lim)
	if err != nil {
		return nil, p.classify(err)
	}
	p.dec = dec
	return p, nil
}

func (p *payload) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.out >= p.max {
		// At the bound: the payload may end exactly here, but may not
		// deliver one byte more.
		var one [1]byte
		n, err := p.dec.Read(one[:])
		switch {
		case n > 0:
			p.err = fmt.Errorf("%w: %s expands beyond %d bytes", ErrTooLarge, p.what, p.max)
		case err != nil:
			p.err = p.classify(err)
		}
		return 0, p.err
	}
	if int64(len(b)) > p.max-p.out {
		b = b[:p.max-p.out]
	}
	n, err := p.dec.Read(b)
	p.out += int64(n)
	if p.out > p.grace && p.out/p.ratio > p.consumed() {
		p.err = fmt.Errorf("%w: %s expands more than %d:1 (%d bytes from %d compressed)", ErrTooLarge, p.what, p.ratio, p.out, p.consumed())
		return 0, p.err
	}
	if err != nil {
		p.err = p.classify(err)
		return n, p.err
	}
	return n, nil
}

// classify turns whatever the decoder returned into a sentinel-wrapped
// error; io.EOF stays io.EOF unless the source failed underneath (some
// decoders report a failed source as a clean end).
func (p *payload) classify(err error) error {
	if p.src.err != nil {
		return p.src.err
	}
	return decodeError(p.c, err)
}

// Close releases the decoder. A decoder's Close repeats at most an error
// Read already classified and returned, so it is not passed on bare.
func (p *payload) Close() error {
	if p.dec != nil {
		_ = p.dec.Close()
	}
	return nil
}

// asyncReader decodes ahead in its own goroutine, so decompression (and
// whatever hashing feeds it) runs on one core while tar parsing and content
// hashing run on another — what `zstd -dc | sha256sum` gets from being two
// processes. Close stops the goroutine and waits for it: after Close the
// source is never touched again.
type asyncReader struct {
	src   io.Reader
	full  chan []byte
	free  chan []byte
	done  chan struct{}
	wg    sync.WaitGroup
	cur   []byte // unread part of the buffer being consumed
	owned []byte // that buffer, to hand back
	err   error  // producer's final error; read after full is closed
	once  sync.Once
}

const asyncBuffers = 4

func newAsyncReader(src io.Reader) *asyncReader {
	a := &asyncReader{
		src:  src,
		full: make(chan []byte, asyncBuffers),
		free: make(chan []byte, asyncBuffers),
		done: make(chan struct{}),
	}
	for range asyncBuffers {
		a.free <- *getBuf()
	}
	a.wg.Add(1)
	go a.produce()
	return a
}

func (a *asyncReader) produce() {
	defer a.wg.Done()
	defer close(a.full)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.done:
			return
		}
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var m int
			m, err = a.src.Read(buf[n:])
			n += m
		}
		if n > 0 {
			select {
			case a.full <- buf[:n]:
			case <-a.done:
				return
			}
		}
		if err != nil {
			a.err = err
			return
		}
	}
}

func (a *asyncReader) Read(p []byte) (int, error) {
	if len(a.cur) == 0 {
		if a.owned != nil {
			a.free <- a.owned[:cap(a.owned)]
			a.owned = nil
		}
		buf, ok := <-a.full
		if !ok {
			if a.err == nil {
				return 0, io.ErrClosedPipe // closed before the source ended
			}
			return 0, a.err
		}
		a.cur, a.owned = buf, buf
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// Close stops the producer and waits for it to exit.
func (a *asyncReader) Close() error {
	a.once.Do(func() {
		close(a.done)
		a.wg.Wait()
		// The producer has exited: every buffer is in full, in free or
		// owned by the consumer. Recycle them all.
		put := func(b []byte) { b = b[:cap(b)]; putBuf(&b) }
		if a.owned != nil {
			put(a.owned)
			a.owned, a.cur = nil, nil
		}
		for b := range a.full {
			put(b)
		}
		for {
			select {
			case b := <-a.free:
				put(b)
			default:
				return
			}
		}
	})
	return nil
}

// peekHead returns up to magicPeek leading bytes of br without consuming
// them. An error with nothing to show for it is the source's, classified;
// one after some bytes is left for the decoder to meet again.
func peekHead(br *bufio.Reader) ([]byte, error) {
	head, err := br.Peek(magicPeek)
	if err != nil && err != io.EOF {
		if len(head) == 0 {
			return nil, sourceError(err)
		}
	}
	return head, nil
}

// peekForDecoder peeks enough bytes to detect the compression.
func peekForDecoder(br *bufio.Reader) (Compression, error) {
	head, err := peekHead(br)
	if err != nil {
		return "", err
	}
	if len(head) == 0 {
		return "", fmt.Errorf("%w: empty payload", ErrTruncated)
	}
	return detectCompression(head)
}
