// Package pieces splits a container file into fixed-size pieces and computes
// the Merkle root over them that an attestation commits to, so a fetcher can
// verify every piece it receives from an untrusted peer before writing it,
// instead of discovering a bad peer only after the whole file arrived.
//
// The tree is modelled on BitTorrent v2 (BEP 52) with two deliberate
// differences that keep it simple and unambiguous:
//
//   - leaves and inner nodes are domain-separated, so a leaf can never be
//     confused with a node (second-preimage safety, as in RFC 6962):
//     leaf = SHA-256(0x00 || piece bytes), node = SHA-256(0x01 || left || right);
//   - the tree is not padded to a power of two: on every level, an odd last
//     node is promoted unchanged to the next level. Worked example with five
//     leaves L0..L4: level 1 = [N(L0,L1), N(L2,L3), L4], level 2 =
//     [N(N(L0,L1), N(L2,L3)), L4], root = N(N(N(L0,L1), N(L2,L3)), L4).
//
// A file of n > 0 bytes has Count(n) = ceil(n / Size) pieces; every piece is
// Size bytes except the last, which holds the remainder (1..Size bytes). The
// empty file has no pieces, and its root is defined as SHA-256(0x00), the
// leaf hash of empty data. That value cannot collide with a real one-piece
// file, whose piece is never empty.
//
// Proving one piece against the root needs all leaves (the "piece layer");
// a provider sends the layer first and the fetcher checks it against the
// attested root with VerifyLayer, as BitTorrent v2 does with its piece
// layers. At 32 bytes per 256 KiB the layer costs 0.0122% of the file.
//
// The package imports nothing else of gentoo-p2pd.
package pieces

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Size is the fixed piece size in bytes: 256 KiB.
//
// Why 256 KiB: most binary packages are between 100 KiB and a few MiB, so
// smaller pieces would not buy more parallelism for them, while a large
// package (a 1 GiB toolchain) still has 4096 pieces to spread over several
// providers, and its piece layer is only 128 KiB. 256 KiB is also large
// enough that the per-piece costs (one leaf hash call, one pwrite, one
// bitfield bit) vanish next to the data, and small enough that a dropped bad
// peer wastes little, and that a yamux stream window (16 MiB in go-libp2p)
// holds many pieces in flight. BitTorrent clients use the same size for
// files of this range.
const Size = 256 << 10

// Hash prefixes separating leaves from inner nodes.
const (
	leafPrefix = 0x00
	nodePrefix = 0x01
)

var (
	// ErrBadPiece reports piece bytes whose leaf hash is not the expected
	// leaf: the sender is lying or the data was corrupted.
	ErrBadPiece = errors.New("pieces: piece does not match its leaf hash")
	// ErrLayerMismatch reports a piece layer that does not hash to the
	// attested root, or has the wrong number of leaves for the file size.
	ErrLayerMismatch = errors.New("pieces: piece layer does not match root")
	// ErrIndexRange reports a piece index outside the file.
	ErrIndexRange = errors.New("pieces: piece index out of range")
)

// Count returns the number of pieces of a file of size bytes (0 for an
// empty file; negative sizes count as empty).
func Count(size int64) int {
	if size <= 0 {
		return 0
	}
	return int((size + Size - 1) / Size)
}

// PieceLen returns the length in bytes of piece idx of a file of size bytes,
// or 0 when idx is outside the file. Callers use it to size reads and to
// reject a piece of the wrong length before hashing it.
func PieceLen(size int64, idx int) int {
	n := Count(size)
	if idx < 0 || idx >= n {
		return 0
	}
	if idx == n-1 {
		return int(size - int64(idx)*Size)
	}
	return Size
}

// Leaf returns the leaf hash of one piece: SHA-256(0x00 || data).
func Leaf(data []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{leafPrefix})
	h.Write(data)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// node returns SHA-256(0x01 || left || right).
func node(left, right [32]byte) [32]byte {
	var buf [65]byte
	buf[0] = nodePrefix
	copy(buf[1:33], left[:])
	copy(buf[33:], right[:])
	return sha256.Sum256(buf[:])
}

// emptyRoot is the root of the empty file: SHA-256(0x00).
var emptyRoot = Leaf(nil)

// RootOf returns the Merkle root over a piece layer, promoting an odd last
// node unchanged on each level. RootOf(nil) is the empty-file root
// SHA-256(0x00). The argument is not modified.
func RootOf(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return emptyRoot
	case 1:
		return leaves[0]
	}
	level := make([][32]byte, (len(leaves)+1)/2)
	for {
		src := leaves
		n := 0
		for i := 0; i+1 < len(src); i += 2 {
			level[n] = node(src[i], src[i+1])
			n++
		}
		if len(src)%2 == 1 {
			level[n] = src[len(src)-1]
			n++
		}
		if n == 1 {
			return level[0]
		}
		leaves = level[:n]
		// Reuse the same buffer: level[k] is written only after src[2k] and
		// src[2k+1] (indices >= k) were read.
	}
}

// Layer reads r to its end and returns the leaf hash of every piece and the
// number of bytes read. It allocates one Size buffer.
func Layer(r io.Reader) (leaves [][32]byte, size int64, err error) {
	buf := make([]byte, Size)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			leaves = append(leaves, Leaf(buf[:n]))
			size += int64(n)
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return leaves, size, nil
		default:
			return nil, size, fmt.Errorf("pieces: reading piece %d: %w", len(leaves), err)
		}
	}
}

// Root reads r to its end and returns its Merkle root and size.
func Root(r io.Reader) (root [32]byte, size int64, err error) {
	leaves, size, err := Layer(r)
	if err != nil {
		return root, size, err
	}
	return RootOf(leaves), size, nil
}

// VerifyLayer checks that leaves is the complete piece layer of a file of
// size bytes with the given root: right number of leaves and matching root.
func VerifyLayer(leaves [][32]byte, size int64, root [32]byte) error {
	if want := Count(size); len(leaves) != want {
		return fmt.Errorf("%w: %d leaves for %d bytes, want %d", ErrLayerMismatch, len(leaves), size, want)
	}
	if got := RootOf(leaves); got != root {
		return fmt.Errorf("%w: root %x, want %x", ErrLayerMismatch, got[:8], root[:8])
	}
	return nil
}

// VerifyPiece checks piece idx against a piece layer that was already
// checked with VerifyLayer. It does not check the piece length; compare
// len(data) with PieceLen first.
func VerifyPiece(leaves [][32]byte, idx int, data []byte) error {
	if idx < 0 || idx >= len(leaves) {
		return fmt.Errorf("%w: piece %d of %d", ErrIndexRange, idx, len(leaves))
	}
	if Leaf(data) != leaves[idx] {
		return fmt.Errorf("%w: piece %d", ErrBadPiece, idx)
	}
	return nil
}

// Hasher computes the piece layer of the bytes written to it, as Layer
// does of a reader, for a caller that streams the file for another
// reason already (the daemon hashes the piece layer while xpak reads the
// file). It holds no piece in memory. The zero value is ready to use;
// Write never fails.
type Hasher struct {
	h      hash.Hash
	inLeaf int // bytes of the current piece written so far
	leaves [][32]byte
	size   int64
}

// Write adds p to the layer.
func (h *Hasher) Write(p []byte) (int, error) {
	if h.h == nil {
		h.h = sha256.New()
	}
	n := len(p)
	for len(p) > 0 {
		if h.inLeaf == 0 {
			h.h.Reset()
			h.h.Write([]byte{leafPrefix})
		}
		k := min(len(p), Size-h.inLeaf)
		h.h.Write(p[:k])
		h.inLeaf += k
		p = p[k:]
		if h.inLeaf == Size {
			h.endLeaf()
		}
	}
	h.size += int64(n)
	return n, nil
}

func (h *Hasher) endLeaf() {
	var leaf [32]byte
	h.h.Sum(leaf[:0])
	h.leaves = append(h.leaves, leaf)
	h.inLeaf = 0
}

// Layer returns the leaf hash of every piece of what was written and its
// size, as Layer returns them. Call it once, after the last Write.
func (h *Hasher) Layer() (leaves [][32]byte, size int64) {
	if h.inLeaf > 0 {
		h.endLeaf()
	}
	return h.leaves, h.size
}
