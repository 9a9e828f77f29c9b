package fit

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// cpu reads one of the testdata cpuinfo files.
func cpu(t *testing.T, name string) []string {
	t.Helper()
	flags, err := ReadCPUFlags("testdata/cpuinfo/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return flags
}

// testMachine is a glibc 2.38 system on a Nehalem (x86-64-v2) with
// libfoo 0/1 and openssl 0/3 installed.
func testMachine(t *testing.T) *Machine {
	flags := cpu(t, "nehalem-v2")
	return &Machine{
		Installed: []Installed{
			{"sys-libs/glibc-2.38-r10", "2.2", "2.2"},
			{"dev-libs/libfoo-1.0", "0", "1"},
			{"dev-libs/openssl-3.0.13", "0", "3"},
			{"dev-lang/python-3.12.3", "3.12", "3.12"},
		},
		Provides: map[string][]string{
			"x86_64": {"libc.so.6", "libm.so.6", "libfoo.so.1", "libssl.so.3", "libcrypto.so.3"},
			"x86_32": {"libc.so.6"},
		},
		Glibc:    "GLIBC_2.38",
		CPUFlags: flags,
		X86Level: X86Level(flags),
	}
}

// Every check, each with a build that passes it and one that fails it
// (the failing one would be listed without the check).
func TestFits(t *testing.T) {
	fakeGCC := func(march string) ([]string, error) {
		switch march {
		case "haswell":
			return []string{"64", "avx", "avx2", "bmi", "bmi2", "fma", "lzcnt", "movbe", "sse4.2", "popcnt", "align-stringops"}, nil
		case "nehalem":
			return []string{"64", "sse4.2", "sse4.1", "popcnt", "sahf", "cx16", "ssse3"}, nil
		}
		return nil, errors.New("cc1: error: bad value for -march= switch")
	}
	hello := Build{CPV: "app-misc/hello-1.0", Slot: "0", Requires: map[string][]string{"x86_64": {"libc.so.6"}},
		Needs: Needs{"GLIBC_2.34", 1}, CFLAGS: "-O2 -pipe"}
	with := func(edit func(*Build)) Build {
		b := hello
		edit(&b)
		return b
	}
	libfoo2 := Build{CPV: "dev-libs/libfoo-2.1", Slot: "0/2.1", Provides: map[string][]string{"x86_64": {"libfoo.so.2"}}}
	for _, tc := range []struct {
		name  string
		b     Build
		also  []Build
		march func(string) ([]string, error)
		want  string // "" fits; else the reason after the CPV
	}{
		{"fits", hello, nil, nil, ""},

		// glibc
		{"glibc as new as the system's", with(func(b *Build) { b.Needs.Glibc = "GLIBC_2.38" }), nil, nil, ""},
		{"glibc newer", with(func(b *Build) { b.Needs.Glibc = "GLIBC_2.39" }), nil, nil,
			"needs GLIBC_2.39, this system's glibc offers up to GLIBC_2.38"},
		{"glibc newer, by number not text", with(func(b *Build) { b.Needs.Glibc = "GLIBC_2.100" }), nil, nil,
			"needs GLIBC_2.100, this system's glibc offers up to GLIBC_2.38"},

		// x86-64 level from the content
		{"level the CPU has", with(func(b *Build) { b.Needs.X86Level = 2 }), nil, nil, ""},
		{"level above the CPU's", with(func(b *Build) { b.Needs.X86Level = 3 }), nil, nil,
			"needs x86-64-v3 (avx avx2 bmi1 bmi2 f16c fma abm movbe xsave), this CPU is x86-64-v2"},

		// compiler flags
		{"-march=x86-64-v2 on v2", with(func(b *Build) { b.CFLAGS = "-O2 -march=x86-64-v2" }), nil, nil, ""},
		{"-march=x86-64-v3 on v2", with(func(b *Build) { b.CFLAGS = "-O2 -march=x86-64-v3 -pipe" }), nil, nil,
			"was built with -march=x86-64-v3, this CPU is x86-64-v2 (lacks avx avx2 bmi1 bmi2 f16c fma abm movbe xsave)"},
		{"-march=x86-64-v3 -mno-avx still needs BMI", with(func(b *Build) { b.CFLAGS = "-march=x86-64-v3 -mno-avx" }), nil, nil,
			"was built with -march=x86-64-v3, this CPU is x86-64-v2 (lacks bmi1 bmi2 abm movbe xsave)"},
		{"-mavx512f", with(func(b *Build) { b.CFLAGS = "-O2 -mavx512f" }), nil, nil,
			"was built with -mavx512f, this CPU lacks avx512f"},
		{"-mavx512f turned off again", with(func(b *Build) { b.CFLAGS = "-O2 -mavx512f -mno-avx512f" }), nil, nil, ""},
		{"-mno-avx turns off what builds on it", with(func(b *Build) { b.CFLAGS = "-mavx2 -mavx512vl -mno-avx" }), nil, nil, ""},
		{"gcc names mapped to cpuinfo's", with(func(b *Build) { b.CFLAGS = "-msse3 -msse4.1 -msse4.2 -msahf -mcx16 -mpopcnt" }), nil, nil, ""},
		{"-mlzcnt is abm", with(func(b *Build) { b.CFLAGS = "-mlzcnt" }), nil, nil, "was built with -mlzcnt, this CPU lacks abm"},
		{"-mbmi is bmi1", with(func(b *Build) { b.CFLAGS = "-mbmi" }), nil, nil, "was built with -mbmi, this CPU lacks bmi1"},
		{"-m flags that are no extension", with(func(b *Build) { b.CFLAGS = "-m64 -mfpmath=sse -mtune=znver4 -mshstk -mno-red-zone" }), nil, nil, ""},
		{"in CXXFLAGS", with(func(b *Build) { b.CXXFLAGS = "-O2 -mavx2" }), nil, nil,
			"was built with -mavx2 in CXXFLAGS, this CPU lacks avx2"},
		{"named -march via gcc", with(func(b *Build) { b.CFLAGS = "-O2 -march=haswell" }), nil, fakeGCC,
			"was built with -march=haswell, this CPU lacks avx avx2 bmi1 bmi2 fma abm movbe"},
		{"named -march the CPU meets", with(func(b *Build) { b.CFLAGS = "-O2 -march=nehalem" }), nil, fakeGCC, ""},
		{"named -march gcc does not know", with(func(b *Build) { b.CFLAGS = "-march=znver9" }), nil, fakeGCC,
			"was built with -march=znver9, which this system's gcc does not know"},
		{"named -march without gcc: the -m flags judge", with(func(b *Build) { b.CFLAGS = "-march=haswell -msse4.2" }), nil, nil, ""},
		{"resolved -march=native line", with(func(b *Build) {
			b.CFLAGS = "-O2 -march=znver3 -mavx2 -mno-avx512f -msse4.2 --param=l1-cache-size=32 -mtune=znver3"
		}), nil, nil, "was built with -mavx2, this CPU lacks avx2"},
		{"unresolved -march=native", with(func(b *Build) { b.CFLAGS = "-O2 -march=native" }), nil, nil,
			"was built with -march=native in CFLAGS, which names the builder's CPU, not instructions this one can be checked for"},

		// sonames
		{"soname installed", with(func(b *Build) { b.Requires = map[string][]string{"x86_64": {"libc.so.6", "libssl.so.3"}} }), nil, nil, ""},
		{"soname missing", with(func(b *Build) { b.Requires = map[string][]string{"x86_64": {"libc.so.6", "libfoo.so.2"}} }), nil, nil,
			"needs libfoo.so.2 (x86_64), which no installed package provides"},
		{"soname of another ABI", with(func(b *Build) { b.Requires = map[string][]string{"x86_32": {"libssl.so.3"}} }), nil, nil,
			"needs libssl.so.3 (x86_32), which no installed package provides"},
		{"soname from a build alongside", with(func(b *Build) { b.Requires = map[string][]string{"x86_64": {"libfoo.so.2"}} }), []Build{libfoo2}, nil, ""},

		// slot dependencies
		{"subslot installed", with(func(b *Build) { b.SlotDeps = []string{"dev-libs/openssl:0/3="} }), nil, nil, ""},
		{"other subslot installed", with(func(b *Build) { b.SlotDeps = []string{"dev-libs/libfoo:0/2="} }), nil, nil,
			"was built against dev-libs/libfoo:0/2, installed is 0/1"},
		{"version operator and USE dependency", with(func(b *Build) { b.SlotDeps = []string{">=dev-libs/libfoo-2:0/2=[static-libs(-)]"} }), nil, nil,
			"was built against dev-libs/libfoo:0/2, installed is 0/1"},
		{"not installed", with(func(b *Build) { b.SlotDeps = []string{"dev-libs/libbar:0/5="} }), nil, nil,
			"was built against dev-libs/libbar:0/5, which is not installed"},
		{"other slot installed", with(func(b *Build) { b.SlotDeps = []string{"dev-lang/python:3.13="} }), nil, nil,
			"was built against dev-lang/python:3.13, installed is 3.12/3.12"},
		{"slot without subslot", with(func(b *Build) { b.SlotDeps = []string{"dev-lang/python:3.12="} }), nil, nil, ""},
		{"subslot from a build alongside", with(func(b *Build) { b.SlotDeps = []string{"dev-libs/libfoo:0/2.1="} }), []Build{libfoo2}, nil, ""},
		{"a build alongside without an agreed SLOT", with(func(b *Build) { b.SlotDeps = []string{"dev-libs/libbar:0/0="} }),
			[]Build{{CPV: "dev-libs/libbar-1"}}, nil, "was built against dev-libs/libbar:0/0, which is not installed"},
		{"a build alongside with another subslot", with(func(b *Build) { b.SlotDeps = []string{"dev-libs/libfoo:0/3="} }), []Build{libfoo2}, nil,
			"was built against dev-libs/libfoo:0/3, installed is 0/1"},

		// first unmet need first
		{"glibc before soname", with(func(b *Build) {
			b.Needs.Glibc = "GLIBC_2.40"
			b.Requires = map[string][]string{"x86_64": {"libnone.so.1"}}
		}), nil, nil, "needs GLIBC_2.40, this system's glibc offers up to GLIBC_2.38"},
	} {
		m := testMachine(t)
		m.March = tc.march
		var also *Alongside
		if tc.also != nil {
			also = NewAlongside(tc.also)
		}
		err := m.Fits(tc.b, also)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s: fits, want %q", tc.name, tc.want)
		case tc.want != "" && err.Error() != fmt.Sprintf("does not fit this machine: %s %s", tc.b.CPV, tc.want):
			t.Errorf("%s:\n got %v\nwant %s", tc.name, err, tc.want)
		case err != nil && !errors.Is(err, ErrDoesNotFit):
			t.Errorf("%s: %v is not ErrDoesNotFit", tc.name, err)
		}
	}
}

// A machine without glibc or with an unknown CPU runs nothing that needs
// them.
func TestFitsOnUnknownMachine(t *testing.T) {
	m := &Machine{}
	for _, tc := range []struct {
		b    Build
		want string
	}{
		{Build{CPV: "a/b-1", Needs: Needs{Glibc: "GLIBC_2.2.5"}}, "needs GLIBC_2.2.5, and this system has no glibc"},
		{Build{CPV: "a/b-1", Needs: Needs{X86Level: 1}}, "needs x86-64 (lm cmov cx8 fpu fxsr mmx sse sse2), this CPU is no x86-64 level"},
		{Build{CPV: "a/b-1", CFLAGS: "-msse2"}, "was built with -msse2, this CPU lacks sse2"},
		{Build{CPV: "a/b-1", CFLAGS: "-O2 -pipe"}, ""},
	} {
		err := m.Fits(tc.b, nil)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasSuffix(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.b, err, tc.want)
		}
	}
}

// FitAll lets builds stand on each other, but only on builds that fit:
// a consumer of a library whose build needs a newer glibc goes with it.
func TestFitAll(t *testing.T) {
	m := testMachine(t)
	lib := Build{CPV: "dev-libs/libfoo-2.1", Slot: "0/2.1", Provides: map[string][]string{"x86_64": {"libfoo.so.2"}}, Needs: Needs{Glibc: "GLIBC_2.34"}}
	consumer := Build{CPV: "app-misc/consumer-1.0", SlotDeps: []string{"dev-libs/libfoo:0/2.1="}, Requires: map[string][]string{"x86_64": {"libfoo.so.2"}}}
	user := Build{CPV: "app-misc/user-1.0", Requires: map[string][]string{"x86_64": {"libconsumer.so.1"}}}
	consumerLib := consumer
	consumerLib.Provides = map[string][]string{"x86_64": {"libconsumer.so.1"}}

	errs := m.FitAll([]Build{consumerLib, lib, user})
	for i, err := range errs {
		if err != nil {
			t.Errorf("all fit: build %d: %v", i, err)
		}
	}

	tooNew := lib
	tooNew.Needs.Glibc = "GLIBC_2.41"
	errs = m.FitAll([]Build{consumerLib, tooNew, user, {CPV: "app-misc/plain-1.0"}})
	want := []string{
		"app-misc/consumer-1.0 needs libfoo.so.2 (x86_64), which no installed package provides",
		"dev-libs/libfoo-2.1 needs GLIBC_2.41, this system's glibc offers up to GLIBC_2.38",
		"app-misc/user-1.0 needs libconsumer.so.1 (x86_64), which no installed package provides",
		"",
	}
	for i, err := range errs {
		if want[i] == "" && err != nil || want[i] != "" && (err == nil || !strings.HasSuffix(err.Error(), want[i])) {
			t.Errorf("build %d: %v, want %q", i, err, want[i])
		}
	}
}

// Builds of portage's fixtures, from their descriptors and metadata as
// the gateway would make them, on the vdb of testdata and this machine's
// glibc: hello and libfoo fit; the consumer, built against libfoo 0/2.1,
// fits with the libfoo build listed beside it, or with a vdb that has
// that subslot, and not with libfoo 0/1 installed.
func TestFitsFixtureBuilds(t *testing.T) {
	paths, err := fixtures.WritePKGDIR(fixtures.MultiInstance, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	builds := map[string]Build{}
	for _, p := range paths {
		pkg, err := xpak.ReadFile(p, xpak.Limits{})
		if err != nil {
			continue
		}
		d, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
		if err != nil {
			t.Fatal(err)
		}
		needs, err := NeedsOfFile(p, xpak.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := BuildOf(d, map[string]string{"SLOT": pkg.Metadata.Get("SLOT"), "PROVIDES": pkg.Metadata.Get("PROVIDES")}, needs)
		if err != nil {
			t.Fatal(err)
		}
		builds[d.CPV] = b
	}
	consumer, hello, libfoo := builds["app-misc/consumer-1.0"], builds["app-misc/hello-1.0"], builds["dev-libs/libfoo-2.1"]
	if len(consumer.SlotDeps) != 1 || hello.Needs.Glibc != "GLIBC_2.34" || libfoo.Slot != "0/2.1" || len(libfoo.Provides["x86_64"]) != 1 {
		t.Fatalf("builds from the fixtures: %+v", builds)
	}

	m, err := loadMachine("/", testVDB, "testdata/cpuinfo/nehalem-v2")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []Build{hello, libfoo, consumer} {
		if err := m.Fits(b, nil); err != nil {
			t.Errorf("on the testdata vdb (libfoo 0/2.1): %v", err)
		}
	}

	old := testMachine(t)
	if err := old.Fits(consumer, nil); err == nil || !strings.HasSuffix(err.Error(), "was built against dev-libs/libfoo:0/2.1, installed is 0/1") {
		t.Errorf("with libfoo 0/1: %v", err)
	}
	if err := old.Fits(consumer, NewAlongside([]Build{libfoo})); err != nil {
		t.Errorf("with libfoo 0/2.1 listed beside it: %v", err)
	}
	if _, err := BuildOf(identity.Descriptor{CPV: "a/b-1"}, map[string]string{"PROVIDES": "libnoabi.so.1"}, Needs{}); err == nil {
		t.Error("BuildOf took a PROVIDES without ABI")
	}
}

func TestParseSlotDep(t *testing.T) {
	for _, tc := range []struct {
		atom string
		want string // cp:slot/subslot, "" when no resolved slot
	}{
		{"dev-libs/libfoo:0/2.1=", "dev-libs/libfoo:0/2.1"},
		{">=dev-libs/openssl-3.0.9:0/3=", "dev-libs/openssl:0/3"},
		{"=dev-lang/python-3.12*:3.12=", "dev-lang/python:3.12"},
		{"~dev-libs/foo-1.2-r1:2/2.5=[abi_x86_32(-)?]", "dev-libs/foo:2/2.5"},
		{"dev-libs/foo:=", ""},
		{"dev-libs/foo:*", ""},
		{"dev-libs/foo:0", ""},
		{"dev-libs/foo", ""},
	} {
		d, ok := parseSlotDep(tc.atom)
		got := ""
		if ok {
			got = d.text()
		}
		if got != tc.want {
			t.Errorf("parseSlotDep(%q) = %q, want %q", tc.atom, got, tc.want)
		}
	}
	for cpv, want := range map[string]string{
		"dev-libs/libfoo-2.1":         "dev-libs/libfoo",
		"sys-libs/glibc-2.38-r10":     "sys-libs/glibc",
		"dev-lang/python-3.12.3_p1":   "dev-lang/python",
		"x11-libs/gtk+-3.24.41":       "x11-libs/gtk+",
		"dev-libs/libfoo-bar-1.0_rc2": "dev-libs/libfoo-bar",
		"app-misc/no-version":         "",
	} {
		if cp, _, _ := splitCPV(cpv); cp != want {
			t.Errorf("splitCPV(%q) = %q, want %q", cpv, cp, want)
		}
	}
}

func TestGlibcContents(t *testing.T) {
	p := t.TempDir() + "/CONTENTS"
	err := os.WriteFile(p, []byte("dir /lib64\n"+
		"obj /lib64/libc.so.6 0123456789abcdef0123456789abcdef 1714000000\n"+
		"obj /usr/lib/odd dir/libc.so.6 0123456789abcdef0123456789abcdef 1714000000\n"+
		"sym /lib/libc.so.6 -> ../lib32/libc.so.6 1714000000\n"+
		"obj /lib64/libm.so.6 0123456789abcdef0123456789abcdef 1714000000\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	got, err := glibcContents(p)
	want := []string{"/lib64/libc.so.6", "/usr/lib/odd dir/libc.so.6", "/lib/libc.so.6"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%q, %v; want %q", got, err, want)
	}
}

// FuzzParseSlotDep: no atom panics the parser, and what it reads reads
// the same again from its own text.
func FuzzParseSlotDep(f *testing.F) {
	for _, s := range []string{"dev-libs/libfoo:0/2.1=", ">=dev-libs/openssl-3.0.9:0/3=", "=dev-lang/python-3.12*:3.12=", "~a/b-1:2/2.5=[x(-)?]", "a/b:=", "!a/b:0="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, atom string) {
		d, ok := parseSlotDep(atom)
		if !ok {
			return
		}
		again, ok := parseSlotDep(d.text() + "=")
		if !ok || again.text() != d.text() {
			t.Fatalf("%q reads as %q, which reads as %q (%v)", atom, d.text(), again.text(), ok)
		}
	})
}
