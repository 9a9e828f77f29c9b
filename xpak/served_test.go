package xpak

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// SignatureSize makes testSigner a SizedSigner: its signatures are a
// SHA-256 in hex between fixed armor lines.
func (testSigner) SignatureSize() int64 {
	return int64(len("-----BEGIN PGP SIGNATURE-----\n\n") + 64 + 1 + len("-----END PGP SIGNATURE-----\n"))
}

// ClearSignSize is the length of testSigner's ClearSign output.
func (s testSigner) ClearSignSize(textLen int) int64 {
	return int64(len("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n")+textLen) + s.SignatureSize()
}

var _ SizedSigner = testSigner{}

// TestStoredZstd: the stored frame has exactly StoredZstdSize bytes, and
// both our decoder and the zstd command portage runs read it back.
func TestStoredZstd(t *testing.T) {
	zstdCmd, err := exec.LookPath("zstd")
	if err != nil {
		t.Fatal("zstd not found: portage decompresses GPKG payloads with it (.ci/run installs it)")
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 511, storedBlock - 1, storedBlock, storedBlock + 1, 3 * storedBlock, 3*storedBlock + 7} {
		in := make([]byte, n)
		for i := range in {
			in[i] = byte(rng.UintN(256))
		}
		var out bytes.Buffer
		zw, err := newStoredZstd(&out)
		if err != nil {
			t.Fatal(err)
		}
		// Uneven writes: block boundaries must not depend on them.
		for p := in; len(p) > 0; {
			k := min(len(p), 1+int(rng.UintN(200000)))
			if _, err := zw.Write(p[:k]); err != nil {
				t.Fatal(err)
			}
			p = p[k:]
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := int64(out.Len()), StoredZstdSize(int64(n)); got != want {
			t.Errorf("n=%d: frame is %d bytes, StoredZstdSize says %d", n, got, want)
		}
		back, err := dec.DecodeAll(out.Bytes(), nil)
		if err != nil || !bytes.Equal(back, in) {
			t.Errorf("n=%d: klauspost decode: %v (equal %v)", n, err, bytes.Equal(back, in))
		}
		cmd := exec.Command(zstdCmd, "-d", "-c", "--long=31")
		cmd.Stdin = bytes.NewReader(out.Bytes())
		got, err := cmd.Output()
		if err != nil || !bytes.Equal(got, in) {
			t.Errorf("n=%d: zstd -d: %v (equal %v)", n, err, bytes.Equal(got, in))
		}
	}
}

// TestServedSizePredicted: for every real binpkg portage wrote, the served
// GPKG written from it has exactly the size predicted from the two tar
// sizes alone, the image tar is the size ReadFile reported, and the file
// reads back with the source's image digest. Long basenames (GNU
// container) included.
func TestServedSizePredicted(t *testing.T) {
	for _, path := range fixtureFiles(t) {
		pkg, err := ReadFile(path, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if pkg.ImageTarSize <= 0 {
			t.Fatalf("%s: ImageTarSize %d", path, pkg.ImageTarSize)
		}
		entries, contents := walkAll(t, path, pkg)
		placed := ServedImage(entries)
		n, err := ImageTarSize(placed)
		if err != nil || n != pkg.ImageTarSize {
			t.Fatalf("%s: ImageTarSize %d, %v; ReadFile said %d", path, n, err, pkg.ImageTarSize)
		}
		metaSize, err := MetadataTarSize(pkg.Metadata)
		if err != nil {
			t.Fatal(err)
		}
		sizes := ServedSizes{MetadataTar: metaSize, ImageTar: pkg.ImageTarSize}
		for _, base := range []string{"x-1-1000000001", strings.Repeat("b", 170) + "-1-1000000001"} {
			var out bytes.Buffer
			opts := GPKGOptions{Basename: base, MTime: time.Unix(1795234524, 0), Signer: testSigner{}, Stored: true, Expect: sizes}
			if err := WriteGPKG(&out, opts, pkg.Metadata, addPlaced(placed, contents)); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			want, err := ServedGPKGSize(base, sizes, testSigner{})
			if err != nil {
				t.Fatal(err)
			}
			if int64(out.Len()) != want {
				t.Errorf("%s (basename %d bytes): wrote %d bytes, predicted %d", filepath.Base(path), len(base), out.Len(), want)
			}
			dst := filepath.Join(t.TempDir(), "served.gpkg.tar")
			if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			back, err := ReadFile(dst, Limits{})
			if err != nil {
				t.Fatalf("%s: served file: %v", path, err)
			}
			if back.ImageDigest != pkg.ImageDigest || back.ImageTarSize != pkg.ImageTarSize {
				t.Errorf("%s: served file has image %x (tar %d), source %x (tar %d)", path, back.ImageDigest, back.ImageTarSize, pkg.ImageDigest, pkg.ImageTarSize)
			}
		}
	}
}

// TestServedSizeMismatch: a served form whose stated image tar size is
// wrong is refused while writing, never written as a well-formed file.
func TestServedSizeMismatch(t *testing.T) {
	path := fixtureFiles(t)[0]
	pkg, err := ReadFile(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	entries, contents := walkAll(t, path, pkg)
	metaSize, err := MetadataTarSize(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	for _, sizes := range []ServedSizes{
		{MetadataTar: metaSize, ImageTar: pkg.ImageTarSize + tarRecordSize},
		{MetadataTar: metaSize + 512, ImageTar: pkg.ImageTarSize},
	} {
		opts := GPKGOptions{Basename: "x-1-1", Signer: testSigner{}, Stored: true, Expect: sizes}
		err := WriteGPKG(io.Discard, opts, pkg.Metadata, addPlaced(ServedImage(entries), contents))
		if err == nil || !strings.Contains(err.Error(), "served form says") {
			t.Errorf("sizes %+v: err %v, want ErrServedSize", sizes, err)
		}
	}
}

func walkAll(t *testing.T, path string, pkg *Package) ([]ImageEntry, map[int][]byte) {
	t.Helper()
	payload := bytes.NewReader(imagePayload(t, path))
	var entries []ImageEntry
	contents := map[int][]byte{}
	err := WalkImage(payload, pkg.Format, Limits{}, func(e ImageEntry, r io.Reader) error {
		if e.Type == TypeFile {
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			contents[len(entries)] = b
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries, contents
}

func addPlaced(placed []Placed, contents map[int][]byte) func(ImageAdder) error {
	return func(add ImageAdder) error {
		for _, p := range placed {
			hdr, err := ServedHeader(p.ImageEntry)
			if err != nil {
				return err
			}
			var r io.Reader
			if p.Content >= 0 {
				r = bytes.NewReader(contents[p.Content])
			}
			if err := add(hdr, r); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestServedOrder(t *testing.T) {
	in := []string{"a-b", "a/x", "a", "b", "a/x/y", "a.b"}
	want := "a a/x a/x/y a-b a.b b"
	var es []ImageEntry
	for _, n := range in {
		es = append(es, ImageEntry{Name: n, Type: TypeDir})
	}
	var got []string
	for _, p := range ServedImage(es) {
		got = append(got, p.Name)
	}
	if strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q (a directory's children follow it)", got, want)
	}
}
