package fit

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Needs is what a build's content needs of the machine it runs on, read
// from its ELF files alone: the same content gives the same Needs to
// every honest reproducer, so Needs can be attested with the content.
type Needs struct {
	// Glibc is the highest glibc symbol version any ELF file of the image
	// needs (its .gnu.version_r), e.g. "GLIBC_2.34"; "" for none.
	Glibc string `json:"glibc,omitempty"`
	// X86Level is the highest x86-64 micro-architecture level (1 for the
	// baseline, 2..4 for x86-64-v2..v4) an ELF file of the image states in
	// a GNU_PROPERTY_X86_ISA_1_NEEDED note; 0 when none states one.
	X86Level int `json:"x86_level,omitempty"`
}

// Merge returns the needs of n and o together: the higher of each.
func (n Needs) Merge(o Needs) Needs {
	if compareGlibc(o.Glibc, n.Glibc) > 0 {
		n.Glibc = o.Glibc
	}
	n.X86Level = max(n.X86Level, o.X86Level)
	return n
}

// DefaultPrefix is how much of one file a Scanner holds in memory when
// Prefix is unset: most ELF files are smaller, and the headers, notes and
// version needs of larger ones lie in their first pages.
const DefaultPrefix = 1 << 20

// Scanner derives the Needs of an image from its regular files as they
// stream by (xpak.WalkImage gives them in tar order). A file that is no
// ELF costs a 4-byte read. An ELF file is read through its program
// headers: the first Prefix bytes are held in memory, and when what the
// file points at lies beyond them (PT_DYNAMIC sits near the end of a large
// library) the bytes up to it are spooled to a temporary file in TempDir,
// removed once the file is read; the tail is never read. Memory is
// bounded by Prefix, disk by the file's size. The result does not depend
// on Prefix. The zero value is ready to use; not safe for concurrent use.
type Scanner struct {
	// Prefix is the bytes of one file held in memory; 0 means
	// DefaultPrefix.
	Prefix int
	// TempDir is where spool files go; "" means os.TempDir().
	TempDir string

	needs Needs
	buf   []byte
}

// Add reads what the file name of size bytes, whose content r streams,
// needs. It reads at most size bytes of r and may leave the rest unread.
// A file that is no ELF object, or an ELF file that contradicts itself,
// adds nothing; an error is returned only when r or the spool fails.
func (s *Scanner) Add(name string, r io.Reader, size int64) error {
	if size < elf.EI_NIDENT {
		return nil
	}
	prefix := s.Prefix
	if prefix <= 0 {
		prefix = DefaultPrefix
	}
	prefix = max(prefix, elf.EI_NIDENT)
	if cap(s.buf) < prefix {
		s.buf = make([]byte, 0, prefix)
	}
	mem := s.buf[:4:prefix]
	if _, err := io.ReadFull(r, mem); err != nil {
		return fmt.Errorf("%s: %w", name, sourceError(err))
	}
	if !bytes.Equal(mem, []byte(elf.ELFMAG)) {
		return nil
	}
	f := &streamFile{src: r, size: size, read: 4, mem: mem, tempDir: s.TempDir}
	defer f.close()
	n, err := scanELF(f, size)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	s.needs = s.needs.Merge(Needs{Glibc: n.glibc, X86Level: n.x86Level})
	return nil
}

// Needs is what the files added so far need together.
func (s *Scanner) Needs() Needs { return s.needs }

// Reset forgets the files added, keeping the memory for the next image's
// (a daemon indexing thousands of packages would otherwise allocate
// Prefix bytes for each).
func (s *Scanner) Reset() { s.needs = Needs{} }

// NeedsOfFile reads the Needs of the binpkg at path (XPAK or GPKG) in one
// pass over its image: for a build of this machine, whose file was read
// with xpak.ReadFile already. Every image entry is validated as WalkImage
// does, within lim.
func NeedsOfFile(path string, lim xpak.Limits) (Needs, error) {
	var s Scanner
	err := xpak.WalkImageFile(path, lim, func(e xpak.ImageEntry, r io.Reader) error {
		if e.Type != xpak.TypeFile {
			return nil
		}
		return s.Add(e.Name, r, e.Size)
	})
	if err != nil {
		return Needs{}, err
	}
	return s.Needs(), nil
}

// streamFile gives random access to a file that streams by once: bytes
// below cap(mem) are kept in memory, later ones are spooled to a temporary
// file, each only when a read first reaches them.
type streamFile struct {
	src     io.Reader
	size    int64
	read    int64  // bytes taken from src so far
	mem     []byte // the first min(read, cap(mem)) bytes
	spool   *os.File
	tempDir string
	err     error // sticky failure of src or the spool
}

// readChunk is how far ahead of a read in memory src is consumed, so a
// walk over headers does not cost one src read per field.
const readChunk = 32 << 10

// ReadAt implements io.ReaderAt; reads past the file's size fail with
// errOutside.
func (f *streamFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= f.size {
		return 0, errOutside
	}
	end := min(off+int64(len(p)), f.size)
	if err := f.fill(end); err != nil {
		return 0, err
	}
	memLen := int64(cap(f.mem))
	n := 0
	if off < memLen {
		n = copy(p[:end-off], f.mem[off:min(end, memLen)])
	}
	if rest := end - off - int64(n); rest > 0 {
		m, err := f.spool.ReadAt(p[n:int64(n)+rest], off+int64(n)-memLen)
		n += m
		if err != nil {
			return n, fmt.Errorf("fit: reading the spool: %w", err)
		}
	}
	if end < off+int64(len(p)) {
		return n, errOutside
	}
	return n, nil
}

// fill takes bytes from src until the first end bytes are at hand.
func (f *streamFile) fill(end int64) error {
	if end <= f.read {
		return nil
	}
	if f.err != nil {
		return f.err
	}
	if memLen := int64(cap(f.mem)); f.read < memLen {
		upto := min(memLen, f.size, max(end, f.read+readChunk))
		n, err := io.ReadFull(f.src, f.mem[f.read:upto])
		f.read += int64(n)
		f.mem = f.mem[:f.read]
		if err != nil {
			f.err = sourceError(err)
			return f.err
		}
	}
	if end <= f.read {
		return nil
	}
	if f.spool == nil {
		sp, err := os.CreateTemp(f.tempDir, "gentoo-p2pd-fit-*")
		if err != nil {
			f.err = fmt.Errorf("fit: spool: %w", err)
			return f.err
		}
		f.spool = sp
	}
	n, err := io.CopyN(f.spool, f.src, end-f.read)
	f.read += n
	if err != nil {
		f.err = sourceError(err)
		return f.err
	}
	return nil
}

// sourceError names a source that ends early: the file is shorter than
// its size said, which is the stream's fault, not the file's.
func sourceError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("fit: content ends before its size: %w", io.ErrUnexpectedEOF)
	}
	return err
}

func (f *streamFile) close() {
	if f.spool != nil {
		// A scratch file only read from: its removal failing loses nothing.
		_ = f.spool.Close()
		_ = os.Remove(f.spool.Name())
	}
}
