package identity

import (
	"bytes"
	"math/bits"
	"slices"
	"testing"
)

// bzip2Compress is a small, slow, test-only bzip2 encoder (one block per
// 100 kB of input, naive BWT, fixed Huffman lengths), so tests can write the
// modified environment.bz2 files portage would, without a bzip2 dependency:
// the standard library only decompresses. Its output is checked by
// compress/bzip2 in TestBzip2RoundTrip.
func bzip2Compress(data []byte) []byte {
	w := &bitWriter{}
	w.bytes([]byte("BZh1"))
	var combined uint32
	const blockSize = 90000 // RLE1 can grow input by 1/4; stay under 100k
	for len(data) > 0 {
		n := min(blockSize, len(data))
		block := data[:n]
		data = data[n:]
		crc := bzCRC(block)
		combined = (combined<<1 | combined>>31) ^ crc
		writeBlock(w, block, crc)
	}
	w.bits(0x177245385090, 48)
	w.bits(uint64(combined), 32)
	w.flush()
	return w.out
}

func writeBlock(w *bitWriter, block []byte, crc uint32) {
	// RLE1: runs of 4..255 equal bytes become 4 bytes and a count.
	var rle []byte
	for i := 0; i < len(block); {
		j := i
		for j < len(block) && block[j] == block[i] && j-i < 255 {
			j++
		}
		run := j - i
		if run >= 4 {
			rle = append(rle, block[i], block[i], block[i], block[i], byte(run-4))
		} else {
			rle = append(rle, block[i:j]...)
		}
		i = j
	}
	// BWT by sorting rotations (prefix doubling, O(n log² n)).
	n := len(rle)
	idx := rotationOrder(rle)
	last := make([]byte, n)
	origPtr := 0
	for i, r := range idx {
		last[i] = rle[(r+n-1)%n]
		if r == 0 {
			origPtr = i
		}
	}
	// Symbol map and MTF/RLE2.
	var inUse [256]bool
	for _, c := range rle {
		inUse[c] = true
	}
	var seqToUnseq []byte
	unseqToSeq := [256]byte{}
	for c := 0; c < 256; c++ {
		if inUse[c] {
			unseqToSeq[c] = byte(len(seqToUnseq))
			seqToUnseq = append(seqToUnseq, byte(c))
		}
	}
	numInUse := len(seqToUnseq)
	alphaSize := numInUse + 2
	eob := uint16(numInUse + 1)
	mtf := make([]byte, numInUse)
	for i := range mtf {
		mtf[i] = byte(i)
	}
	var syms []uint16
	zeros := 0
	flushZeros := func() {
		if zeros == 0 {
			return
		}
		z := zeros - 1
		for {
			if z&1 == 1 {
				syms = append(syms, 1) // RUNB
			} else {
				syms = append(syms, 0) // RUNA
			}
			if z < 2 {
				break
			}
			z = (z - 2) / 2
		}
		zeros = 0
	}
	for _, c := range last {
		s := unseqToSeq[c]
		j := bytes.IndexByte(mtf, s)
		if j == 0 {
			zeros++
			continue
		}
		flushZeros()
		copy(mtf[1:j+1], mtf[:j])
		mtf[0] = s
		syms = append(syms, uint16(j+1))
	}
	flushZeros()
	syms = append(syms, eob)

	// A complete prefix code of equal-ish lengths.
	k := bits.Len(uint(alphaSize - 1))
	short := 1<<k - alphaSize
	lengths := make([]int, alphaSize)
	for i := range lengths {
		if i < short {
			lengths[i] = k - 1
		} else {
			lengths[i] = k
		}
	}
	codes := make([]uint32, alphaSize)
	code := uint32(0)
	for l := 1; l <= 20; l++ {
		for i, li := range lengths {
			if li == l {
				codes[i] = code
				code++
			}
		}
		code <<= 1
	}

	w.bits(0x314159265359, 48)
	w.bits(uint64(crc), 32)
	w.bits(0, 1)
	w.bits(uint64(origPtr), 24)
	var used16 uint64
	for i := 0; i < 16; i++ {
		for j := 0; j < 16; j++ {
			if inUse[i*16+j] {
				used16 |= 1 << (15 - i)
				break
			}
		}
	}
	w.bits(used16, 16)
	for i := 0; i < 16; i++ {
		if used16&(1<<(15-i)) == 0 {
			continue
		}
		var m uint64
		for j := 0; j < 16; j++ {
			if inUse[i*16+j] {
				m |= 1 << (15 - j)
			}
		}
		w.bits(m, 16)
	}
	const nGroups = 2
	nSelectors := (len(syms) + 49) / 50
	w.bits(nGroups, 3)
	w.bits(uint64(nSelectors), 15)
	for i := 0; i < nSelectors; i++ {
		w.bits(0, 1) // selector 0, MTF index 0
	}
	for g := 0; g < nGroups; g++ {
		cur := lengths[0]
		w.bits(uint64(cur), 5)
		for _, l := range lengths {
			for cur < l {
				w.bits(2, 2) // 10: increment
				cur++
			}
			for cur > l {
				w.bits(3, 2) // 11: decrement
				cur--
			}
			w.bits(0, 1)
		}
	}
	for _, s := range syms {
		w.bits(uint64(codes[s]), lengths[s])
	}
}

func rotationOrder(s []byte) []int {
	n := len(s)
	idx := make([]int, n)
	rank := make([]int, n)
	tmp := make([]int, n)
	for i := range idx {
		idx[i], rank[i] = i, int(s[i])
	}
	for k := 1; ; k *= 2 {
		cmpRot := func(a, b int) int {
			if rank[a] != rank[b] {
				return rank[a] - rank[b]
			}
			return rank[(a+k)%n] - rank[(b+k)%n]
		}
		slices.SortFunc(idx, cmpRot)
		tmp[idx[0]] = 0
		for i := 1; i < n; i++ {
			tmp[idx[i]] = tmp[idx[i-1]]
			if cmpRot(idx[i-1], idx[i]) != 0 {
				tmp[idx[i]]++
			}
		}
		copy(rank, tmp)
		if rank[idx[n-1]] == n-1 || k >= n {
			return idx
		}
	}
}

func bzCRC(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c) << 24
		for i := 0; i < 8; i++ {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return ^crc
}

type bitWriter struct {
	out []byte
	acc uint64
	n   int
}

func (w *bitWriter) bits(v uint64, n int) {
	for i := n - 1; i >= 0; i-- {
		w.acc = w.acc<<1 | (v>>uint(i))&1
		w.n++
		if w.n == 8 {
			w.out = append(w.out, byte(w.acc))
			w.acc, w.n = 0, 0
		}
	}
}

func (w *bitWriter) bytes(b []byte) {
	for _, c := range b {
		w.bits(uint64(c), 8)
	}
}

func (w *bitWriter) flush() {
	if w.n > 0 {
		w.bits(0, 8-w.n)
	}
}

func TestBzip2RoundTrip(t *testing.T) {
	for _, in := range [][]byte{
		[]byte("a"),
		[]byte("banana"),
		bytes.Repeat([]byte("x"), 1000),
		bytes.Repeat([]byte("declare -x HOME=\"/root\"\n"), 5000),
	} {
		got, err := DecompressEnvironment(bzip2Compress(in))
		if err != nil {
			t.Fatalf("len %d: %v", len(in), err)
		}
		if !bytes.Equal(got, in) {
			t.Fatalf("len %d: round trip differs", len(in))
		}
	}
}
