package xpak

import (
	"archive/tar"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dbzip2 "github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/gzip"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"golang.org/x/crypto/blake2b"
)

// allCompressions is every payload compression the readers accept.
var allCompressions = []Compression{CompressionNone, CompressionGzip, CompressionBzip2, CompressionXZ, CompressionZstd, CompressionLZ4}

// gpkgExt is the member name suffix portage gives compression c.
func gpkgExt(c Compression) string {
	return map[Compression]string{CompressionNone: "", CompressionGzip: ".gz", CompressionBzip2: ".bz2",
		CompressionXZ: ".xz", CompressionZstd: ".zst", CompressionLZ4: ".lz4"}[c]
}

// compressAs compresses b with c using pure-Go encoders (bzip2: dsnet,
// the standard library only decodes it).
func compressAs(t testing.TB, c Compression, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch c {
	case CompressionNone:
		return bytes.Clone(b)
	case CompressionZstd:
		return zstdBytes(t, b)
	case CompressionGzip:
		w = gzip.NewWriter(&buf)
	case CompressionBzip2:
		w, err = dbzip2.NewWriter(&buf, nil)
	case CompressionXZ:
		// xz -0's dictionary: a bomb of many 1 MiB streams then costs
		// more in decoded bytes than in dictionaries, so it tests the
		// payload's ratio (TestXZAllocationBomb tests the dictionaries').
		w, err = xz.WriterConfig{DictCap: 256 << 10}.NewWriter(&buf)
	case CompressionLZ4:
		lw := lz4.NewWriter(&buf)
		// 64 KiB blocks: the decoder allocates the frame's block size,
		// and 4 MiB per reader makes the many small reads here slow.
		err = lw.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
		w = lw
	default:
		t.Fatalf("no encoder for %s", c)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gpkgMember returns the decompressed content of the member of a GPKG
// fixture whose base name starts with stem ("image.tar", "metadata.tar").
func gpkgMember(t testing.TB, path, stem string) []byte {
	t.Helper()
	raw := readFixture(t, path)
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s member: %v", path, stem, err)
		}
		_, base, _ := strings.Cut(hdr.Name, "/")
		if !strings.HasPrefix(base, stem) || strings.HasSuffix(base, ".sig") {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		c, err := detectCompression(b[:min(len(b), magicPeek)])
		if err != nil {
			t.Fatal(err)
		}
		d, err := newDecoder(bytes.NewReader(b), c, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		out, err := io.ReadAll(d)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tarEnd is the length of a tar's meaningful part: up to the end of its
// end-of-archive marker. Cutting an uncompressed tar after that only
// drops padding, which is no truncation.
func tarEnd(t testing.TB, b []byte) int {
	t.Helper()
	last := -1
	for i := 0; i+512 <= len(b); i += 512 {
		if !bytes.Equal(b[i:i+512], make([]byte, 512)) {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("tar of zeros")
	}
	return last + 512 + 1024
}

// cutPoints are the lengths a payload of n meaningful bytes is cut to:
// just past its magic, a spread through the middle, and every length
// in its last 32 bytes (where the xz index and footer, the gzip trailer
// and the zstd checksum live).
func cutPoints(n, start int) []int {
	var cuts []int
	for i := start; i < min(start+4, n); i++ {
		cuts = append(cuts, i)
	}
	for k := 1; k < 16; k++ {
		cuts = append(cuts, start+(n-start)*k/16)
	}
	for i := max(start, n-32); i < n; i++ {
		cuts = append(cuts, i)
	}
	return cuts
}

// TestTruncatedPayloads: a real image tar and metadata tar, compressed
// every way the readers accept and cut short at many lengths, fail with
// ErrTruncated — standalone (ImageDigest), as an XPAK payload, as a GPKG
// image or metadata member whose Manifest matches the cut bytes (only the
// stream is short), and as a GPKG container cut inside the member.
func TestTruncatedPayloads(t *testing.T) {
	const xpakFixture = "testdata/portage/xpak/zstd-multi-instance/app-misc/hello/hello-1.0-1.xpak"
	const gpkgFixture = "testdata/portage/repro/gpkg-1/app-misc/hello-1.0.gpkg.tar"
	xpakImage := decodeZstdT(t, imagePayload(t, xpakFixture))
	gpkgImage := gpkgMember(t, gpkgFixture, "image.tar")
	gpkgMeta := gpkgMember(t, gpkgFixture, "metadata.tar")
	want, _, err := ImageDigest(bytes.NewReader(xpakImage), FormatXPAK, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	isTruncated := func(t *testing.T, what string, cut int, err error) {
		t.Helper()
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("%s cut to %d bytes: %v, want ErrTruncated", what, cut, err)
		}
	}
	for _, c := range allCompressions {
		t.Run(string(c), func(t *testing.T) {
			ext := gpkgExt(c)
			// The magic must survive the cut, or the payload is merely
			// unrecognisable (ErrUnknownCompression).
			start := 6
			if c == CompressionNone {
				start = magicPeek
			}
			payload := compressAs(t, c, xpakImage)
			if sum, _, err := ImageDigest(bytes.NewReader(payload), FormatXPAK, DefaultLimits()); err != nil || sum != want {
				t.Fatalf("whole payload: %v", err)
			}
			n := len(payload)
			if c == CompressionNone {
				n = tarEnd(t, payload)
			}
			for _, cut := range cutPoints(n, start) {
				short := payload[:cut]
				_, _, err := ImageDigest(bytes.NewReader(short), FormatXPAK, DefaultLimits())
				isTruncated(t, "ImageDigest", cut, err)
				_, err = readBytes(buildXPAK(short, baseMetadata()), DefaultLimits())
				isTruncated(t, "XPAK payload", cut, err)
			}

			meta := compressAs(t, c, gpkgMeta)
			image := compressAs(t, c, gpkgImage)
			members := func(meta, image []byte) []gmember {
				return []gmember{{"gpkg-1", nil}, {"metadata.tar" + ext, meta}, {"image.tar" + ext, image}}
			}
			whole := buildGPKG(t, "hello-1.0", members(meta, image), nil)
			if _, err := readBytes(whole, DefaultLimits()); err != nil {
				t.Fatalf("whole GPKG: %v", err)
			}
			n = len(image)
			if c == CompressionNone {
				n = tarEnd(t, image)
			}
			for _, cut := range cutPoints(n, start) {
				_, err := readBytes(buildGPKG(t, "hello-1.0", members(meta, image[:cut]), nil), DefaultLimits())
				isTruncated(t, "GPKG image member", cut, err)
			}
			n = len(meta)
			if c == CompressionNone {
				n = tarEnd(t, meta)
			}
			for _, cut := range cutPoints(n, start) {
				_, err := readBytes(buildGPKG(t, "hello-1.0", members(meta[:cut], image), nil), DefaultLimits())
				isTruncated(t, "GPKG metadata member", cut, err)
			}
			// The container itself ends inside each member's data.
			metaAt := 3 * 512 // gpkg-1 header + metadata header, then its data
			imageAt := metaAt + (len(meta)+511)/512*512 + 512
			for _, cut := range []int{metaAt + 1, metaAt + len(meta)/2, imageAt + 1, imageAt + len(image)/2, imageAt + len(image) - 1} {
				_, err := readBytes(whole[:cut], DefaultLimits())
				isTruncated(t, "GPKG container", cut, err)
			}
		})
	}
}

// TestTruncatedGPKGFixtures: every real GPKG cut at every tar block
// boundary, and in the middle of every block, up to the end of its
// end-of-archive marker, fails with ErrTruncated —
// including cuts in a member's padding and before the end-of-archive
// marker, which archive/tar alone reads as a clean end.
func TestTruncatedGPKGFixtures(t *testing.T) {
	for _, p := range fixtureFiles(t) {
		if !strings.HasSuffix(p, ".gpkg.tar") {
			continue
		}
		raw := readFixture(t, p)
		// Past the end-of-archive marker only record padding is cut.
		for cut := 512; cut < tarEnd(t, raw); cut += 256 {
			if _, err := readBytes(raw[:cut], DefaultLimits()); !errors.Is(err, ErrTruncated) {
				t.Errorf("%s cut to %d of %d bytes: %v, want ErrTruncated", p, cut, len(raw), err)
			}
		}
	}
}

// repeatStream is a compressed stream made of head followed by unit
// repeated n times, produced as it is read and never held whole; it
// counts the bytes its reader took. Every supported format decodes
// concatenated streams (zstd frames, gzip members, xz and bzip2 streams,
// lz4 frames), so head+unit…unit is one valid payload.
type repeatStream struct {
	head, unit []byte
	n          int64 // units still to send
	pos        int   // in head, then in the current unit
	inHead     bool
	read       int64
}

func newRepeatStream(head, unit []byte, n int64) *repeatStream {
	return &repeatStream{head: head, unit: unit, n: n, inHead: true}
}

// size is the whole stream's length.
func (r *repeatStream) size(n int64) int64 { return int64(len(r.head)) + n*int64(len(r.unit)) }

func (r *repeatStream) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		src := r.unit
		if r.inHead {
			src = r.head
		} else if r.n == 0 {
			break
		}
		k := copy(p, src[r.pos:])
		p, r.pos, total = p[k:], r.pos+k, total+k
		if r.pos == len(src) {
			r.pos = 0
			if r.inHead {
				r.inHead = false
			} else {
				r.n--
			}
		}
	}
	r.read += int64(total)
	if total == 0 {
		return 0, io.EOF
	}
	return total, nil
}

// zeroBomb returns, compressed with c, a head that decodes to a small
// valid tar (one file) followed by zeros up to bombUnit, and a unit that
// decodes to bombUnit zeros: the classic bomb, hidden after the
// end-of-archive marker where no tar header limits it.
func zeroBomb(t testing.TB, c Compression, f Format) (head, unit []byte) {
	zeros := make([]byte, bombUnit)
	name := "./a"
	if f == FormatGPKG {
		name = "image/a"
	}
	tarball := buildTar(t, []tentry{{name: name, body: "a"}})
	return compressAs(t, c, append(tarball, zeros[len(tarball):]...)), compressAs(t, c, zeros)
}

// bombUnit is what one unit of a zeroBomb decodes to.
const bombUnit = 256 << 10

// bombLimits are DefaultLimits with a 2 MiB ratio grace: the default
// grace (128 MiB) only makes a refusal later, and decoding 128 MiB of xz
// under the race detector takes half a minute (8 MiB still took seconds
// on a loaded machine). TestBombDefaultLimits checks the defaults
// themselves.
func bombLimits() Limits {
	lim := DefaultLimits()
	lim.CompressionRatioGrace = 2 << 20
	return lim
}

// TestBombsRefusedEarly: a bomb expanding to a TiB of zeros, in every
// compression, is refused with ErrTooLarge after the reader has taken a
// small prefix of it — counted in compressed bytes, not in time. lz4
// cannot exceed 255:1, so it is shown with a lowered ratio.
func TestBombsRefusedEarly(t *testing.T) {
	const units = 1 << 40 / bombUnit // 1 TiB decoded
	for _, c := range allCompressions[1:] {
		t.Run(string(c), func(t *testing.T) {
			lim := bombLimits()
			if c == CompressionLZ4 {
				lim.MaxCompressionRatio = 100
			}
			head, unit := zeroBomb(t, c, FormatXPAK)
			src := newRepeatStream(head, unit, units)
			full := src.size(units)
			_, _, err := ImageDigest(src, FormatXPAK, lim)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("ImageDigest: %v, want ErrTooLarge", err)
			}
			// What the decoder needs to pass the grace, plus the readers'
			// read-ahead (256 KiB), is all it may take.
			if budget := int64(1 << 20); src.read > budget {
				t.Errorf("read %d of %d compressed bytes before refusing (budget %d)", src.read, full, budget)
			}
			t.Logf("%s: refused after %d of %d compressed bytes: %v", c, src.read, full, err)
		})
	}
}

// TestBombDefaultLimits: with DefaultLimits, a zstd bomb in a file entry
// (the content is hashed, as an attacker's would be) declared at 15 GiB —
// under MaxImageBytes, so only the ratio guard can stop it early — is
// refused after a small prefix, and a real package of the same shape
// that is not a bomb is read.
func TestBombDefaultLimits(t *testing.T) {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: "./big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 15 << 30, Format: tar.FormatPAX})
	tw.Flush()
	zeros := make([]byte, 1<<20)
	head := zstdBytes(t, append(hdr.Bytes(), zeros[hdr.Len():]...))
	unit := zstdBytes(t, zeros)
	src := newRepeatStream(head, unit, 15<<10)
	_, _, err := ImageDigest(src, FormatXPAK, DefaultLimits())
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "500:1") {
		t.Fatalf("ImageDigest: %v, want ErrTooLarge for the ratio", err)
	}
	if src.read > 1<<20 {
		t.Errorf("read %d of %d compressed bytes before refusing", src.read, src.size(15<<10))
	}
	t.Logf("refused after %d of %d compressed bytes: %v", src.read, src.size(15<<10), err)

	// Every real fixture passes the defaults.
	for _, p := range fixtureFiles(t) {
		if _, err := ReadFile(p, DefaultLimits()); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// virtualFile is an io.ReaderAt over parts that are either bytes or a
// repeatStream's output, so a test can hand Read a bomb file of any size
// without writing it; it counts the bytes read from it.
type virtualFile struct {
	parts []vpart
	size  int64
	read  int64
}

type vpart struct {
	off        int64
	b          []byte // fixed bytes, or
	head, unit []byte // head + n×unit
	n          int64
}

func (v *virtualFile) addBytes(b []byte) {
	v.parts = append(v.parts, vpart{off: v.size, b: b})
	v.size += int64(len(b))
}

func (v *virtualFile) addRepeat(head, unit []byte, n int64) {
	v.parts = append(v.parts, vpart{off: v.size, head: head, unit: unit, n: n})
	v.size += int64(len(head)) + n*int64(len(unit))
}

func (p *vpart) len() int64 {
	if p.b != nil {
		return int64(len(p.b))
	}
	return int64(len(p.head)) + p.n*int64(len(p.unit))
}

// fill copies the part's bytes from offset i into dst.
func (p *vpart) fill(dst []byte, i int64) int {
	if p.b != nil {
		return copy(dst, p.b[i:])
	}
	if i < int64(len(p.head)) {
		return copy(dst, p.head[i:])
	}
	i -= int64(len(p.head))
	return copy(dst, p.unit[i%int64(len(p.unit)):])
}

func (v *virtualFile) ReadAt(dst []byte, off int64) (int, error) {
	total := 0
	for len(dst) > 0 && off < v.size {
		for i := range v.parts {
			p := &v.parts[i]
			if off >= p.off && off < p.off+p.len() {
				k := p.fill(dst[:min(int64(len(dst)), p.off+p.len()-off)], off-p.off)
				dst, off, total = dst[k:], off+int64(k), total+k
				break
			}
		}
	}
	v.read += int64(total)
	if len(dst) > 0 {
		return total, io.EOF
	}
	return total, nil
}

// stream reads the part range [from, to) sequentially, for hashing.
func (v *virtualFile) stream(from, to int64) io.Reader {
	return io.NewSectionReader(v, from, to-from)
}

// TestBombPackagesRefusedEarly: the same bombs as whole packages — an
// XPAK whose payload is the bomb, and a GPKG whose image member is, with
// a correct Manifest — of 16 MiB each (15 GiB decoded for gzip, far more
// for the others): Read refuses them having read a small part of the file.
func TestBombPackagesRefusedEarly(t *testing.T) {
	const fileSize = 16 << 20
	for _, c := range []Compression{CompressionZstd, CompressionXZ, CompressionGzip, CompressionBzip2} {
		head, unit := zeroBomb(t, c, FormatXPAK)
		n := int64(fileSize / len(unit))
		t.Run("xpak-"+string(c), func(t *testing.T) {
			// The XPAK segment does not depend on the payload before it.
			seg := buildXPAK(nil, baseMetadata())
			small := &virtualFile{}
			small.addRepeat(head, unit, 3)
			small.addBytes(seg)
			if _, err := Read(small, small.size, bombLimits()); err != nil {
				t.Fatalf("the same layout, 1 MiB decoded: %v", err)
			}
			f := &virtualFile{}
			f.addRepeat(head, unit, n)
			f.addBytes(seg)
			_, err := Read(f, f.size, bombLimits())
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Read: %v, want ErrTooLarge", err)
			}
			if f.read > 2<<20 {
				t.Errorf("read %d of %d bytes before refusing", f.read, f.size)
			}
			t.Logf("refused after reading %d of %d bytes: %v", f.read, f.size, err)
		})
		t.Run("gpkg-"+string(c), func(t *testing.T) {
			head, unit := zeroBomb(t, c, FormatGPKG)
			small := gpkgBombFile(t, c, head, unit, 3)
			if _, err := Read(small, small.size, bombLimits()); err != nil {
				t.Fatalf("the same layout, 1 MiB decoded: %v", err)
			}
			f := gpkgBombFile(t, c, head, unit, n)
			f.read = 0
			_, err := Read(f, f.size, bombLimits())
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Read: %v, want ErrTooLarge", err)
			}
			if f.read > 2<<20 {
				t.Errorf("read %d of %d bytes before refusing", f.read, f.size)
			}
			t.Logf("refused after reading %d of %d bytes: %v", f.read, f.size, err)
		})
	}
}

// gpkgBombFile lays out a GPKG whose image member is head + n×unit, with
// the Manifest portage would write for it (so only the bomb guard can
// stop it before the end).
func gpkgBombFile(t testing.TB, c Compression, head, unit []byte, n int64) *virtualFile {
	t.Helper()
	const dir = "bomb-1.0"
	ext := gpkgExt(c)
	header := func(name string, size int64) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		if err := tw.WriteHeader(&tar.Header{Name: dir + "/" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(1795234547, 0), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Flush()
		return b.Bytes()
	}
	pad := func(size int64) []byte { return make([]byte, (512-size%512)%512) }
	meta := gmember{"metadata.tar" + ext, compressAs(t, c, buildTar(t, []tentry{{name: "metadata/CATEGORY", body: "app-misc\n"}, {name: "metadata/PF", body: "bomb-1.0\n"}}))}
	imageLen := int64(len(head)) + n*int64(len(unit))

	f := &virtualFile{}
	f.addBytes(header("gpkg-1", 0))
	f.addBytes(header(meta.name, int64(len(meta.data))))
	f.addBytes(append(bytes.Clone(meta.data), pad(int64(len(meta.data)))...))
	f.addBytes(header("image.tar"+ext, imageLen))
	imageAt := f.size
	f.addRepeat(head, unit, n)
	f.addBytes(pad(imageLen))

	b2, _ := blake2b.New512(nil)
	s5 := sha512.New()
	if _, err := io.Copy(io.MultiWriter(b2, s5), f.stream(imageAt, imageAt+imageLen)); err != nil {
		t.Fatal(err)
	}
	manifest := manifestLine(gmember{"gpkg-1", nil}) + manifestLine(meta) +
		fmt.Sprintf("DATA image.tar%s %d BLAKE2B %s SHA512 %s\n", ext, imageLen, hex.EncodeToString(b2.Sum(nil)), hex.EncodeToString(s5.Sum(nil)))
	f.addBytes(header("Manifest", int64(len(manifest))))
	f.addBytes(append([]byte(manifest), pad(int64(len(manifest)))...))
	f.addBytes(make([]byte, 1024)) // end-of-archive marker
	return f
}

// TestMetadataBombs: the metadata payloads go through the same guard —
// a metadata.tar.zst and an environment.bz2 that expand to 64 MiB of
// zeros (far past their bounds) are refused with ErrTooLarge.
func TestMetadataBombs(t *testing.T) {
	imageTar := buildTar(t, []tentry{{name: "image", typ: tar.TypeDir, mode: 0o755}, {name: "image/a", body: "a"}})
	md := baseMetadata()
	metaTar := buildTar(t, []tentry{{name: "metadata/CATEGORY", body: "app-misc\n"}, {name: "metadata/PF", body: "evil-1.0\n"}})
	bomb := append(zstdBytes(t, metaTar), zeroFrames(t, 64)...)
	members := []gmember{{"gpkg-1", nil}, {"metadata.tar.zst", bomb}, {"image.tar.zst", zstdBytes(t, imageTar)}}
	_, err := readBytes(buildGPKG(t, "evil-1.0", members, nil), DefaultLimits())
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "metadata tar") {
		t.Fatalf("metadata.tar bomb: %v, want ErrTooLarge", err)
	}

	unit := compressAs(t, CompressionBzip2, make([]byte, 1<<20))
	md["environment.bz2"] = bytes.Repeat(unit, 64)
	t.Logf("environment.bz2 of %d bytes", len(md["environment.bz2"]))
	_, err = readBytes(buildXPAK(zstdBytes(t, buildTar(t, []tentry{{name: "./a", body: "a"}})), md), DefaultLimits())
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "environment.bz2") {
		t.Fatalf("environment.bz2 bomb: %v, want ErrTooLarge", err)
	}
	p, err := ReadFile("testdata/portage/xpak/bzip2/app-misc/hello-1.0.tbz2", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	p.Metadata.Set("environment.bz2", md["environment.bz2"])
	if _, err := p.Metadata.Environment(DefaultLimits()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Environment: %v, want ErrTooLarge", err)
	}
}

// paxSparse returns a tar holding one regular member of name whose PAX
// records make it a GNU 1.0 sparse file: stored, one 512-byte block (the
// sparse map) plus data; read through archive/tar, data followed by
// realSize-len(data) zeros the file never stored.
func paxSparse(t testing.TB, name string, data []byte, realSize int64) []byte {
	t.Helper()
	rec := func(k, v string) string {
		n := len(k) + len(v) + 3
		for {
			s := fmt.Sprintf("%d %s=%s\n", n, k, v)
			if len(s) == n {
				return s
			}
			n = len(s)
		}
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", name) +
		rec("GNU.sparse.realsize", fmt.Sprint(realSize))
	sparseMap := make([]byte, 512)
	copy(sparseMap, fmt.Sprintf("1\n0\n%d\n", len(data)))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// archive/tar refuses to write a PAX header by hand: write a regular
	// member and turn it into one (type 'x', checksum redone).
	if err := tw.WriteHeader(&tar.Header{Name: "PaxHeaders/x", Typeflag: tar.TypeReg, Size: int64(len(pax)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, pax)
	tw.Flush()
	h := buf.Bytes()[:512]
	h[156] = tar.TypeXHeader
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	body := append(sparseMap, data...)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(body)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	tw.Close()
	return buf.Bytes()
}

// TestSparseMembers: a GPKG member stored as a PAX sparse file reads, in
// archive/tar, as however many zeros its header claims; it is refused
// before any are read. The test first checks that archive/tar really
// expands it, so the refusal guards something.
func TestSparseMembers(t *testing.T) {
	imageTar := buildTar(t, []tentry{{name: "image", typ: tar.TypeDir, mode: 0o755}, {name: "image/a", body: "a"}})
	sparse := paxSparse(t, "evil-1.0/image.tar", imageTar, 1<<40)
	tr := tar.NewReader(bytes.NewReader(sparse))
	hdr, err := tr.Next()
	if err != nil || hdr.Size != 1<<40 {
		t.Fatalf("archive/tar does not expand the sparse member: %v %+v", err, hdr)
	}
	if n, _ := io.CopyN(io.Discard, tr, 8<<20); n != 8<<20 {
		t.Fatalf("read %d bytes of the sparse member", n)
	}

	// gpkg-1 and metadata, then the sparse image member, then Manifest.
	ok := buildGPKG(t, "evil-1.0", standardMembers(t, imageTar, baseMetadata()), nil)
	std := standardMembers(t, imageTar, baseMetadata())
	prefix := buildGPKG(t, "evil-1.0", std[:2], []byte{})
	prefix = prefix[:len(prefix)-1024-512] // drop the empty Manifest member and the end marker
	file := append(bytes.Clone(prefix), sparse[:len(sparse)-1024]...)
	file = append(file, make([]byte, 1024)...)
	if _, err := readBytes(ok, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	_, err = readBytes(file, DefaultLimits())
	if !errors.Is(err, ErrBadGPKG) || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("sparse image member: %v, want ErrBadGPKG", err)
	}

	// In metadata.tar too.
	metaSparse := paxSparse(t, "metadata/CATEGORY", []byte("app-misc\n"), 1<<20)
	members := []gmember{{"gpkg-1", nil}, {"metadata.tar", metaSparse}, std[2]}
	_, err = readBytes(buildGPKG(t, "evil-1.0", members, nil), DefaultLimits())
	if !errors.Is(err, ErrBadMetadata) || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("sparse metadata entry: %v, want ErrBadMetadata", err)
	}
}

// TestXZAllocationBomb: the xz decoder allocates each block's dictionary
// in full, so 60-byte streams each asking for a 128 MiB dictionary
// allocated 25 GiB for a 12 KB payload that decodes to 200 bytes — out
// of the decoded-bytes ratio's sight. The guard refuses the second such
// dictionary; an honest multi-block stream is still read.
func TestXZAllocationBomb(t *testing.T) {
	var one bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 128 << 20}.NewWriter(&one)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("a"))
	w.Close()
	bomb := bytes.Repeat(one.Bytes(), 200)
	var derr error
	alloc := allocatedDuring(func() {
		d, err := newDecoder(bytes.NewReader(bomb), CompressionXZ, DefaultLimits())
		if err != nil {
			derr = err
			return
		}
		defer d.Close()
		_, derr = io.Copy(io.Discard, d)
	})
	if !errors.Is(derr, ErrTooLarge) || !strings.Contains(derr.Error(), "dictionaries") {
		t.Fatalf("%d bytes of 128 MiB-dictionary streams: %v, want ErrTooLarge", len(bomb), derr)
	}
	if alloc > 512<<20 {
		t.Errorf("allocated %d MiB before refusing", alloc>>20)
	}
	t.Logf("refused after allocating %d MiB: %v", alloc>>20, derr)

	// Blocks cut as xz -T cuts them (3 dictionaries of data each), with
	// limits low enough that their dictionaries are counted (six blocks'
	// 384 KiB pass the 256 KiB window): each costs far less than 500
	// times its compressed size, so all are read.
	data := xzTestData(1 << 20)
	multi := goXZ(t, data, xz.WriterConfig{DictCap: 64 << 10, BlockSize: 192 << 10})
	lim := Limits{MaxDecoderWindow: 256 << 10, CompressionRatioGrace: 64 << 10}.withDefaults()
	d, err := newDecoder(bytes.NewReader(multi), CompressionXZ, lim)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, err := io.ReadAll(d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("multi-block stream (%d bytes): %v", len(multi), err)
	}
}

// A failure of the file underneath is ErrIO beside the OS error, never a
// bare error and never a format sentinel.
func TestReadFileIOErrorsWrapErrIO(t *testing.T) {
	_, err := ReadFile(filepath.Join(t.TempDir(), "missing.gpkg.tar"), DefaultLimits())
	if !errors.Is(err, ErrIO) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrIO and fs.ErrNotExist", err)
	}
	_, err = Read(failingReaderAt{}, 4096, DefaultLimits())
	if !errors.Is(err, ErrIO) || !errors.Is(err, errDisk) {
		t.Fatalf("disk error: %v, want ErrIO wrapping it", err)
	}
}

var errDisk = errors.New("input/output error")

type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errDisk }
