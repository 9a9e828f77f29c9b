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
	"slices"
	"strconv"
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
	// Regenerate replaces or adds metadata values (BUILD_TIME…) after the
	// Covered filter. BUILD_ID is always set from BuildID.
	Regenerate map[string][]byte
	// ImageDigest, when not zero, is the attested image digest: the source
	// must have it and so must the output.
	ImageDigest [32]byte
	// MTime is written as every tar mtime and as the file's mtime (the
	// index's MTIME); zero means the Unix epoch, never the clock, so a
	// re-pack is reproducible.
	MTime time.Time
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
	MD5    string // lowercase hex
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
// limited to the covered keys plus the regenerated ones. Entries are written
// in portage's order (depth first, names sorted) with their own owners and
// modes and opts.MTime, so the output depends only on the source's image and
// metadata and the options. dst is replaced atomically (temporary file,
// fsync, rename). The written file is read back with xpak.ReadFile before
// it is renamed into place: its Manifest must verify and its image digest
// must equal the source's.
func Repack(src, dst string, opts RepackOptions) (Served, error) {
	if opts.Signer == nil || opts.Covered == nil {
		return Served{}, fmt.Errorf("%w: Signer and Covered are required", ErrRepack)
	}
	if opts.BuildID <= 0 {
		return Served{}, fmt.Errorf("%w: BUILD_ID %d is not positive", ErrRepack, opts.BuildID)
	}
	pkg, err := xpak.ReadFile(src, opts.Limits)
	if err != nil {
		return Served{}, fmt.Errorf("%w: %s: %w", ErrRepack, src, err)
	}
	if opts.ImageDigest != ([32]byte{}) && pkg.ImageDigest != opts.ImageDigest {
		return Served{}, fmt.Errorf("%w: %s has image digest %x, attested %x", ErrRepack, src, pkg.ImageDigest, opts.ImageDigest)
	}
	meta, basename, err := repackMetadata(pkg.Metadata, opts)
	if err != nil {
		return Served{}, err
	}
	tmpDir := opts.TempDir
	if tmpDir == "" {
		tmpDir = filepath.Dir(dst)
	}
	mtime := opts.MTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	mtime = mtime.Truncate(time.Second)

	img, err := spoolImage(src, pkg, tmpDir, opts.Limits)
	if err != nil {
		return Served{}, err
	}
	defer img.close()
	if img.digest != pkg.ImageDigest {
		return Served{}, fmt.Errorf("%w: %s: image changed while reading", ErrRepack, src)
	}

	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	tmpName := out.Name()
	defer os.Remove(tmpName)
	defer out.Close()
	hMD5, hSHA1, hSHA256 := md5.New(), sha1.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(out, hMD5, hSHA1, hSHA256)}
	gopts := xpak.GPKGOptions{Basename: basename, MTime: mtime, TempDir: tmpDir, Signer: opts.Signer}
	if err := xpak.WriteGPKG(cw, gopts, meta, img.write); err != nil {
		return Served{}, fmt.Errorf("%w: write %s: %w", ErrRepack, dst, err)
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
	check, err := xpak.ReadFile(tmpName, opts.Limits)
	if err != nil {
		return Served{}, fmt.Errorf("%w: re-read of the written package: %w", ErrRepack, err)
	}
	if check.ImageDigest != pkg.ImageDigest || check.Format != xpak.FormatGPKG || !check.Signed {
		return Served{}, fmt.Errorf("%w: written package does not carry the source's image (digest %x, want %x)", ErrRepack, check.ImageDigest, pkg.ImageDigest)
	}
	if err := os.Chtimes(tmpName, mtime, mtime); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	if err := os.Rename(tmpName, dst); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return Served{}, fmt.Errorf("%w: %v", ErrRepack, err)
	}
	return Served{
		Size:        cw.n,
		MD5:         hexOf(hMD5),
		SHA1:        hexOf(hSHA1),
		SHA256:      hexOf(hSHA256),
		MTime:       mtime,
		ImageDigest: check.ImageDigest,
		Index:       indexFields(check.Metadata),
	}, nil
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
	out := xpak.NewMetadata(nil)
	for _, k := range src.Keys() {
		if !opts.Covered(k) {
			continue
		}
		v, _ := src.Raw(k)
		if opts.Canonical != nil {
			c, err := opts.Canonical(k, v)
			if err != nil {
				return nil, "", fmt.Errorf("%w: metadata %s: %w", ErrRepack, k, err)
			}
			v = c
		}
		out.Set(k, v)
	}
	for k, v := range opts.Regenerate {
		out.Set(k, v)
	}
	// portage writes BUILD_ID without a trailing newline.
	out.Set("BUILD_ID", []byte(strconv.FormatInt(opts.BuildID, 10)))
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
	img.order()
	return img, nil
}

// order sorts entries as portage's tarfile.add(recursive=True) writes
// them — depth first, each directory's names sorted — and regroups
// hardlinks so the first member of each group in that order carries the
// content and the others link to it (a hardlink must follow its target).
func (s *spooledImage) order() {
	slices.SortFunc(s.entries, func(a, b spooledEntry) int { return comparePaths(a.Name, b.Name) })
	idx := make(map[string]int, len(s.entries))
	groups := map[string][]int{} // content holder → its links
	for i, e := range s.entries {
		idx[e.Name] = i
		if e.Type == xpak.TypeHardlink {
			groups[e.Linkname] = append(groups[e.Linkname], i)
		}
	}
	for holder, links := range groups {
		h := idx[holder]
		size, off := s.entries[h].Size, s.entries[h].off
		head := slices.Min(append(links, h))
		for _, m := range append(links, h) {
			e := &s.entries[m]
			if m == head {
				e.Type, e.Size, e.off, e.Linkname = xpak.TypeFile, size, off, ""
			} else {
				e.Type, e.Size, e.off, e.Linkname = xpak.TypeHardlink, 0, 0, s.entries[head].Name
			}
		}
	}
}

// comparePaths orders names component by component, so a directory's
// children directly follow it ("a", "a/x", "a-b"), as a recursive walk
// with sorted listings does.
func comparePaths(a, b string) int {
	for {
		ca, ra, moreA := strings.Cut(a, "/")
		cb, rb, moreB := strings.Cut(b, "/")
		if c := strings.Compare(ca, cb); c != 0 {
			return c
		}
		switch {
		case !moreA && !moreB:
			return 0
		case !moreA:
			return -1
		case !moreB:
			return 1
		}
		a, b = ra, rb
	}
}

// write feeds the ordered entries to the GPKG writer.
func (s *spooledImage) write(add xpak.ImageAdder) error {
	for _, e := range s.entries {
		hdr := &tar.Header{Name: e.Name, Mode: e.Mode, Uid: servedID(e.Uname, e.Uid), Gid: servedID(e.Gname, e.Gid), Uname: e.Uname, Gname: e.Gname}
		var content io.Reader
		switch e.Type {
		case xpak.TypeFile:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
			content = io.NewSectionReader(s.spool, e.off, e.Size)
		case xpak.TypeDir:
			hdr.Typeflag = tar.TypeDir
		case xpak.TypeSymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Linkname
		case xpak.TypeHardlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, e.Linkname
		case xpak.TypeFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return fmt.Errorf("%w: %q: entry type %c is not served", ErrRepack, e.Name, e.Type)
		}
		if err := add(hdr, content); err != nil {
			return err
		}
	}
	return nil
}

// servedID is the numeric owner written next to an owner name. The image
// digest covers the name and the number only when the name is empty, so
// with a name the number is whatever one peer chose: it is replaced by 0.
// Extraction resolves the name first; should the name be unknown on the
// installing machine the fallback is root (as for a "root" entry), never
// an id no attester vouched for. Without a name the number is covered by
// the digest and kept.
func servedID(name string, id int) int {
	if name != "" {
		return 0
	}
	return id
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
