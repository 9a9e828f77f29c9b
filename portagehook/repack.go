package portagehook

import (
	"archive/tar"
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"strings"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// ErrRepack reports a package the re-packer refuses or cannot write.
var ErrRepack = errors.New("portagehook: repack")

// RepackOptions decide everything about a re-packed GPKG beyond the
// attested image.
type RepackOptions struct {
	// BuildID is the BUILD_ID the gateway lists the package under; it is
	// written into the metadata and names the container directory.
	BuildID int64
	// Signer signs metadata, image and Manifest; required, because portage
	// refuses unsigned gpkgs from a binrepo with verify-signature = true.
	Signer xpak.Signer
	// Covered reports which metadata keys to keep: the daemon passes the
	// metadata digest's own rule, so everything portage receives was
	// compared between peers. Required.
	Covered func(key string) bool
	// Canonical, when set, rewrites each covered value into the form the
	// metadata digest hashed (environment.bz2 without its host-varying
	// variables), so nothing the voters did not compare reaches portage.
	Canonical func(key string, raw []byte) ([]byte, error)
	// ImageDigest, when not zero, is the attested image digest: the source
	// must have it and so must the output.
	ImageDigest [32]byte
	// CPV, when set, is the attested CPV: the source must be that package.
	CPV string
	// MetadataDigest, when not zero, is the attested metadata digest: the
	// source's metadata must hash to it with DigestMetadata (required
	// then). The source's environment.bz2 reaches portage, which runs its
	// phase functions as root.
	MetadataDigest [32]byte
	// DigestMetadata computes a metadata digest (identity.MetadataDigest).
	DigestMetadata func(*xpak.Metadata) ([32]byte, error)
	// MTime is written as BUILD_TIME, every tar mtime and the file's
	// mtime (the index's MTIME); zero means the Unix epoch, never the
	// clock, so a re-pack is reproducible.
	MTime time.Time
	// Expect, when set, are the served form's tar sizes the index already
	// promised (from the attestations): the payloads are stored zstd, the
	// image streams straight into the output, and a package of other sizes
	// is refused before its first byte is written (xpak.ErrServedSize).
	Expect xpak.ServedSizes
	// Source, when set, is the source as its verification just read it
	// (xpak.ReadFile): its metadata, digests and served facts are used
	// instead of reading the file once more. The image is still checked
	// against its digest as it is copied.
	Source *xpak.Package
	// Limits bound what reading the source may cost.
	Limits xpak.Limits
	// TempDir holds the spooled image; "" means the destination directory.
	TempDir string
}

// Served describes a re-packed file exactly as the Packages index must:
// portage checks SIZE and the digests it finds (BinpkgVerifier) and compares
// SIZE and MTIME of a cached copy before reusing it.
type Served struct {
	Size   int64
	MD5    string // lowercase hex; empty for the served form (not listed)
	SHA1   string
	SHA256 string
	MTime  time.Time
	// ImageDigest is the image digest of the written file (equal to the
	// source's).
	ImageDigest [32]byte
	// Index holds the Packages-index fields of the written file's own
	// metadata, so the index entry describes exactly what is served, not
	// what an attester claimed before the file was here.
	Index map[string]string `json:",omitempty"`
}

// Repack reads src (an XPAK or a GPKG, as read by xpak.ReadFile) and writes
// dst, a signed GPKG in portage's layout holding the same image — every
// entry copied through xpak.WalkImage, which refuses members under a
// symlink, path traversal, device nodes and bad hardlinks whatever the
// votes said (portage 3.0.82 extracts through symlinks) — and metadata
// limited to the covered keys plus BUILD_TIME and BUILD_ID. Entries are
// written in portage's order (xpak.ServedImage) with their own owners and
// modes and opts.MTime, so the output depends only on the source's image
// and metadata and the options. dst is replaced atomically (temporary
// file, fsync, rename). The written file is read back with xpak.ReadFile
// before it is renamed into place: its Manifest must verify and its image
// digest must equal the source's.
func Repack(src, dst string, opts RepackOptions) (Served, error) {
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	tmpName := out.Name()
	defer os.Remove(tmpName)
	defer out.Close()
	s, err := RepackTo(out, src, opts)
	if err != nil {
		return Served{}, err
	}
	if err := out.Chmod(0o644); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	if err := out.Sync(); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	if err := out.Close(); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	if err := CheckRepacked(tmpName, s, opts.Limits); err != nil {
		return Served{}, err
	}
	if err := os.Rename(tmpName, dst); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	return s, nil
}

// CheckRepacked reads a written re-pack back (its Manifest must verify,
// its image digest must be the source's) and stamps its mtime; s.Index is
// filled from its own metadata.
func CheckRepacked(path string, s Served, lim xpak.Limits) error {
	check, err := xpak.ReadFile(path, lim)
	if err != nil {
		return fmt.Errorf("%w: re-read of the written package: %w", ErrRepack, err)
	}
	if check.ImageDigest != s.ImageDigest || check.Format != xpak.FormatGPKG || !check.Signed || check.Size != s.Size {
		return fmt.Errorf("%w: written package does not carry the source's image (digest %x, want %x)", ErrRepack, check.ImageDigest, s.ImageDigest)
	}
	return os.Chtimes(path, s.MTime, s.MTime)
}

// checkAttestedMetadata refuses a source whose CPV or metadata digest is
// not the attested one (opts.CPV, opts.MetadataDigest).
func checkAttestedMetadata(src string, pkg *xpak.Package, opts RepackOptions) error {
	if opts.CPV != "" && pkg.Metadata.CPV() != opts.CPV {
		return fmt.Errorf("%w: %s is %s, attested %s", ErrRepack, src, pkg.Metadata.CPV(), opts.CPV)
	}
	if opts.MetadataDigest == ([32]byte{}) {
		return nil
	}
	if opts.DigestMetadata == nil {
		return fmt.Errorf("%w: %s: a metadata digest is attested but DigestMetadata is not set", ErrRepack, src)
	}
	md, err := opts.DigestMetadata(pkg.Metadata)
	if err != nil {
		return fmt.Errorf("%w: %s: metadata digest: %w", ErrRepack, src, err)
	}
	if md != opts.MetadataDigest {
		return fmt.Errorf("%w: %s has metadata digest %x, attested %x", ErrRepack, src, md, opts.MetadataDigest)
	}
	return nil
}

// RepackTo writes the re-pack of src to w (see Repack) and describes it.
// With opts.Expect set nothing is spooled but the source image, and the
// sizes are checked before the first byte is written, so w receives either
// the whole promised file or an error.
func RepackTo(w io.Writer, src string, opts RepackOptions) (Served, error) {
	if opts.Signer == nil || opts.Covered == nil {
		return Served{}, fmt.Errorf("%w: Signer and Covered are required", ErrRepack)
	}
	if opts.BuildID <= 0 {
		return Served{}, fmt.Errorf("%w: BUILD_ID %d is not positive", ErrRepack, opts.BuildID)
	}
	pkg := opts.Source
	if fi, err := os.Stat(src); pkg == nil || err != nil || fi.Size() != pkg.Size {
		if pkg, err = xpak.ReadFile(src, opts.Limits); err != nil {
			return Served{}, fmt.Errorf("%w: %s: %w", ErrRepack, src, err)
		}
	}
	if opts.ImageDigest != ([32]byte{}) && pkg.ImageDigest != opts.ImageDigest {
		return Served{}, fmt.Errorf("%w: %s has image digest %x, attested %x", ErrRepack, src, pkg.ImageDigest, opts.ImageDigest)
	}
	if err := checkAttestedMetadata(src, pkg, opts); err != nil {
		return Served{}, err
	}
	mtime := opts.MTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	mtime = mtime.Truncate(time.Second)
	opts.MTime = mtime
	meta, basename, err := repackMetadata(pkg.Metadata, opts)
	if err != nil {
		return Served{}, err
	}
	stored := opts.Expect != (xpak.ServedSizes{})
	if stored {
		if pkg.ImageTarSize != opts.Expect.ImageTar {
			return Served{}, fmt.Errorf("%w: %s: image tar is %d bytes, the attestations state %d", xpak.ErrServedSize, src, pkg.ImageTarSize, opts.Expect.ImageTar)
		}
		n, err := xpak.MetadataTarSize(meta)
		if err != nil {
			return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
		}
		if n != opts.Expect.MetadataTar {
			return Served{}, fmt.Errorf("%w: %s: metadata tar is %d bytes, the attestations state %d", xpak.ErrServedSize, src, n, opts.Expect.MetadataTar)
		}
	}
	tmpDir := opts.TempDir
	if tmpDir == "" {
		tmpDir = os.TempDir()
	}
	var write func(add xpak.ImageAdder) error
	if stored && pkg.ServedOrder && !spoolAlways {
		// Stored in the served order already (portage's GPKG writer):
		// written as it is read, no spool. Should the image differ on
		// this second read, the error comes before the signatures and
		// the Manifest, so the output is never a complete file.
		f, err := os.Open(src)
		if err != nil {
			return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
		}
		defer f.Close()
		write = func(add xpak.ImageAdder) error { return streamImage(f, pkg, opts.Limits, add) }
	} else {
		img, err := spoolImage(src, pkg, tmpDir, opts.Limits)
		if err != nil {
			return Served{}, err
		}
		defer img.close()
		if img.digest != pkg.ImageDigest {
			return Served{}, fmt.Errorf("%w: %s: image changed while reading", ErrRepack, src)
		}
		write = img.write
	}

	// The index lists MD5 and SHA1 only for builds without served sizes
	// (portage checks the digests it finds, SIZE always); the served form
	// is not hashed three more times for nothing.
	var hMD5, hSHA1, hSHA256 hash.Hash
	out := w
	if !stored {
		hMD5, hSHA1, hSHA256 = md5.New(), sha1.New(), sha256.New()
		out = io.MultiWriter(w, hMD5, hSHA1, hSHA256)
	}
	cw := &countWriter{w: out}
	gopts := xpak.GPKGOptions{Basename: basename, MTime: mtime, TempDir: tmpDir, Signer: opts.Signer, Stored: stored, Expect: opts.Expect}
	if err := xpak.WriteGPKG(cw, gopts, meta, write); err != nil {
		return Served{}, fmt.Errorf("%w: write: %w", ErrRepack, err)
	}
	s := Served{Size: cw.n, MTime: mtime, ImageDigest: pkg.ImageDigest, Index: indexFields(meta)}
	if !stored {
		s.MD5, s.SHA1, s.SHA256 = hexOf(hMD5), hexOf(hSHA1), hexOf(hSHA256)
	}
	return s, nil
}

// indexFields are the index keys of m, as the index writes them.
func indexFields(m *xpak.Metadata) map[string]string {
	out := map[string]string{}
	for _, k := range IndexKeys {
		if v := strings.Join(m.Words(k.Meta), " "); v != "" {
			out[k.Index] = v
		}
	}
	return out
}

func hexOf(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RepackMetadata returns the metadata Repack writes for src's metadata:
// covered keys, then Regenerate, then BUILD_ID. The gateway builds index
// entries from the same values, so index and package agree.
func RepackMetadata(src *xpak.Metadata, opts RepackOptions) (*xpak.Metadata, error) {
	m, _, err := repackMetadata(src, opts)
	return m, err
}

func repackMetadata(src *xpak.Metadata, opts RepackOptions) (*xpak.Metadata, string, error) {
	rewrite := func(k string, v []byte) ([]byte, bool, error) {
		if !opts.Covered(k) {
			return nil, false, nil
		}
		if opts.Canonical == nil {
			return v, true, nil
		}
		c, err := opts.Canonical(k, v)
		return c, err == nil, err
	}
	out, err := xpak.ServedMetadata(src, rewrite, opts.BuildID, opts.MTime)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrRepack, err)
	}
	cat, pf := out.Category(), out.PF()
	if !validCategory(cat) || !validPF(pf) {
		return nil, "", fmt.Errorf("%w: CATEGORY %q / PF %q missing or invalid after filtering", ErrRepack, cat, pf)
	}
	return out, fmt.Sprintf("%s-%d", pf, opts.BuildID), nil
}

// spooledImage is the source image, validated, with every file's content
// copied to a temporary file so entries can be written in portage's order.
type spooledImage struct {
	entries []spooledEntry
	spool   *os.File
	digest  [32]byte
}

type spooledEntry struct {
	xpak.ImageEntry
	off int64 // content offset in the spool
}

func (s *spooledImage) close() {
	if s.spool != nil {
		// A scratch file only read from: nothing is lost if closing or
		// removing it fails, and the repack's result does not depend on it.
		_ = s.spool.Close()
		_ = os.Remove(s.spool.Name())
	}
}

// spoolImage walks src's image payload with xpak.WalkImageDigest.
func spoolImage(src string, pkg *xpak.Package, tmpDir string, lim xpak.Limits) (*spooledImage, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	defer f.Close()
	payload, err := imagePayload(f, pkg)
	if err != nil {
		return nil, err
	}
	spool, err := os.CreateTemp(tmpDir, "repack-spool-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	img := &spooledImage{spool: spool}
	var off int64
	digest, _, err := xpak.WalkImageDigest(payload, pkg.Format, lim, func(e xpak.ImageEntry, content io.Reader) error {
		se := spooledEntry{ImageEntry: e, off: off}
		if e.Type == xpak.TypeFile {
			n, err := io.Copy(spool, content)
			if err != nil {
				return err
			}
			if n != e.Size {
				return fmt.Errorf("content is %d bytes, header says %d", n, e.Size)
			}
			off += n
		}
		img.entries = append(img.entries, se)
		return nil
	})
	if err != nil {
		img.close()
		return nil, fmt.Errorf("%w: %s: %w", ErrRepack, src, err)
	}
	img.digest = digest
	return img, nil
}

// spoolAlways makes RepackTo spool every image (tests compare both ways).
var spoolAlways = false

// streamImage feeds the image of f, stored in the served order, straight
// to the GPKG writer, and fails when what it read is not pkg's image.
func streamImage(f *os.File, pkg *xpak.Package, lim xpak.Limits, add xpak.ImageAdder) error {
	payload, err := imagePayload(f, pkg)
	if err != nil {
		return err
	}
	digest, _, err := xpak.WalkImageDigest(payload, pkg.Format, lim, func(e xpak.ImageEntry, content io.Reader) error {
		hdr, err := xpak.ServedHeader(e)
		if err != nil {
			return err
		}
		if e.Type != xpak.TypeFile {
			content = nil
		}
		return add(hdr, content)
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrRepack, f.Name(), err)
	}
	if digest != pkg.ImageDigest {
		return fmt.Errorf("%w: %s: image changed while reading", ErrRepack, f.Name())
	}
	return nil
}

// write feeds the entries, in the served order (xpak.ServedImage), to the
// GPKG writer.
func (s *spooledImage) write(add xpak.ImageAdder) error {
	es := make([]xpak.ImageEntry, len(s.entries))
	for i, e := range s.entries {
		es[i] = e.ImageEntry
	}
	for _, p := range xpak.ServedImage(es) {
		hdr, err := xpak.ServedHeader(p.ImageEntry)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRepack, err)
		}
		var content io.Reader
		if p.Content >= 0 {
			content = io.NewSectionReader(s.spool, s.entries[p.Content].off, p.Size)
		}
		if err := add(hdr, content); err != nil {
			return err
		}
	}
	return nil
}

// imagePayload returns a reader of the compressed image tar inside src:
// the GPKG member <dir>/image.tar[.ext], or for XPAK everything before the
// XPAK segment. xpak.ReadFile validated the container already.
func imagePayload(f *os.File, pkg *xpak.Package) (io.Reader, error) {
	switch pkg.Format {
	case xpak.FormatGPKG:
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err != nil {
				return nil, fmt.Errorf("%w: %s: no image member: %v", ErrRepack, f.Name(), err)
			}
			if _, base, ok := strings.Cut(h.Name, "/"); ok && strings.HasPrefix(base, "image.tar") && !strings.HasSuffix(base, ".sig") {
				return tr, nil
			}
		}
	case xpak.FormatXPAK:
		var trailer [8]byte
		if _, err := f.ReadAt(trailer[:], pkg.Size-8); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrRepack, f.Name(), err)
		}
		if !bytes.Equal(trailer[4:], []byte("STOP")) {
			return nil, fmt.Errorf("%w: %s: no XPAK trailer", ErrRepack, f.Name())
		}
		xpakLen := int64(binary.BigEndian.Uint32(trailer[:4]))
		n := pkg.Size - 8 - xpakLen
		if n <= 0 {
			return nil, fmt.Errorf("%w: %s: XPAK segment longer than the file", ErrRepack, f.Name())
		}
		return io.NewSectionReader(f, 0, n), nil
	}
	return nil, fmt.Errorf("%w: %s: format %q", ErrRepack, f.Name(), pkg.Format)
}

// validCategory and validPF guard the names that become URL and file
// path components: PMS category and package names, no separators.
func validCategory(s string) bool { return validName(s) }
func validPF(s string) bool       { return validName(s) }

func validName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '-' || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '+' || c == '.') {
			return false
		}
	}
	return true
}
