package xpak

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestPooledZstdAfterHostile: a recycled zstd decoder carries nothing
// over from the stream it decoded before, whether that stream was
// truncated, corrupt or a different window. Each honest decode after a
// failed one still gives the honest digest, and each hostile one still
// fails with its sentinel.
func TestPooledZstdAfterHostile(t *testing.T) {
	imageTar := decodeZstdT(t, imagePayload(t, "testdata/portage/xpak/zstd-multi-instance/app-misc/hello/hello-1.0-1.xpak"))
	honest := zstdBytes(t, imageTar)
	want, _, err := ImageDigest(bytes.NewReader(imageTar), FormatXPAK, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(honest)
	for i := len(corrupt) / 2; i < len(corrupt)/2+16; i++ {
		corrupt[i] ^= 0xa5
	}
	truncated := honest[:len(honest)*2/3]
	for range 20 {
		if _, _, err := ImageDigest(bytes.NewReader(truncated), FormatXPAK, DefaultLimits()); !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated zstd: %v, want ErrTruncated", err)
		}
		if _, _, err := ImageDigest(bytes.NewReader(corrupt), FormatXPAK, DefaultLimits()); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("corrupt zstd: %v, want ErrCorrupt", err)
		}
		sum, _, err := ImageDigest(bytes.NewReader(honest), FormatXPAK, DefaultLimits())
		if err != nil || sum != want {
			t.Fatalf("honest zstd after a hostile one: %x %v, want %x", sum, err, want)
		}
	}
}

// TestPooledBzip2AfterAbandoned: a bzip2 decoder whose stream was
// abandoned half-way, cut short or corrupt is not recycled with what it
// had left to read; the honest stream after it gives the honest digest.
func TestPooledBzip2AfterAbandoned(t *testing.T) {
	path := "testdata/portage/xpak/bzip2/app-misc/hello-1.0.tbz2"
	honest := imagePayload(t, path)
	want, _, err := ImageDigest(bytes.NewReader(honest), FormatXPAK, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(honest)
	for i := len(corrupt) / 2; i < len(corrupt)/2+16; i++ {
		corrupt[i] ^= 0xa5
	}
	truncated := honest[:len(honest)*2/3]
	abandon := errors.New("abandoned")
	for range 10 {
		err := WalkImage(bytes.NewReader(honest), FormatXPAK, DefaultLimits(), func(e ImageEntry, r io.Reader) error {
			if e.Type == TypeFile {
				return abandon
			}
			return nil
		})
		if !errors.Is(err, abandon) {
			t.Fatalf("abandoned walk: %v", err)
		}
		if _, _, err := ImageDigest(bytes.NewReader(truncated), FormatXPAK, DefaultLimits()); !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated bzip2: %v, want ErrTruncated", err)
		}
		if _, _, err := ImageDigest(bytes.NewReader(corrupt), FormatXPAK, DefaultLimits()); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("corrupt bzip2: %v, want ErrCorrupt", err)
		}
		sum, _, err := ImageDigest(bytes.NewReader(honest), FormatXPAK, DefaultLimits())
		if err != nil || sum != want {
			t.Fatalf("honest bzip2 after a hostile one: %x %v, want %x", sum, err, want)
		}
	}
}
