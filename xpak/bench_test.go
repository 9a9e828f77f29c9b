package xpak

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// benchImage is a generated image tar (≥20 MB: random and compressible
// files) compressed as portage would, on disk.
type benchImage struct {
	tarSize int64
	zstd    string // image.tar.zst
	xz      string // image.tar.xz, one block (xz -6, as portage with MAKEOPTS=-j1)
	xzT2    string // image.tar.xz in 24 MiB blocks (xz -T2 -6, MAKEOPTS=-j2)
	xpak    string // zstd payload + XPAK segment
	gpkg    string // the same zstd payload as a GPKG image member
}

var (
	benchOnce sync.Once
	benchDir  string
	benchData benchImage
	benchErr  error
)

// TestMain removes the generated benchmark image (≈70 MB), which the
// benchmarks share through benchOnce and so cannot tie to one b.TempDir.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// makeBenchImage builds the image once per test binary run.
func makeBenchImage(b *testing.B) benchImage {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xpak-bench")
		if err != nil {
			benchErr = err
			return
		}
		benchDir = dir
		benchErr = generateBenchImage(dir, &benchData)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchData
}

// benchTar is a generated image tar of at least size bytes: random
// (incompressible, like stripped binaries' text) and compressible (like
// headers and docs) files, alternating.
func benchTar(size int) []byte {
	rng := rand.New(rand.NewSource(78))
	words := []string{"portage", "emerge", "gentoo", "binpkg", "ebuild", "USE", "CFLAGS", "/usr/lib64", "libfoo.so.2", "\n", "static", "int", "return", "{", "}", "(", ")"}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	mt := time.Unix(1795234547, 0)
	tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatGNU})
	tw.WriteHeader(&tar.Header{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatGNU})
	for i := 0; raw.Len() < size; i++ {
		var body []byte
		if i%2 == 0 {
			body = make([]byte, 200<<10+rng.Intn(400<<10))
			rng.Read(body)
		} else {
			var tb bytes.Buffer
			n := 200<<10 + rng.Intn(800<<10)
			for tb.Len() < n {
				tb.WriteString(words[rng.Intn(len(words))])
				tb.WriteByte(' ')
			}
			body = tb.Bytes()
		}
		hdr := &tar.Header{Name: fmt.Sprintf("./usr/file%04d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mt, Uname: "root", Gname: "root", Format: tar.FormatGNU}
		if err := tw.WriteHeader(hdr); err != nil {
			panic(err)
		}
		tw.Write(body)
	}
	tw.Close()
	return raw.Bytes()
}

func generateBenchImage(dir string, out *benchImage) error {
	raw := bytes.NewBuffer(benchTar(24 << 20))
	out.tarSize = int64(raw.Len())
	tarPath := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(tarPath, raw.Bytes(), 0o644); err != nil {
		return err
	}
	out.zstd, out.xz = tarPath+".zst", tarPath+".xz"
	// Compress as portage does (zstd / xz binaries) when available, else
	// with the Go encoders.
	if err := exec.Command("zstd", "-q", "-3", "-f", tarPath, "-o", out.zstd).Run(); err != nil {
		enc, _ := zstd.NewWriter(nil)
		if err := os.WriteFile(out.zstd, enc.EncodeAll(raw.Bytes(), nil), 0o644); err != nil {
			return err
		}
	}
	if err := exec.Command("xz", "-q", "-k", "-6", "-f", tarPath).Run(); err != nil {
		var xb bytes.Buffer
		w, _ := xz.NewWriter(&xb)
		w.Write(raw.Bytes())
		w.Close()
		if err := os.WriteFile(out.xz, xb.Bytes(), 0o644); err != nil {
			return err
		}
	}
	out.xzT2 = tarPath + ".T2.xz"
	if err := xzFile(tarPath, out.xzT2, "-T2"); err != nil {
		return err
	}
	payload, err := os.ReadFile(out.zstd)
	if err != nil {
		return err
	}
	md := baseMetadata()
	out.xpak = filepath.Join(dir, "bench-1.0.xpak")
	if err := os.WriteFile(out.xpak, buildXPAK(payload, md), 0o644); err != nil {
		return err
	}
	// GPKG images carry image/ names: rewrite the tar's prefix.
	gtar, err := gpkgNames(raw.Bytes())
	if err != nil {
		return err
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	members := []gmember{{"gpkg-1", nil}, {"metadata.tar.zst", enc.EncodeAll(buildTar(nopTB{}, []tentry{{name: "metadata/CATEGORY", body: "app-misc\n"}, {name: "metadata/PF", body: "bench-1.0\n"}}), nil)}, {"image.tar.zst", enc.EncodeAll(gtar, nil)}}
	out.gpkg = filepath.Join(dir, "bench-1.0.gpkg.tar")
	return os.WriteFile(out.gpkg, buildGPKG(nopTB{}, "bench-1.0", members, nil), 0o644)
}

// BenchmarkImageDigest measures image digest v1 over the compressed image
// stream, in MB/s of decompressed tar (compare BenchmarkShellPipeline).
func BenchmarkImageDigest(b *testing.B) {
	img := makeBenchImage(b)
	for _, c := range []struct{ name, path string }{{"zstd", img.zstd}, {"xz", img.xz}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(img.tarSize)
			b.ReportAllocs()
			for b.Loop() {
				digestFile(b, c.path)
			}
		})
	}
}

// xzFile compresses src into dst with the xz binary at portage's default
// level, adding args (-T2: what portage's `xz -T{JOBS}` writes).
func xzFile(src, dst string, args ...string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	cmd := exec.Command("xz", append(args, "-6", "-c")...)
	cmd.Stdin, cmd.Stdout = in, out
	if err := cmd.Run(); err != nil {
		out.Close()
		return fmt.Errorf("xz %v (apt-get install xz-utils): %w", args, err)
	}
	return out.Close()
}

// cpuTime is the user + system time of this process (RUSAGE_SELF) or of
// its waited-for children (RUSAGE_CHILDREN): on a shared machine the CPU a
// decoder needs says more than its wall time.
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var (
	largeXZOnce sync.Once
	largeXZ     string // 100 MB image tar, xz -T2 -6: 5 blocks
	largeXZSize int64
	largeXZErr  error
)

// BenchmarkXZDigest measures the image digest of xz images side by side
// with `xz -dc | sha256sum` of the same file, in MB/s of decompressed tar:
// the 26 MB image as one block (xz without -T: cannot be split) and in
// blocks (xz -T2, what portage writes with MAKEOPTS=-j2 or more), and a
// 100 MB image in blocks.
func BenchmarkXZDigest(b *testing.B) {
	img := makeBenchImage(b)
	largeXZOnce.Do(func() {
		raw := benchTar(100 << 20)
		largeXZSize = int64(len(raw))
		tarPath := filepath.Join(benchDir, "large.tar")
		if largeXZErr = os.WriteFile(tarPath, raw, 0o644); largeXZErr != nil {
			return
		}
		largeXZ = tarPath + ".T2.xz"
		largeXZErr = xzFile(tarPath, largeXZ, "-T2")
	})
	if largeXZErr != nil {
		b.Fatal(largeXZErr)
	}
	for _, c := range []struct {
		name, path string
		size       int64
	}{{"26MB-1-block", img.xz, img.tarSize}, {"26MB-T2", img.xzT2, img.tarSize}, {"100MB-T2", largeXZ, largeXZSize}} {
		b.Run(c.name+"/go", func(b *testing.B) {
			b.SetBytes(c.size)
			b.ReportAllocs()
			cpu0 := cpuTime(syscall.RUSAGE_SELF)
			for b.Loop() {
				digestFile(b, c.path)
			}
			b.ReportMetric((cpuTime(syscall.RUSAGE_SELF)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
		b.Run(c.name+"/shell", func(b *testing.B) {
			b.SetBytes(c.size)
			cpu0 := cpuTime(syscall.RUSAGE_CHILDREN)
			for b.Loop() {
				out, err := exec.Command("sh", "-c", `xz -dc "$1" | sha256sum`, "sh", c.path).Output()
				if err != nil || len(out) < 64 {
					b.Fatalf("%v: %q", err, out)
				}
			}
			b.ReportMetric((cpuTime(syscall.RUSAGE_CHILDREN)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// BenchmarkReadFile measures a whole package read: file SHA-256, image
// digest, metadata, and for the GPKG the Manifest's BLAKE2B and SHA512.
func BenchmarkReadFile(b *testing.B) {
	img := makeBenchImage(b)
	for _, c := range []struct{ name, path string }{{"xpak-zstd", img.xpak}, {"gpkg-zstd", img.gpkg}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(img.tarSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ReadFile(c.path, DefaultLimits()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkShellPipeline is the yardstick: `zstd -dc | sha256sum` and
// `xz -dc | sha256sum` over the same files, in the same units.
func BenchmarkShellPipeline(b *testing.B) {
	img := makeBenchImage(b)
	for _, c := range []struct{ name, tool, path string }{{"zstd", "zstd", img.zstd}, {"xz", "xz", img.xz}} {
		b.Run(c.name, func(b *testing.B) {
			for _, bin := range []string{c.tool, "sha256sum", "sh"} {
				if _, err := exec.LookPath(bin); err != nil {
					b.Fatalf("%s not installed (apt-get install zstd xz-utils)", bin)
				}
			}
			b.SetBytes(img.tarSize)
			for b.Loop() {
				out, err := exec.Command("sh", "-c", c.tool+` -dc "$1" | sha256sum`, "sh", c.path).Output()
				if err != nil || len(out) < 64 {
					b.Fatalf("%v: %q", err, out)
				}
			}
		})
	}
}

// gpkgNames rewrites "./x" tar names to "image/x".
func gpkgNames(raw []byte) ([]byte, error) {
	tr := tar.NewReader(bytes.NewReader(raw))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		h.Name = "image/" + strings.TrimPrefix(h.Name, "./")
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	// Close first: it writes the end-of-archive marker into out.
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// nopTB lets the test-file builders run inside a sync.Once, outside any
// one benchmark; builders only call Helper and Fatal, which panics here.
type nopTB struct{ testing.TB }

func (nopTB) Helper()                   {}
func (nopTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (nopTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

// BenchmarkBombRefusal measures how long DefaultLimits take to refuse a
// decompression bomb — a file entry declared at 15 GiB (under
// MaxImageBytes, so only the ratio guard stops it early) whose content is
// zeros, produced as it is read — against reading honest packages: a
// real fixture and the ≥20 MB generated image as a GPKG. B-read/op is the
// compressed bytes the reader took from the bomb.
func BenchmarkBombRefusal(b *testing.B) {
	for _, c := range []Compression{CompressionZstd, CompressionXZ, CompressionGzip, CompressionBzip2} {
		var hdr bytes.Buffer
		tw := tar.NewWriter(&hdr)
		tw.WriteHeader(&tar.Header{Name: "./big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 15 << 30, Format: tar.FormatPAX})
		tw.Flush()
		zeros := make([]byte, 1<<20)
		head := compressAs(b, c, append(hdr.Bytes(), zeros[hdr.Len():]...))
		unit := compressAs(b, c, zeros)
		b.Run("bomb-"+string(c), func(b *testing.B) {
			var read int64
			for b.Loop() {
				src := newRepeatStream(head, unit, 15<<10)
				if _, _, err := ImageDigest(src, FormatXPAK, DefaultLimits()); !errors.Is(err, ErrTooLarge) {
					b.Fatalf("bomb not refused: %v", err)
				}
				read = src.read
			}
			b.ReportMetric(float64(read), "B-read/op")
		})
	}
	b.Run("bomb-xz-dictionaries", func(b *testing.B) {
		// 60-byte xz streams each asking for a 128 MiB dictionary.
		var one bytes.Buffer
		w, _ := xz.WriterConfig{DictCap: 128 << 20}.NewWriter(&one)
		w.Write([]byte("a"))
		w.Close()
		unit := one.Bytes()
		var read int64
		for b.Loop() {
			src := newRepeatStream(unit, unit, 1<<20)
			if _, _, err := ImageDigest(src, FormatXPAK, DefaultLimits()); !errors.Is(err, ErrTooLarge) {
				b.Fatalf("bomb not refused: %v", err)
			}
			read = src.read
		}
		b.ReportMetric(float64(read), "B-read/op")
	})
	b.Run("honest-fixture-gpkg", func(b *testing.B) {
		for b.Loop() {
			if _, err := ReadFile("testdata/portage/repro/gpkg-1/app-misc/hello-1.0.gpkg.tar", DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("honest-26MB-gpkg-zstd", func(b *testing.B) {
		img := makeBenchImage(b)
		b.SetBytes(img.tarSize)
		for b.Loop() {
			if _, err := ReadFile(img.gpkg, DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// digestFile computes the image digest of the XPAK image file at path.
func digestFile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, _, err := ImageDigest(f, FormatXPAK, DefaultLimits()); err != nil {
		b.Fatal(err)
	}
}
