package xpak

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"
)

// xzTestData is size bytes (512 KiB and more) that compress to many LZMA2
// chunks of every kind.
func xzTestData(size int) []byte {
	rng := rand.New(rand.NewSource(1))
	var b bytes.Buffer
	for b.Len() < size {
		if rng.Intn(3) == 0 {
			chunk := make([]byte, 1+rng.Intn(64<<10)) // incompressible: uncompressed chunks
			rng.Read(chunk)
			b.Write(chunk)
		} else {
			b.Write(bytes.Repeat([]byte("gentoo "), rng.Intn(10000)))
		}
	}
	return b.Bytes()
}

func goXZ(t *testing.T, data []byte, cfg xz.WriterConfig) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := cfg.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// decodeGuarded decodes through the guard as the reader does.
func decodeGuarded(stream []byte, window int64) ([]byte, error) {
	d, err := newDecoder(bytes.NewReader(stream), CompressionXZ, Limits{MaxDecoderWindow: window}.withDefaults())
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(d)
}

// TestXZGuardFollowsRealStreams: multi-block, multi-stream, every check
// type — the guard must follow all of them to the end.
func TestXZGuardFollowsRealStreams(t *testing.T) {
	data := xzTestData(512 << 10)
	streams := map[string][]byte{
		"go-single-block": goXZ(t, data, xz.WriterConfig{}),
		"go-multi-block":  goXZ(t, data, xz.WriterConfig{BlockSize: 128 << 10}),
		"go-crc32":        goXZ(t, data, xz.WriterConfig{CheckSum: xz.CRC32, BlockSize: 200 << 10}),
		"go-sha256":       goXZ(t, data, xz.WriterConfig{CheckSum: xz.SHA256}),
	}
	streams["multi-stream"] = append(append(bytes.Clone(streams["go-multi-block"]), 0, 0, 0, 0), streams["go-crc32"]...)
	if _, err := exec.LookPath("xz"); err == nil {
		for name, args := range map[string][]string{
			"xz-T2-blocks":  {"-T2", "--block-size=150000", "-6"},
			"xz-check-none": {"--check=none", "-1"},
			"xz-sha256":     {"--check=sha256", "-9"},
		} {
			cmd := exec.Command("xz", append(args, "-c")...)
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("xz %v: %v", args, err)
			}
			streams[name] = out
		}
	} else {
		t.Log("xz binary missing: only Go-written streams checked")
	}
	for name, s := range streams {
		got, err := decodeGuarded(s, 64<<20)
		if err != nil || !bytes.Equal(got, append(bytes.Clone(data), dataTail(name, data)...)) {
			t.Errorf("%s: %v (%d bytes)", name, err, len(got))
		}
	}
}

func dataTail(name string, data []byte) []byte {
	if name == "multi-stream" {
		return data
	}
	return nil
}

// TestXZGuardLaterBlockBomb: a second stream whose block asks for a 4 GiB
// dictionary is refused before the decoder can allocate it.
func TestXZGuardLaterBlockBomb(t *testing.T) {
	first := goXZ(t, []byte("harmless first stream"), xz.WriterConfig{})
	second := goXZ(t, []byte("the bomb"), xz.WriterConfig{})
	// Block header right after the 12-byte stream header: size byte,
	// flags, filter id 0x21, props size 1, dictionary code; CRC32 last.
	hdrLen := (int(second[12]) + 1) * 4
	h := second[12 : 12+hdrLen]
	if h[1] != 0 || h[2] != 0x21 || h[3] != 1 {
		t.Fatalf("unexpected block header % x", h)
	}
	h[4] = 40 // 4 GiB - 1
	binary.LittleEndian.PutUint32(h[hdrLen-4:], crc32.ChecksumIEEE(h[:hdrLen-4]))
	stream := append(bytes.Clone(first), second...)

	var err error
	alloc := allocatedDuring(func() { _, err = decodeGuarded(stream, 128<<20) })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if alloc > 64<<20 {
		t.Errorf("allocated %d MiB", alloc>>20)
	}
	// Same through ImageDigest and a package.
	if _, _, err := ImageDigest(bytes.NewReader(stream), FormatXPAK, DefaultLimits()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ImageDigest: %v", err)
	}
}

// TestXZGuardGarbage: structure the guard cannot follow is corruption.
func TestXZGuardGarbage(t *testing.T) {
	s := goXZ(t, xzTestData(512 << 10)[:100000], xz.WriterConfig{})
	bad := bytes.Clone(s)
	bad[12+12+0] = 0x05 // first LZMA2 control byte → invalid
	if _, err := decodeGuarded(bad, 64<<20); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad control byte: %v", err)
	}
}
