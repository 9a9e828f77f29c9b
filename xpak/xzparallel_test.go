package xpak

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// xzCLI compresses data with the xz binary (.ci/run installs it), as
// portage does.
func xzCLI(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("xz", append(args, "-c")...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v (the xz binary is needed: .ci/run installs xz-utils)", args, err)
	}
	return out
}

// withProcs runs the test body with n cores available to Go.
func withProcs(t *testing.T, n int) {
	old := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// TestXZParallelMatchesSequential: streams xz -T writes (sized blocks,
// every check type, several streams, a sized stream followed by an
// unsized one, blocks above the size decoded ahead) decode to the same
// bytes as the data, through the parallel decoder; a stream without
// sizes takes the sequential one.
func TestXZParallelMatchesSequential(t *testing.T) {
	withProcs(t, 2)
	data := xzTestData(768 << 10)
	sized := func(check string) []byte {
		return xzCLI(t, data, "-T2", "--block-size=131072", "--check="+check, "-6")
	}
	unsized := xzCLI(t, data, "-T1", "-6")
	cases := []struct {
		name     string
		stream   []byte
		want     []byte
		parallel bool
		maxBlock int64
	}{
		{"crc64", sized("crc64"), data, true, 0},
		{"crc32", sized("crc32"), data, true, 0},
		{"sha256", sized("sha256"), data, true, 0},
		{"none", sized("none"), data, true, 0},
		{"two streams, padded", append(append(sized("crc64"), 0, 0, 0, 0, 0, 0, 0, 0), sized("sha256")...), append(bytes.Clone(data), data...), true, 0},
		{"sized then unsized stream", append(sized("crc32"), unsized...), append(bytes.Clone(data), data...), true, 0},
		{"blocks too large to decode ahead", sized("crc64"), data, true, 100000},
		{"single unsized block", unsized, data, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.maxBlock > 0 {
				old := xzParallelMaxBlock
				xzParallelMaxBlock = c.maxBlock
				defer func() { xzParallelMaxBlock = old }()
			}
			d, err := newXZReader(bytes.NewReader(c.stream))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if _, ok := d.(*xzParallel); ok != c.parallel {
				t.Errorf("parallel decoder used: %v, want %v", ok, c.parallel)
			}
			got, err := io.ReadAll(d)
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("decoded %d bytes (%v), want the %d bytes compressed", len(got), err, len(c.want))
			}
			// And through the guard and the payload bounds, as packages are read.
			got, err = decodeGuarded(c.stream, 64<<20)
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("guarded: %d bytes (%v)", len(got), err)
			}
		})
	}
}

// TestXZParallelTampered: no change to a multi-block stream goes
// unnoticed by the parallel decoder: a flipped byte anywhere (stream
// header, block headers, data, padding, checks, index, footer), a cut at
// any point, a block header that lies about its sizes (with its CRC32
// recomputed) — each fails with ErrCorrupt or ErrTruncated, as the
// sequential decoder fails on them.
func TestXZParallelTampered(t *testing.T) {
	withProcs(t, 2)
	data := xzTestData(256 << 10)
	stream := xzCLI(t, data, "-T2", "--block-size=65536", "--check=crc64", "-6")
	fails := func(what string, s []byte) {
		t.Helper()
		got, err := decodeGuarded(s, 64<<20)
		if err == nil {
			same := bytes.Equal(got, data)
			t.Errorf("%s: accepted (decoded %d bytes, equal to the original: %v)", what, len(got), same)
			return
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want a corrupt or truncated stream", what, err)
		}
	}
	step := max(1, len(stream)/100)
	for i := 0; i < len(stream); i += step {
		bad := bytes.Clone(stream)
		bad[i] ^= 0x55
		fails("byte "+strconv.Itoa(i)+" flipped", bad)
	}
	for _, i := range []int{len(stream) - 1, len(stream) - 12, len(stream) - 13} { // footer, index CRC
		bad := bytes.Clone(stream)
		bad[i] ^= 0x01
		fails("byte "+strconv.Itoa(i)+" of the tail flipped", bad)
	}
	for n := 0; n < len(stream); n += step {
		fails("cut to "+strconv.Itoa(n), stream[:n])
	}
	// The first block header declares its sizes; make it lie.
	hs := (int(stream[12]) + 1) * 4
	h := stream[12 : 12+hs]
	if h[1]&0xc0 != 0xc0 {
		t.Fatalf("xz -T2 wrote a block header without sizes: % x", h)
	}
	_, k1 := binary.Uvarint(h[2:])
	for _, lie := range []struct {
		name string
		at   int
		d    byte
	}{{"compressed size +1", 2, 1}, {"compressed size -1", 2, 0xff}, {"uncompressed size +1", 2 + k1, 1}, {"uncompressed size -1", 2 + k1, 0xff}} {
		bad := bytes.Clone(stream)
		bh := bad[12 : 12+hs]
		bh[lie.at] += lie.d
		binary.LittleEndian.PutUint32(bh[hs-4:], crc32.ChecksumIEEE(bh[:hs-4]))
		fails(lie.name, bad)
	}
}

// TestXZParallelCloseEarly: closing a parallel decoder half-way stops its
// goroutines; none outlives Close.
func TestXZParallelCloseEarly(t *testing.T) {
	withProcs(t, 2)
	data := xzTestData(768 << 10)
	stream := xzCLI(t, data, "-T2", "--block-size=65536", "-6")
	before := runtime.NumGoroutine()
	for range 5 {
		d, err := newXZReader(bytes.NewReader(stream))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.(*xzParallel); !ok {
			t.Fatal("sized stream not decoded in parallel")
		}
		if _, err := io.ReadFull(d, make([]byte, 100000)); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", runtime.NumGoroutine(), before)
		}
		runtime.Gosched()
	}
}

// FuzzXZParallel: the parallel decoder and ulikunitz/xz's sequential one,
// each behind the xzGuard as packages are read (the guard, not
// ulikunitz/xz, refuses a stream that ends between its blocks), agree on
// every input: both refuse it, or both give the same bytes. Seeds are
// real xz -T2 streams of every check type.
func FuzzXZParallel(f *testing.F) {
	data := xzTestData(64 << 10)
	for _, check := range []string{"crc32", "crc64", "sha256", "none"} {
		f.Add(xzCLI(f, data, "-T2", "--block-size=16384", "--check="+check, "-1"))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		old := runtime.GOMAXPROCS(2)
		defer runtime.GOMAXPROCS(old)
		decode := func(r io.ReadCloser, err error) ([]byte, error) {
			if err != nil {
				return nil, err
			}
			defer r.Close()
			return io.ReadAll(io.LimitReader(r, 8<<20))
		}
		lim := fuzzLimits().withDefaults()
		var par, seq []byte
		var perr, serr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			par, perr = decode(newXZReader(newXZGuard(bytes.NewReader(stream), lim)))
			seq, serr = decode(sequentialXZ(newXZGuard(bytes.NewReader(stream), lim)))
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("decoding %d bytes takes more than 20 s:\n%s", len(stream), buf[:runtime.Stack(buf, true)])
		}
		if (perr == nil) != (serr == nil) || perr == nil && !bytes.Equal(par, seq) {
			t.Fatalf("parallel: %d bytes, %v; sequential: %d bytes, %v", len(par), perr, len(seq), serr)
		}
	})
}

func sequentialXZ(r io.Reader) (io.ReadCloser, error) {
	d, err := xz.NewReader(r)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(d), nil
}
