package xpak

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tapped is what a Taps of the tests saw.
type tapped struct {
	file     bytes.Buffer
	env      bytes.Buffer
	calls    int       // of Taps.Image
	meta     *Metadata // as Taps.Image got it
	entries  []string  // one line per entry: name, type, size, content SHA-256
	partOnly bool      // read only the first bytes of each file
}

func (tp *tapped) taps() Taps {
	return Taps{
		File:        &tp.file,
		Environment: &tp.env,
		Image: func(m *Metadata) func(ImageEntry, io.Reader) error {
			tp.calls++
			tp.meta = m
			return tp.entry
		},
	}
}

func (tp *tapped) entry(e ImageEntry, r io.Reader) error {
	if tp.partOnly {
		r = io.LimitReader(r, 7) // the walker reads what is left
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	sum := ""
	if !tp.partOnly {
		sum = fmt.Sprintf("%x", h.Sum(nil))
	}
	tp.entries = append(tp.entries, fmt.Sprintf("%s %c %d %s", e.Name, e.Type, e.Size, sum))
	return nil
}

// walkedEntries is what WalkImage says of the image of the file b, in the
// form tapped.entry writes it.
func walkedEntries(t *testing.T, b []byte) []string {
	t.Helper()
	payload, format, err := ImagePayload(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var tp tapped
	if err := WalkImage(payload, format, DefaultLimits(), tp.entry); err != nil {
		t.Fatal(err)
	}
	return tp.entries
}

func metadataEqual(a, b *Metadata) bool {
	if !slices.Equal(a.Keys(), b.Keys()) {
		return false
	}
	for _, k := range a.Keys() {
		va, _ := a.Raw(k)
		vb, _ := b.Raw(k)
		if !bytes.Equal(va, vb) {
			return false
		}
	}
	return true
}

// readAgree reads b with and without taps and fails unless both give the
// same package, or the same error; it returns what the taps saw.
func readAgree(t *testing.T, what string, b []byte, partOnly bool) (*Package, *tapped, error) {
	t.Helper()
	plain, perr := readBytes(b, DefaultLimits())
	tp := &tapped{partOnly: partOnly}
	got, err := ReadWith(bytes.NewReader(b), int64(len(b)), DefaultLimits(), tp.taps())
	switch {
	case (perr == nil) != (err == nil):
		t.Fatalf("%s: read without taps: %v; with taps: %v", what, perr, err)
	case err != nil:
		if err.Error() != perr.Error() {
			t.Fatalf("%s: with taps the error is\n  %v\nwithout\n  %v", what, err, perr)
		}
		for _, s := range allSentinels {
			if errors.Is(err, s) != errors.Is(perr, s) {
				t.Fatalf("%s: errors.Is(%v) differs with taps: %v / %v", what, s, err, perr)
			}
		}
		return nil, tp, err
	}
	if got.FileSHA256 != plain.FileSHA256 || got.ImageDigest != plain.ImageDigest || got.ImageEntries != plain.ImageEntries ||
		got.ImageTarSize != plain.ImageTarSize || got.ServedOrder != plain.ServedOrder || !metadataEqual(got.Metadata, plain.Metadata) {
		t.Fatalf("%s: the package read with taps differs from the one read without", what)
	}
	if !bytes.Equal(tp.file.Bytes(), b) {
		t.Fatalf("%s: Taps.File got %d bytes that are not the file's %d", what, tp.file.Len(), len(b))
	}
	if tp.calls != 1 {
		t.Fatalf("%s: Taps.Image called %d times", what, tp.calls)
	}
	if !got.Metadata.Has("environment.bz2") {
		if tp.env.Len() != 0 {
			t.Fatalf("%s: Taps.Environment got %d bytes of no environment.bz2", what, tp.env.Len())
		}
	} else if env, err := got.Metadata.Environment(DefaultLimits()); err != nil || !bytes.Equal(env, tp.env.Bytes()) {
		t.Fatalf("%s: Taps.Environment got %d bytes, Metadata.Environment %d (%v)", what, tp.env.Len(), len(env), err)
	}
	return got, tp, nil
}

// TestTapsFixtures: on every portage-written fixture (GPKG zstd, xz and
// signed; XPAK bzip2 and zstd) the taps see the file's bytes, the
// metadata the package ends with and every image entry WalkImage sees,
// and the package read is the one Read returns.
func TestTapsFixtures(t *testing.T) {
	seen := map[Compression]bool{}
	for _, path := range fixtureFiles(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		pkg, tp, err := readAgree(t, path, b, false)
		if err != nil {
			t.Fatal(err)
		}
		seen[pkg.Compression] = true
		if tp.meta == nil || !metadataEqual(tp.meta, pkg.Metadata) {
			t.Fatalf("%s: Taps.Image got metadata %v, not the package's", path, tp.meta)
		}
		if want := walkedEntries(t, b); !slices.Equal(tp.entries, want) || len(want) != pkg.ImageEntries {
			t.Fatalf("%s: Taps.Image saw\n%s\nWalkImage\n%s", path, strings.Join(tp.entries, "\n"), strings.Join(want, "\n"))
		}
		// A tap that reads only part of each file changes nothing.
		if _, _, err := readAgree(t, path+" (part)", b, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []Compression{CompressionZstd, CompressionXZ, CompressionBzip2} {
		if !seen[c] {
			t.Errorf("no fixture compressed with %s", c)
		}
	}
}

// TestTapsDamaged: a fixture cut short or with a byte changed fails the
// same way, with the same error, with taps as without.
func TestTapsDamaged(t *testing.T) {
	var failed int
	for _, path := range fixtureFiles(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		const steps = 12
		for i := 1; i < steps; i++ {
			at := len(b) * i / steps
			if _, _, err := readAgree(t, fmt.Sprintf("%s cut at %d", path, at), b[:at], false); err != nil {
				failed++
			}
			flipped := bytes.Clone(b)
			flipped[at] ^= 0x55
			if _, _, err := readAgree(t, fmt.Sprintf("%s flipped at %d", path, at), flipped, false); err != nil {
				failed++
			}
		}
	}
	if failed == 0 {
		t.Fatal("no damaged fixture failed to read")
	}
}

// TestTapsImageFirst: a GPKG storing image.tar before metadata.tar
// (valid, though portage does not write one) gives Taps.Image no
// metadata, and its image is read all the same.
func TestTapsImageFirst(t *testing.T) {
	path := filepath.Join(fixtureRoot, "gpkg/zstd-multi-instance/app-misc/hello/hello-1.0-1.gpkg.tar")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(b)), tar.NewWriter(&out)
	var members [][2]any
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, [2]any{hdr, body})
	}
	im := slices.IndexFunc(members, func(m [2]any) bool { return strings.Contains(m[0].(*tar.Header).Name, "/image.tar") })
	md := slices.IndexFunc(members, func(m [2]any) bool { return strings.Contains(m[0].(*tar.Header).Name, "/metadata.tar") })
	if im < 0 || md < 0 || md > im {
		t.Fatalf("fixture members not in portage's order: metadata %d, image %d", md, im)
	}
	members[im], members[md] = members[md], members[im]
	for _, m := range members {
		if err := tw.WriteHeader(m[0].(*tar.Header)); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m[1].([]byte)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	pkg, tp, err := readAgree(t, "image first", out.Bytes(), false)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := readBytes(b, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if tp.meta != nil {
		t.Fatalf("Taps.Image got metadata %v before the metadata member", tp.meta)
	}
	if want := walkedEntries(t, b); !slices.Equal(tp.entries, want) {
		t.Fatalf("Taps.Image saw\n%s\nWalkImage\n%s", strings.Join(tp.entries, "\n"), strings.Join(want, "\n"))
	}
	if pkg.ImageDigest != orig.ImageDigest {
		t.Fatal("reordering the members changed the image digest")
	}
}

// TestTapsErrors: a tap's own error ends the read and is returned, the
// image entry named.
func TestTapsErrors(t *testing.T) {
	path := filepath.Join(fixtureRoot, "xpak/bzip2/app-misc/hello-1.0.tbz2")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused by the tap")
	_, err = ReadWith(bytes.NewReader(b), int64(len(b)), DefaultLimits(), Taps{
		Image: func(*Metadata) func(ImageEntry, io.Reader) error {
			return func(e ImageEntry, r io.Reader) error {
				if e.Type == TypeFile {
					return refused
				}
				return nil
			}
		},
	})
	if !errors.Is(err, refused) || !strings.Contains(err.Error(), "image entry") {
		t.Fatalf("image tap error: got %v", err)
	}
	_, err = ReadWith(bytes.NewReader(b), int64(len(b)), DefaultLimits(), Taps{File: failingWriter{refused}})
	if !errors.Is(err, refused) {
		t.Fatalf("file tap error: got %v", err)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// changingReader serves b, with one byte changed from the second read
// that covers it on.
type changingReader struct {
	b     []byte
	at    int64
	reads int
}

func (c *changingReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(c.b)) {
		return 0, io.EOF
	}
	n := copy(p, c.b[off:])
	if off <= c.at && c.at < off+int64(n) {
		if c.reads++; c.reads > 1 {
			p[c.at-off] ^= 0x20
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestTapsXPAKChanged: the metadata Taps.Image gets of an XPAK is read
// ahead of the stream; an XPAK segment that then reads differently fails
// the read.
func TestTapsXPAKChanged(t *testing.T) {
	path := filepath.Join(fixtureRoot, "xpak/bzip2/app-misc/hello-1.0.tbz2")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	xpakLen := int64(binary.BigEndian.Uint32(b[len(b)-8:]))
	dataEnd := int64(len(b)) - 16 // the last data byte is before XPAKSTOP
	if dataEnd-xpakLen <= 0 {
		t.Fatal("bad fixture")
	}
	r := &changingReader{b: b, at: dataEnd - 1}
	var tp tapped
	_, err = ReadWith(r, int64(len(b)), DefaultLimits(), tp.taps())
	if !errors.Is(err, ErrBadXPAK) || !strings.Contains(err.Error(), "changed while reading") {
		t.Fatalf("got %v, want the XPAK segment changed", err)
	}
	if tp.meta == nil {
		t.Fatal("Taps.Image got no metadata")
	}
}
