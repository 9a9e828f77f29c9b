package fit

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Real ELF files of the machine the tests run on (Debian, as CI).
var realELF = []string{"/bin/ls", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6"}

// needsOf runs one file through a Scanner with the given prefix and spool
// directory.
func needsOf(t testing.TB, data []byte, prefix int, tmp string) (Needs, error) {
	t.Helper()
	s := Scanner{Prefix: prefix, TempDir: tmp}
	err := s.Add("file", bytes.NewReader(data), int64(len(data)))
	return s.Needs(), err
}

// sectionNeeds is a second reading of an ELF file, through debug/elf and
// the section headers (the Scanner reads program headers only): the
// highest GLIBC_ version of DynamicVersionNeeds and the ISA level of the
// .note.gnu.property section.
func sectionNeeds(t testing.TB, path string) Needs {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n Needs
	if vn, err := f.DynamicVersionNeeds(); err == nil {
		for _, lib := range vn {
			for _, d := range lib.Needs {
				n.Glibc = maxGlibc(n.Glibc, d.Dep)
			}
		}
	}
	if s := f.Section(".note.gnu.property"); s != nil {
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		// One note: namesz, descsz, type, "GNU\0", then 8-aligned
		// properties (type, size, value, padding).
		desc := b[16:]
		for len(desc) >= 12 {
			typ, size := binary.LittleEndian.Uint32(desc), binary.LittleEndian.Uint32(desc[4:])
			if typ == 0xc0008002 {
				v := binary.LittleEndian.Uint32(desc[8:])
				for l := 4; l >= 1; l-- {
					if v&(1<<(l-1)) != 0 {
						n.X86Level = max(n.X86Level, l)
						break
					}
				}
			}
			desc = desc[min(len(desc), 8+int((size+7)&^7)):]
		}
	}
	return n
}

// The Scanner agrees with debug/elf on this machine's own binaries and
// libraries, whatever part of them it holds in memory; its spool files
// are gone afterwards.
func TestScannerOnRealELF(t *testing.T) {
	for _, path := range realELF {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := sectionNeeds(t, path)
		if want.Glibc == "" || want.X86Level == 0 {
			t.Fatalf("%s: debug/elf reads %+v: no glibc version or ISA note to compare", path, want)
		}
		for _, prefix := range []int{16, 4096, 64 << 10, 0} {
			tmp := t.TempDir()
			got, err := needsOf(t, data, prefix, tmp)
			if err != nil || got != want {
				t.Errorf("%s, prefix %d: %+v, %v; debug/elf %+v", path, prefix, got, err, want)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("%s, prefix %d: spool left behind: %v", path, prefix, left)
			}
		}
	}
}

// Only what lies beyond the prefix is spooled: /bin/ls fits in the default
// prefix and needs no spool directory at all; with a small prefix its
// PT_DYNAMIC (near its end) must be spooled, and a spool that cannot be
// made is an error, not a silent "needs nothing".
func TestScannerSpoolsOnlyBeyondThePrefix(t *testing.T) {
	data, err := os.ReadFile("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	if len(data) >= DefaultPrefix {
		t.Fatalf("/bin/ls is %d bytes, not below the default prefix", len(data))
	}
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	if _, err := needsOf(t, data, 0, missing); err != nil {
		t.Errorf("within the prefix: %v", err)
	}
	if _, err := needsOf(t, data, 4096, missing); err == nil {
		t.Error("beyond a 4 KiB prefix without a spool directory: no error")
	}
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A file that is no ELF costs its four magic bytes.
func TestScannerReadsFourBytesOfOtherFiles(t *testing.T) {
	for _, content := range [][]byte{
		bytes.Repeat([]byte("#!/bin/sh\necho hello\n"), 50000),
		append([]byte("\x7fELG"), make([]byte, 1<<20)...),
	} {
		c := &countingReader{r: bytes.NewReader(content)}
		var s Scanner
		if err := s.Add("file", c, int64(len(content))); err != nil {
			t.Fatal(err)
		}
		if c.n != 4 || s.Needs() != (Needs{}) {
			t.Errorf("%q…: read %d bytes, needs %+v", content[:4], c.n, s.Needs())
		}
	}
	// Shorter than an ELF identification: nothing read.
	c := &countingReader{r: strings.NewReader("hi\n")}
	var s Scanner
	if err := s.Add("short", c, 3); err != nil || c.n != 0 {
		t.Errorf("3-byte file: read %d, %v", c.n, err)
	}
}

func TestScannerOnCraftedELF(t *testing.T) {
	libc := func(v ...string) []craftedNeed { return []craftedNeed{{"libc.so.6", v}} }
	for _, tc := range []struct {
		name string
		elf  craftedELF
		want Needs
	}{
		{"x86-64-v3 needed, GLIBC_2.38", craftedELF{isaBits: 0b0111, needs: libc("GLIBC_2.2.5", "GLIBC_2.38")}, Needs{"GLIBC_2.38", 3}},
		{"baseline only", craftedELF{isaBits: 0b0001, needs: libc("GLIBC_2.2.5")}, Needs{"GLIBC_2.2.5", 1}},
		{"v4", craftedELF{isaBits: 0b1111}, Needs{"", 4}},
		{"numbers, not text: 2.4 < 2.34", craftedELF{needs: libc("GLIBC_2.34", "GLIBC_2.4", "GLIBC_2.3.4")}, Needs{"GLIBC_2.34", 0}},
		{"ISA used is no need", craftedELF{isaUsed: 0b1111, needs: libc("GLIBC_2.17")}, Needs{"GLIBC_2.17", 0}},
		{"needed beside used", craftedELF{isaBits: 0b0011, isaUsed: 0b1111}, Needs{"", 2}},
		{"GLIBC_ABI_DT_RELR means 2.36", craftedELF{needs: []craftedNeed{{"libc.so.6", []string{"GLIBC_2.2.5"}}, {"libc.so.6", []string{"GLIBC_ABI_DT_RELR"}}}}, Needs{"GLIBC_2.36", 0}},
		{"GLIBC_PRIVATE is no release", craftedELF{needs: libc("GLIBC_PRIVATE")}, Needs{}},
		{"from libm and ld-linux too", craftedELF{needs: []craftedNeed{{"libc.so.6", []string{"GLIBC_2.2.5"}}, {"libm.so.6", []string{"GLIBC_2.29"}}, {"ld-linux-x86-64.so.2", []string{"GLIBC_2.3"}}}}, Needs{"GLIBC_2.29", 0}},
		{"other libraries' versions", craftedELF{needs: []craftedNeed{{"libssl.so.3", []string{"OPENSSL_3.0.0"}}, {"libstdc++.so.6", []string{"GLIBCXX_3.4.32"}}}}, Needs{}},
		{"32-bit x86", craftedELF{is32: true, machine: elf.EM_386, isaBits: 0b0011, needs: libc("GLIBC_2.0", "GLIBC_2.1.3")}, Needs{"GLIBC_2.1.3", 2}},
		{"big-endian ppc64: no x86 level", craftedELF{big: true, machine: elf.EM_PPC64, isaBits: 0b0111, needs: libc("GLIBC_2.17")}, Needs{"GLIBC_2.17", 0}},
		{"an object file is not loaded", craftedELF{typ: elf.ET_REL, isaBits: 0b0111, needs: libc("GLIBC_2.38")}, Needs{}},
		{"dynamic segment 3 MiB in", craftedELF{gap: 3 << 20, isaBits: 0b0111, needs: libc("GLIBC_2.38")}, Needs{"GLIBC_2.38", 3}},
	} {
		data := tc.elf.bytes()
		for _, prefix := range []int{16, 1000, 0} {
			got, err := needsOf(t, data, prefix, t.TempDir())
			if err != nil || got != tc.want {
				t.Errorf("%s, prefix %d: %+v, %v; want %+v", tc.name, prefix, got, err, tc.want)
			}
		}
	}
}

// A file that lies about its layout needs nothing it states out of
// bounds, the same whatever the prefix; a stream shorter than its size is
// an error.
func TestScannerOnBrokenELF(t *testing.T) {
	full := craftedELF{isaBits: 0b0111, gap: 100, needs: []craftedNeed{{"libc.so.6", []string{"GLIBC_2.38"}}}}.bytes()
	cut := full[:len(full)-40] // the dynamic segment runs past the end
	for _, prefix := range []int{16, 0} {
		got, err := needsOf(t, cut, prefix, t.TempDir())
		if err != nil || got != (Needs{X86Level: 3}) {
			t.Errorf("cut file, prefix %d: %+v, %v", prefix, got, err)
		}
	}
	var s Scanner
	if err := s.Add("short", bytes.NewReader(full[:200]), int64(len(full))); err == nil {
		t.Error("content shorter than its size: no error")
	}
}

func TestNeedsJSON(t *testing.T) {
	for _, tc := range []struct {
		n    Needs
		want string
	}{
		{Needs{"GLIBC_2.34", 1}, `{"glibc":"GLIBC_2.34","x86_level":1}`},
		{Needs{}, `{}`},
	} {
		b, err := json.Marshal(tc.n)
		if err != nil || string(b) != tc.want {
			t.Errorf("%+v: %s, %v", tc.n, b, err)
		}
	}
}

// NeedsOfFile on portage's own binpkgs: hello's stripped binary needs
// GLIBC_2.34 and the x86-64 baseline (readelf -V / -n say so, and so does
// debug/elf on the extracted file); libfoo's library states neither; the
// rest has no ELF file. XPAK and GPKG, every compression, agree.
func TestNeedsOfFixtures(t *testing.T) {
	want := map[string]Needs{
		"app-misc/hello-1.0":     {"GLIBC_2.34", 1},
		"app-misc/layout-1.0-r1": {},
		"app-misc/consumer-1.0":  {},
		"dev-libs/libfoo-2.1":    {},
	}
	seen := 0
	for _, set := range []string{fixtures.ReproGPKG1, fixtures.ReproXPAK2, fixtures.MultiInstance, fixtures.XPAKBzip2} {
		paths, err := fixtures.WritePKGDIR(set, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			pkg, err := xpak.ReadFile(p, xpak.Limits{})
			if err != nil {
				continue // Packages and other files of the PKGDIR
			}
			got, err := NeedsOfFile(p, xpak.Limits{})
			if w, ok := want[pkg.Metadata.CPV()]; !ok || err != nil || got != w {
				t.Errorf("%s (%s): %+v, %v; want %+v", p, pkg.Metadata.CPV(), got, err, w)
			}
			seen++
		}
	}
	if seen < 12 {
		t.Errorf("only %d fixture binpkgs read", seen)
	}

	// The same from a second reader of the extracted binary.
	paths, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if !strings.HasSuffix(p, "hello-1.0.gpkg.tar") {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		payload, format, err := xpak.ImagePayload(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "hello")
		err = xpak.WalkImage(payload, format, xpak.Limits{}, func(e xpak.ImageEntry, r io.Reader) error {
			if e.Name != "usr/bin/hello" {
				return nil
			}
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			return os.WriteFile(bin, b, 0o644)
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := sectionNeeds(t, bin); got != want["app-misc/hello-1.0"] {
			t.Errorf("debug/elf on usr/bin/hello: %+v", got)
		}
	}
}

// A binary gcc builds for x86-64-v3 with -mneeded states that level (gcc
// 11 and later; the race detector needs a gcc, so CI has one).
func TestNeedsOfGCCBinary(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc on PATH")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.c")
	if err := os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flags []string
		level int
	}{
		{[]string{"-march=x86-64-v3", "-mneeded"}, 3},
		{[]string{"-march=x86-64-v2", "-mneeded"}, 2},
	} {
		bin := filepath.Join(dir, "prog")
		out, err := exec.Command(gcc, append(tc.flags, "-O2", "-o", bin, src)...).CombinedOutput()
		if err != nil {
			t.Fatalf("gcc %v: %v\n%s", tc.flags, err, out)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		got, err := needsOf(t, data, 0, dir)
		if err != nil || got.X86Level != tc.level || got.Glibc == "" {
			t.Errorf("gcc %v: %+v, %v; want level %d and a glibc version", tc.flags, got, err, tc.level)
		}
	}
}

func TestCompareGlibc(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"GLIBC_2.4", "GLIBC_2.34", -1},
		{"GLIBC_2.34", "GLIBC_2.34", 0},
		{"GLIBC_2.2.5", "GLIBC_2.2", 1},
		{"GLIBC_2.39", "GLIBC_2.38", 1},
		{"GLIBC_3.0", "GLIBC_2.99", 1},
		{"GLIBC_ABI_DT_RELR", "GLIBC_2.36", 0},
		{"GLIBC_PRIVATE", "GLIBC_2.0", -1},
		{"", "GLIBC_2.0", -1},
	} {
		if got := compareGlibc(tc.a, tc.b); got != tc.want {
			t.Errorf("compareGlibc(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// FuzzScanner: no input panics the ELF reader, and what a file needs does
// not depend on how much of it is held in memory.
func FuzzScanner(f *testing.F) {
	for _, c := range []craftedELF{
		{isaBits: 0b0111, needs: []craftedNeed{{"libc.so.6", []string{"GLIBC_2.2.5", "GLIBC_2.38"}}}},
		{is32: true, machine: elf.EM_386, isaBits: 0b0011, needs: []craftedNeed{{"libc.so.6", []string{"GLIBC_2.0"}}}},
		{big: true, machine: elf.EM_PPC64, needs: []craftedNeed{{"libc.so.6", []string{"GLIBC_2.17"}}}},
	} {
		f.Add(c.bytes())
	}
	if ls, err := os.ReadFile("/bin/ls"); err == nil {
		f.Add(ls)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		small, err1 := needsOf(t, data, 16, t.TempDir())
		whole, err2 := needsOf(t, data, 0, t.TempDir())
		if err1 != nil || err2 != nil || small != whole {
			t.Fatalf("prefix 16: %+v, %v; default: %+v, %v", small, err1, whole, err2)
		}
	})
}
