package fit

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const testVDB = "testdata/vdb"

// systemGlibc is what debug/elf says the real libc.so.6 (and libm.so.6)
// of the test machine define.
func systemGlibc(t *testing.T) string {
	t.Helper()
	best := ""
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6"} {
		v, err := definedVersions(p)
		if err != nil {
			t.Fatal(err)
		}
		best = maxGlibc(best, v)
	}
	if compareGlibc(best, "GLIBC_2.17") < 0 {
		t.Fatalf("the system glibc defines up to %q", best)
	}
	return best
}

func TestLoadMachine(t *testing.T) {
	m, err := loadMachine("/", testVDB, "testdata/cpuinfo/nehalem-v2")
	if err != nil {
		t.Fatal(err)
	}
	want := []Installed{
		{"app-misc/broken-1.0", "0", "0"},
		{"dev-lang/python-3.11.9", "3.11", "3.11"},
		{"dev-lang/python-3.12.3", "3.12", "3.12"},
		{"dev-libs/libfoo-2.1", "0", "2.1"},
		{"dev-libs/openssl-3.0.13", "0", "3"},
		{"sys-libs/glibc-2.36-r7", "2.2", "2.2"},
	}
	if !reflect.DeepEqual(m.Installed, want) {
		t.Errorf("installed\n%v\nwant\n%v", m.Installed, want)
	}
	wantProvides := map[string][]string{
		"x86_64": {"ld-linux-x86-64.so.2", "libc.so.6", "libcrypto.so.3", "libfoo.so.2", "libm.so.6", "libpthread.so.0", "libpython3.12.so.1.0", "libssl.so.3"},
		"x86_32": {"ld-linux.so.2", "libc.so.6", "libm.so.6"},
	}
	if !reflect.DeepEqual(m.Provides, wantProvides) {
		t.Errorf("provides\n%v\nwant\n%v", m.Provides, wantProvides)
	}
	if g := systemGlibc(t); m.Glibc != g {
		t.Errorf("glibc %q, the system's libc.so.6 defines up to %q", m.Glibc, g)
	}
	if m.X86Level != 2 || !slices.Contains(m.CPUFlags, "sse4_2") || slices.Contains(m.CPUFlags, "avx") {
		t.Errorf("CPU level %d, flags %v", m.X86Level, m.CPUFlags)
	}
}

// No vdb is an empty machine, not an error; glibc is then found where
// distributions keep it, inside root, following root's symlinks (an
// absolute link target is resolved inside root, not on this system).
func TestLoadMachineWithoutVDB(t *testing.T) {
	libc, err := os.ReadFile("/lib/x86_64-linux-gnu/libc.so.6")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	real := filepath.Join(root, "usr/lib64/glibc/libc-real.so")
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, libc, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib64/glibc/libc-real.so", filepath.Join(root, "lib64/libc.so.6")); err != nil {
		t.Fatal(err)
	}
	m, err := loadMachine(root, "", "testdata/cpuinfo/no-such-file")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Installed) != 0 || len(m.Provides) != 0 || m.X86Level != 0 || len(m.CPUFlags) != 0 {
		t.Errorf("machine without vdb or cpuinfo: %+v", m)
	}
	// libc.so.6 alone (no libm beside it in this root).
	if v, err := definedVersions("/lib/x86_64-linux-gnu/libc.so.6"); err != nil || m.Glibc != v {
		t.Errorf("glibc %q, libc.so.6 defines %q (%v)", m.Glibc, v, err)
	}

	empty, err := loadMachine(t.TempDir(), "", "testdata/cpuinfo/no-such-file")
	if err != nil || empty.Glibc != "" {
		t.Errorf("a root without glibc: %q, %v", empty.Glibc, err)
	}
}

func TestReadCPUFlags(t *testing.T) {
	for _, tc := range []struct {
		file  string
		level int
		has   []string
		lacks []string
	}{
		{"znver3-avx512", 4, []string{"avx512f", "avx2", "pni", "abm", "sha_ni"}, nil},
		{"nehalem-v2", 2, []string{"sse4_2", "popcnt", "lahf_lm"}, []string{"avx", "avx2"}},
		{"mixed-v4-v3", 3, []string{"avx2", "bmi2"}, []string{"avx512f", "avx512vl"}},
		{"aarch64-neoverse-n1", 0, nil, []string{"asimd"}},
	} {
		flags, err := ReadCPUFlags("testdata/cpuinfo/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if got := X86Level(flags); got != tc.level {
			t.Errorf("%s: level %d, want %d", tc.file, got, tc.level)
		}
		for _, f := range tc.has {
			if !slices.Contains(flags, f) {
				t.Errorf("%s: no %s in %v", tc.file, f, flags)
			}
		}
		for _, f := range tc.lacks {
			if slices.Contains(flags, f) {
				t.Errorf("%s: %s, which not every processor has", tc.file, f)
			}
		}
		if !slices.IsSorted(flags) {
			t.Errorf("%s: flags not sorted", tc.file)
		}
	}
}

// Each level needs every flag of its own and the levels below.
func TestX86Level(t *testing.T) {
	all, err := ReadCPUFlags("testdata/cpuinfo/znver3-avx512")
	if err != nil {
		t.Fatal(err)
	}
	without := func(drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(f string) bool { return slices.Contains(drop, f) })
	}
	for _, tc := range []struct {
		drop []string
		want int
	}{
		{nil, 4},
		{[]string{"avx512vl"}, 3},
		{[]string{"abm"}, 2}, // LZCNT is v3
		{[]string{"movbe"}, 2},
		{[]string{"pni"}, 1}, // SSE3
		{[]string{"lahf_lm"}, 1},
		{[]string{"cx16"}, 1},
		{[]string{"lm"}, 0},
		{[]string{"sse2"}, 0},
	} {
		if got := X86Level(without(tc.drop...)); got != tc.want {
			t.Errorf("without %v: level %d, want %d", tc.drop, got, tc.want)
		}
	}
}

func TestEnabledTargetOptions(t *testing.T) {
	for _, tc := range []struct {
		file      string
		has, lack []string
	}{
		{"gcc12-haswell.txt", []string{"avx2", "bmi", "bmi2", "fma", "lzcnt", "movbe", "sse4.2", "64"}, []string{"avx512f", "sse4a", "march=", "mtune="}},
		{"gcc12-x86-64-v2.txt", []string{"sse4.2", "popcnt", "cx16", "sahf"}, []string{"avx", "avx2"}},
	} {
		b, err := os.ReadFile("testdata/gcc-march/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		got := EnabledTargetOptions(string(b))
		for _, x := range tc.has {
			if !slices.Contains(got, x) {
				t.Errorf("%s: %s not enabled in %v", tc.file, x, got)
			}
		}
		for _, x := range tc.lack {
			if slices.Contains(got, x) {
				t.Errorf("%s: %s enabled", tc.file, x)
			}
		}
	}
}

// GCCMarch asks this machine's gcc (CI has one: the race detector needs
// it); a name gcc does not know is an error.
func TestGCCMarch(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc on PATH")
	}
	march := GCCMarch(context.Background(), gcc)
	got, err := march("haswell")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, "avx2") || slices.Contains(got, "avx512f") {
		t.Errorf("haswell enables %v", got)
	}
	if _, err := march("no-such-cpu"); err == nil || !strings.Contains(err.Error(), "no-such-cpu") {
		t.Errorf("unknown -march: %v", err)
	}
	if _, err := GCCMarch(context.Background(), "/nonexistent/gcc")("haswell"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing gcc: %v", err)
	}
}

// TestFingerprint: machines read alike have one fingerprint, and a change
// of anything Fits reads changes it.
func TestFingerprint(t *testing.T) {
	base := func() *Machine {
		return &Machine{
			Installed: []Installed{{CPV: "sys-libs/glibc-2.36-r7", Slot: "2.2", SubSlot: "2.2"}, {CPV: "dev-libs/openssl-3.0.9", Slot: "0", SubSlot: "3"}},
			Provides:  map[string][]string{"x86_64": {"libc.so.6", "libssl.so.3"}, "x86_32": {"libc.so.6"}},
			Glibc:     "GLIBC_2.36",
			CPUFlags:  []string{"popcnt", "sse4_2"},
			X86Level:  2,
		}
	}
	fp := base().Fingerprint()
	if again := base().Fingerprint(); again != fp {
		t.Fatal("two machines read alike differ")
	}
	for name, change := range map[string]func(m *Machine){
		"package installed": func(m *Machine) {
			m.Installed = append(m.Installed, Installed{CPV: "app-misc/hello-1.0", Slot: "0", SubSlot: "0"})
		},
		"subslot": func(m *Machine) { m.Installed[1].SubSlot = "3.1" },
		"soname":  func(m *Machine) { m.Provides["x86_64"] = append(m.Provides["x86_64"], "libfoo.so.1") },
		"soname moved ABI": func(m *Machine) {
			m.Provides["x86_32"], m.Provides["x86_64"] = m.Provides["x86_64"], m.Provides["x86_32"]
		},
		"glibc":    func(m *Machine) { m.Glibc = "GLIBC_2.38" },
		"cpu flag": func(m *Machine) { m.CPUFlags = append(m.CPUFlags, "avx2") },
		"level":    func(m *Machine) { m.X86Level = 3 },
	} {
		m := base()
		change(m)
		if m.Fingerprint() == fp {
			t.Errorf("%s: fingerprint unchanged", name)
		}
	}
}
