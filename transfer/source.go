package transfer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// ErrNotFound is what a Source returns (wrapped or not) for a file it does
// not hold; the server answers it with a "not found" frame instead of an
// internal error, and does not log it (any peer may ask for any hash). An
// error matching fs.ErrNotExist (a file deleted between lookup and open) is
// treated the same way; OpenFile wraps both.
var ErrNotFound = errors.New("transfer: file not held")

// File is one container file a provider serves. Leaves is its piece layer,
// which the daemon computes once and caches: hashing a file on every
// request would cost more than sending it.
type File interface {
	io.ReaderAt
	// Size is the file size in bytes.
	Size() int64
	// Leaves is the piece layer (pieces.Layer) of the file's content.
	Leaves() [][32]byte
	// Close releases the file; the server calls it after each request.
	Close() error
}

// Source resolves a container file's SHA-256 to a servable File. The daemon
// implements it on its content store; the server never sees paths.
type Source interface {
	Open(sha [32]byte) (File, error)
}

// localFile is a File backed by an *os.File.
type localFile struct {
	f      *os.File
	size   int64
	leaves [][32]byte
}

// OpenFile opens path as a File. When leaves is nil the piece layer is
// computed by reading the whole file once; pass the cached layer to avoid
// that. A cached layer of the wrong length for the file is rejected, so a
// file that changed size on disk is not served under a stale layer.
func OpenFile(path string, leaves [][32]byte) (File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: opening %s: %w", ErrNotFound, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("transfer: opening %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close() // opened read-only: nothing to lose
		return nil, fmt.Errorf("transfer: stat %s: %w", path, err)
	}
	if leaves == nil {
		var size int64
		leaves, size, err = pieces.Layer(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("transfer: hashing %s: %w", path, err)
		}
		if size != st.Size() {
			_ = f.Close()
			return nil, fmt.Errorf("transfer: %s changed size while hashing", path)
		}
	} else if len(leaves) != pieces.Count(st.Size()) {
		_ = f.Close()
		return nil, fmt.Errorf("transfer: %s: cached layer has %d leaves, file of %d bytes needs %d",
			path, len(leaves), st.Size(), pieces.Count(st.Size()))
	}
	return &localFile{f: f, size: st.Size(), leaves: leaves}, nil
}

func (l *localFile) ReadAt(p []byte, off int64) (int, error) { return l.f.ReadAt(p, off) }
func (l *localFile) Size() int64                             { return l.size }
func (l *localFile) Leaves() [][32]byte                      { return l.leaves }
func (l *localFile) Close() error                            { return l.f.Close() }
