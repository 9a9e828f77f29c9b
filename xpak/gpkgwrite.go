package xpak

import (
	"archive/tar"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/blake2b"
)

// Signer makes the OpenPGP signatures a signed GPKG carries. It is an
// interface so that this package needs no OpenPGP import: the daemon passes
// its own key (package portagehook implements it with go-crypto).
type Signer interface {
	// DetachSign writes an ASCII-armored detached signature of r to w, as
	// `gpg --detach-sig --armor` would (portage stores these as *.sig).
	DetachSign(w io.Writer, r io.Reader) error
	// ClearSign writes text clearsigned to w, as `gpg --clear-sign` would
	// (portage signs the Manifest this way).
	ClearSign(w io.Writer, text []byte) error
}

// GPKGOptions fix everything about a written GPKG that is not its content,
// so that identical inputs give byte-identical files.
type GPKGOptions struct {
	// Basename is the container's directory, "<PF>" or "<PF>-<BUILD_ID>"
	// (portage names it after the file without .gpkg.tar).
	Basename string
	// MTime is written as every member's and every entry's modification
	// time: a re-pack must not depend on the clock.
	MTime time.Time
	// TempDir receives the spooled compressed image (the outer tar needs its
	// size before its bytes); "" means os.TempDir().
	TempDir string
	// Signer, when set, adds metadata.tar.zst.sig and image.tar.zst.sig and
	// clearsigns the Manifest, as FEATURES=binpkg-signing does.
	Signer Signer
	// Stored writes both payloads as zstd frames of raw blocks (the served
	// form): larger, but their size is known from the tar sizes alone.
	Stored bool
	// Expect, when its sizes are set (with Stored and a Signer), are the
	// served form's tar sizes: the image is streamed into the container
	// without a spool, and a payload of another size is ErrServedSize.
	Expect ServedSizes
}

// ImageAdder adds one image entry. hdr.Name is relative to the image root
// ("usr/bin/hello"; a leading "./" or "image/" is not accepted); the writer
// adds the "image/" prefix. content is read for regular files only.
type ImageAdder func(hdr *tar.Header, content io.Reader) error

// Errors returned by WriteGPKG.
var (
	// ErrGPKGOptions reports unusable GPKGOptions.
	ErrGPKGOptions = errors.New("xpak: invalid GPKG options")
	// ErrImageEntry reports an image entry the writer refuses to store.
	ErrImageEntry = errors.New("xpak: invalid image entry")
)

const (
	gpkgVersionMember = "gpkg-1"
	gpkgMetadataTar   = "metadata.tar.zst"
	gpkgImageTar      = "image.tar.zst"
	gpkgManifest      = "Manifest"
	// tarRecordSize is Python tarfile's RECORDSIZE: portage's tars are padded
	// to a multiple of it, and so are ours.
	tarRecordSize = 20 * 512
)

// WriteGPKG writes a GLEP 78 binary package in the layout portage 3.0.82
// writes: an outer ustar archive holding <basename>/gpkg-1 (empty),
// metadata.tar.zst (+ .sig), image.tar.zst (+ .sig) and Manifest, in that
// order, with `DATA <name> <size> BLAKE2B <hex> SHA512 <hex>` Manifest
// lines. The inner tars carry metadata/ and image/ prefixes; the image
// starts with the "image/" root directory entry portage writes. Payloads
// are zstd-compressed (portage 3.0.82 cannot install an uncompressed gpkg
// by default).
//
// The image callback adds entries in the order they must appear (callers
// sort them; see Repack in portagehook). The compressed image is spooled to
// a temporary file, never held in memory. Entry owners are kept as given
// (they are installed, and covered by the image digest); the image root
// and every container member are root (0:0); every mtime is opts.MTime, so
// the output depends only on the inputs.
func WriteGPKG(w io.Writer, opts GPKGOptions, meta *Metadata, image func(add ImageAdder) error) error {
	if err := checkBasename(opts.Basename); err != nil {
		return err
	}
	if meta == nil {
		return fmt.Errorf("%w: nil metadata", ErrGPKGOptions)
	}
	if opts.Expect.ImageTar > 0 && (!opts.Stored || opts.Signer == nil) {
		return fmt.Errorf("%w: Expect needs Stored and a Signer", ErrGPKGOptions)
	}
	mtime := opts.MTime.Truncate(time.Second)

	// metadata.tar.zst is small (bounded by Limits.MaxMetadataBytes on
	// read), so it is built in memory.
	var metaTar bytes.Buffer
	if err := writeMetadataTarTo(&metaTar, meta, mtime); err != nil {
		return err
	}
	if e := opts.Expect.MetadataTar; e > 0 && int64(metaTar.Len()) != e {
		return fmt.Errorf("%w: metadata tar is %d bytes, the served form says %d", ErrServedSize, metaTar.Len(), e)
	}
	var metaZst bytes.Buffer
	if err := compressPayload(&metaZst, opts.Stored, metaTar.Bytes()); err != nil {
		return fmt.Errorf("xpak: metadata zstd: %w", err)
	}

	c := newContainer(w, opts.Basename, mtime)
	if err := c.add(gpkgVersionMember, 0, bytes.NewReader(nil)); err != nil {
		return err
	}
	if err := c.add(gpkgMetadataTar, int64(metaZst.Len()), bytes.NewReader(metaZst.Bytes())); err != nil {
		return err
	}
	if opts.Signer != nil {
		if err := c.addSignature(opts.Signer, gpkgMetadataTar, bytes.NewReader(metaZst.Bytes())); err != nil {
			return err
		}
	}
	if opts.Expect.ImageTar > 0 {
		if err := c.streamImage(opts, mtime, image); err != nil {
			return err
		}
	} else if err := c.spoolImage(opts, mtime, image); err != nil {
		return err
	}
	manifest := c.manifest.Bytes()
	if opts.Signer != nil {
		var signed bytes.Buffer
		if err := opts.Signer.ClearSign(&signed, manifest); err != nil {
			return fmt.Errorf("xpak: clearsign Manifest: %w", err)
		}
		manifest = signed.Bytes()
	}
	if err := c.addUnrecorded(gpkgManifest, int64(len(manifest)), bytes.NewReader(manifest)); err != nil {
		return err
	}
	return c.close()
}

// ErrServedSize reports a served-form payload whose size is not the one
// the attestations stated (and the index promised portage).
var ErrServedSize = errors.New("xpak: served size mismatch")

// compressPayload writes data as zstd: stored blocks, or the one encoder
// configuration this package compresses with.
func compressPayload(w io.Writer, stored bool, data []byte) error {
	zw, err := newPayloadWriter(w, stored)
	if err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	return zw.Close()
}

func newPayloadWriter(w io.Writer, stored bool) (io.WriteCloser, error) {
	if stored {
		return newStoredZstd(w)
	}
	return newZstd(w)
}

// spoolImage writes the image payload to a temporary file first: the
// outer tar needs its size before its bytes.
func (c *container) spoolImage(opts GPKGOptions, mtime time.Time, image func(add ImageAdder) error) error {
	spool, err := os.CreateTemp(opts.TempDir, "gpkg-image-*.tar.zst")
	if err != nil {
		return fmt.Errorf("xpak: image spool: %w", err)
	}
	defer func() {
		// A scratch copy of the image: the package written is complete
		// (or the error returned) whether or not it goes cleanly.
		_ = spool.Close()
		_ = os.Remove(spool.Name())
	}()
	zw, err := newPayloadWriter(spool, opts.Stored)
	if err != nil {
		return err
	}
	if _, err := writeImageTarTo(zw, mtime, image); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("xpak: image zstd: %w", err)
	}
	imageSize, err := spool.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("xpak: image spool: %w", err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("xpak: image spool: %w", err)
	}
	if err := c.add(gpkgImageTar, imageSize, spool); err != nil {
		return err
	}
	if opts.Signer != nil {
		if _, err := spool.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("xpak: image spool: %w", err)
		}
		if err := c.addSignature(opts.Signer, gpkgImageTar, spool); err != nil {
			return err
		}
	}
	return nil
}

// streamImage writes the image payload straight into the container: its
// stored size is known from opts.Expect, so nothing is spooled and the
// first bytes leave while the image is still being read. The signature is
// computed alongside and written after it. An image whose tar is not the
// expected size is an error (the container written so far is then
// unusable, and the caller must not let it be served).
func (c *container) streamImage(opts GPKGOptions, mtime time.Time, image func(add ImageAdder) error) error {
	size := StoredZstdSize(opts.Expect.ImageTar)
	if err := c.tw.WriteHeader(c.header(gpkgImageTar, size)); err != nil {
		return fmt.Errorf("xpak: gpkg member %s: %w", gpkgImageTar, err)
	}
	b2, err := blake2b.New512(nil)
	if err != nil {
		return err
	}
	s5 := sha512.New()
	pr, pw := io.Pipe()
	var sig bytes.Buffer
	signed := make(chan error, 1)
	go func() {
		err := opts.Signer.DetachSign(&sig, pr)
		pr.CloseWithError(err) // unblocks the writer should signing stop early
		signed <- err
	}()
	fail := func(err error) error {
		pw.CloseWithError(err)
		// The signer stops with this error or its own; err is the cause.
		if serr := <-signed; serr != nil && !errors.Is(serr, err) {
			return fmt.Errorf("%w (signing stopped too: %v)", err, serr)
		}
		return err
	}
	zw, err := newStoredZstd(io.MultiWriter(c.tw, b2, s5, pw))
	if err != nil {
		return fail(fmt.Errorf("xpak: gpkg member %s: %w", gpkgImageTar, err))
	}
	n, err := writeImageTarTo(zw, mtime, image)
	if err != nil {
		return fail(err)
	}
	if n != opts.Expect.ImageTar {
		return fail(fmt.Errorf("%w: image tar is %d bytes, the served form says %d", ErrServedSize, n, opts.Expect.ImageTar))
	}
	if err := zw.Close(); err != nil {
		return fail(fmt.Errorf("xpak: gpkg member %s: %w", gpkgImageTar, err))
	}
	if err := pw.Close(); err != nil {
		return fail(err)
	}
	if err := <-signed; err != nil {
		return fmt.Errorf("xpak: sign %s: %w", gpkgImageTar, err)
	}
	fmt.Fprintf(&c.manifest, "DATA %s %d BLAKE2B %s SHA512 %s\n", gpkgImageTar, size, hexSum(b2), hexSum(s5))
	return c.add(gpkgImageTar+".sig", int64(sig.Len()), bytes.NewReader(sig.Bytes()))
}

// checkBasename refuses names portage would refuse (its container check
// wants every member exactly one level deep).
func checkBasename(b string) error {
	if b == "" || b == "." || b == ".." || strings.ContainsAny(b, "/\x00") {
		return fmt.Errorf("%w: basename %q", ErrGPKGOptions, b)
	}
	return nil
}

// container writes the outer tar and records the Manifest lines.
type container struct {
	cw       *countingWriter
	tw       *tar.Writer
	basename string
	mtime    time.Time
	format   tar.Format
	manifest bytes.Buffer
}

func newContainer(w io.Writer, basename string, mtime time.Time) *container {
	cw := &countingWriter{w: w}
	format := tar.FormatUSTAR
	// portage switches the container to GNU tar for basenames of 154 bytes
	// or more ("Long CPV").
	if len(basename) >= 154 {
		format = tar.FormatGNU
	}
	return &container{cw: cw, tw: tar.NewWriter(cw), basename: basename, mtime: mtime, format: format}
}

func (c *container) header(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     c.basename + "/" + name,
		Mode:     0o644,
		Size:     size,
		ModTime:  c.mtime,
		Format:   c.format,
	}
}

// add writes one member and records its Manifest line.
func (c *container) add(name string, size int64, r io.Reader) error {
	b2, err := blake2b.New512(nil)
	if err != nil {
		return err
	}
	s5 := sha512.New()
	if err := c.write(name, size, io.TeeReader(r, io.MultiWriter(b2, s5))); err != nil {
		return err
	}
	fmt.Fprintf(&c.manifest, "DATA %s %d BLAKE2B %s SHA512 %s\n", name, size, hexSum(b2), hexSum(s5))
	return nil
}

// addUnrecorded writes a member the Manifest does not list (the Manifest).
func (c *container) addUnrecorded(name string, size int64, r io.Reader) error {
	return c.write(name, size, r)
}

func (c *container) addSignature(s Signer, name string, r io.Reader) error {
	var sig bytes.Buffer
	if err := s.DetachSign(&sig, r); err != nil {
		return fmt.Errorf("xpak: sign %s: %w", name, err)
	}
	return c.add(name+".sig", int64(sig.Len()), bytes.NewReader(sig.Bytes()))
}

func (c *container) write(name string, size int64, r io.Reader) error {
	if err := c.tw.WriteHeader(c.header(name, size)); err != nil {
		return fmt.Errorf("xpak: gpkg member %s: %w", name, err)
	}
	n, err := io.Copy(c.tw, r)
	if err != nil {
		return fmt.Errorf("xpak: gpkg member %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("xpak: gpkg member %s: wrote %d bytes, want %d", name, n, size)
	}
	return nil
}

func (c *container) close() error {
	if err := c.tw.Close(); err != nil {
		return fmt.Errorf("xpak: gpkg container: %w", err)
	}
	return padRecord(c.cw)
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// countingWriter counts bytes so the tar can be padded to a record.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// padRecord pads a finished tar to a multiple of tarRecordSize with zeros,
// as Python's tarfile (portage's writer) does.
func padRecord(c *countingWriter) error {
	if rem := c.n % tarRecordSize; rem != 0 {
		if _, err := c.Write(make([]byte, tarRecordSize-rem)); err != nil {
			return fmt.Errorf("xpak: tar padding: %w", err)
		}
	}
	return nil
}

// newZstd returns the one encoder configuration this package writes with:
// single-threaded so the output is a function of the input only.
func newZstd(w io.Writer) (*zstd.Encoder, error) {
	return zstd.NewWriter(w,
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithWindowSize(1<<22))
}

// writeMetadataTarTo writes the metadata tar (uncompressed) with one
// metadata/<KEY> member per key, sorted by name, mode 0644, owner 0:0
// with empty names — portage's metadata tar has no directory entry and no
// owner names — padded to portage's record size.
func writeMetadataTarTo(w io.Writer, meta *Metadata, mtime time.Time) error {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	for _, k := range meta.Keys() {
		if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\x00") {
			return fmt.Errorf("%w: metadata key %q", ErrGPKGOptions, k)
		}
		v, _ := meta.Raw(k)
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     "metadata/" + k,
			Mode:     0o644,
			Size:     int64(len(v)),
			ModTime:  mtime,
			Format:   tar.FormatUSTAR,
		}
		if len(hdr.Name) > 100 {
			hdr.Format = tar.FormatGNU
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("xpak: metadata tar %s: %w", k, err)
		}
		if _, err := tw.Write(v); err != nil {
			return fmt.Errorf("xpak: metadata tar %s: %w", k, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("xpak: metadata tar: %w", err)
	}
	return padRecord(cw)
}

// writeImageTarTo writes the image tar to w (a payload writer): the
// "image/" root entry, then whatever the callback adds, normalised to
// root:root and mtime, padded to portage's record size. It returns the tar's
// length.
func writeImageTarTo(w io.Writer, mtime time.Time, image func(add ImageAdder) error) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	root := &tar.Header{
		Typeflag: tar.TypeDir, Name: "image/", Mode: 0o755, ModTime: mtime,
		Uname: "root", Gname: "root", Format: tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(root); err != nil {
		return 0, fmt.Errorf("xpak: image tar root: %w", err)
	}
	seen := make(map[string]bool)
	nonDir := make(map[string]bool) // entries nothing may live under
	add := func(in *tar.Header, content io.Reader) error {
		hdr, err := normalizeImageHeader(in, mtime)
		if err != nil {
			return err
		}
		key := strings.TrimSuffix(hdr.Name, "/")
		if seen[key] {
			return fmt.Errorf("%w: %q added twice", ErrImageEntry, in.Name)
		}
		// portage 3.0.82 extracts through symlinks: never write an entry
		// under a symlink (or under any other non-directory).
		for i := len("image/"); i < len(key); i++ {
			if key[i] == '/' && nonDir[key[:i]] {
				return fmt.Errorf("%w: %q lies under non-directory %q", ErrImageEntry, in.Name, key[:i])
			}
		}
		if hdr.Typeflag != tar.TypeDir {
			nonDir[key] = true
		}
		if hdr.Typeflag == tar.TypeLink && !seen[strings.TrimSuffix(hdr.Linkname, "/")] {
			return fmt.Errorf("%w: hardlink %q to %q, which is not stored before it", ErrImageEntry, in.Name, in.Linkname)
		}
		seen[key] = true
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("xpak: image entry %q: %w", in.Name, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		if content == nil {
			return fmt.Errorf("%w: %q has no content", ErrImageEntry, in.Name)
		}
		n, err := io.CopyN(tw, content, hdr.Size)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: %q has %d bytes of content, header says %d", ErrImageEntry, in.Name, n, hdr.Size)
		}
		if err != nil {
			return fmt.Errorf("xpak: image entry %q: %w", in.Name, err)
		}
		if m, _ := io.ReadFull(content, make([]byte, 1)); m != 0 {
			return fmt.Errorf("%w: %q has more content than its header's %d bytes", ErrImageEntry, in.Name, hdr.Size)
		}
		return nil
	}
	if err := image(add); err != nil {
		return 0, err
	}
	if err := tw.Close(); err != nil {
		return 0, fmt.Errorf("xpak: image tar: %w", err)
	}
	if err := padRecord(cw); err != nil {
		return 0, err
	}
	return cw.n, nil
}

// normalizeImageHeader builds the header written for one entry: prefixed
// name (directories with a trailing "/", as Python's tarfile writes them),
// permission bits only, owners as given, fixed mtime, no access/change
// times.
// Names that would escape the image are refused here too.
func normalizeImageHeader(in *tar.Header, mtime time.Time) (*tar.Header, error) {
	name := strings.TrimSuffix(in.Name, "/")
	if err := checkImageName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrImageEntry, err)
	}
	hdr := &tar.Header{
		Name:    "image/" + name,
		Mode:    in.Mode & 0o7777,
		ModTime: mtime,
		// Owners are part of what is installed (fowners) and of the image
		// digest: kept as given, never normalised.
		Uid:   in.Uid,
		Gid:   in.Gid,
		Uname: in.Uname,
		Gname: in.Gname,
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || strings.ContainsRune(hdr.Uname+hdr.Gname, 0) {
		return nil, fmt.Errorf("%w: %q has a bad owner", ErrImageEntry, in.Name)
	}
	switch in.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = in.Size
		if in.Size < 0 {
			return nil, fmt.Errorf("%w: %q has negative size", ErrImageEntry, in.Name)
		}
	case tar.TypeDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case tar.TypeSymlink:
		if in.Linkname == "" || strings.ContainsRune(in.Linkname, 0) {
			return nil, fmt.Errorf("%w: symlink %q has target %q", ErrImageEntry, in.Name, in.Linkname)
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = in.Linkname
	case tar.TypeLink:
		target := strings.TrimSuffix(in.Linkname, "/")
		if err := checkImageName(target); err != nil {
			return nil, fmt.Errorf("%w: hardlink %q: %v", ErrImageEntry, in.Name, err)
		}
		hdr.Typeflag = tar.TypeLink
		hdr.Linkname = "image/" + target
	case tar.TypeFifo:
		hdr.Typeflag = tar.TypeFifo
	default:
		// Device nodes are refused by portage's own extraction
		// (tar_safe_extract) and have no place in a shared package.
		return nil, fmt.Errorf("%w: %q has tar type %q", ErrImageEntry, in.Name, in.Typeflag)
	}
	hdr.Format = tar.FormatGNU
	if ustarFits(hdr) {
		hdr.Format = tar.FormatUSTAR
	}
	return hdr, nil
}

// ustarFits reports whether Go's archive/tar can write hdr as plain USTAR,
// as portage writes short names: the name must be ASCII and fit the
// name/prefix split, the link target ASCII and at most 100 bytes. Other
// entries are written as GNU tar (portage switches to GNU for long names
// too; Python writes non-ASCII names raw in USTAR, which Go cannot).
func ustarFits(hdr *tar.Header) bool {
	for _, s := range []string{hdr.Name, hdr.Linkname} {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
	}
	if len(hdr.Linkname) > 100 {
		return false
	}
	if len(hdr.Name) <= 100 {
		return true
	}
	for i := len(hdr.Name) - 1; i > 0; i-- {
		if hdr.Name[i] == '/' && i <= 155 && len(hdr.Name)-i-1 <= 100 && len(hdr.Name)-i-1 > 0 {
			return true
		}
	}
	return false
}

// checkImageName refuses empty, absolute, dot-dot and non-canonical names:
// portage's tar_safe_extract refuses "../" and absolute paths, and we refuse
// anything a canonical image would not contain.
func checkImageName(name string) error {
	switch {
	case name == "" || name == ".":
		return fmt.Errorf("empty name")
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("absolute name %q", name)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("name %q contains NUL", name)
	case path.Clean(name) != name:
		return fmt.Errorf("non-canonical name %q", name)
	case name == ".." || strings.HasPrefix(name, "../"):
		return fmt.Errorf("name %q leaves the image", name)
	}
	return nil
}
