package identity

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// cc1Of reads one real gcc -v output from testdata/gcc-native (gcc 12.2 on
// an AMD Zen 3 with AVX-512, Debian 12) and returns its cc1 line.
func cc1Of(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/gcc-native/" + name)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := findCC1(string(b))
	if !ok {
		t.Fatalf("%s: no cc1 line", name)
	}
	return l
}

// recordedGCC expands native flags from the recorded gcc outputs, as
// GCCNative would on that machine.
func recordedGCC(t *testing.T) func(string) (string, error) {
	base := cc1Of(t, "gcc12-znver3-none.txt")
	files := map[string]string{"-march=native": "gcc12-znver3-march-native.txt", "-mtune=native": "gcc12-znver3-mtune-native.txt"}
	return func(flag string) (string, error) {
		f, ok := files[flag]
		if !ok {
			return "", errors.New("not recorded")
		}
		return strings.Join(orderExpansion(NativeExpansion(cc1Of(t, f), base)), " "), nil
	}
}

func TestNativeExpansionOfRealGCC(t *testing.T) {
	base := cc1Of(t, "gcc12-znver3-none.txt")
	for _, tc := range []struct {
		file       string
		want, lack []string
	}{
		{"gcc12-znver3-march-native.txt",
			[]string{"-march=znver3", "-mavx512f", "-mno-avx512er", "-msse4.1", "-mtune=znver3", "--param=l1-cache-size=32", "--param=l2-cache-size=1024"},
			[]string{"-march=x86-64", "-mtune=generic", "-fasynchronous-unwind-tables", "-imultiarch", "-quiet", "-"}},
		// The driver adds its default -march=x86-64 to -mtune=native: that is
		// not what the flag means, and the base run has it too.
		{"gcc12-znver3-mtune-native.txt",
			[]string{"-mtune=znver3", "--param=l1-cache-line-size=64"},
			[]string{"-march=x86-64", "-mtune=generic", "-mavx512f"}},
	} {
		got := NativeExpansion(cc1Of(t, tc.file), base)
		for _, w := range tc.want {
			if !contains(got, w) {
				t.Errorf("%s: expansion lacks %s: %v", tc.file, w, got)
			}
		}
		for _, w := range tc.lack {
			if contains(got, w) {
				t.Errorf("%s: expansion has %s: %v", tc.file, w, got)
			}
		}
	}
}

func contains(s []string, w string) bool {
	for _, x := range s {
		if x == w {
			return true
		}
	}
	return false
}

func TestResolveNative(t *testing.T) {
	real := recordedGCC(t)
	fake := func(flag string) (string, error) {
		switch flag {
		case "-march=native":
			return "-mtune=z -mno-b -ma --param=l2-cache-size=512 -march=z --param=l1-cache-size=32", nil
		case "-mtune=native":
			return "--param=l1-cache-size=32 -mtune=z", nil
		}
		return "", errors.New("unexpected " + flag)
	}
	for _, tc := range []struct {
		name, in string
		expand   func(string) (string, error)
		want     string // "" with wantErr
		wantErr  bool
	}{
		{"no native flag: normalised, expand not needed", " -O2\t -pipe ", nil, "-O2 -pipe", false},
		{"stable order, in place", "-O2 -march=native -pipe", fake,
			"-O2 -march=z -ma -mno-b --param=l1-cache-size=32 --param=l2-cache-size=512 -mtune=z -pipe", false},
		{"two native flags merge into one block", "-march=native -O2 -mtune=native", fake,
			"-march=z -ma -mno-b --param=l1-cache-size=32 --param=l2-cache-size=512 -mtune=z -O2", false},
		{"a later override keeps its place", "-march=native -mno-a", fake,
			"-march=z -ma -mno-b --param=l1-cache-size=32 --param=l2-cache-size=512 -mtune=z -mno-a", false},
		{"no expander", "-march=native", nil, "", true},
		{"expander fails", "-mcpu=native", fake, "", true},
		{"expansion still native", "-march=native", func(string) (string, error) { return "-march=native", nil }, "", true},
		{"empty expansion", "-march=native", func(string) (string, error) { return " ", nil }, "", true},
		{"recorded gcc 12, znver3", "-O2 -march=native -pipe", real,
			"-O2 -march=znver3 -mabm -madx -maes -mavx -mavx2 -mavx512bf16 -mavx512bitalg -mavx512bw -mavx512cd -mavx512dq -mavx512f -mavx512ifma -mavx512vbmi -mavx512vbmi2 -mavx512vl -mavx512vnni -mavx512vpopcntdq -mbmi -mbmi2 -mclflushopt -mclwb -mclzero -mcx16 -mf16c -mfma -mfsgsbase -mfxsr -mgfni -mlzcnt -mmmx -mmovbe -mno-3dnow -mno-amx-bf16 -mno-amx-int8 -mno-amx-tile -mno-avx5124fmaps -mno-avx5124vnniw -mno-avx512er -mno-avx512fp16 -mno-avx512pf -mno-avx512vp2intersect -mno-avxvnni -mno-cldemote -mno-enqcmd -mno-fma4 -mno-hle -mno-hreset -mno-kl -mno-lwp -mno-movdir64b -mno-movdiri -mno-mwaitx -mno-pconfig -mno-pku -mno-prefetchwt1 -mno-ptwrite -mno-rtm -mno-serialize -mno-sgx -mno-tbm -mno-tsxldtrk -mno-uintr -mno-waitpkg -mno-wbnoinvd -mno-widekl -mno-xop -mpclmul -mpopcnt -mprfchw -mrdpid -mrdrnd -mrdseed -msahf -msha -mshstk -msse -msse2 -msse3 -msse4.1 -msse4.2 -msse4a -mssse3 -mvaes -mvpclmulqdq -mxsave -mxsavec -mxsaveopt -mxsaves --param=l1-cache-line-size=64 --param=l1-cache-size=32 --param=l2-cache-size=1024 -mtune=znver3 -pipe", false},
	} {
		got, err := ResolveNative(tc.in, tc.expand)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: ResolveNative(%q) = %q, %v; want %q (error %v)", tc.name, tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrNativeUnresolved) {
			t.Errorf("%s: error %v is not ErrNativeUnresolved", tc.name, err)
		}
	}
}

// Two machines with -march=native in make.conf share the text but not the
// code: once resolved, their descriptors have different keys and
// platforms; unresolved, the same.
func TestResolvedDescriptorsDifferByCPU(t *testing.T) {
	d := Descriptor{CPV: "app-misc/hello-1.0", CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -march=native", CXXFLAGS: "-O2 -march=native", LDFLAGS: "-Wl,-O1"}
	cpu := func(march string) func(string) (string, error) {
		return func(string) (string, error) { return "-march=" + march + " -mtune=" + march, nil }
	}
	a, err := d.ResolveNative(cpu("haswell"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.ResolveNative(cpu("znver3"))
	if err != nil {
		t.Fatal(err)
	}
	if a.CFLAGS != "-O2 -march=haswell -mtune=haswell" || a.CXXFLAGS != a.CFLAGS || a.LDFLAGS != "-Wl,-O1" {
		t.Errorf("resolved flags %q / %q / %q", a.CFLAGS, a.CXXFLAGS, a.LDFLAGS)
	}
	if a.BuildKey() == b.BuildKey() || a.Platform() == b.Platform() || a.VariantKey() == b.VariantKey() {
		t.Error("builds for two CPUs share a key or a platform")
	}
	if k, f := d.NativeFlag(); k != "CFLAGS" || f != "-march=native" {
		t.Errorf("NativeFlag of the unresolved descriptor = %q %q", k, f)
	}
	if k, f := a.NativeFlag(); k != "" || f != "" {
		t.Errorf("NativeFlag of the resolved descriptor = %q %q", k, f)
	}
	if _, err := d.ResolveNative(nil); !errors.Is(err, ErrNativeUnresolved) {
		t.Errorf("resolving without a compiler: %v", err)
	}
}

func TestNativeFlag(t *testing.T) {
	for in, want := range map[string]string{
		"-O2 -pipe":                     "",
		"-O2 -march=native":             "-march=native",
		"-mtune=native -march=native":   "-mtune=native",
		"-mcpu=native":                  "-mcpu=native",
		"-march=nativex -mnative":       "",
		"-O2 -march=znver3 -mtune=znv3": "",
	} {
		if got := NativeFlag(in); got != want {
			t.Errorf("NativeFlag(%q) = %q, want %q", in, got, want)
		}
	}
}

// GCCNative on this machine's gcc (the race detector needs one, so CI has
// it): the result names this CPU and is the same the second time; a
// missing compiler is an error, not an empty expansion.
func TestGCCNative(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc on PATH")
	}
	expand := GCCNative(context.Background(), gcc)
	got, err := expand("-march=native")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "-march=") || NativeFlag(got) != "" || !strings.Contains(got, "-mtune=") {
		t.Errorf("gcc -march=native expands to %q", got)
	}
	again, err := GCCNative(context.Background(), gcc)("-march=native")
	if err != nil || again != got {
		t.Errorf("second expansion %q, %v; first %q", again, err, got)
	}
	if _, err := GCCNative(context.Background(), "/nonexistent/gcc")("-march=native"); err == nil {
		t.Error("a missing compiler expanded a flag")
	}
}

// FuzzResolveNative: whatever the flags and the compiler's answer, the
// result says native nowhere, and resolving it again changes nothing.
func FuzzResolveNative(f *testing.F) {
	f.Add("-O2 -march=native -pipe", "-march=z -ma --param=l1-cache-size=32 -mtune=z")
	f.Add("-mtune=native -march=native", "-mtune=z")
	f.Add(" -O2\t", "")
	f.Fuzz(func(t *testing.T, flags, expansion string) {
		out, err := ResolveNative(flags, func(string) (string, error) { return expansion, nil })
		if err != nil {
			return
		}
		if NativeFlag(out) != "" {
			t.Fatalf("%q resolved to %q, still native", flags, out)
		}
		again, err := ResolveNative(out, nil)
		if err != nil || again != out {
			t.Fatalf("%q resolved again to %q, %v", out, again, err)
		}
	})
}
