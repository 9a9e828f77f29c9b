package xpak

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
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
// unsized one, blocks above the size decoded ahead) and a stream without
// sizes decode to the same bytes as the data.
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
		maxBlock int64
	}{
		{"crc64", sized("crc64"), data, 0},
		{"crc32", sized("crc32"), data, 0},
		{"sha256", sized("sha256"), data, 0},
		{"none", sized("none"), data, 0},
		{"two streams, padded", append(append(sized("crc64"), 0, 0, 0, 0, 0, 0, 0, 0), sized("sha256")...), append(bytes.Clone(data), data...), 0},
		{"sized then unsized stream", append(sized("crc32"), unsized...), append(bytes.Clone(data), data...), 0},
		{"blocks too large to decode ahead", sized("crc64"), data, 100000},
		{"single unsized block", unsized, data, 0},
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
	// Unsized blocks, a dictionary smaller than the data, every position
	// and literal context setting.
	f.Add(xzCLI(f, data, "-T1", "--lzma2=dict=4KiB,lc=0,lp=4,pb=4"))
	f.Add(xzCLI(f, data[:8192], "-T1", "--lzma2=dict=4KiB,lc=4,lp=0,pb=0"))
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

// TestLZMA2MatchesCLI: the LZMA2 decoder gives back what xz compressed,
// whatever the encoder's settings (dictionary smaller than the data,
// every lc/lp/pb corner, fast and normal modes, -0 to -9e) and the data
// (incompressible: uncompressed chunks; runs: matches at distance 1;
// text), both when a block declares its sizes (decoded into its output)
// and when it does not (decoded through a sliding window).
func TestLZMA2MatchesCLI(t *testing.T) {
	withProcs(t, 2)
	rnd := make([]byte, 300<<10)
	rand.New(rand.NewSource(2)).Read(rnd)
	inputs := map[string][]byte{
		"mixed":  xzTestData(3 << 20),
		"random": rnd,
		"zeros":  make([]byte, 5<<20),
		"text":   bytes.Repeat([]byte("app-misc/hello-1.0 USE=\"nls -test\" CFLAGS=\"-O2 -pipe\"\n"), 40000),
	}
	settings := [][]string{
		{"-0"}, {"-6"}, {"-9e"},
		{"--lzma2=dict=4KiB,lc=0,lp=4,pb=4"},
		{"--lzma2=dict=64KiB,lc=4,lp=0,pb=0,mode=fast,mf=hc3"},
		{"--lzma2=dict=1MiB,lc=1,lp=3,pb=2,nice=273,mf=bt4,depth=0"},
	}
	for name, data := range inputs {
		for _, set := range settings {
			for _, sized := range []bool{false, true} {
				args := append([]string{"-T1"}, set...)
				if sized {
					if set[0] == "-9e" {
						continue // the guard refuses five 64 MiB dictionaries for 600 bytes
					}
					args = append([]string{"-T2", "--block-size=1000000"}, set...)
				}
				stream := xzCLI(t, data, args...)
				got, err := decodeGuarded(stream, 64<<20)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s, xz %v: decoded %d bytes (%v), want the %d compressed", name, args, len(got), err, len(data))
				}
			}
		}
	}
}

// TestLZMA2Refuses: LZMA2 data that breaks a rule of the format is
// refused, naming it, whether decoded into a sized block or streamed.
func TestLZMA2Refuses(t *testing.T) {
	valid := xzCLI(t, []byte("hello, hello, hello gentoo"), "--format=raw", "--lzma2=dict=4KiB")
	if valid[0] != 0xe0 {
		t.Fatalf("raw LZMA2 starts with %#x, want a chunk with a dictionary reset", valid[0])
	}
	with := func(i int, b byte) []byte {
		s := bytes.Clone(valid)
		s[i] = b
		return s
	}
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"reserved control byte", "control byte 0x3", append(bytes.Clone(valid[:len(valid)-1]), 0x03)},
		{"no dictionary reset first", "does not start with a dictionary reset", with(0, 0x80)},
		{"no properties after the reset", "without properties", append([]byte{0x01, 0x00, 0x00, 'x', 0x80}, valid[1:5]...)},
		{"properties out of range", "properties byte", with(5, 225)},
		{"lc + lp above 4", "lc + lp above 4", with(5, 13)},
		{"range coder's first byte", "zero byte", with(6, 1)},
		{"compressed size too short", "too short", with(4, 3)},
		{"compressed size too long", "", with(4, valid[4]+1)},
		{"uncompressed size too long", "", with(2, valid[2]+1)},
		{"truncated", "", valid[:len(valid)-3]},
	}
	out := make([]byte, 26)
	for _, c := range cases {
		var d lzma2Decoder
		err := d.decodeSized(c.data, out, 4096, nil)
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s, sized: %v, want ErrCorrupt naming %q", c.name, err, c.want)
		}
		_, _, err = d.decodeStream(bytes.NewReader(c.data), 4096, nil, func([]byte) error { return nil })
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s, streamed: %v, want ErrCorrupt naming %q", c.name, err, c.want)
		}
	}
	var d lzma2Decoder
	if err := d.decodeSized(valid, out, 4096, nil); err != nil || string(out) != "hello, hello, hello gentoo" {
		t.Fatalf("the valid data: %q, %v", out, err)
	}
}

// FuzzLZMA2: raw LZMA2 data, past the xz container's checks, decodes the
// same through the streaming decoder, the sized one and ulikunitz/xz's:
// what the streaming one accepts, the others accept with the same bytes.
func FuzzLZMA2(f *testing.F) {
	data := xzTestData(32 << 10)
	for _, opts := range []string{"dict=4KiB", "dict=4KiB,lc=0,lp=4,pb=4", "dict=64KiB,lc=4,lp=0,pb=0,mode=fast", "preset=9e,dict=64KiB"} {
		f.Add(xzCLI(f, data, "--format=raw", "--lzma2="+opts))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		const dict = 64 << 10
		var want []byte
		var werr error
		if r, err := (lzma.Reader2Config{DictCap: dict}).NewReader2(bytes.NewReader(raw)); err != nil {
			werr = err
		} else {
			want, werr = io.ReadAll(io.LimitReader(r, 8<<20))
		}
		var d lzma2Decoder
		var got []byte
		_, _, gerr := d.decodeStream(bytes.NewReader(raw), dict, nil, func(b []byte) error {
			if len(got)+len(b) > 8<<20 {
				return io.ErrShortBuffer
			}
			got = append(got, b...)
			return nil
		})
		// ulikunitz/xz is the laxer one (it ends a cut chunk without an
		// error), so only what this decoder accepts is compared.
		if gerr == nil && (werr != nil || !bytes.Equal(got, want)) {
			t.Fatalf("streamed: %d bytes, %v; ulikunitz/xz: %d bytes, %v", len(got), gerr, len(want), werr)
		}
		if gerr == nil {
			// The sized decoder takes exactly the data up to the end marker.
			var e lzma2Decoder
			n, _, _ := e.decodeStream(bytes.NewReader(raw), dict, nil, func([]byte) error { return nil })
			out := make([]byte, len(got))
			if err := e.decodeSized(raw[:n], out, dict, nil); err != nil || !bytes.Equal(out, got) {
				t.Fatalf("sized: %v, equal %v", err, bytes.Equal(out, got))
			}
		}
	})
}
