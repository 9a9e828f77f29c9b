package xpak

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
)

// xpakTrailerLen is the size of "XPAKSTOP" + 4-byte length + "STOP" at the
// end of an XPAK file.
const xpakTrailerLen = 16

// ReadFile reads the binpkg at path in one streaming pass (see Read) and
// records path in the result.
func ReadFile(path string, lim Limits) (*Package, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w: not a regular file", path, ErrUnknownFormat)
	}
	p, err := Read(f, st.Size(), lim)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p.Path = path
	return p, nil
}

// Read reads a binpkg of size bytes from r: it detects the format (GPKG:
// a tar whose first member is <dir>/gpkg-1; XPAK: the XPAKSTOP…STOP
// trailer), then streams the file once from start to end, hashing it
// (FileSHA256), decoding the image into its digest and parsing the
// metadata. Everything read is bounded by lim; nothing is sized from a
// length field before the bytes arrive.
func Read(r io.ReaderAt, size int64, lim Limits) (*Package, error) {
	p, err := read(r, size, lim)
	if err != nil && !hasSentinel(err) {
		// What is not about the package's bytes is the reader failing.
		err = fmt.Errorf("%w: %w", ErrIO, err)
	}
	return p, err
}

func read(r io.ReaderAt, size int64, lim Limits) (*Package, error) {
	lim = lim.withDefaults()
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrTruncated, size)
	}
	var trailer [xpakTrailerLen]byte
	if size >= xpakTrailerLen {
		if _, err := r.ReadAt(trailer[:], size-xpakTrailerLen); err != nil {
			return nil, readError("trailer", err)
		}
		if bytes.Equal(trailer[:8], []byte("XPAKSTOP")) && bytes.Equal(trailer[12:], []byte("STOP")) {
			return readXPAK(r, size, trailer, lim)
		}
	}
	var head [512]byte
	if size >= int64(len(head)) {
		if _, err := r.ReadAt(head[:], 0); err != nil {
			return nil, readError("tar header", err)
		}
		if bytes.Equal(head[257:262], []byte("ustar")) {
			return readGPKG(r, size, lim)
		}
	}
	return nil, fmt.Errorf("%w: no XPAK trailer and no tar header (%d bytes)", ErrUnknownFormat, size)
}

// readError turns an I/O error from the container into a sentinel-wrapped
// one when it means the file is shorter than promised.
func readError(what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %s", ErrTruncated, what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// fileStream reads the container sequentially, exactly once, feeding every
// byte to the file SHA-256 on its way to the parsers.
type fileStream struct {
	src  *io.SectionReader
	sum  hash.Hash
	read int64
	br   *bufio.Reader
	// ioErr is the first failure of the file itself (not its end), so
	// that parsers can tell a failing disk from a malformed package.
	ioErr error
}

func newFileStream(r io.ReaderAt, size int64) *fileStream {
	fs := &fileStream{src: io.NewSectionReader(r, 0, size), sum: sha256.New()}
	fs.br = bufio.NewReaderSize(hashTee{fs}, ioBufSize)
	return fs
}

type hashTee struct{ fs *fileStream }

func (t hashTee) Read(p []byte) (int, error) {
	n, err := t.fs.src.Read(p)
	t.fs.sum.Write(p[:n])
	t.fs.read += int64(n)
	if err != nil && err != io.EOF && t.fs.ioErr == nil {
		t.fs.ioErr = err
	}
	return n, err
}

// finish drains what the parsers left unread into the hash and checks the
// whole file was read.
func (fs *fileStream) finish(size int64) ([32]byte, error) {
	var sum [32]byte
	if _, err := io.Copy(io.Discard, fs.br); err != nil {
		return sum, readError("container", err)
	}
	if fs.read != size {
		return sum, fmt.Errorf("%w: read %d of %d bytes", ErrTruncated, fs.read, size)
	}
	fs.sum.Sum(sum[:0])
	return sum, nil
}
