package pieces

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// synth returns n deterministic bytes; the golden roots below were computed
// for the same generator by an independent Python implementation of the
// tree rules in the package comment.
func synth(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func mustHex(t *testing.T, s string) [32]byte {
	t.Helper()
	var out [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad golden hex %q: %v", s, err)
	}
	copy(out[:], b)
	return out
}

func TestRootGolden(t *testing.T) {
	tests := []struct {
		name string
		size int
		want string
	}{
		{"empty", 0, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"},
		{"one byte", 1, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"},
		{"one short of a piece", Size - 1, "66f43f742bef8b47b466a13573f36576c5c17dc25f4101c33420d57f045002bf"},
		{"exactly one piece", Size, "2854110ff9b20776e2b84be2fd97674da2e6d8aa3ad55c8d6853ec0ce16a270d"},
		{"one byte into second piece", Size + 1, "f4ffd031e1e2c8c6aa2d267d657035b6badcbd23bfd3ec723365855ee25956eb"},
		{"two pieces", 2 * Size, "94399a9a5d61965212504e22bff1290e4e82f6c71538d24f7f25c186345a55da"},
		{"three pieces, odd promoted", 3 * Size, "615cb8e991cb332863f407cad54272359bac1257babe1e2bf1e68f11287e6962"},
		{"six pieces, short last", 5*Size + 7, "79c9cc6ea8c2f2b2e88e1a7f7884a4cb5ffad1283ed00c3d407992df84793c92"},
		{"eight pieces, full tree", 8 * Size, "045bee7c288551627b44fc873ecc9d86813177f6a293a19ccb07b1ef47b9acdf"},
		{"ten pieces, one-byte tail", 9*Size + 1, "7aa15d6bb5e229d34612a51de25ea77a5a59eb9a8800db10950db3d81e3f1935"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := synth(tt.size)
			// A reader returning one byte at a time proves Layer does not
			// depend on read sizes.
			root, size, err := Root(iotest.OneByteReader(bytes.NewReader(data)))
			if err != nil {
				t.Fatal(err)
			}
			if size != int64(tt.size) {
				t.Fatalf("size %d, want %d", size, tt.size)
			}
			if want := mustHex(t, tt.want); root != want {
				t.Fatalf("root %x, want %s", root, tt.want)
			}
			leaves, _, err := Layer(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if len(leaves) != Count(size) {
				t.Fatalf("%d leaves, Count says %d", len(leaves), Count(size))
			}
			if err := VerifyLayer(leaves, size, root); err != nil {
				t.Fatal(err)
			}
			for i := range leaves {
				off := i * Size
				piece := data[off : off+PieceLen(size, i)]
				if err := VerifyPiece(leaves, i, piece); err != nil {
					t.Fatalf("piece %d: %v", i, err)
				}
			}
		})
	}
}

// TestRootFixtures pins the roots of real portage binpkgs (single-piece
// files, so root = SHA-256(0x00 || file)).
func TestRootFixtures(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"hello-1.0.gpkg.tar", "0568fdee2d659ca1c6aea930a28753d941f60fbdbc3c7a757a8217d2e930e953"},
		{"hello-1.0.tbz2", "06aac4c08b077ab3c3f87623f212f396e27e72d56838e255647cda57dcffc6b5"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			root, size, err := Root(f)
			if err != nil {
				t.Fatal(err)
			}
			if root != mustHex(t, tt.want) {
				t.Fatalf("root %x, want %s", root, tt.want)
			}
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(data)) != size || Count(size) != 1 {
				t.Fatalf("size %d, count %d", size, Count(size))
			}
			if direct := sha256.Sum256(append([]byte{0}, data...)); direct != root {
				t.Fatalf("one-piece root %x is not SHA-256(0x00||file) %x", root, direct)
			}
		})
	}
}

// TestRootOfShape checks the promotion rule structurally, independent of
// the golden values.
func TestRootOfShape(t *testing.T) {
	l := make([][32]byte, 5)
	for i := range l {
		l[i] = Leaf([]byte{byte(i)})
	}
	n := func(a, b [32]byte) [32]byte {
		return sha256.Sum256(append(append([]byte{1}, a[:]...), b[:]...))
	}
	tests := []struct {
		k    int
		want [32]byte
	}{
		{1, l[0]},
		{2, n(l[0], l[1])},
		{3, n(n(l[0], l[1]), l[2])},
		{4, n(n(l[0], l[1]), n(l[2], l[3]))},
		{5, n(n(n(l[0], l[1]), n(l[2], l[3])), l[4])},
	}
	for _, tt := range tests {
		in := append([][32]byte(nil), l[:tt.k]...)
		if got := RootOf(in); got != tt.want {
			t.Errorf("RootOf(%d leaves) = %x, want %x", tt.k, got, tt.want)
		}
		for i := range in {
			if in[i] != l[i] {
				t.Fatalf("RootOf modified its argument at %d", i)
			}
		}
	}
	if got, want := RootOf(nil), sha256.Sum256([]byte{0}); got != want {
		t.Fatalf("empty root %x, want SHA-256(0x00) %x", got, want)
	}
}

func TestVerifyRejects(t *testing.T) {
	data := synth(3*Size + 10)
	leaves, size, err := Layer(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	root := RootOf(leaves)

	bad := append([]byte(nil), data[:Size]...)
	bad[100] ^= 1
	if err := VerifyPiece(leaves, 0, bad); !errors.Is(err, ErrBadPiece) {
		t.Fatalf("flipped byte: %v, want ErrBadPiece", err)
	}
	if err := VerifyPiece(leaves, 1, data[:Size]); !errors.Is(err, ErrBadPiece) {
		t.Fatalf("piece under the wrong index: %v, want ErrBadPiece", err)
	}
	for _, idx := range []int{-1, 4} {
		if err := VerifyPiece(leaves, idx, data[:10]); !errors.Is(err, ErrIndexRange) {
			t.Fatalf("index %d: %v, want ErrIndexRange", idx, err)
		}
	}

	swapped := append([][32]byte(nil), leaves...)
	swapped[0], swapped[1] = swapped[1], swapped[0]
	tamperedRoot := root
	tamperedRoot[0] ^= 1
	layerTests := []struct {
		name   string
		leaves [][32]byte
		size   int64
		root   [32]byte
	}{
		{"swapped leaves", swapped, size, root},
		{"missing leaf", leaves[:3], size, root},
		{"extra leaf", append(append([][32]byte(nil), leaves...), leaves[0]), size, root},
		{"wrong size", leaves, size + Size, root},
		{"wrong root", leaves, size, tamperedRoot},
	}
	for _, tt := range layerTests {
		if err := VerifyLayer(tt.leaves, tt.size, tt.root); !errors.Is(err, ErrLayerMismatch) {
			t.Errorf("%s: %v, want ErrLayerMismatch", tt.name, err)
		}
	}
}

func TestCountAndPieceLen(t *testing.T) {
	tests := []struct {
		size  int64
		count int
		last  int
	}{
		{-5, 0, 0},
		{0, 0, 0},
		{1, 1, 1},
		{Size, 1, Size},
		{Size + 1, 2, 1},
		{10 * Size, 10, Size},
		{1 << 40, 1 << 22, Size},
	}
	for _, tt := range tests {
		if got := Count(tt.size); got != tt.count {
			t.Errorf("Count(%d) = %d, want %d", tt.size, got, tt.count)
		}
		if tt.count > 0 {
			if got := PieceLen(tt.size, tt.count-1); got != tt.last {
				t.Errorf("PieceLen(%d, last) = %d, want %d", tt.size, got, tt.last)
			}
		}
		if got := PieceLen(tt.size, tt.count); got != 0 {
			t.Errorf("PieceLen(%d, %d) past the end = %d", tt.size, tt.count, got)
		}
	}
}

type failingReader struct{ n int }

var errDisk = errors.New("disk on fire")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errDisk
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	f.n -= len(p)
	return len(p), nil
}

func TestLayerReadError(t *testing.T) {
	_, _, err := Root(&failingReader{n: Size + 5})
	if !errors.Is(err, errDisk) {
		t.Fatalf("got %v, want wrapped read error", err)
	}
}

var sinkRoot [32]byte

// BenchmarkRoot compares the Merkle root with a plain SHA-256 of the same
// 64 MiB: the tree should cost a few percent at most.
func BenchmarkRoot(b *testing.B) {
	data := synth(64 << 20)
	b.Run("merkle", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			r, _, err := Root(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			sinkRoot = r
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			h := sha256.New()
			if _, err := io.Copy(h, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			h.Sum(sinkRoot[:0])
		}
	})
}

// TestHasherMatchesLayer: the layer written to a Hasher in writes of any
// size is the one Layer reads, around every piece boundary.
func TestHasherMatchesLayer(t *testing.T) {
	data := make([]byte, 3*Size+777)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	for _, n := range []int{0, 1, Size - 1, Size, Size + 1, 2 * Size, len(data)} {
		want, wantSize, err := Layer(bytes.NewReader(data[:n]))
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{1 << 20, Size, 4096, 1000, 1} {
			if chunk == 1 && n > 2*Size {
				continue // a byte at a time: slow, and the boundaries are covered below
			}
			var h Hasher
			for off := 0; off < n; off += chunk {
				h.Write(data[off:min(off+chunk, n)])
			}
			got, size := h.Layer()
			if size != wantSize || len(got) != len(want) || RootOf(got) != RootOf(want) {
				t.Fatalf("%d bytes in writes of %d: %d leaves, %d bytes; Layer: %d leaves, %d bytes", n, chunk, len(got), size, len(want), wantSize)
			}
		}
	}
}
