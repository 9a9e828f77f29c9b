package xpak

import (
	"bytes"
	"fmt"
	"io"
)

// xzGuard sits between an xz stream and the xz decoder and follows the
// container structure as the bytes pass (stream header, block headers,
// LZMA2 chunk headers, padding, check, index, footer), without decoding.
// It fails with ErrTooLarge before the decoder sees the last byte of any
// block header that asks for a dictionary larger than the window: the
// decoder allocates the whole dictionary per block, so an unchecked 4 GiB
// dictionary in a later block of a multi-block stream would be a memory
// bomb. Structure it cannot follow is ErrCorrupt.
//
// Every block's dictionary is allocated (and zeroed) afresh, however
// little the block holds: a 60-byte xz stream asking for a 128 MiB
// dictionary costs 128 MiB, and a file of such streams is an allocation
// bomb that decodes to almost nothing, so the payload's expansion ratio
// never sees it. The guard therefore also holds the sum of the
// dictionaries to Limits.MaxCompressionRatio per compressed byte past
// Limits.CompressionRatioGrace (or one window, if larger), as the payload
// does for decoded bytes.
type xzGuard struct {
	r      io.Reader
	window int64
	ratio  int64 // dictionary bytes allowed per parsed byte, past grace
	grace  int64
	dicts  int64 // dictionary bytes the blocks so far asked for
	parsed int64 // compressed bytes parsed
	err    error // sticky: parse error, or the source's error once buffered bytes are served

	// Bytes already parsed, not yet served. The xz decoder reads its
	// compressed input one byte at a time, so serving from here keeps that
	// cheap; and every byte is parsed before the decoder can see it.
	in       []byte
	pos, end int
	served   int64 // bytes handed to the decoder

	state    xzState
	need     int    // bytes still to collect or skip in this state
	buf      []byte // collected bytes (headers, chunk headers)
	check    int    // check size of the current stream
	blockLen int64  // bytes of the current block so far (header + data)
	indexLen int64  // bytes of the current index so far
	varints  int64  // index varints still to read; -1 before the record count
	varint   bool   // inside a varint
	varCount int    // bytes of the current varint
	varVal   uint64
}

type xzState int

const (
	xzStreamHeader xzState = iota
	xzBlockOrIndex
	xzBlockHeader
	xzChunkControl
	xzChunkHeader
	xzChunkData
	xzBlockPad
	xzIndex
	xzIndexPad
	xzFooter
	xzStreamPad
)

func (s xzState) String() string {
	switch s {
	case xzStreamHeader:
		return "stream header"
	case xzBlockOrIndex:
		return "block or index"
	case xzBlockHeader:
		return "block header"
	case xzChunkControl, xzChunkHeader:
		return "LZMA2 chunk header"
	case xzChunkData:
		return "LZMA2 chunk data"
	case xzBlockPad:
		return "block padding or check"
	case xzIndex, xzIndexPad:
		return "index"
	case xzFooter:
		return "stream footer"
	case xzStreamPad:
		return "stream padding"
	}
	return "unknown state"
}

func newXZGuard(r io.Reader, lim Limits) *xzGuard {
	lim = lim.withDefaults()
	return &xzGuard{r: r, window: decoderWindow(lim), ratio: lim.MaxCompressionRatio, grace: lim.CompressionRatioGrace,
		state: xzStreamHeader, need: 12, in: make([]byte, 64<<10)}
}

func (g *xzGuard) Read(p []byte) (int, error) {
	for g.pos == g.end {
		if g.err != nil {
			return 0, g.err
		}
		n, err := g.r.Read(g.in)
		if perr := g.feed(g.in[:n]); perr != nil {
			g.err = perr
			return 0, perr
		}
		g.pos, g.end = 0, n
		if err == io.EOF && !g.atStreamEnd() {
			// The decoder takes an end between blocks, or before the
			// index, for a clean end; the structure says otherwise.
			err = fmt.Errorf("%w: xz stream ends inside its %s", ErrTruncated, g.state)
		}
		if err != nil {
			g.err = err
		}
	}
	n := copy(p, g.in[g.pos:g.end])
	g.pos += n
	g.served += int64(n)
	return n, nil
}

// servedBytes is how many compressed bytes the decoder has taken: the
// expansion ratio is measured against these, not against the read-ahead.
func (g *xzGuard) servedBytes() int64 { return g.served }

// atStreamEnd reports whether the bytes parsed so far end where an xz
// file may end: after a stream footer (and any stream padding, which the
// decoder checks).
func (g *xzGuard) atStreamEnd() bool { return g.state == xzStreamPad }

func (g *xzGuard) fail(format string, args ...any) error {
	return fmt.Errorf("%w: xz: "+format, append([]any{ErrCorrupt}, args...)...)
}

// feed advances the parser over b.
func (g *xzGuard) feed(b []byte) error {
	for len(b) > 0 {
		switch g.state {
		case xzChunkData, xzBlockPad:
			k := min(g.need, len(b))
			g.parsed += int64(k)
			g.blockLen += int64(k)
			g.need -= k
			b = b[k:]
			if g.need == 0 {
				if g.state == xzChunkData {
					g.state, g.need = xzChunkControl, 1
				} else {
					g.state, g.need = xzBlockOrIndex, 1
				}
			}
			continue
		}
		c := b[0]
		b = b[1:]
		g.parsed++
		if err := g.step(c); err != nil {
			return err
		}
	}
	return nil
}

// step consumes one byte in the header-like states.
func (g *xzGuard) step(c byte) error {
	switch g.state {
	case xzStreamHeader, xzFooter, xzBlockHeader, xzChunkHeader:
		g.buf = append(g.buf, c)
		if g.state == xzBlockHeader || g.state == xzChunkHeader {
			g.blockLen++
		}
		g.need--
		if g.need > 0 {
			return nil
		}
		defer func() { g.buf = g.buf[:0] }()
		switch g.state {
		case xzStreamHeader:
			if !bytes.Equal(g.buf[:6], []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
				return g.fail("bad stream header magic")
			}
			g.check = xzCheckSize(g.buf[7] & 0x0f)
			g.state, g.need = xzBlockOrIndex, 1
		case xzFooter:
			if !bytes.Equal(g.buf[10:12], []byte("YZ")) {
				return g.fail("bad stream footer")
			}
			g.state, g.need = xzStreamPad, 1
		case xzBlockHeader:
			dict, err := checkXZBlockHeader(g.buf, g.window)
			if err != nil {
				return err
			}
			g.dicts += dict
			// One block's dictionary, up to the window, is always
			// allowed: the window bounds it.
			if g.dicts > max(g.grace, g.window) && g.dicts/g.ratio > g.parsed {
				return fmt.Errorf("%w: xz blocks ask for %d bytes of dictionaries in %d compressed bytes (more than %d:1)", ErrTooLarge, g.dicts, g.parsed, g.ratio)
			}
			g.state, g.need = xzChunkControl, 1
		case xzChunkHeader:
			ctl := g.buf[0]
			size := 0
			if ctl >= 0x80 {
				size = (int(g.buf[3])<<8 | int(g.buf[4])) + 1
			} else {
				size = (int(g.buf[1])<<8 | int(g.buf[2])) + 1
			}
			g.state, g.need = xzChunkData, size
		}
		return nil
	case xzBlockOrIndex:
		if c == 0 {
			g.state, g.indexLen, g.varints, g.varint = xzIndex, 1, -1, false
			return nil
		}
		g.buf = append(g.buf[:0], c)
		g.blockLen = 1
		g.state, g.need = xzBlockHeader, (int(c)+1)*4-1
		return nil
	case xzChunkControl:
		g.blockLen++
		switch {
		case c == 0: // end of LZMA2 data: pad the block to 4, then its check
			pad := int((4 - g.blockLen%4) % 4)
			g.state, g.need = xzBlockPad, pad+g.check
			if g.need == 0 {
				g.state, g.need = xzBlockOrIndex, 1
			}
		case c == 1 || c == 2:
			g.buf = append(g.buf[:0], c)
			g.state, g.need = xzChunkHeader, 2
		case c >= 0x80:
			g.buf = append(g.buf[:0], c)
			g.state, g.need = xzChunkHeader, 4
			if (c>>5)&3 >= 2 {
				g.need = 5 // properties byte follows
			}
		default:
			return g.fail("bad LZMA2 chunk control byte %#x", c)
		}
		return nil
	case xzIndex:
		g.indexLen++
		if !g.varint {
			g.varint, g.varCount, g.varVal = true, 0, 0
		}
		if g.varCount >= 9 {
			return g.fail("index varint too long")
		}
		g.varVal |= uint64(c&0x7f) << (7 * g.varCount)
		g.varCount++
		if c&0x80 != 0 {
			return nil
		}
		g.varint = false
		if g.varints < 0 {
			if g.varVal > 1<<40 {
				return g.fail("index claims %d records", g.varVal)
			}
			g.varints = int64(g.varVal) * 2
		} else {
			g.varints--
		}
		if g.varints == 0 {
			pad := int((4 - g.indexLen%4) % 4)
			g.state, g.need = xzIndexPad, pad+4 // padding, CRC32
		}
		return nil
	case xzIndexPad:
		g.need--
		if g.need == 0 {
			g.state, g.need = xzFooter, 12
		}
		return nil
	case xzStreamPad:
		// Zero padding between streams, or the next stream's header.
		if c == 0 {
			return nil
		}
		g.buf = append(g.buf[:0], c)
		g.state, g.need = xzStreamHeader, 11
		return nil
	}
	return g.fail("parser state %d", g.state)
}

// xzCheckSize is the size of a block check for an xz check type.
func xzCheckSize(t byte) int {
	switch {
	case t == 0:
		return 0
	case t <= 3:
		return 4
	case t <= 6:
		return 8
	case t <= 9:
		return 16
	case t <= 12:
		return 32
	}
	return 64
}

// checkXZBlockHeader checks the LZMA2 dictionary a complete block header
// (size byte through CRC32) asks for, and returns its size.
func checkXZBlockHeader(h []byte, window int64) (int64, error) {
	size := len(h)
	flags := h[1]
	p := 2
	uvarint := func() (uint64, bool) {
		var v uint64
		for i := 0; i < 9 && p < size-4; i++ {
			c := h[p]
			p++
			v |= uint64(c&0x7f) << (7 * i)
			if c&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	var dict int64
	bad := fmt.Errorf("%w: xz: malformed block header", ErrCorrupt)
	if flags&0x40 != 0 {
		if _, ok := uvarint(); !ok {
			return 0, bad
		}
	}
	if flags&0x80 != 0 {
		if _, ok := uvarint(); !ok {
			return 0, bad
		}
	}
	for range int(flags&3) + 1 {
		id, ok := uvarint()
		if !ok {
			return 0, bad
		}
		psize, ok := uvarint()
		if !ok || psize > uint64(size-4-p) {
			return 0, bad
		}
		if id == 0x21 {
			if psize != 1 {
				return 0, bad
			}
			code := h[p]
			if code > 40 {
				return 0, fmt.Errorf("%w: xz dictionary code %d", ErrCorrupt, code)
			}
			dict = 1<<32 - 1
			if code < 40 {
				dict = int64(2|(code&1)) << (code/2 + 11)
			}
			if dict > window {
				return 0, fmt.Errorf("%w: xz dictionary %d bytes exceeds decoder window %d", ErrTooLarge, dict, window)
			}
		}
		p += int(psize)
	}
	return dict, nil
}
