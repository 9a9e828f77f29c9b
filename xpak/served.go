package xpak

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// The served form (docs/PROTOCOL.md, "The served form") is the GPKG the
// gateway gives portage. Its size must be known before a byte of the build
// is here, because portage needs SIZE in the index. Compressed sizes
// depend on the compressor, so both payloads are zstd frames of raw
// (stored) blocks, whose size is a function of the tar size alone; the tar
// sizes are functions of the image entries and the metadata values, which
// the content id covers. Every honest reproducer therefore computes the
// same sizes, attests them, and any gateway can predict the file's size.

const (
	// storedBlock is the largest zstd block (RFC 8878, Block_Maximum_Size).
	storedBlock = 128 << 10
	// storedHeader is magic (4) + Frame_Header_Descriptor (1) +
	// Window_Descriptor (1).
	storedHeader = 6
	// storedWindow is Window_Descriptor 0x50: a 1 MiB window (exponent 10),
	// well under zstd's default decoder limit.
	storedWindow = 0x50
)

// StoredZstdSize is the length of the stored zstd frame of n bytes: the
// frame header, one 3-byte block header per 128 KiB (at least one), and
// the bytes themselves.
func StoredZstdSize(n int64) int64 {
	blocks := (n + storedBlock - 1) / storedBlock
	if blocks == 0 {
		blocks = 1
	}
	return storedHeader + 3*blocks + n
}

// storedZstd writes one zstd frame of raw blocks: no compression, so its
// length is StoredZstdSize of what was written, whatever the bytes.
type storedZstd struct {
	w   io.Writer
	buf []byte
	n   int64
	err error
}

func newStoredZstd(w io.Writer) (*storedZstd, error) {
	// Frame_Header_Descriptor 0: no content size, no checksum, no
	// dictionary, not single-segment (so a Window_Descriptor follows).
	if _, err := w.Write([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, storedWindow}); err != nil {
		return nil, err
	}
	return &storedZstd{w: w, buf: make([]byte, 0, storedBlock)}, nil
}

func (s *storedZstd) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	written := 0
	for len(p) > 0 {
		// A full block is emitted only once more data follows it: the
		// last block, full or not, carries the Last_Block bit.
		if len(s.buf) == storedBlock {
			if s.err = s.block(false); s.err != nil {
				return written, s.err
			}
		}
		k := min(storedBlock-len(s.buf), len(p))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		written += k
		s.n += int64(k)
	}
	return written, nil
}

func (s *storedZstd) block(last bool) error {
	h := uint32(len(s.buf)) << 3 // Block_Type 0 (Raw_Block)
	if last {
		h |= 1
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], h)
	if _, err := s.w.Write(hdr[:3]); err != nil {
		return err
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

// Close writes the last block; the frame takes no writes after it.
func (s *storedZstd) Close() error {
	if s.err != nil {
		return s.err
	}
	if err := s.block(true); err != nil {
		s.err = err
		return err
	}
	s.err = errClosed
	return nil
}

var errClosed = fmt.Errorf("xpak: stored zstd frame closed")

// ServedSizes are what a gateway needs, beyond its own signatures, to
// know the served file's size before it has the build: the two tar sizes
// (record-padded, uncompressed). Attestations carry them.
type ServedSizes struct {
	MetadataTar int64 `json:"metadata_tar"`
	ImageTar    int64 `json:"image_tar"`
}

// Placed is one entry of the served image, in served order: Content is the
// index (into the entries given to ServedImage) of the regular file whose
// bytes this entry carries, or -1.
type Placed struct {
	ImageEntry
	Content int
}

// ServedImage orders validated image entries as the served image stores
// them — portage's order (tarfile.add recursive: depth first, each
// directory's names sorted) — and regroups hardlinks so the first member
// of each group in that order carries the content and the others link to
// it (a hardlink must follow its target in a tar). es is not modified.
func ServedImage(es []ImageEntry) []Placed {
	out := make([]Placed, len(es))
	for i, e := range es {
		out[i] = Placed{ImageEntry: e, Content: -1}
		if e.Type == TypeFile {
			out[i].Content = i
		}
	}
	slices.SortStableFunc(out, func(a, b Placed) int { return comparePaths(a.Name, b.Name) })
	idx := make(map[string]int, len(out))
	groups := map[string][]int{} // content holder → its links
	for i, e := range out {
		idx[e.Name] = i
		if e.Type == TypeHardlink {
			groups[e.Linkname] = append(groups[e.Linkname], i)
		}
	}
	for holder, links := range groups {
		h, ok := idx[holder]
		if !ok {
			continue // the walker refuses such images; nothing to regroup
		}
		size, content := out[h].Size, out[h].Content
		members := append(links, h)
		head := slices.Min(members)
		for _, m := range members {
			e := &out[m]
			if m == head {
				e.Type, e.Size, e.Content, e.Linkname = TypeFile, size, content, ""
			} else {
				e.Type, e.Size, e.Content, e.Linkname = TypeHardlink, 0, -1, out[head].Name
			}
		}
	}
	return out
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

// ServedHeader is the tar header a placed entry is given to the GPKG
// writer with: the entry's own mode and owners, except that a numeric id
// next to an owner name is written as 0. The image digest covers the
// number only when the name is empty, so with a name the number is
// whatever one peer chose; extraction resolves the name first, and should
// the name be unknown the fallback is root, never an id no attester
// vouched for.
func ServedHeader(e ImageEntry) (*tar.Header, error) {
	hdr := &tar.Header{Name: e.Name, Mode: e.Mode, Uid: servedID(e.Uname, e.Uid), Gid: servedID(e.Gname, e.Gid), Uname: e.Uname, Gname: e.Gname}
	switch e.Type {
	case TypeFile:
		hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
	case TypeDir:
		hdr.Typeflag = tar.TypeDir
	case TypeSymlink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Linkname
	case TypeHardlink:
		hdr.Typeflag, hdr.Linkname = tar.TypeLink, e.Linkname
	case TypeFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("%w: %q: entry type %c is not served", ErrImageEntry, e.Name, e.Type)
	}
	return hdr, nil
}

func servedID(name string, id int) int {
	if name != "" {
		return 0
	}
	return id
}

// ImageTarSize is the length of the served image tar of placed entries:
// the "image/" root entry, each entry's header blocks as archive/tar
// writes them (long names and links add GNU records) and its content
// rounded up to 512 bytes, the end-of-archive blocks, all padded to
// portage's 10240-byte record. Timestamps do not change it.
func ImageTarSize(placed []Placed) (int64, error) {
	var hdrs countingWriter
	size := int64(512) // the "image/" root entry
	for _, p := range placed {
		in, err := ServedHeader(p.ImageEntry)
		if err != nil {
			return 0, err
		}
		hdr, err := normalizeImageHeader(in, time.Unix(0, 0))
		if err != nil {
			return 0, err
		}
		hdrs.n = 0
		hdrs.w = io.Discard
		// A fresh writer per entry: it writes the header blocks at once
		// and is never asked for the content.
		if err := tar.NewWriter(&hdrs).WriteHeader(hdr); err != nil {
			return 0, fmt.Errorf("xpak: image entry %q: %w", p.Name, err)
		}
		size += hdrs.n + roundBlock(hdr.Size)
	}
	return roundRecord(size + 1024), nil
}

func roundBlock(n int64) int64  { return (n + 511) / 512 * 512 }
func roundRecord(n int64) int64 { return (n + tarRecordSize - 1) / tarRecordSize * tarRecordSize }

// MetadataTarSize is the length of the metadata tar WriteGPKG writes for
// meta (record-padded, uncompressed).
func MetadataTarSize(meta *Metadata) (int64, error) {
	var buf bytes.Buffer
	if err := writeMetadataTarTo(&buf, meta, time.Unix(0, 0)); err != nil {
		return 0, err
	}
	return int64(buf.Len()), nil
}

// SizedSigner is a Signer whose detached signatures always have one
// length, so a served file's size can be predicted before its bytes exist.
type SizedSigner interface {
	Signer
	// SignatureSize is the length of every DetachSign output.
	SignatureSize() int64
	// ClearSignSize is the length of the ClearSign output of a text of
	// textLen bytes that ends with a line break, has no line starting
	// with '-' and no trailing white space (a GPKG Manifest): computed,
	// not signed.
	ClearSignSize(textLen int) int64
}

// ServedGPKGSize predicts the length of the GPKG WriteGPKG writes with
// Stored set, a SizedSigner, this basename and these tar sizes, without
// any of the content: member headers, stored payloads, fixed-length
// signatures and the clearsigned Manifest (its lines have their real
// lengths, and ClearSignSize its signed length), end blocks and record
// padding.
func ServedGPKGSize(basename string, sizes ServedSizes, s SizedSigner) (int64, error) {
	if err := checkBasename(basename); err != nil {
		return 0, err
	}
	if sizes.MetadataTar <= 0 || sizes.ImageTar <= 0 {
		return 0, fmt.Errorf("%w: tar sizes %d and %d must be positive", ErrGPKGOptions, sizes.MetadataTar, sizes.ImageTar)
	}
	meta, img, sig := StoredZstdSize(sizes.MetadataTar), StoredZstdSize(sizes.ImageTar), s.SignatureSize()
	// Manifest lines have fixed-length hex digests: zeros stand in.
	zeros := strings.Repeat("0", 128)
	var man bytes.Buffer
	for _, m := range []struct {
		name string
		size int64
	}{{gpkgMetadataTar, meta}, {gpkgMetadataTar + ".sig", sig}, {gpkgImageTar, img}, {gpkgImageTar + ".sig", sig}} {
		fmt.Fprintf(&man, "DATA %s %d BLAKE2B %s SHA512 %s\n", m.name, m.size, zeros, zeros)
	}
	signed := s.ClearSignSize(man.Len())
	if signed <= 0 {
		return 0, fmt.Errorf("xpak: clearsign Manifest: the signer cannot tell its size")
	}
	c := newContainer(io.Discard, basename, time.Unix(0, 0))
	total := int64(0)
	for _, m := range []struct {
		name string
		size int64
	}{{gpkgVersionMember, 0}, {gpkgMetadataTar, meta}, {gpkgMetadataTar + ".sig", sig}, {gpkgImageTar, img}, {gpkgImageTar + ".sig", sig}, {gpkgManifest, signed}} {
		var hdrs countingWriter
		hdrs.w = io.Discard
		if err := tar.NewWriter(&hdrs).WriteHeader(c.header(m.name, m.size)); err != nil {
			return 0, fmt.Errorf("xpak: gpkg member %s: %w", m.name, err)
		}
		total += hdrs.n + roundBlock(m.size)
	}
	return roundRecord(total + 1024), nil
}

// ServedMetadata is the served form's metadata: the keys of src that
// rewrite keeps (as rewrite returns them), then BUILD_TIME ("%010d\n") and
// BUILD_ID (decimal, no line break, as portage writes it). With a
// ten-digit BUILD_ID its tar size does not depend on either value, so an
// attester computes MetadataTarSize with placeholders and every gateway
// serves that size whatever BUILD_ID and BUILD_TIME it picks.
func ServedMetadata(src *Metadata, rewrite func(key string, raw []byte) (value []byte, keep bool, err error), buildID int64, buildTime time.Time) (*Metadata, error) {
	out := NewMetadata(nil)
	for _, k := range src.Keys() {
		raw, _ := src.Raw(k)
		v, keep, err := rewrite(k, raw)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: %w", k, err)
		}
		if keep {
			out.Set(k, v)
		}
	}
	out.Set("BUILD_TIME", fmt.Appendf(nil, "%010d\n", buildTime.Unix()))
	out.Set("BUILD_ID", fmt.Appendf(nil, "%d", buildID))
	return out, nil
}
