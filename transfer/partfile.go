package transfer

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// ErrLocked reports that another Fetch of the same file into the same
// directory is running.
var ErrLocked = errors.New("transfer: partial file is locked by another fetch")

// ErrDiskWrite reports that writing or syncing the partial download failed
// here (disk full, I/O error): no provider is to blame. Fetch removes the
// part file and its bitfield, so a full disk is not kept full by them, and
// stops. The error also wraps the cause, so errors.Is(err, syscall.ENOSPC)
// tells a full disk.
var ErrDiskWrite = errors.New("transfer: writing the partial download failed")

// diskError is an ErrDiskWrite with its cause.
type diskError struct {
	msg string
	err error
}

func (e *diskError) Error() string   { return e.msg + ": " + e.err.Error() }
func (e *diskError) Unwrap() []error { return []error{ErrDiskWrite, e.err} }

// diskErr describes a failed write or sync (what, e.g. "writing piece 3
// of") of the partial download at path, naming a full disk as such.
func diskErr(what, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		path = "" // the cause names the file
	} else {
		path = " " + path
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &diskError{fmt.Sprintf("transfer: disk full %s the partial download%s (removed it)", what, path), err}
	}
	return &diskError{fmt.Sprintf("transfer: %s the partial download%s failed (removed it)", what, path), err}
}

// diskFile is what a partial download needs of a file; *os.File is one.
type diskFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Fd() uintptr
	Close() error
}

// openFileFunc opens the files of a partial download. Fetch uses
// osOpenFile; tests wrap it to make writes fail as on a full disk.
type openFileFunc func(name string, flag int, perm os.FileMode) (diskFile, error)

func osOpenFile(name string, flag int, perm os.FileMode) (diskFile, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

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
	part     diskFile
	bits     diskFile
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
// size; otherwise the download starts over. A failure to size the part
// file or write the bitfield removes both (see ErrDiskWrite).
func openPart(dir string, want Want, open openFileFunc) (*partFile, error) {
	pf := &partFile{n: pieces.Count(want.Size)}
	pf.partPath, pf.bitsPath = partPaths(dir, want.SHA256)
	var err error
	pf.part, err = open(pf.partPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("transfer: opening %s: %w", pf.partPath, err)
	}
	if err := syscall.Flock(int(pf.part.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = pf.part.Close() // opened only: nothing written
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
			return nil, errors.Join(diskErr("truncating", pf.partPath, err), pf.discard())
		}
		if err := pf.part.Truncate(want.Size); err != nil {
			return nil, errors.Join(diskErr("sizing", pf.partPath, err), pf.discard())
		}
	}
	pf.bits, err = open(pf.bitsPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		// Creating the bitfield can fail for want of space or inodes too.
		return nil, errors.Join(diskErr("creating the bitfield of", pf.partPath, err), pf.discard())
	}
	if err := pf.writeBits(header); err != nil {
		return nil, errors.Join(err, pf.discard())
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
		return diskErr("writing the bitfield of", pf.partPath, err)
	}
	if err := pf.bits.Truncate(int64(len(buf))); err != nil {
		return diskErr("truncating the bitfield of", pf.partPath, err)
	}
	if err := pf.bits.Sync(); err != nil {
		return diskErr("syncing the bitfield of", pf.partPath, err)
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
// already there). An error is an ErrDiskWrite: the caller discards both
// files rather than trust either (after a failed fsync the kernel may have
// dropped the dirty pages, and a later fsync would not say so).
func (pf *partFile) commit(idx []int) error {
	if len(idx) == 0 {
		return nil
	}
	if err := pf.part.Sync(); err != nil {
		return diskErr("syncing", pf.partPath, err)
	}
	for _, i := range idx {
		pf.set(i)
	}
	if _, err := pf.bits.WriteAt(pf.field, int64(bitsHeaderLen)); err != nil {
		return diskErr("writing the bitfield of", pf.partPath, err)
	}
	if err := pf.bits.Sync(); err != nil {
		return diskErr("syncing the bitfield of", pf.partPath, err)
	}
	return nil
}

// writePiece writes piece i at its offset; the piece is durable only once
// commit ran.
func (pf *partFile) writePiece(i int, data []byte) error {
	if _, err := pf.part.WriteAt(data, int64(i)*pieces.Size); err != nil {
		return diskErr(fmt.Sprintf("writing piece %d of", i), pf.partPath, err)
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

// close closes both files; calling it again does nothing. Every write
// that matters was fsynced before (commit, writeBits, finish), so an error
// closing them loses nothing.
func (pf *partFile) close() {
	if pf.bits != nil {
		_ = pf.bits.Close()
		pf.bits = nil
	}
	if pf.part != nil {
		_ = pf.part.Close() // also drops the flock
		pf.part = nil
	}
}

// discard removes both files: used when the content is proven wrong, so a
// resume cannot pick it up again, and when they cannot be written. The
// bitfield goes first: a crash in between leaves at most a part file
// without one, which a later Fetch starts over. The part file is removed
// even when the bitfield could not be: a new part file is empty, and
// openPart trusts no bitfield beside a part file of the wrong size. It
// returns what could not be removed (a file already gone is no error).
func (pf *partFile) discard() error {
	var errs []error
	for _, p := range []string{pf.bitsPath, pf.partPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("transfer: removing discarded %s: %w", p, err))
		}
	}
	pf.close()
	return errors.Join(errs...)
}
