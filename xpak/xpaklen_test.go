package xpak

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// sparseXPAK writes an XPAK file whose header claims an index of indexLen
// and data of dataLen bytes; the claimed segment is a hole (os.Truncate),
// so the file is consistent in size without GiBs on disk.
func sparseXPAK(t *testing.T, indexLen, dataLen uint32) string {
	t.Helper()
	payload := zstdBytes(t, buildTar(t, []tentry{{name: "./a", body: "a"}}))
	path := filepath.Join(t.TempDir(), "huge.xpak")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 0, 16)
	hdr = append(hdr, "XPAKPACK"...)
	hdr = binary.BigEndian.AppendUint32(hdr, indexLen)
	hdr = binary.BigEndian.AppendUint32(hdr, dataLen)
	if _, err := f.Write(append(payload, hdr...)); err != nil {
		t.Fatal(err)
	}
	end := int64(len(payload)) + 16 + int64(indexLen) + int64(dataLen)
	if err := f.Truncate(end); err != nil {
		t.Fatal(err)
	}
	tr := []byte("XPAKSTOP")
	tr = binary.BigEndian.AppendUint32(tr, uint32(16+int64(indexLen)+int64(dataLen)+8))
	tr = append(tr, "STOP"...)
	if _, err := f.WriteAt(tr, end); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHugeXPAKLengths: an XPAK header claiming a 512 MiB index (or data
// past MaxMetadataBytes) is refused with ErrTooLarge before the segment is
// read into memory.
func TestHugeXPAKLengths(t *testing.T) {
	cases := []struct {
		name              string
		indexLen, dataLen uint32
	}{
		{"index-512MiB", 512 << 20, 16},
		{"data-past-limit", 64, 256 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := sparseXPAK(t, c.indexLen, c.dataLen)
			var err error
			alloc := allocatedDuring(func() { _, err = ReadFile(path, DefaultLimits()) })
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %v, want %v", err, ErrTooLarge)
			}
			t.Logf("%v (allocated %d KiB)", err, alloc>>10)
			if alloc > 64<<20 {
				t.Fatalf("allocated %d MiB before refusing the lengths", alloc>>20)
			}
		})
	}
}
