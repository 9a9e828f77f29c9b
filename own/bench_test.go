package own

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// BenchmarkImageScan measures the pass over a build's image at indexing,
// side by side in one loop: "needs" is what it read before the toolchain
// was derived (fit.NeedsOfFile: the front of each ELF file), "toolchain"
// the same pass that also streams every file whole through the toolchain
// scan (.comment strings, the build directory). The image is this test
// binary (a large unstripped ELF program), testdata's gcc objects and 16
// MiB of text, zstd-compressed as portage writes it.
//
// speed-vs-needs is needs' time over toolchain's (1.0: no cost);
// index-speed-vs-before the same with the rest of what indexing a file
// reads (xpak.ReadFile, the piece layer) added to both.
//
//	go test -run '^$' -bench BenchmarkImageScan -count 5 ./own/
func BenchmarkImageScan(b *testing.B) {
	path, meta, size := benchImageFile(b)
	lim := xpak.DefaultLimits()
	// Alternated in one loop, so a change of the machine's load meets
	// both alike.
	var needsTime, toolchainTime, readTime time.Duration
	b.SetBytes(size)
	for b.Loop() {
		// The rest of what indexing a file reads: the container with
		// its digests, and the piece layer.
		start := time.Now()
		if _, err := xpak.ReadFile(path, lim); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		_, _, err = pieces.Layer(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		readTime += time.Since(start)
		start = time.Now()
		if _, err := fit.NeedsOfFile(path, lim); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		img, err := scanImage(path, lim, meta)
		if err != nil {
			b.Fatal(err)
		}
		if !img.tc.Result().ELF {
			b.Fatal("no ELF found")
		}
		needsTime += mid.Sub(start)
		toolchainTime += time.Since(mid)
	}
	b.ReportMetric(float64(needsTime.Milliseconds())/float64(b.N), "needs-ms/op")
	b.ReportMetric(float64(toolchainTime.Milliseconds())/float64(b.N), "toolchain-ms/op")
	b.ReportMetric(float64(needsTime)/float64(toolchainTime), "speed-vs-needs")
	b.ReportMetric(float64(readTime+needsTime)/float64(readTime+toolchainTime), "index-speed-vs-before")
}

// benchImageFile writes the GPKG BenchmarkImageScan and
// BenchmarkIndexPasses read and returns its path, metadata and image
// content size.
func benchImageFile(b *testing.B) (string, *xpak.Metadata, int64) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	files := map[string][]byte{}
	if files["usr/bin/prog"], err = os.ReadFile(exe); err != nil {
		b.Fatal(err)
	}
	for _, n := range []string{"libhello.a", "hello-stripped"} {
		if files["usr/lib64/"+n], err = os.ReadFile(filepath.Join("testdata", n)); err != nil {
			b.Fatal(err)
		}
	}
	files["usr/share/doc/text"] = []byte(strings.Repeat("/usr/share/doc some text of a manual page, GCC and /var/tmp paths\n", 16<<20/66))
	var size int64
	var out bytes.Buffer
	meta := xpak.NewMetadata(map[string][]byte{"CATEGORY": []byte("app-misc\n"), "PF": []byte("hello-1.0\n")})
	err = xpak.WriteGPKG(&out, xpak.GPKGOptions{Basename: "hello-1.0", MTime: time.Unix(1795234524, 0), TempDir: b.TempDir()}, meta, func(add xpak.ImageAdder) error {
		for _, d := range []string{"usr", "usr/bin", "usr/lib64", "usr/share", "usr/share/doc"} {
			if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil); err != nil {
				return err
			}
		}
		for _, name := range []string{"usr/bin/prog", "usr/lib64/hello-stripped", "usr/lib64/libhello.a", "usr/share/doc/text"} {
			size += int64(len(files[name]))
			if err := add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(files[name]))}, bytes.NewReader(files[name])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "hello-1.0.gpkg.tar")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	return path, meta, size
}

// BenchmarkIndexPasses measures what indexing one file reads, side by
// side in one loop on the image of BenchmarkImageScan: "separate" reads
// the file for its digests (xpak.ReadFile), again for its piece layer and
// decodes the image again for its needs and toolchain, as indexing did
// before; "single" is identify's one pass (xpak.ReadFileWith with the
// piece layer and the image scan as taps). speed-vs-separate is
// separate's time over single's.
//
//	go test -run '^$' -bench BenchmarkIndexPasses -count 5 ./own/
func BenchmarkIndexPasses(b *testing.B) {
	path, meta, size := benchImageFile(b)
	lim := xpak.DefaultLimits()
	var separate, single time.Duration
	b.SetBytes(size)
	for b.Loop() {
		start := time.Now()
		if _, err := xpak.ReadFile(path, lim); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		_, _, err = pieces.Layer(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := scanImage(path, lim, meta); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		var layer pieces.Hasher
		var img *imageScan
		_, err = xpak.ReadFileWith(path, lim, xpak.Taps{File: &layer, Image: func(m *xpak.Metadata) func(xpak.ImageEntry, io.Reader) error {
			img = newImageScan(m)
			return img.entry
		}})
		if err != nil {
			b.Fatal(err)
		}
		layer.Layer()
		if !img.tc.Result().ELF {
			b.Fatal("no ELF found")
		}
		separate += mid.Sub(start)
		single += time.Since(mid)
	}
	b.ReportMetric(float64(separate.Milliseconds())/float64(b.N), "separate-ms/op")
	b.ReportMetric(float64(single.Milliseconds())/float64(b.N), "single-ms/op")
	b.ReportMetric(float64(separate)/float64(single), "speed-vs-separate")
}
