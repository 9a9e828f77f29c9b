package identity

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// scanFiles runs a ToolchainScanner for app-misc/hello-1.0 over files,
// writing each in chunks of chunk bytes (0: whole).
func scanFiles(t *testing.T, chunk int, files ...[]byte) ImageToolchain {
	t.Helper()
	s := NewToolchainScanner("app-misc", "hello-1.0")
	for i, b := range files {
		w := s.File(fmt.Sprintf("usr/lib/file%d", i))
		for len(b) > 0 {
			n := len(b)
			if chunk > 0 {
				n = min(n, chunk)
			}
			if _, err := w.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return s.Result()
}

func readToolchainFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/toolchain", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestToolchainScanner(t *testing.T) {
	const built = "/tmp/tc/elf/var/tmp/portage" // where testdata/toolchain was compiled (README.md)
	script := []byte("#!/bin/sh\nexec python3 -m hello \"$@\"\n")
	la := []byte("# libhello.la\ndependency_libs=' -L/build/here/portage/app-misc/hello-1.0/work/hello-1.0/.libs'\n")
	tests := []struct {
		name  string
		files []string
		extra [][]byte
		want  ImageToolchain
	}{
		{"object with .comment", []string{"hello.o"}, nil, ImageToolchain{ELF: true, GCC: "12.2.0", BuildPrefix: built}},
		{"linked program", []string{"hello"}, nil, ImageToolchain{ELF: true, GCC: "12.2.0", BuildPrefix: built}},
		// estrip removes .comment: the image names no compiler, though
		// the decoy string and the build directory are still there.
		{"stripped program", []string{"hello-stripped"}, nil, ImageToolchain{ELF: true, BuildPrefix: built}},
		{"static archive", []string{"libhello.a"}, nil, ImageToolchain{ELF: true, GCC: "12.2.0", BuildPrefix: built}},
		{"data and scripts only", []string{"hello.c", "main.c"}, [][]byte{script}, ImageToolchain{}},
		// Several prefixes: the bytewise smallest, whatever the order.
		{"libtool file", []string{"hello-stripped"}, [][]byte{la}, ImageToolchain{ELF: true, BuildPrefix: "/build/here/portage"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var files [][]byte
			for _, n := range tt.files {
				files = append(files, readToolchainFile(t, n))
			}
			files = append(files, tt.extra...)
			// The result must not depend on how the bytes are cut.
			for _, chunk := range []int{0, 1, 3, 7, 64, 4096} {
				if got := scanFiles(t, chunk, files...); got != tt.want {
					t.Fatalf("chunks of %d: got %+v, want %+v", chunk, got, tt.want)
				}
			}
		})
	}
}

func TestToolchainScannerBuildDirOfAnotherPackage(t *testing.T) {
	// The path of another package's build directory is not this one's.
	s := NewToolchainScanner("app-misc", "hello-1.1")
	w := s.File("usr/bin/hello")
	if _, err := w.Write(readToolchainFile(t, "hello-stripped")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.Result(); got != (ImageToolchain{ELF: true}) {
		t.Fatalf("got %+v", got)
	}
}

func TestToolchainScannerPrebuilt(t *testing.T) {
	// QA_PREBUILT's files were not made by the local toolchain: their
	// ELF objects count for nothing; the others still do.
	for _, c := range []struct {
		patterns string
		want     ImageToolchain
	}{
		{"", ImageToolchain{ELF: true, GCC: "12.2.0"}},
		{"*", ImageToolchain{}},
		{"usr/lib64/*", ImageToolchain{ELF: true}},
		{"/opt/hello/* usr/lib64/lib?ello.a", ImageToolchain{}},
		{"usr/lib64/*.so", ImageToolchain{ELF: true, GCC: "12.2.0"}},
	} {
		s := NewToolchainScanner("app-misc", "other-1")
		s.Prebuilt(c.patterns)
		for name, file := range map[string]string{"opt/hello/bin/hello": "hello-stripped", "usr/lib64/libhello.a": "libhello.a"} {
			w := s.File(name)
			if _, err := w.Write(readToolchainFile(t, file)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if got := s.Result(); got != c.want {
			t.Errorf("QA_PREBUILT=%q: %+v, want %+v", c.patterns, got, c.want)
		}
	}
}

func TestBuildPrefixBefore(t *testing.T) {
	for in, want := range map[string]string{
		"\x00/var/tmp":       "/var/tmp",
		"-I/var/tmp":         "/var/tmp",
		"libdir='/srv/b":     "/srv/b",
		"\x00":               "",
		"file /x y/var/tmp2": "/var/tmp2",
	} {
		if got := buildPrefixBefore([]byte(in)); got != want {
			t.Errorf("buildPrefixBefore(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGCCVersion(t *testing.T) {
	for in, want := range map[string]string{
		"Gentoo 13.2.1_p20240210 p13) 13.2.1 20240210": "13.2.1",
		"Debian 12.2.0-14+deb12u1) 12.2.0":             "12.2.0",
		"GNU) 14.1.0":                                  "14.1.0",
		"no version":                                   "",
		"x) 13.x":                                      "",
	} {
		if got := gccVersion(in); got != want {
			t.Errorf("gccVersion(%q) = %q, want %q", in, got, want)
		}
	}
	if compareDotted("13.10.0", "13.9.1") <= 0 || compareDotted("12.2.0", "12.2.0") != 0 {
		t.Fatal("compareDotted is not numeric")
	}
}

func FuzzToolchainScanner(f *testing.F) {
	for _, n := range []string{"hello.o", "libhello.a", "hello-stripped"} {
		b, err := os.ReadFile(filepath.Join("testdata/toolchain", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(100))
	}
	f.Fuzz(func(t *testing.T, b []byte, chunk uint16) {
		whole := scanFiles(t, 0, b)
		if cut := scanFiles(t, int(chunk%512)+1, b); cut != whole {
			t.Fatalf("cut into %d: %+v, whole: %+v", chunk%512+1, cut, whole)
		}
	})
}
