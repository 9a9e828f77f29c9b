package xpak

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// rewriteTar re-writes an uncompressed image tar entry by entry through
// edit (which may change header and content), with fresh mtimes so the
// rewrite itself never preserves anything but what the digest covers.
func rewriteTar(t *testing.T, raw []byte, reverse bool, edit func(h *tar.Header, body []byte) []byte) []byte {
	t.Helper()
	type ent struct {
		h    *tar.Header
		body []byte
	}
	var ents []ent
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		h.ModTime = time.Unix(1234567890, 0)
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		if edit != nil {
			body = edit(h, body)
		}
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		ents = append(ents, ent{h, body})
	}
	if reverse {
		slices.Reverse(ents)
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range ents {
		e.h.Format = tar.FormatPAX
		if err := tw.WriteHeader(e.h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	return out.Bytes()
}

// TestImageMutations builds mutated XPAK packages from a real fixture (its
// image tar rewritten, its XPAK segment kept) and checks what changes the
// image digest and what does not.
func TestImageMutations(t *testing.T) {
	path := "testdata/portage/xpak/zstd-multi-instance/app-misc/layout/layout-1.0-r1-1.xpak"
	orig, err := ReadFile(path, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	payload := imagePayload(t, path)
	segment := raw[len(payload):] // XPAKPACK … STOP, unchanged
	imageTar := decodeZstdT(t, payload)

	build := func(tarBytes []byte) *Package {
		t.Helper()
		file := append(zstdBytes(t, tarBytes), segment...)
		p, err := ReadFile(writeTemp(t, "m.xpak", file), DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		reverse bool
		edit    func(h *tar.Header, body []byte) []byte
		same    bool
	}{
		{"rewrite with new mtimes", false, nil, true},
		{"reverse member order", true, nil, true},
		{"byte changed in installed file", false, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "run.sh") {
				b = bytes.Clone(b)
				b[len(b)-2] ^= 1
			}
			return b
		}, false},
		{"mode changed", false, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "space name.txt") {
				h.Mode = 0o640
			}
			return b
		}, false},
		{"setuid added", false, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "run.sh") {
				h.Mode |= 0o4000
			}
			return b
		}, false},
		{"symlink target changed", false, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "run-link") {
				h.Linkname = "/bin/sh"
			}
			return b
		}, false},
		{"owner changed", false, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "layout.conf") {
				h.Uname = "portage"
			}
			return b
		}, false},
		{"file renamed", false, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "layout.conf") {
				h.Name = strings.Replace(h.Name, "layout.conf", "layout.cfg", 1)
			}
			return b
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := build(rewriteTar(t, imageTar, c.reverse, c.edit))
			if p.FileSHA256 == orig.FileSHA256 {
				t.Fatal("mutated package has the original's bytes")
			}
			if (p.ImageDigest == orig.ImageDigest) != c.same {
				t.Errorf("image digest equal=%v, want %v", p.ImageDigest == orig.ImageDigest, c.same)
			}
			if p.Metadata.CPV() != orig.Metadata.CPV() {
				t.Errorf("metadata lost: %q", p.Metadata.CPV())
			}
		})
	}
}

// manualDigest encodes records given as 11-field slices, already sorted.
func manualDigest(records ...[]string) [32]byte {
	h := sha256.New()
	h.Write([]byte("gentoo-p2p image v1\n"))
	for _, r := range records {
		for _, f := range r {
			h.Write([]byte(f))
			h.Write([]byte{0})
		}
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func hexSHA(s string) string {
	sum := sha256.Sum256([]byte(s))
	var b strings.Builder
	for _, c := range sum {
		b.WriteString(string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15]))
	}
	return b.String()
}

// TestHardlinkNormalisation: which name tar stored as the file must not
// matter; the smallest name is the file.
func TestHardlinkNormalisation(t *testing.T) {
	want := manualDigest(
		[]string{"d", "bin", "755", "root", "root", "0", "", "", "", "", ""},
		[]string{"f", "bin/a", "755", "root", "root", "5", hexSHA("hello"), "", "", "", ""},
		[]string{"h", "bin/b", "755", "root", "root", "0", "", "bin/a", "", "", ""},
		[]string{"h", "bin/c", "755", "root", "root", "0", "", "bin/a", "", "", ""},
	)
	orders := [][]tentry{
		{{name: "./", typ: tar.TypeDir, mode: 0o755}, {name: "./bin/", typ: tar.TypeDir, mode: 0o755}, {name: "./bin/a", mode: 0o755, body: "hello"}, {name: "./bin/b", typ: tar.TypeLink, mode: 0o755, link: "./bin/a"}, {name: "./bin/c", typ: tar.TypeLink, mode: 0o755, link: "./bin/a"}},
		{{name: "./bin/", typ: tar.TypeDir, mode: 0o755}, {name: "./bin/c", mode: 0o755, body: "hello"}, {name: "./bin/a", typ: tar.TypeLink, mode: 0o755, link: "./bin/c"}, {name: "./bin/b", typ: tar.TypeLink, mode: 0o755, link: "./bin/c"}},
		{{name: "./bin/b", mode: 0o755, body: "hello"}, {name: "./bin/c", typ: tar.TypeLink, mode: 0o755, link: "./bin/b"}, {name: "./bin/a", typ: tar.TypeLink, mode: 0o755, link: "./bin/b"}, {name: "./bin", typ: tar.TypeDir, mode: 0o755}},
	}
	for i, es := range orders {
		sum, n, err := ImageDigest(bytes.NewReader(buildTar(t, es)), FormatXPAK, DefaultLimits())
		if err != nil || sum != want || n != 4 {
			t.Errorf("order %d: %x (%d entries) %v, want %x", i, sum, n, err, want)
		}
	}
}

// TestDigestFields pins the encoding of devices, fifos, uid fallback and
// GPKG prefixes against a hand-written preimage.
func TestDigestFields(t *testing.T) {
	es := []tentry{
		{name: "image", typ: tar.TypeDir, mode: 0o755},
		{name: "image/dev/null", typ: tar.TypeChar, mode: 0o666, devMajor: 1},
		{name: "image/run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "image/etc/shadow", mode: 0, body: "", uname: "", uid: 0},
		{name: "image/sbin/su", mode: 0o4755, body: "x", uname: "", uid: 1000},
	}
	// buildTar fills empty owner names with root; force numeric ones.
	raw := rewriteTar(t, buildTar(t, es), false, func(h *tar.Header, b []byte) []byte {
		if strings.HasSuffix(h.Name, "shadow") || strings.HasSuffix(h.Name, "su") {
			h.Uname, h.Gname = "", ""
		}
		if strings.HasSuffix(h.Name, "shadow") {
			h.Mode = 0 // buildTar turns mode 0 into 0644
		}
		return b
	})
	want := manualDigest(
		[]string{"c", "dev/null", "666", "root", "root", "0", "", "", "1", "3", ""},
		[]string{"f", "etc/shadow", "0", "0", "0", "0", hexSHA(""), "", "", "", ""},
		[]string{"p", "run/fifo", "600", "root", "root", "0", "", "", "", "", ""},
		[]string{"f", "sbin/su", "4755", "1000", "1000", "1", hexSHA("x"), "", "", "", ""},
	)
	lim := DefaultLimits()
	lim.AllowDevices = true
	sum, n, err := ImageDigest(bytes.NewReader(raw), FormatGPKG, lim)
	if err != nil || sum != want || n != 4 {
		t.Fatalf("%x (%d) %v, want %x", sum, n, err, want)
	}
}

// TestCompressions: one image tar, every supported compression, one
// digest; the compression is found by magic whatever the caller says.
func TestCompressions(t *testing.T) {
	imageTar := decodeZstdT(t, imagePayload(t, "testdata/portage/xpak/zstd-multi-instance/app-misc/hello/hello-1.0-1.xpak"))
	want, _, err := ImageDigest(bytes.NewReader(imageTar), FormatXPAK, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	var gz, x, l bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(imageTar)
	gw.Close()
	xw, _ := xz.NewWriter(&x)
	xw.Write(imageTar)
	xw.Close()
	lw := lz4.NewWriter(&l)
	lw.Write(imageTar)
	lw.Close()
	bz := imagePayload(t, "testdata/portage/xpak/bzip2/app-misc/hello-1.0.tbz2")
	for _, c := range []struct {
		want Compression
		data []byte
	}{
		{CompressionNone, imageTar}, {CompressionGzip, gz.Bytes()}, {CompressionXZ, x.Bytes()},
		{CompressionLZ4, l.Bytes()}, {CompressionZstd, zstdBytes(t, imageTar)}, {CompressionBzip2, bz},
	} {
		head := c.data[:min(len(c.data), magicPeek)]
		if got, err := detectCompression(head); got != c.want || err != nil {
			t.Errorf("detect %s: %s %v", c.want, got, err)
		}
		sum, _, err := ImageDigest(bytes.NewReader(c.data), FormatXPAK, DefaultLimits())
		if err != nil || sum != want {
			t.Errorf("%s: %x %v, want %x", c.want, sum, err, want)
		}
		// A full XPAK package around it reports the compression.
		p, err := readBytes(buildXPAK(c.data, baseMetadata()), DefaultLimits())
		if err != nil || p.Compression != c.want || p.ImageDigest != want {
			t.Errorf("%s package: %v %+v", c.want, err, p)
		}
		// And a GPKG whose image member is named .zst whatever it holds.
		g := buildGPKG(t, "evil-1.0", []gmember{{"gpkg-1", nil}, {"metadata.tar.zst", metadataTar(t, baseMetadata())}, {"image.tar.zst", c.data}}, nil)
		if _, err := readBytes(g, DefaultLimits()); err == nil {
			// The XPAK image uses ./ names; in a GPKG they are outside image/.
			t.Errorf("%s: GPKG with ./ image names accepted", c.want)
		}
	}
}
