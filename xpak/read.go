package xpak

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
)

// xpakTrailerLen is the size of "XPAKSTOP" + 4-byte length + "STOP" at the
// end of an XPAK file.
const xpakTrailerLen = 16

// ReadFile reads the binpkg at path in one streaming pass (see Read) and
// records path in the result.
func ReadFile(path string, lim Limits) (*Package, error) {
	return ReadFileWith(path, lim, Taps{})
}

// Taps are further consumers of the bytes Read streams anyway, for a
// caller that needs more of a package than Package holds (the daemon's
// piece layer, what the image needs of a machine) without reading the
// file, or decoding its image, a second time. The zero Taps taps nothing.
type Taps struct {
	// File, when set, is written every byte of the container file, in
	// order and once, as the file's SHA-256 reads it. An error it returns
	// fails the read.
	File io.Writer
	// Image, when set, is called once, before the image is walked, with
	// the package's metadata as the container states it; nil when the
	// container stores the image first (a GPKG whose image member comes
	// before metadata.tar; portage writes metadata.tar first). The
	// function it returns, unless nil, is called for every image entry as
	// WalkImage calls fn, with the same validation. A metadata value that
	// turns out bad fails the read afterwards, as without Image.
	Image func(m *Metadata) func(ImageEntry, io.Reader) error
	// Environment, when set, is written environment.bz2 decoded, as the
	// read decodes it to check its bound (after the container is read;
	// nothing when the package has none). An error it returns fails the
	// read.
	Environment io.Writer
}

// ReadFileWith is ReadFile that also feeds t.
func ReadFileWith(path string, lim Limits, t Taps) (*Package, error) {
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
	p, err := ReadWith(f, st.Size(), lim, t)
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
	return ReadWith(r, size, lim, Taps{})
}

// ReadWith is Read that also feeds t, in the same pass.
func ReadWith(r io.ReaderAt, size int64, lim Limits, t Taps) (*Package, error) {
	p, err := read(r, size, lim, t)
	if err != nil && !hasSentinel(err) {
		// What is not about the package's bytes is the reader failing.
		err = fmt.Errorf("%w: %w", ErrIO, err)
	}
	return p, err
}

func read(r io.ReaderAt, size int64, lim Limits, t Taps) (*Package, error) {
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
			return readXPAK(r, size, trailer, lim, t)
		}
	}
	var head [512]byte
	if size >= int64(len(head)) {
		if _, err := r.ReadAt(head[:], 0); err != nil {
			return nil, readError("tar header", err)
		}
		if bytes.Equal(head[257:262], []byte("ustar")) {
			return readGPKG(r, size, lim, t)
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
	tap  io.Writer // Taps.File; nil when unset
	read int64
	br   *bufio.Reader
	// ioErr is the first failure of the file itself (not its end), so
	// that parsers can tell a failing disk from a malformed package.
	ioErr error
	// tapErr is the first error of tap, checked again by finish: a
	// parser may stop reading before it meets it.
	tapErr error
}

func newFileStream(r io.ReaderAt, size int64, tap io.Writer) *fileStream {
	fs := &fileStream{src: io.NewSectionReader(r, 0, size), sum: sha256.New(), tap: tap}
	fs.br = streamReaders.Get().(*bufio.Reader)
	fs.br.Reset(hashTee{fs})
	return fs
}

// streamReaders recycles the fileStreams' buffered readers (ioBufSize
// each, one per package read).
var streamReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ioBufSize) }}

// release hands the buffered reader back; fs is not read afterwards.
func (fs *fileStream) release() {
	fs.br.Reset(nil)
	streamReaders.Put(fs.br)
	fs.br = nil
}

type hashTee struct{ fs *fileStream }

func (t hashTee) Read(p []byte) (int, error) {
	n, err := t.fs.src.Read(p)
	t.fs.sum.Write(p[:n])
	t.fs.read += int64(n)
	if t.fs.tap != nil && n > 0 && t.fs.tapErr == nil {
		if _, terr := t.fs.tap.Write(p[:n]); terr != nil {
			t.fs.tapErr = fmt.Errorf("file tap: %w", terr)
		}
	}
	if t.fs.tapErr != nil {
		err = t.fs.tapErr
	}
	if err != nil && err != io.EOF && t.fs.ioErr == nil {
		t.fs.ioErr = err
	}
	return n, err
}

// finish drains what the parsers left unread into the hash and checks the
// whole file was read.
func (fs *fileStream) finish(size int64) ([32]byte, error) {
	var sum [32]byte
	if _, err := io.Copy(io.Discard, fs.br); fs.tapErr != nil {
		return sum, fs.tapErr
	} else if err != nil {
		return sum, readError("container", err)
	}
	if fs.read != size {
		return sum, fmt.Errorf("%w: read %d of %d bytes", ErrTruncated, fs.read, size)
	}
	fs.sum.Sum(sum[:0])
	return sum, nil
}

// imageFunc is what t.Image asks to be called for every image entry,
// given the metadata read so far (nil for none); nil when nothing is.
func (t Taps) imageFunc(m *Metadata) func(ImageEntry, io.Reader) error {
	if t.Image == nil {
		return nil
	}
	return t.Image(m)
}
