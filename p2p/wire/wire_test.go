package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"testing"
)

// A fingerprint is Negentropy's: SHA-256 of the ids' sum mod 2^256 (little
// endian, carries across words) and the uvarint count, cut to 16 bytes;
// the order of the ids does not matter, their count does.
func TestFingerprint(t *testing.T) {
	var maxID, one [32]byte
	for i := range maxID {
		maxID[i] = 0xff
	}
	one[0] = 1
	var f Fingerprint
	f.Add(maxID)
	f.Add(one) // 2^256 - 1 + 1 wraps to 0
	want := sha256.Sum256(append(make([]byte, 32), 2))
	if got := f.Slice(); got.Count != 2 || [16]byte(want[:16]) != got.Fingerprint {
		t.Fatalf("sum wrapping to 0: %+v, want count 2 and %x", got, want[:16])
	}
	var g Fingerprint
	g.Add(one)
	g.Add(maxID)
	if g.Slice() != f.Slice() {
		t.Fatal("the order of the ids changed the fingerprint")
	}
	// 0xff..ff + 0x01 in the first word carries into the second.
	var lo, c [32]byte
	binary.LittleEndian.PutUint64(lo[:], ^uint64(0))
	var h Fingerprint
	h.Add(lo)
	h.Add(one)
	binary.LittleEndian.PutUint64(c[8:], 1)
	want = sha256.Sum256(append(c[:], 2))
	if got := h.Slice(); [16]byte(want[:16]) != got.Fingerprint {
		t.Fatal("a carry was lost between words")
	}
	var e, z Fingerprint
	z.Add([32]byte{})
	if e.Slice() == z.Slice() {
		t.Fatal("an empty set and a set of the zero id have one fingerprint")
	}
}

// Slice bounds split a range into equal slices to the second, whatever
// its size: the first is from, the last until, each slice at least one
// second, and 2^62 seconds in 16 slices do not overflow.
func TestSliceBounds(t *testing.T) {
	for _, r := range []struct {
		from, until int64
		n           int
	}{{0, 16, 16}, {1, 1_800_000_000, 16}, {5, 8, 3}, {0, MaxCatalogTime, MaxCatalogSlices}, {1 << 61, MaxCatalogTime, 7}} {
		b := SliceBounds(r.from, r.until, r.n)
		if len(b) != r.n+1 || b[0] != r.from || b[r.n] != r.until || !slices.IsSorted(b) {
			t.Fatalf("SliceBounds(%d, %d, %d) = %v", r.from, r.until, r.n, b)
		}
		width := (r.until - r.from) / int64(r.n)
		for i := range r.n {
			if d := b[i+1] - b[i]; d < width || d > width+1 {
				t.Fatalf("SliceBounds(%d, %d, %d): slice %d is %d seconds, want %d or one more", r.from, r.until, r.n, i, d, width)
			}
		}
	}
}

// CatalogSlicesBytes is the answer as p2p frames it.
func TestCatalogSlicesBytes(t *testing.T) {
	sl := []CatalogSlice{{}, {Count: 1}, {Count: 300}}
	if got := CatalogSlicesBytes(sl); got != 1+1+1+(1+16)+(2+16) {
		t.Fatalf("CatalogSlicesBytes = %d", got)
	}
}
