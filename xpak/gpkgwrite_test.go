package xpak

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/blake2b"
)

// testSigner is a deterministic stand-in for OpenPGP: it lets these tests
// check where signatures go without importing OpenPGP into xpak. Real
// signatures are tested in package portagehook.
type testSigner struct{}

func (testSigner) DetachSign(w io.Writer, r io.Reader) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "-----BEGIN PGP SIGNATURE-----\n\n%x\n-----END PGP SIGNATURE-----\n", h.Sum(nil))
	return err
}

func (testSigner) ClearSign(w io.Writer, text []byte) error {
	_, err := fmt.Fprintf(w, "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n%s-----BEGIN PGP SIGNATURE-----\n\n%x\n-----END PGP SIGNATURE-----\n", text, sha256.Sum256(text))
	return err
}

type testEntry struct {
	hdr     tar.Header
	content string
}

var testImage = []testEntry{
	{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr", Mode: 0o755}},
	{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0o755}},
	{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/hello", Mode: 0o100755, Size: 6, Uid: 1000, Uname: "builder"}, content: "hello\n"},
	{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/hello-again", Linkname: "usr/bin/hello"}},
	{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/hi", Linkname: "hello", Mode: 0o777}},
	{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr/share", Mode: 0o755}},
	{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/share/ünïcødé-名前.txt", Mode: 0o600, Size: 3}, content: "ü\n"},
	{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/share/" + strings.Repeat("long", 40), Mode: 0o4755, Size: 0}},
}

func addAll(entries []testEntry) func(ImageAdder) error {
	return func(add ImageAdder) error {
		for _, e := range entries {
			h := e.hdr
			if err := add(&h, strings.NewReader(e.content)); err != nil {
				return err
			}
		}
		return nil
	}
}

func testMeta() *Metadata {
	return NewMetadata(map[string][]byte{
		"CATEGORY":        []byte("app-misc\n"),
		"PF":              []byte("hello-1.0\n"),
		"BUILD_ID":        []byte("7\n"),
		"environment.bz2": {0x42, 0x5a, 0x68, 0x39, 0},
	})
}

func writeTestGPKG(t *testing.T, s Signer) []byte {
	t.Helper()
	var out bytes.Buffer
	opts := GPKGOptions{Basename: "hello-1.0-7", MTime: time.Unix(1795234524, 0), TempDir: t.TempDir(), Signer: s}
	if err := WriteGPKG(&out, opts, testMeta(), addAll(testImage)); err != nil {
		t.Fatalf("WriteGPKG: %v", err)
	}
	return out.Bytes()
}

type member struct {
	hdr  *tar.Header
	data []byte
}

func readMembers(t *testing.T, r io.Reader) []member {
	t.Helper()
	tr := tar.NewReader(r)
	var ms []member
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return ms
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("tar %s: %v", h.Name, err)
		}
		ms = append(ms, member{h, b})
	}
}

func unzstd(t *testing.T, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := io.ReadAll(d)
	if err != nil {
		t.Fatalf("zstd: %v", err)
	}
	return out
}

func TestWriteGPKGLayout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		signer  Signer
		members []string
	}{
		{"unsigned", nil, []string{"gpkg-1", "metadata.tar.zst", "image.tar.zst", "Manifest"}},
		{"signed", testSigner{}, []string{"gpkg-1", "metadata.tar.zst", "metadata.tar.zst.sig", "image.tar.zst", "image.tar.zst.sig", "Manifest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := writeTestGPKG(t, tc.signer)
			if len(raw)%tarRecordSize != 0 {
				t.Errorf("container is %d bytes, not a multiple of %d", len(raw), tarRecordSize)
			}
			ms := readMembers(t, bytes.NewReader(raw))
			var names []string
			byName := map[string][]byte{}
			for _, m := range ms {
				base, ok := strings.CutPrefix(m.hdr.Name, "hello-1.0-7/")
				if !ok || strings.Contains(base, "/") {
					t.Errorf("member %q not one level under the basename", m.hdr.Name)
				}
				if m.hdr.Format != tar.FormatUSTAR || m.hdr.Mode != 0o644 || m.hdr.Uid != 0 || m.hdr.Gid != 0 ||
					m.hdr.Uname != "" || m.hdr.Gname != "" || m.hdr.ModTime.Unix() != 1795234524 {
					t.Errorf("member %q header %+v differs from portage's", m.hdr.Name, m.hdr)
				}
				names = append(names, base)
				byName[base] = m.data
			}
			if strings.Join(names, " ") != strings.Join(tc.members, " ") {
				t.Fatalf("members %v, want %v", names, tc.members)
			}
			checkManifest(t, byName, tc.signer != nil)
			checkMetadataTar(t, unzstd(t, byName["metadata.tar.zst"]))
			checkImageTar(t, unzstd(t, byName["image.tar.zst"]))
		})
	}
}

func checkManifest(t *testing.T, members map[string][]byte, signed bool) {
	t.Helper()
	text := string(members["Manifest"])
	if signed {
		body, ok := strings.CutPrefix(text, "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n")
		if !ok {
			t.Fatalf("Manifest is not clearsigned:\n%s", text)
		}
		text, _, _ = strings.Cut(body, "-----BEGIN PGP SIGNATURE-----")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != len(members)-1 {
		t.Fatalf("Manifest has %d lines for %d members:\n%s", len(lines), len(members)-1, text)
	}
	for _, l := range lines {
		f := strings.Split(l, " ")
		if len(f) != 7 || f[0] != "DATA" || f[3] != "BLAKE2B" || f[5] != "SHA512" {
			t.Fatalf("Manifest line %q is not DATA <name> <size> BLAKE2B <hex> SHA512 <hex>", l)
		}
		data, ok := members[f[1]]
		if !ok {
			t.Fatalf("Manifest names %q, which the container lacks", f[1])
		}
		if f[2] != strconv.Itoa(len(data)) {
			t.Errorf("Manifest size of %s %s, want %d", f[1], f[2], len(data))
		}
		b2 := blake2b.Sum512(data)
		s5 := sha512.Sum512(data)
		if f[4] != hex.EncodeToString(b2[:]) || f[6] != hex.EncodeToString(s5[:]) {
			t.Errorf("Manifest digests of %s do not match its content", f[1])
		}
	}
}

func checkMetadataTar(t *testing.T, raw []byte) {
	t.Helper()
	ms := readMembers(t, bytes.NewReader(raw))
	var got []string
	for _, m := range ms {
		if m.hdr.Typeflag != tar.TypeReg || m.hdr.Mode != 0o644 || m.hdr.Uname != "" {
			t.Errorf("metadata member %q header %+v", m.hdr.Name, m.hdr)
		}
		got = append(got, m.hdr.Name+"="+string(m.data))
	}
	want := "metadata/BUILD_ID=7\n metadata/CATEGORY=app-misc\n metadata/PF=hello-1.0\n metadata/environment.bz2=BZh9\x00"
	if strings.Join(got, " ") != want {
		t.Errorf("metadata members %q, want %q", strings.Join(got, " "), want)
	}
}

func checkImageTar(t *testing.T, raw []byte) {
	t.Helper()
	ms := readMembers(t, bytes.NewReader(raw))
	if len(ms) != len(testImage)+1 {
		t.Fatalf("image has %d entries, want %d", len(ms), len(testImage)+1)
	}
	root := ms[0].hdr
	if root.Name != "image/" || root.Typeflag != tar.TypeDir || root.Mode != 0o755 || root.Uname != "root" {
		t.Errorf("image root entry %+v, want portage's image/ directory", root)
	}
	for i, e := range testImage {
		h := ms[i+1].hdr
		wantName := "image/" + strings.TrimSuffix(e.hdr.Name, "/")
		if e.hdr.Typeflag == tar.TypeDir {
			wantName += "/"
		}
		if h.Name != wantName || h.Typeflag != e.hdr.Typeflag || h.Mode != e.hdr.Mode&0o7777 ||
			h.Uid != e.hdr.Uid || h.Gid != e.hdr.Gid || h.Uname != e.hdr.Uname || h.Gname != e.hdr.Gname || h.ModTime.Unix() != 1795234524 {
			t.Errorf("entry %d: %+v, want name %q type %c mode %o owner %d:%d %s:%s", i, h, wantName, e.hdr.Typeflag, e.hdr.Mode&0o7777, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname)
		}
		if string(ms[i+1].data) != e.content {
			t.Errorf("entry %q content %q, want %q", h.Name, ms[i+1].data, e.content)
		}
		switch e.hdr.Typeflag {
		case tar.TypeLink:
			if h.Linkname != "image/"+e.hdr.Linkname {
				t.Errorf("hardlink %q -> %q", h.Name, h.Linkname)
			}
		case tar.TypeSymlink:
			if h.Linkname != e.hdr.Linkname {
				t.Errorf("symlink %q -> %q", h.Name, h.Linkname)
			}
		}
	}
}

func TestWriteGPKGDeterministic(t *testing.T) {
	a := writeTestGPKG(t, testSigner{})
	b := writeTestGPKG(t, testSigner{})
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of identical inputs differ")
	}
}

func TestWriteGPKGRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  GPKGOptions
		image []testEntry
		want  error
	}{
		{"traversal", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../etc/passwd"}}}, ErrImageEntry},
		{"absolute", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "/etc/passwd"}}}, ErrImageEntry},
		{"dot segments", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/../../x"}}}, ErrImageEntry},
		{"device", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/mem", Devmajor: 1, Devminor: 1}}}, ErrImageEntry},
		{"dangling hardlink", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "a", Linkname: "b"}}}, ErrImageEntry},
		{"hardlink escape", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "a", Linkname: "../../etc/shadow"}}}, ErrImageEntry},
		{"duplicate", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "a"}}, {hdr: tar.Header{Typeflag: tar.TypeDir, Name: "a/"}}}, ErrImageEntry},
		{"short content", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 5}, content: "ab"}}, ErrImageEntry},
		{"long content", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 1}, content: "ab"}}, ErrImageEntry},
		{"under a symlink", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/lib", Linkname: "/etc"}}, {hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/lib/cron.d"}}}, ErrImageEntry},
		{"under a file", GPKGOptions{Basename: "x-1"}, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a"}}, {hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a/b"}}}, ErrImageEntry},
		{"basename with slash", GPKGOptions{Basename: "a/b"}, nil, ErrGPKGOptions},
		{"empty basename", GPKGOptions{}, nil, ErrGPKGOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TempDir = t.TempDir()
			err := WriteGPKG(io.Discard, tc.opts, testMeta(), addAll(tc.image))
			if !errors.Is(err, tc.want) {
				t.Fatalf("WriteGPKG = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestWriteGPKGSpoolRemoved checks the temporary image spool is gone after
// success and after failure (a daemon re-packs thousands of packages).
func TestWriteGPKGSpoolRemoved(t *testing.T) {
	dir := t.TempDir()
	opts := GPKGOptions{Basename: "x-1", TempDir: dir}
	if err := WriteGPKG(io.Discard, opts, testMeta(), addAll(testImage)); err != nil {
		t.Fatal(err)
	}
	bad := []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../x"}}}
	if err := WriteGPKG(io.Discard, opts, testMeta(), addAll(bad)); err == nil {
		t.Fatal("traversal accepted")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("spool files left behind: %v", left)
	}
}

// BenchmarkWriteGPKG measures writing a 64 MiB image (text-like, so zstd
// has work to do) into a signed-layout GPKG: go test -bench WriteGPKG
// -run ^$ ./xpak
func BenchmarkWriteGPKG(b *testing.B) {
	const size = 64 << 20
	content := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), size/55+1)[:size]
	opts := GPKGOptions{Basename: "big-1-1", MTime: time.Unix(1795234524, 0), TempDir: b.TempDir(), Signer: testSigner{}}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		err := WriteGPKG(io.Discard, opts, testMeta(), func(add ImageAdder) error {
			return add(&tar.Header{Typeflag: tar.TypeReg, Name: "usr/share/big", Mode: 0o644, Size: size}, bytes.NewReader(content))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
