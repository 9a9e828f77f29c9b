package xpak

import (
	"encoding/binary"
	"fmt"
	"io"
)

// An LZMA2 decoder written for speed. ulikunitz/xz reads its input one
// byte at a time through an interface and copies its output out of a
// ring buffer; it decodes portage's xz images at about 60 % of liblzma's
// speed, and an image digest can only be as fast as its decoder. LZMA2
// declares the compressed size of every chunk (at most 64 KiB), so a chunk
// is read whole and range-decoded from a slice with the coder's state in
// local variables; a block whose size is declared is decoded straight
// into its output, which is also its dictionary. The format is the one
// xz-embedded and liblzma decode; every condition they refuse is refused
// here (ErrCorrupt, naming it).

const (
	lzmaStates      = 12
	lzmaPosStatesMx = 1 << 4
	lzmaLenLow      = 8
	lzmaLenMid      = 8
	lzmaLenHigh     = 256
	lzmaMatchMin    = 2
	lzmaDistStates  = 4
	lzmaDistSlots   = 64
	lzmaModelStart  = 4
	lzmaModelEnd    = 14
	lzmaFullDist    = 128
	lzmaAlignBits   = 4
	lzmaLitSize     = 0x300
	probInit        = 1 << 10

	// lzma2ChunkIn and lzma2ChunkOut bound one chunk: 16-bit compressed
	// and 21-bit uncompressed sizes, minus one.
	lzma2ChunkIn  = 1 << 16
	lzma2ChunkOut = 1 << 21
	// lzmaInSlack follows a chunk's compressed bytes in the scratch buffer:
	// one operation reads at most 48 bytes (one per bit), so a chunk that
	// lies about its size is caught after the operation that overran it,
	// without reading outside the buffer.
	lzmaInSlack = 64
)

type lenProbs struct {
	choice, choice2 uint16
	low             [lzmaPosStatesMx][lzmaLenLow]uint16
	mid             [lzmaPosStatesMx][lzmaLenMid]uint16
	high            [lzmaLenHigh]uint16
}

type lzmaProbs struct {
	isMatch    [lzmaStates * lzmaPosStatesMx]uint16
	isRep      [lzmaStates]uint16
	isRep0     [lzmaStates]uint16
	isRep1     [lzmaStates]uint16
	isRep2     [lzmaStates]uint16
	isRep0Long [lzmaStates * lzmaPosStatesMx]uint16
	distSlot   [lzmaDistStates][lzmaDistSlots]uint16
	distSpec   [lzmaFullDist - lzmaModelEnd]uint16
	align      [1 << lzmaAlignBits]uint16
	matchLen   lenProbs
	repLen     lenProbs
	literal    [lzmaLitSize << 4]uint16 // lc + lp ≤ 4
}

// lzma2Decoder decodes the LZMA2 data of one xz block into a window: the
// block's whole output when its size is known (sized), else a buffer of
// the dictionary plus one chunk, slid down as it fills (streaming).
type lzma2Decoder struct {
	dict int // dictionary size from the block header
	full int // streaming: the window's largest size

	win  []byte
	pos  int // next byte of win to write
	base int // win index where the dictionary was last reset (may be < 0 after a slide)
	// emitted: streaming output before this index was handed on.
	emitted int
	sized   bool

	lc, lp, pb               uint
	state                    uint32
	rep0, rep1, rep2, rep3   uint32
	needDictReset, needProps bool
	probs                    lzmaProbs
	scratch                  []byte
	emit                     func([]byte) error // streaming: new output, valid until the next call
	progress                 func(int)          // sized: out[:n] is decoded
}

func lzmaCorrupt(what string) error { return fmt.Errorf("%w: xz: LZMA2 %s", ErrCorrupt, what) }

func (d *lzma2Decoder) init(dict int) {
	d.dict = dict
	d.needDictReset, d.needProps = true, true
	d.pos, d.base, d.emitted = 0, 0, 0
	if d.scratch == nil {
		d.scratch = make([]byte, lzma2ChunkIn+lzmaInSlack)
	}
}

// decodeSized decodes the LZMA2 data in (exactly: its end marker must be
// in's last byte) into out, which it must fill exactly, telling progress
// (when not nil) after each chunk how much of out is decoded.
func (d *lzma2Decoder) decodeSized(in []byte, out []byte, dict int, progress func(int)) error {
	d.init(dict)
	defer d.release()
	d.sized = true
	d.win, d.progress = out, progress
	src := sliceSource(in)
	for {
		end, err := d.chunk(&src)
		if err != nil {
			return err
		}
		if end {
			break
		}
	}
	if len(src) != 0 {
		return fmt.Errorf("%w: xz block data ends %d bytes before its declared compressed size", ErrCorrupt, len(src))
	}
	if d.pos != len(out) {
		return fmt.Errorf("%w: xz block holds less than its declared uncompressed size", ErrCorrupt)
	}
	return nil
}

// decodeStream decodes LZMA2 data from r to its end marker, handing the
// output to emit in pieces, and returns the compressed bytes it read.
// win is reused when large enough.
func (d *lzma2Decoder) decodeStream(r io.Reader, dict int, win []byte, emit func([]byte) error) (int64, []byte, error) {
	d.init(dict)
	defer d.release()
	d.sized = false
	// The window holds the dictionary, room to decode into, and a chunk's
	// worth of slack; sliding it moves the dictionary, so the room is as
	// large as the dictionary (8 MiB at most) to move it at most once per
	// its size of output. It starts small and grows with the output, so a
	// small package does not pay for a dictionary its data never fills.
	dict16 := (dict + 15) &^ 15
	d.full = dict16 + min(max(dict16, lzma2ChunkOut), 8<<20) + lzma2ChunkOut + 16
	d.win = win[:min(cap(win), d.full)]
	d.emit = emit
	src := readerSource{r: r, buf: d.scratch}
	for {
		end, err := d.chunk(&src)
		if err != nil {
			return src.n, d.win, err
		}
		if end {
			break
		}
	}
	return src.n, d.win, d.flush()
}

// release drops what the caller lent: a pooled decoder keeps no output
// buffer or callback alive.
func (d *lzma2Decoder) release() {
	d.win, d.emit, d.progress = nil, nil, nil
}

// chunkSource hands out the next n bytes of LZMA2 data; an early end is
// ErrTruncated.
type chunkSource interface {
	next(n int) ([]byte, error)
}

type sliceSource []byte

func (s *sliceSource) next(n int) ([]byte, error) {
	if len(*s) < n {
		return nil, lzmaTruncated(io.ErrUnexpectedEOF)
	}
	b := (*s)[:n]
	*s = (*s)[n:]
	return b, nil
}

type readerSource struct {
	r   io.Reader
	buf []byte
	n   int64
}

func (s *readerSource) next(n int) ([]byte, error) {
	b := s.buf[:n]
	k, err := io.ReadFull(s.r, b)
	s.n += int64(k)
	if err != nil {
		return nil, lzmaTruncated(err)
	}
	return b, nil
}

// flush hands the output not yet emitted on (streaming).
func (d *lzma2Decoder) flush() error {
	if d.sized || d.pos == d.emitted {
		return nil
	}
	b := d.win[d.emitted:d.pos]
	d.emitted = d.pos
	return d.emit(b)
}

// room makes space for n more output bytes (streaming: slides the
// window, keeping the dictionary; positions move by a multiple of 16 so
// that the position bits LZMA reads are unchanged).
func (d *lzma2Decoder) room(n int) error {
	if d.pos+n <= len(d.win) {
		return nil
	}
	if d.sized {
		return fmt.Errorf("%w: xz block holds more than its declared uncompressed size", ErrCorrupt)
	}
	if err := d.flush(); err != nil {
		return err
	}
	if len(d.win) < d.full {
		// Eightfold, then all of it: few steps, little left to collect.
		next := max(d.pos+n, 8*len(d.win), 256<<10)
		if 2*next > d.full {
			next = d.full
		}
		w := make([]byte, min(next, d.full))
		copy(w, d.win[:d.pos])
		d.win = w
		if d.pos+n <= len(w) {
			return nil
		}
	}
	keep := (d.dict + 15) &^ 15
	if keep > d.pos {
		keep = d.pos
	}
	shift := (d.pos - keep) &^ 15
	copy(d.win, d.win[shift:d.pos])
	d.pos -= shift
	d.emitted -= shift
	d.base -= shift
	return nil
}

func (d *lzma2Decoder) resetDict() error {
	if !d.sized {
		if err := d.flush(); err != nil {
			return err
		}
		d.pos, d.emitted = 0, 0
	}
	d.base = d.pos
	return nil
}

func (d *lzma2Decoder) resetState() {
	d.state = 0
	d.rep0, d.rep1, d.rep2, d.rep3 = 0, 0, 0, 0
	p := &d.probs
	for _, s := range [][]uint16{p.isMatch[:], p.isRep[:], p.isRep0[:], p.isRep1[:], p.isRep2[:], p.isRep0Long[:], p.distSpec[:], p.align[:]} {
		fill16(s)
	}
	for i := range p.distSlot {
		fill16(p.distSlot[i][:])
	}
	for _, l := range []*lenProbs{&p.matchLen, &p.repLen} {
		l.choice, l.choice2 = probInit, probInit
		for i := range l.low {
			fill16(l.low[i][:])
			fill16(l.mid[i][:])
		}
		fill16(l.high[:])
	}
	fill16(p.literal[:lzmaLitSize<<(d.lc+d.lp)])
}

func fill16(s []uint16) {
	for i := range s {
		s[i] = probInit
	}
}

// chunk decodes one LZMA2 chunk; true at the end marker.
func (d *lzma2Decoder) chunk(src chunkSource) (bool, error) {
	h, err := src.next(1)
	if err != nil {
		return false, err
	}
	control := h[0]
	if control == 0 {
		return true, nil
	}
	return false, d.chunkData(src, control)
}

// chunkData decodes the chunk that control (not the end marker) starts.
func (d *lzma2Decoder) chunkData(src chunkSource, control byte) error {
	if control >= 0xe0 || control == 1 {
		d.needProps, d.needDictReset = true, false
		if err := d.resetDict(); err != nil {
			return err
		}
	} else if d.needDictReset {
		return lzmaCorrupt("data does not start with a dictionary reset")
	}
	if control < 0x80 {
		if control > 2 {
			return lzmaCorrupt(fmt.Sprintf("control byte %#x", control))
		}
		sz, err := src.next(2)
		if err != nil {
			return err
		}
		n := int(sz[0])<<8 | int(sz[1]) + 1
		data, err := src.next(n)
		if err != nil {
			return err
		}
		if err := d.room(n); err != nil {
			return err
		}
		copy(d.win[d.pos:], data)
		d.pos += n
		return d.chunkDone()
	}
	hb, err := src.next(4)
	if err != nil {
		return err
	}
	unpacked := int(control&0x1f)<<16 | int(hb[0])<<8 | int(hb[1]) + 1
	packed := int(hb[2])<<8 | int(hb[3]) + 1
	switch {
	case control >= 0xc0:
		pb, err := src.next(1)
		if err != nil {
			return err
		}
		props := pb[0]
		if props >= 9*5*5 {
			return lzmaCorrupt("properties byte out of range")
		}
		lc, lp, pbits := uint(props%9), uint(props/9%5), uint(props/45)
		if lc+lp > 4 {
			return lzmaCorrupt("lc + lp above 4")
		}
		d.lc, d.lp, d.pb = lc, lp, pbits
		d.needProps = false
		d.resetState()
	case d.needProps:
		return lzmaCorrupt("chunk without properties after a dictionary reset")
	case control >= 0xa0:
		d.resetState()
	}
	if packed < 5 {
		return lzmaCorrupt("chunk too short for its range coder")
	}
	data, err := src.next(packed)
	if err != nil {
		return err
	}
	in := d.scratch
	if &data[0] != &in[0] {
		copy(in, data)
	}
	clear(in[packed : packed+lzmaInSlack])
	if err := d.room(unpacked); err != nil {
		return err
	}
	if err := d.lzma(in[:packed+lzmaInSlack], packed, d.pos+unpacked); err != nil {
		return err
	}
	return d.chunkDone()
}

func (d *lzma2Decoder) chunkDone() error {
	if d.sized {
		if d.progress != nil {
			d.progress(d.pos)
		}
		return nil
	}
	if d.pos-d.emitted >= 1<<20 {
		return d.flush()
	}
	return nil
}

func lzmaTruncated(err error) error {
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Errorf("%w: xz stream ends inside an LZMA2 chunk", ErrTruncated)
	}
	return err
}

// lzma decodes one LZMA chunk of packed bytes (in holds them and the zero
// slack) into win up to limit.
func (d *lzma2Decoder) lzma(in []byte, packed, limit int) error {
	if in[0] != 0 {
		return lzmaCorrupt("range coder does not start with a zero byte")
	}
	var (
		rng     uint32 = 0xffffffff
		code           = uint32(in[1])<<24 | uint32(in[2])<<16 | uint32(in[3])<<8 | uint32(in[4])
		ip             = 5
		win            = d.win[:limit]
		pos            = d.pos
		base           = d.base
		state          = d.state
		rep0           = d.rep0
		p              = &d.probs
		pbMask         = 1<<d.pb - 1
		lpMask         = 1<<d.lp - 1
		lc             = d.lc
		dictMax        = d.dict
	)
	var bit bool
	for pos < limit {
		if ip > packed {
			return lzmaCorrupt("chunk reads past its compressed size")
		}
		posState := (pos - base) & pbMask
		rng, code, ip, bit = rcBit(&p.isMatch[state<<4|uint32(posState)], rng, code, in, ip)
		if !bit {
			// Literal.
			var prev uint32
			if pos > base {
				prev = uint32(win[pos-1])
			}
			lit := p.literal[lzmaLitSize*((((pos-base)&lpMask)<<lc)+int(prev>>(8-lc))):][:lzmaLitSize]
			var sym uint32
			if state < 7 {
				sym, rng, code, ip = rcLiteral(lit, rng, code, in, ip)
			} else {
				if int(rep0) >= pos-base {
					return lzmaCorrupt("match distance beyond the data")
				}
				sym, rng, code, ip = rcMatchedLiteral(lit, uint32(win[pos-int(rep0)-1]), rng, code, in, ip)
			}
			win[pos] = byte(sym)
			pos++
			switch {
			case state < 4:
				state = 0
			case state < 10:
				state -= 3
			default:
				state -= 6
			}
			continue
		}
		var length int
		rng, code, ip, bit = rcBit(&p.isRep[state], rng, code, in, ip)
		if bit {
			rng, code, ip, bit = rcBit(&p.isRep0[state], rng, code, in, ip)
			if !bit {
				rng, code, ip, bit = rcBit(&p.isRep0Long[state<<4|uint32(posState)], rng, code, in, ip)
				if !bit {
					// Short rep: one byte at rep0.
					if int(rep0) >= pos-base {
						return lzmaCorrupt("match distance beyond the data")
					}
					win[pos] = win[pos-int(rep0)-1]
					pos++
					if state < 7 {
						state = 9
					} else {
						state = 11
					}
					continue
				}
			} else {
				var dist uint32
				rng, code, ip, bit = rcBit(&p.isRep1[state], rng, code, in, ip)
				if !bit {
					dist = d.rep1
				} else {
					rng, code, ip, bit = rcBit(&p.isRep2[state], rng, code, in, ip)
					if !bit {
						dist = d.rep2
					} else {
						dist = d.rep3
						d.rep3 = d.rep2
					}
					d.rep2 = d.rep1
				}
				d.rep1 = rep0
				rep0 = dist
			}
			if state < 7 {
				state = 8
			} else {
				state = 11
			}
			length, rng, code, ip = rcLen(&p.repLen, posState, rng, code, in, ip)
		} else {
			d.rep3, d.rep2, d.rep1 = d.rep2, d.rep1, rep0
			if state < 7 {
				state = 7
			} else {
				state = 10
			}
			length, rng, code, ip = rcLen(&p.matchLen, posState, rng, code, in, ip)
			ds := min(length-lzmaMatchMin, lzmaDistStates-1)
			var slot uint32
			slot, rng, code, ip = rcTree(p.distSlot[ds][:], 6, rng, code, in, ip)
			if slot < lzmaModelStart {
				rep0 = slot
			} else {
				limitBits := slot>>1 - 1
				rep0 = (2 | slot&1) << limitBits
				if slot < lzmaModelEnd {
					var r uint32
					r, rng, code, ip = rcReverse(p.distSpec[rep0-slot:], limitBits, rng, code, in, ip)
					rep0 += r
				} else {
					var r uint32
					r, rng, code, ip = rcDirect(limitBits-lzmaAlignBits, rng, code, in, ip)
					rep0 += r << lzmaAlignBits
					r, rng, code, ip = rcReverse(p.align[1:], lzmaAlignBits, rng, code, in, ip)
					rep0 += r
				}
			}
		}
		dist := int(rep0)
		if dist >= pos-base || dist >= dictMax {
			return lzmaCorrupt("match distance beyond the dictionary")
		}
		if length > limit-pos {
			return lzmaCorrupt("match runs past its chunk")
		}
		from := pos - dist - 1
		switch {
		case dist >= 7 && pos+length+8 <= limit:
			// Most matches are short: eight bytes at a time, forward, as
			// LZ77 copies (a word never reads what it writes when the
			// distance is at least eight); the bytes written past the
			// match are not output yet and are written again.
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(win[pos+i:], binary.LittleEndian.Uint64(win[from+i:]))
			}
		case dist+1 >= length:
			copy(win[pos:pos+length], win[from:from+length])
		default:
			for i := range length {
				win[pos+i] = win[from+i]
			}
		}
		pos += length
	}
	// The encoder's flush leaves the coder wanting one last normalization.
	if rng < 1<<24 {
		code = code<<8 | uint32(in[ip])
		ip++
	}
	if ip != packed {
		return lzmaCorrupt(fmt.Sprintf("chunk's range coder took %d bytes, its header says %d", ip, packed))
	}
	if code != 0 {
		return lzmaCorrupt("range coder does not end at zero")
	}
	d.pos, d.state, d.rep0 = pos, state, rep0
	return nil
}

// The range coder's operations take and return its state (range, code,
// input position) so that it lives in registers across the loop.

func rcBit(p *uint16, rng, code uint32, in []byte, ip int) (uint32, uint32, int, bool) {
	if rng < 1<<24 {
		rng <<= 8
		code = code<<8 | uint32(in[ip])
		ip++
	}
	bound := (rng >> 11) * uint32(*p)
	if code < bound {
		*p += (1<<11 - *p) >> 5
		return bound, code, ip, false
	}
	*p -= *p >> 5
	return rng - bound, code - bound, ip, true
}

// The tree decoders below repeat rcBit's body by hand: written as calls
// to rcBit (which the compiler inlines), the one-block 26 MB digest
// benchmark ran at 121 – 123 MB/s against 136 – 140 MB/s as here.

func rcLiteral(probs []uint16, rng, code uint32, in []byte, ip int) (uint32, uint32, uint32, int) {
	probs = probs[:0x300]
	sym := uint32(1)
	for sym < 0x100 {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		p := &probs[sym]
		bound := (rng >> 11) * uint32(*p)
		if code < bound {
			rng = bound
			*p += (1<<11 - *p) >> 5
			sym <<= 1
		} else {
			rng -= bound
			code -= bound
			*p -= *p >> 5
			sym = sym<<1 | 1
		}
	}
	return sym, rng, code, ip
}

func rcMatchedLiteral(probs []uint16, match uint32, rng, code uint32, in []byte, ip int) (uint32, uint32, uint32, int) {
	probs = probs[:0x300]
	sym := uint32(1)
	offset := uint32(0x100)
	match <<= 1
	for sym < 0x100 {
		mbit := match & offset
		match <<= 1
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		p := &probs[(offset+mbit+sym)&0x3ff]
		bound := (rng >> 11) * uint32(*p)
		if code < bound {
			rng = bound
			*p += (1<<11 - *p) >> 5
			sym <<= 1
			offset &^= mbit
		} else {
			rng -= bound
			code -= bound
			*p -= *p >> 5
			sym = sym<<1 | 1
			offset &= mbit
		}
	}
	return sym, rng, code, ip
}

// rcTree decodes a bits-bit symbol MSB first.
func rcTree(probs []uint16, bits uint32, rng, code uint32, in []byte, ip int) (uint32, uint32, uint32, int) {
	sym := uint32(1)
	limit := uint32(1) << bits
	probs = probs[:limit]
	for sym < limit {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		p := &probs[sym&(limit-1)]
		bound := (rng >> 11) * uint32(*p)
		if code < bound {
			rng = bound
			*p += (1<<11 - *p) >> 5
			sym <<= 1
		} else {
			rng -= bound
			code -= bound
			*p -= *p >> 5
			sym = sym<<1 | 1
		}
	}
	return sym - limit, rng, code, ip
}

// rcReverse decodes a bits-bit symbol LSB first; probs[sym-1] is the
// model of the tree's node sym.
func rcReverse(probs []uint16, bits uint32, rng, code uint32, in []byte, ip int) (uint32, uint32, uint32, int) {
	sym := uint32(1)
	var out uint32
	for i := range bits {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		p := &probs[sym-1]
		bound := (rng >> 11) * uint32(*p)
		if code < bound {
			rng = bound
			*p += (1<<11 - *p) >> 5
			sym <<= 1
		} else {
			rng -= bound
			code -= bound
			*p -= *p >> 5
			sym = sym<<1 | 1
			out |= 1 << i
		}
	}
	return out, rng, code, ip
}

// rcDirect decodes bits bits of equal probability.
func rcDirect(bits uint32, rng, code uint32, in []byte, ip int) (uint32, uint32, uint32, int) {
	var out uint32
	for range bits {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		rng >>= 1
		code -= rng
		t := 0 - (code >> 31)
		code += rng & t
		out = out<<1 + (t + 1)
	}
	return out, rng, code, ip
}

func rcLen(l *lenProbs, posState int, rng, code uint32, in []byte, ip int) (int, uint32, uint32, int) {
	var bit bool
	var s uint32
	rng, code, ip, bit = rcBit(&l.choice, rng, code, in, ip)
	if !bit {
		s, rng, code, ip = rcTree(l.low[posState&15][:], 3, rng, code, in, ip)
		return lzmaMatchMin + int(s), rng, code, ip
	}
	rng, code, ip, bit = rcBit(&l.choice2, rng, code, in, ip)
	if !bit {
		s, rng, code, ip = rcTree(l.mid[posState&15][:], 3, rng, code, in, ip)
		return lzmaMatchMin + lzmaLenLow + int(s), rng, code, ip
	}
	s, rng, code, ip = rcTree(l.high[:], 8, rng, code, in, ip)
	return lzmaMatchMin + lzmaLenLow + lzmaLenMid + int(s), rng, code, ip
}
