package xpak

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Parallel xz decoding. A pure-Go LZMA2 decoder (lzma2.go) runs at about
// the speed of liblzma, so one core barely keeps up with `xz -dc`. xz -T (and
// so portage, which compresses with `xz -T<MAKEOPTS jobs>`) cuts a stream
// into independent blocks of 3 × the dictionary (24 MiB at the default
// -6) whose headers declare their compressed and uncompressed sizes;
// such blocks are read whole and decoded on separate cores, and their
// output is served in order. A stream written without -T is one block
// with no sizes: it cannot be split, and is decoded by the reading
// goroutine, ahead of the caller.
//
// Memory stays bounded: at most xzInFlight blocks are held at once (read
// ahead, being decoded, or being served), each at most
// xzParallelMaxBlock compressed plus as much decoded, checked against the
// sizes its header declares before anything is allocated, and against the
// decoder window for its dictionary (the xzGuard in front refuses a
// larger one before this reader sees the header). A block larger than
// that, or without declared sizes, is decoded by the reading goroutine
// itself, streaming, after the blocks before it. Every check the
// sequential decoder makes is made here too: block header CRC32, filter
// chain, declared against actual sizes, padding, the block check
// (CRC32, CRC64 or SHA-256), and the index against the blocks seen, with
// its CRC32 and the stream footer.

// xzParallelMaxBlock bounds the compressed and the decoded size of a block
// decoded ahead of the reader.
var xzParallelMaxBlock int64 = 32 << 20

// xzInFlight is how many blocks may be held at once.
func xzInFlight() int { return min(runtime.GOMAXPROCS(0), 4) }

var (
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	crc64Table = crc64.MakeTable(crc64.ECMA)
)

// newXZReader returns the xz decoder for r. Blocks that declare their
// sizes are decoded ahead on other cores; any other block is decoded by
// the reading goroutine, still ahead of the caller.
func newXZReader(r io.Reader) (io.ReadCloser, error) {
	return newXZParallel(bufio.NewReaderSize(r, 64<<10)), nil
}

// xzBlockInfo is what a block header says.
type xzBlockInfo struct {
	size         int   // header bytes
	compressed   int64 // -1 when not declared
	uncompressed int64 // -1 when not declared
	dict         int
}

// parseXZBlockHeader checks a whole block header (size byte to CRC32).
// Only a lone LZMA2 filter is supported: portage's xz writes no other.
func parseXZBlockHeader(h []byte) (xzBlockInfo, error) {
	bad := func(what string) (xzBlockInfo, error) {
		return xzBlockInfo{}, fmt.Errorf("%w: xz block header: %s", ErrCorrupt, what)
	}
	n := len(h)
	if n < 8 || n != (int(h[0])+1)*4 {
		return bad("bad size")
	}
	if crc32.ChecksumIEEE(h[:n-4]) != binary.LittleEndian.Uint32(h[n-4:]) {
		return bad("CRC32 mismatch")
	}
	flags := h[1]
	if flags&0x3c != 0 {
		return bad("reserved flags set")
	}
	p := 2
	uvarint := func() (int64, bool) {
		v, k := binary.Uvarint(h[p : n-4])
		if k <= 0 || v > 1<<62 {
			return 0, false
		}
		p += k
		return int64(v), true
	}
	out := xzBlockInfo{size: n, compressed: -1, uncompressed: -1}
	var ok bool
	if flags&0x40 != 0 {
		if out.compressed, ok = uvarint(); !ok || out.compressed == 0 {
			return bad("bad compressed size")
		}
	}
	if flags&0x80 != 0 {
		if out.uncompressed, ok = uvarint(); !ok {
			return bad("bad uncompressed size")
		}
	}
	if flags&3 != 0 {
		return bad("filter chain other than LZMA2 alone")
	}
	id, ok := uvarint()
	if !ok || id != 0x21 {
		return bad("filter other than LZMA2")
	}
	psize, ok := uvarint()
	if !ok || psize != 1 || p >= n-4 {
		return bad("bad LZMA2 properties")
	}
	code := h[p]
	p++
	if code > 40 {
		return bad("bad LZMA2 dictionary")
	}
	out.dict = 1<<32 - 1
	if code < 40 {
		out.dict = (2 | int(code&1)) << (code/2 + 11)
	}
	for _, c := range h[p : n-4] {
		if c != 0 {
			return bad("non-zero padding")
		}
	}
	return out, nil
}

// xzJob is one block, decoded by a worker into out (ready counts the
// bytes decoded so far, note wakes a reader waiting for more; err is set
// before done closes) or streamed by the reading goroutine (chunks,
// closed at the end; err is set before).
type xzJob struct {
	out    []byte
	ready  atomic.Int64
	note   chan struct{}
	chunks chan []byte
	// sum is the block's check, computed by the reader as it hands the
	// bytes on (the decoding goroutines are the slower ones); want is the
	// stored check, set before chunks or done closes.
	sum  hash.Hash
	want []byte
	err  error
	done chan struct{}
}

// verify compares the check of what was handed on with the stored one,
// once the block ended well.
func (j *xzJob) verify() {
	if j.err == nil && j.sum != nil && !bytes.Equal(j.sum.Sum(nil), j.want) {
		j.err = fmt.Errorf("%w: xz block check mismatch", ErrCorrupt)
	}
}

// progress publishes that out[:n] is decoded.
func (j *xzJob) progress(n int) {
	j.ready.Store(int64(n))
	select {
	case j.note <- struct{}{}:
	default:
	}
}

// xzParallel is the parallel decoder; see the comment at the top.
type xzParallel struct {
	br    *bufio.Reader
	queue chan *xzJob   // blocks in stream order
	slots chan struct{} // one per block held
	stop  chan struct{}
	wg    sync.WaitGroup
	err   error // the reading goroutine's final error, read after queue closes

	// Buffers of finished blocks, for the next ones: blocks are mostly of
	// one size, and a fresh 24 MiB buffer per block costs its zeroing and
	// the collector's work. At most one per slot, twice (data and output).
	free chan []byte

	// window is the streaming decoder's dictionary, kept for the next
	// block decoded here.
	window []byte

	// pieces recycles the streamed blocks' output pieces: piece is the
	// one being handed on, back to pieces when the next is taken.
	pieces chan []byte
	piece  []byte

	cur     *xzJob
	served  int // bytes of cur.out handed on
	pending []byte
	once    sync.Once
	failed  error // sticky error handed to Read's caller
}

func newXZParallel(br *bufio.Reader) *xzParallel {
	n := xzInFlight()
	x := &xzParallel{br: br, queue: make(chan *xzJob, n), slots: make(chan struct{}, n), stop: make(chan struct{}), free: make(chan []byte, 2*n), pieces: make(chan []byte, 4)}
	x.wg.Add(1)
	go x.produce()
	return x
}

func (x *xzParallel) Read(p []byte) (int, error) {
	for len(x.pending) == 0 {
		if x.failed != nil {
			return 0, x.failed
		}
		if x.cur != nil {
			if x.cur.chunks != nil {
				if c, ok := <-x.cur.chunks; ok {
					x.reusePiece()
					x.piece = c
					x.handOn(c)
					continue
				}
				x.cur.verify()
			} else if x.more() {
				continue
			}
			err := x.cur.err
			x.recycle(x.cur.out)
			x.cur = nil
			<-x.slots
			if err != nil {
				x.failed = err
				return 0, err
			}
		}
		job, ok := <-x.queue
		if !ok {
			x.failed = x.err
			if x.failed == nil {
				x.failed = io.EOF
			}
			return 0, x.failed
		}
		x.cur, x.served = job, 0
	}
	n := copy(p, x.pending)
	x.pending = x.pending[n:]
	return n, nil
}

// handOn makes b the next bytes Read returns, and adds them to the
// current block's check.
func (x *xzParallel) handOn(b []byte) {
	x.pending = b
	if x.cur.sum != nil {
		x.cur.sum.Write(b)
	}
}

func (x *xzParallel) reusePiece() {
	if x.piece != nil {
		select {
		case x.pieces <- x.piece[:0]:
		default:
		}
		x.piece = nil
	}
}

// more sets pending to the next bytes a worker decoded of the current
// block, waiting for them; false once the block is done and all of it
// was handed on. Its bytes are handed on before its check is verified,
// as a streamed block's are: a failed check is the read's error at the
// block's end, before the stream can end well.
func (x *xzParallel) more() bool {
	j := x.cur
	for {
		if r := int(j.ready.Load()); r > x.served {
			x.handOn(j.out[x.served:r])
			x.served = r
			return true
		}
		select {
		case <-j.done:
			if int(j.ready.Load()) > x.served {
				continue
			}
			j.verify()
			return false
		case <-j.note:
		}
	}
}

// Close stops the reading goroutine and the workers and waits for them.
func (x *xzParallel) Close() error {
	x.once.Do(func() {
		close(x.stop) // every wait of the producer also waits for stop
		x.wg.Wait()
	})
	return nil
}

// send queues a job once a slot is free; false when Close was called.
func (x *xzParallel) send(job *xzJob) bool {
	select {
	case x.slots <- struct{}{}:
	case <-x.stop:
		return false
	}
	select {
	case x.queue <- job:
		return true
	case <-x.stop:
		return false
	}
}

func (x *xzParallel) produce() {
	defer x.wg.Done()
	defer close(x.queue)
	x.err = x.streams()
}

// truncated turns an early end of the input into ErrTruncated.
func xzTruncated(err error, what string) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: xz stream ends inside its %s", ErrTruncated, what)
	}
	return err
}

// streams reads concatenated streams to the end of the input.
func (x *xzParallel) streams() error {
	for {
		if err := x.stream(); err != nil {
			return err
		}
		// Stream padding: zero bytes in multiples of four, then the end
		// or another stream.
		pad := 0
		for {
			c, err := x.br.ReadByte()
			if err == io.EOF {
				if pad%4 != 0 {
					return fmt.Errorf("%w: xz stream padding of %d bytes", ErrCorrupt, pad)
				}
				return nil
			}
			if err != nil {
				return err
			}
			if c != 0 {
				if pad%4 != 0 {
					return fmt.Errorf("%w: xz stream padding of %d bytes", ErrCorrupt, pad)
				}
				if err := x.br.UnreadByte(); err != nil {
					return err
				}
				break
			}
			pad++
		}
	}
}

// xzRecord is an index record: a block's unpadded size (header,
// compressed data and check) and uncompressed size.
type xzRecord struct{ unpadded, uncompressed int64 }

// stream reads one stream: header, blocks, index, footer.
func (x *xzParallel) stream() error {
	var sh [12]byte
	if _, err := io.ReadFull(x.br, sh[:]); err != nil {
		return xzTruncated(err, "stream header")
	}
	if !bytes.Equal(sh[:6], xzMagic) {
		return fmt.Errorf("%w: xz: bad stream header magic", ErrCorrupt)
	}
	if sh[6] != 0 || sh[7] > 0x0f || crc32.ChecksumIEEE(sh[6:8]) != binary.LittleEndian.Uint32(sh[8:]) {
		return fmt.Errorf("%w: xz: bad stream flags", ErrCorrupt)
	}
	check := sh[7]
	switch check {
	case 0x00, 0x01, 0x04, 0x0a:
	default:
		return fmt.Errorf("%w: xz: unsupported check type %#x", ErrCorrupt, check)
	}
	var records []xzRecord
	for {
		first, err := x.br.ReadByte()
		if err != nil {
			return xzTruncated(err, "block or index")
		}
		if first == 0 {
			return x.index(records, sh[6:8])
		}
		hb := make([]byte, (int(first)+1)*4)
		hb[0] = first
		if _, err := io.ReadFull(x.br, hb[1:]); err != nil {
			return xzTruncated(err, "block header")
		}
		h, err := parseXZBlockHeader(hb)
		if err != nil {
			return err
		}
		rec, err := x.block(h, check)
		if err != nil {
			return err
		}
		records = append(records, rec)
	}
}

// block hands one block (header already read) to a worker, or decodes it
// here when it is not sized or too large to hold.
func (x *xzParallel) block(h xzBlockInfo, check byte) (xzRecord, error) {
	csize := xzCheckSize(check)
	if h.compressed >= 0 && h.uncompressed >= 0 && h.compressed <= xzParallelMaxBlock && h.uncompressed <= xzParallelMaxBlock {
		pad := int((4 - (int64(h.size)+h.compressed)%4) % 4)
		job := &xzJob{done: make(chan struct{}), note: make(chan struct{}, 1), sum: newXZCheck(check)}
		if !x.send(job) { // hold a slot before allocating
			return xzRecord{}, io.ErrClosedPipe
		}
		buf := x.buffer(int(h.compressed) + pad + csize)
		job.out = x.buffer(int(h.uncompressed))
		if _, err := io.ReadFull(x.br, buf); err != nil {
			job.err = xzTruncated(err, "block")
			close(job.done)
			return xzRecord{}, job.err
		}
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			defer close(job.done)
			job.want, job.err = decodeSizedBlock(h, check, buf, job.out, job.progress)
			x.recycle(buf)
		}()
		return xzRecord{int64(h.size) + h.compressed + int64(csize), h.uncompressed}, nil
	}
	job := &xzJob{chunks: make(chan []byte), sum: newXZCheck(check)}
	if !x.send(job) {
		return xzRecord{}, io.ErrClosedPipe
	}
	rec, err := x.streamBlock(h, check, job)
	job.err = err
	close(job.chunks)
	return rec, err
}

// buffer returns a buffer of n bytes, a recycled one if one is large
// enough. Its content is overwritten whole by the caller.
func (x *xzParallel) buffer(n int) []byte {
	select {
	case b := <-x.free:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]byte, n)
}

// recycle keeps b for a later block, or drops it when enough are kept.
func (x *xzParallel) recycle(b []byte) {
	if cap(b) == 0 {
		return
	}
	select {
	case x.free <- b:
	default:
	}
}

// lzma2Decoders recycles decoders: their probability models and chunk
// buffer are 90 KiB.
var lzma2Decoders = sync.Pool{New: func() any { return new(lzma2Decoder) }}

// decodeSizedBlock decodes a block whose compressed data, padding and
// check are buf, into out, of its declared size.
// progress is told how much of out is decoded, after each chunk. It
// returns the block's stored check.
func decodeSizedBlock(h xzBlockInfo, check byte, buf, out []byte, progress func(int)) ([]byte, error) {
	d := lzma2Decoders.Get().(*lzma2Decoder)
	err := d.decodeSized(buf[:h.compressed], out, h.dict, progress)
	lzma2Decoders.Put(d)
	if err != nil {
		return nil, err
	}
	return xzBlockTail(buf[h.compressed:], check)
}

// xzBlockTail checks a block's padding and returns its stored check, in
// the byte order hash.Sum gives.
func xzBlockTail(tail []byte, check byte) ([]byte, error) {
	pad := len(tail) - xzCheckSize(check)
	for _, c := range tail[:pad] {
		if c != 0 {
			return nil, fmt.Errorf("%w: xz block padding is not zero", ErrCorrupt)
		}
	}
	// A copy: tail's buffer is recycled before the reader compares.
	return bytes.Clone(reverseIfCRC(check, tail[pad:])), nil
}

// newXZCheck is the hash of a block check type, nil for none.
func newXZCheck(check byte) hash.Hash {
	switch check {
	case 0x01:
		return crc32.NewIEEE()
	case 0x04:
		return crc64.New(crc64Table)
	case 0x0a:
		return sha256.New()
	}
	return nil
}

// streamBlock decodes a block here, streaming its output to job in
// pieces, and checks it as decodeSizedBlock does.
func (x *xzParallel) streamBlock(h xzBlockInfo, check byte, job *xzJob) (xzRecord, error) {
	var total int64
	emit := func(b []byte) error {
		total += int64(len(b))
		if h.uncompressed >= 0 && total > h.uncompressed {
			return fmt.Errorf("%w: xz block holds more than its declared uncompressed size", ErrCorrupt)
		}
		// The window is overwritten as decoding goes on: hand on a copy.
		var c []byte
		select {
		case c = <-x.pieces:
		default:
		}
		c = append(c, b...)
		select {
		case job.chunks <- c:
			return nil
		case <-x.stop:
			return io.ErrClosedPipe
		}
	}
	d := lzma2Decoders.Get().(*lzma2Decoder)
	var in io.Reader = x.br
	if h.compressed >= 0 {
		// Reading past the declared size is the block's error, not the
		// stream's: the limit makes it a short block.
		in = io.LimitReader(x.br, h.compressed)
	}
	n, win, err := d.decodeStream(in, h.dict, x.window, emit)
	x.window = win
	lzma2Decoders.Put(d)
	if err != nil {
		if errors.Is(err, ErrTruncated) && h.compressed >= 0 && n == h.compressed {
			return xzRecord{}, fmt.Errorf("%w: xz block data is longer than its header says (%d bytes)", ErrCorrupt, h.compressed)
		}
		return xzRecord{}, err
	}
	if h.uncompressed >= 0 && total != h.uncompressed {
		return xzRecord{}, fmt.Errorf("%w: xz block holds less than its declared uncompressed size", ErrCorrupt)
	}
	if h.compressed >= 0 && n != h.compressed {
		return xzRecord{}, fmt.Errorf("%w: xz block data is %d bytes, its header says %d", ErrCorrupt, n, h.compressed)
	}
	pad := int((4 - (int64(h.size)+n)%4) % 4)
	tail := make([]byte, pad+xzCheckSize(check))
	if _, err := io.ReadFull(x.br, tail); err != nil {
		return xzRecord{}, xzTruncated(err, "block check")
	}
	if job.want, err = xzBlockTail(tail, check); err != nil {
		return xzRecord{}, err
	}
	return xzRecord{int64(h.size) + n + int64(xzCheckSize(check)), total}, nil
}

// reverseIfCRC returns a stored check in the byte order hash.Sum gives:
// xz stores CRC32 and CRC64 little-endian, Sum is big-endian.
func reverseIfCRC(check byte, stored []byte) []byte {
	if check != 0x01 && check != 0x04 {
		return stored
	}
	r := make([]byte, len(stored))
	for i, c := range stored {
		r[len(stored)-1-i] = c
	}
	return r
}

// index checks the index (its indicator already read) against the blocks
// seen, then the stream footer against the header's flags.
func (x *xzParallel) index(records []xzRecord, flags []byte) error {
	crc := crc32.NewIEEE()
	crc.Write([]byte{0})
	size := int64(1)
	bad := func(what string) error { return fmt.Errorf("%w: xz index: %s", ErrCorrupt, what) }
	uvarint := func() (int64, error) {
		var v uint64
		for i := 0; i < 9; i++ {
			c, err := x.br.ReadByte()
			if err != nil {
				return 0, xzTruncated(err, "index")
			}
			crc.Write([]byte{c})
			size++
			v |= uint64(c&0x7f) << (7 * i)
			if c&0x80 == 0 {
				if i > 0 && c == 0 {
					return 0, bad("varint not minimal")
				}
				return int64(v & (1<<62 - 1)), nil
			}
		}
		return 0, bad("varint too long")
	}
	n, err := uvarint()
	if err != nil {
		return err
	}
	if n != int64(len(records)) {
		return bad(fmt.Sprintf("%d records for %d blocks", n, len(records)))
	}
	for _, r := range records {
		u, err := uvarint()
		if err != nil {
			return err
		}
		c, err := uvarint()
		if err != nil {
			return err
		}
		if u != r.unpadded || c != r.uncompressed {
			return bad("a record does not match its block")
		}
	}
	pad := int((4 - size%4) % 4)
	tail := make([]byte, pad+4)
	if _, err := io.ReadFull(x.br, tail); err != nil {
		return xzTruncated(err, "index")
	}
	for _, c := range tail[:pad] {
		if c != 0 {
			return bad("non-zero padding")
		}
	}
	crc.Write(tail[:pad])
	size += int64(pad)
	if crc.Sum32() != binary.LittleEndian.Uint32(tail[pad:]) {
		return bad("CRC32 mismatch")
	}
	size += 4
	var f [12]byte
	if _, err := io.ReadFull(x.br, f[:]); err != nil {
		return xzTruncated(err, "stream footer")
	}
	if string(f[10:]) != "YZ" || crc32.ChecksumIEEE(f[4:10]) != binary.LittleEndian.Uint32(f[:4]) ||
		!bytes.Equal(f[8:10], flags) || int64(binary.LittleEndian.Uint32(f[4:8])+1)*4 != size {
		return fmt.Errorf("%w: xz: bad stream footer", ErrCorrupt)
	}
	return nil
}
