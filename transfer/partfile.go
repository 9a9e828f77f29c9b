package transfer

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// ErrLocked reports that another Fetch of the same file into the same
// directory is running.
var ErrLocked = errors.New("transfer: partial file is locked by another fetch")

// bitsMagic starts every bitfield file; the trailing digit is its version.
const bitsMagic = "GP2PBIT1"

// bitsHeaderLen is magic, file SHA-256, piece root and size.
const bitsHeaderLen = len(bitsMagic) + 32 + 32 + 8

// partFile is a download in progress: <sha>.part holds the pieces at their
// offsets (the file is created at full size) and <sha>.bits records which
// pieces are on stable storage.
//
// Bitfield file layout: "GP2PBIT1", the file SHA-256 (32 bytes), the piece
// root (32 bytes), the size (8 bytes, big-endian), then one bit per piece,
// piece i in byte i/8 under mask 1<<(i%8). The header is written once; bits
// are only ever set, and only after the part file was fsynced with the
// piece in it, so even a torn write of the bitfield (a mix of old and new
// bytes) marks only pieces that are on disk.
type partFile struct {
	partPath string
	bitsPath string
	part     *os.File
	bits     *os.File
	n        int
	field    []byte // in-memory bitfield, mirrors what is on disk
}

func partPaths(dir string, sha [32]byte) (part, bits string) {
	name := hex.EncodeToString(sha[:])
	return filepath.Join(dir, name+".part"), filepath.Join(dir, name+".bits")
}

// openPart opens or creates the partial file for want and loads its
// bitfield. The bitfield is trusted only when the part file has exactly
// the wanted size and the bitfield header names the same file, root and
// size; otherwise the download starts over.
func openPart(dir string, want Want) (*partFile, error) {
	pf := &partFile{n: pieces.Count(want.Size)}
	pf.partPath, pf.bitsPath = partPaths(dir, want.SHA256)
	var err error
	pf.part, err = os.OpenFile(pf.partPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("transfer: opening %s: %w", pf.partPath, err)
	}
	if err := syscall.Flock(int(pf.part.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pf.part.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrLocked, pf.partPath, err)
	}
	st, err := pf.part.Stat()
	if err != nil {
		pf.close()
		return nil, fmt.Errorf("transfer: stat %s: %w", pf.partPath, err)
	}
	header := bitsHeader(want)
	fieldLen := (pf.n + 7) / 8
	pf.field = make([]byte, fieldLen)

	if st.Size() == want.Size {
		if old, err := os.ReadFile(pf.bitsPath); err == nil &&
			len(old) == bitsHeaderLen+fieldLen && bytes.Equal(old[:bitsHeaderLen], header) {
			copy(pf.field, old[bitsHeaderLen:])
			// Bits past the last piece are never set; clear them in case.
			if r := pf.n % 8; r != 0 {
				pf.field[fieldLen-1] &= byte(1<<r) - 1
			}
		}
	}
	if pf.count() == 0 {
		// Start over: a fresh part file of the full size and an empty
		// bitfield. Truncate to 0 first so no stale bytes survive.
		if err := pf.part.Truncate(0); err != nil {
			pf.close()
			return nil, fmt.Errorf("transfer: truncating %s: %w", pf.partPath, err)
		}
		if err := pf.part.Truncate(want.Size); err != nil {
			pf.close()
			return nil, fmt.Errorf("transfer: sizing %s: %w", pf.partPath, err)
		}
	}
	pf.bits, err = os.OpenFile(pf.bitsPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		pf.close()
		return nil, fmt.Errorf("transfer: opening %s: %w", pf.bitsPath, err)
	}
	if err := pf.writeBits(header); err != nil {
		pf.close()
		return nil, err
	}
	return pf, nil
}

func bitsHeader(want Want) []byte {
	h := make([]byte, 0, bitsHeaderLen)
	h = append(h, bitsMagic...)
	h = append(h, want.SHA256[:]...)
	h = append(h, want.PieceRoot[:]...)
	return binary.BigEndian.AppendUint64(h, uint64(want.Size))
}

// writeBits writes header+bitfield at offset 0 and fsyncs it.
func (pf *partFile) writeBits(header []byte) error {
	buf := append(append([]byte(nil), header...), pf.field...)
	if _, err := pf.bits.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("transfer: writing %s: %w", pf.bitsPath, err)
	}
	if err := pf.bits.Truncate(int64(len(buf))); err != nil {
		return fmt.Errorf("transfer: truncating %s: %w", pf.bitsPath, err)
	}
	if err := pf.bits.Sync(); err != nil {
		return fmt.Errorf("transfer: fsync %s: %w", pf.bitsPath, err)
	}
	return nil
}

func (pf *partFile) has(i int) bool { return pf.field[i/8]&(1<<(i%8)) != 0 }
func (pf *partFile) set(i int)      { pf.field[i/8] |= 1 << (i % 8) }
func (pf *partFile) clear(i int)    { pf.field[i/8] &^= 1 << (i % 8) }

func (pf *partFile) count() int {
	c := 0
	for i := 0; i < pf.n; i++ {
		if pf.has(i) {
			c++
		}
	}
	return c
}

// commit makes written pieces durable: fsync the part file, then set their
// bits and write+fsync the bitfield (only the field bytes; the header is
// already there).
func (pf *partFile) commit(idx []int) error {
	if len(idx) == 0 {
		return nil
	}
	if err := pf.part.Sync(); err != nil {
		return fmt.Errorf("transfer: fsync %s: %w", pf.partPath, err)
	}
	for _, i := range idx {
		pf.set(i)
	}
	if _, err := pf.bits.WriteAt(pf.field, int64(bitsHeaderLen)); err != nil {
		return fmt.Errorf("transfer: writing %s: %w", pf.bitsPath, err)
	}
	if err := pf.bits.Sync(); err != nil {
		return fmt.Errorf("transfer: fsync %s: %w", pf.bitsPath, err)
	}
	return nil
}

// readPiece reads piece i from the part file into buf.
func (pf *partFile) readPiece(size int64, i int, buf []byte) ([]byte, error) {
	n := pieces.PieceLen(size, i)
	if _, err := pf.part.ReadAt(buf[:n], int64(i)*pieces.Size); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("transfer: reading piece %d of %s: %w", i, pf.partPath, err)
	}
	return buf[:n], nil
}

func (pf *partFile) close() {
	if pf.bits != nil {
		pf.bits.Close()
	}
	if pf.part != nil {
		pf.part.Close() // also drops the flock
	}
}

// discard removes both files: used when the content is proven wrong, so a
// resume cannot pick it up again.
func (pf *partFile) discard() {
	pf.close()
	os.Remove(pf.partPath)
	os.Remove(pf.bitsPath)
}
