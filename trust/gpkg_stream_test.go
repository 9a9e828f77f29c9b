package trust

import (
	"archive/tar"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"golang.org/x/crypto/blake2b"
)

// patternReader yields n deterministic, poorly compressible bytes.
func patternReader(n int64) io.Reader {
	return io.LimitReader(&pattern{}, n)
}

type pattern struct{ x uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	return len(b), nil
}

// writeLargeGPKG streams a signed GPKG with an image member of size bytes to
// dir without holding the image in memory, as a big real package would be.
func writeLargeGPKG(t testing.TB, dir string, size int64, e *openpgp.Entity) string {
	t.Helper()
	type part struct {
		name string
		size int64
		open func() io.Reader
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, e, patternReader(size), nil); err != nil {
		t.Fatal(err)
	}
	sigBytes := sig.Bytes()
	parts := []part{
		{"gpkg-1", 0, func() io.Reader { return bytes.NewReader(nil) }},
		{"image.tar.zst", size, func() io.Reader { return patternReader(size) }},
		{"image.tar.zst.sig", int64(len(sigBytes)), func() io.Reader { return bytes.NewReader(sigBytes) }},
	}
	var manifest bytes.Buffer
	for _, p := range parts {
		s, b := sha512.New(), mustBlake(t)
		if _, err := io.Copy(io.MultiWriter(s, b), p.open()); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&manifest, "DATA %s %d BLAKE2B %s SHA512 %s\n", p.name, p.size, hex.EncodeToString(b.Sum(nil)), hex.EncodeToString(s.Sum(nil)))
	}
	var signed bytes.Buffer
	w, err := clearsign.Encode(&signed, e.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(manifest.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	manifestBytes := signed.Bytes()
	parts = append(parts, part{"Manifest", int64(len(manifestBytes)), func() io.Reader { return bytes.NewReader(manifestBytes) }})

	file := filepath.Join(dir, "big-1.0-1.gpkg.tar")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range parts {
		if err := tw.WriteHeader(&tar.Header{Name: "big-1.0-1/" + p.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: p.size, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, p.open()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return file
}

func mustBlake(t testing.TB) interface {
	io.Writer
	Sum([]byte) []byte
} {
	h, err := blake2b.New512(nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestVerifyGPKGStreams checks that a 32 MiB image is verified without
// being held in memory: total allocation stays far below the image size.
func TestVerifyGPKGStreams(t *testing.T) {
	const size = 32 << 20
	e := otherEntity(t)
	file := writeLargeGPKG(t, t.TempDir(), size, e)
	kr := openpgp.EntityList{e}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := VerifyGPKGSignatures(file, kr); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
		t.Fatalf("verifying a %d-byte image allocated %d bytes: it is not streamed", size, alloc)
	} else {
		t.Logf("verifying a %d MiB image allocated %d KiB", size>>20, alloc>>10)
	}
}

func BenchmarkVerifyGPKG32MiB(b *testing.B) {
	const size = 32 << 20
	e, err := openpgp.NewEntity("Bench", "", "bench@example.invalid", nil)
	if err != nil {
		b.Fatal(err)
	}
	file := writeLargeGPKG(b, b.TempDir(), size, e)
	kr := openpgp.EntityList{e}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if err := VerifyGPKGSignatures(file, kr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAttestation(b *testing.B) {
	raw, err := os.ReadFile("testdata/attestations/hello-peer1.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluate100Votes(b *testing.B) {
	bk := testCID(b, "hello")
	var votes []Vote
	for i := range 100 {
		label := "A"
		if i%10 == 9 {
			label = "B"
		}
		votes = append(votes, Vote{Att: signAs(b, i+1, testAttestation(b, bk, testContent(label)))})
	}
	p := labPolicy()
	p.Dispute = 20
	for b.Loop() {
		if v := Evaluate(p, bk, votes, nil, ""); v.Decision != Allowed {
			b.Fatal(v.Explain())
		}
	}
}
