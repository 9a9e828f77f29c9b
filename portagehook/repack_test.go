package portagehook

import (
	"archive/tar"
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/blake2b"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// testCovered stands in for identity.IsCovered: everything but the keys
// that vary between honest builders.
func testCovered(k string) bool {
	switch k {
	case "BUILD_ID", "BUILD_TIME", "FEATURES", "SIZE", "REPO_REVISIONS":
		return false
	}
	return true
}

var repackTime = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func repackOpts(t *testing.T, e *openpgp.Entity, id int64) RepackOptions {
	return RepackOptions{
		BuildID: id,
		Signer:  NewSigner(e, repackTime),
		Covered: testCovered,
		MTime:   repackTime,
		TempDir: t.TempDir(),
	}
}

var repackSources = []string{
	"testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar",
	"testdata/gpkg-signed/app-misc/layout/layout-1.0-r1-1.gpkg.tar",
	"testdata/gpkg-signed/dev-libs/libfoo/libfoo-2.1-1.gpkg.tar",
	"testdata/gpkg-signed/app-misc/consumer/consumer-1.0-1.gpkg.tar",
	"testdata/gpkg-xz/layout-1.0-r1.gpkg.tar",
	"testdata/xpak/layout-1.0-r1-1.xpak",
	"testdata/xpak/hello-1.0.tbz2",
}

func TestRepackFixtures(t *testing.T) {
	e := testKey(t)
	for _, src := range repackSources {
		t.Run(filepath.Base(src), func(t *testing.T) {
			in, err := xpak.ReadFile(src, xpak.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(t.TempDir(), "out.gpkg.tar")
			opts := repackOpts(t, e, 7)
			opts.ImageDigest = in.ImageDigest
			served, err := Repack(src, dst, opts)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(dst)
			m5, s1, s256 := md5.Sum(raw), sha1.Sum(raw), sha256.Sum256(raw)
			if served.Size != int64(len(raw)) || served.MD5 != hex.EncodeToString(m5[:]) ||
				served.SHA1 != hex.EncodeToString(s1[:]) || served.SHA256 != hex.EncodeToString(s256[:]) ||
				!fi.ModTime().Equal(repackTime) || !served.MTime.Equal(repackTime) {
				t.Errorf("Served %+v does not describe the file (size %d, mtime %v)", served, len(raw), fi.ModTime())
			}
			out, err := xpak.ReadFile(dst, xpak.Limits{})
			if err != nil {
				t.Fatalf("re-read: %v", err)
			}
			if out.ImageDigest != in.ImageDigest || out.Format != xpak.FormatGPKG || !out.Signed || out.Compression != xpak.CompressionZstd {
				t.Errorf("re-packed %s/%s signed=%v digest %x, want gpkg/zstd signed digest %x", out.Format, out.Compression, out.Signed, out.ImageDigest, in.ImageDigest)
			}
			for _, k := range in.Metadata.Keys() {
				a, _ := in.Metadata.Raw(k)
				b, ok := out.Metadata.Raw(k)
				if testCovered(k) && (!ok || !bytes.Equal(a, b)) {
					t.Errorf("covered key %s: %q, want %q", k, b, a)
				}
			}
			for _, k := range out.Metadata.Keys() {
				if !testCovered(k) && k != "BUILD_ID" && k != "BUILD_TIME" {
					t.Errorf("uncovered key %s reached the served package", k)
				}
			}
			if v, _ := out.Metadata.Raw("BUILD_ID"); string(v) != "7" {
				t.Errorf("BUILD_ID %q", v)
			}
			if v, _ := out.Metadata.Raw("BUILD_TIME"); string(v) != fmt.Sprint(repackTime.Unix())+"\n" {
				t.Errorf("BUILD_TIME %q", v)
			}
			// Reproducible: a second re-pack is byte-identical.
			dst2 := filepath.Join(t.TempDir(), "again.gpkg.tar")
			if _, err := Repack(src, dst2, repackOpts(t, e, 7)); err != nil {
				t.Fatal(err)
			}
			if again, _ := os.ReadFile(dst2); !bytes.Equal(again, raw) {
				t.Error("a second re-pack of the same source differs")
			}
		})
	}
}

// TestRepackLayoutMatchesPortage compares a re-pack of a portage-written
// signed GPKG with the original: same member sequence, same image entries
// in the same order with the same headers (mtimes aside).
func TestRepackLayoutMatchesPortage(t *testing.T) {
	e := testKey(t)
	for _, src := range repackSources[:4] {
		t.Run(filepath.Base(src), func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out.gpkg.tar")
			if _, err := Repack(src, dst, repackOpts(t, e, 1)); err != nil {
				t.Fatal(err)
			}
			want, got := outerMembers(t, src), outerMembers(t, dst)
			if strings.Join(names(want), " ") != strings.Join(names(got), " ") {
				t.Fatalf("members %v, portage wrote %v", names(got), names(want))
			}
			wi, gi := imageHeaders(t, want), imageHeaders(t, got)
			if strings.Join(wi, "\n") != strings.Join(gi, "\n") {
				t.Errorf("image entries differ from portage's\n--- got\n%s\n--- portage\n%s", strings.Join(gi, "\n"), strings.Join(wi, "\n"))
			}
		})
	}
}

type tmember struct {
	name string
	data []byte
}

func outerMembers(t *testing.T, path string) []tmember {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ms []tmember
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ms
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		ms = append(ms, tmember{h.Name, b})
	}
}

func names(ms []tmember) []string {
	var n []string
	for _, m := range ms {
		n = append(n, m.name)
	}
	return n
}

func member(ms []tmember, suffix string) []byte {
	for _, m := range ms {
		if strings.HasSuffix(m.name, "/"+suffix) {
			return m.data
		}
	}
	return nil
}

func imageHeaders(t *testing.T, ms []tmember) []string {
	t.Helper()
	d, err := zstd.NewReader(bytes.NewReader(member(ms, "image.tar.zst")))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tr := tar.NewReader(d)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(tr)
		out = append(out, fmt.Sprintf("%s %c %o %d:%d %s:%s %d %s %x", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.Size, h.Linkname, sha256.Sum256(c)))
	}
}

// TestRepackXPAKAndGPKGAgree: the XPAK and the GPKG of one build re-pack to
// the same image member byte for byte — the served file depends on the
// image, not on the container it came in.
func TestRepackXPAKAndGPKGAgree(t *testing.T) {
	e := testKey(t)
	var images [][]byte
	for _, src := range []string{"testdata/xpak/layout-1.0-r1-1.xpak", "testdata/gpkg-xz/layout-1.0-r1.gpkg.tar", "testdata/gpkg-signed/app-misc/layout/layout-1.0-r1-1.gpkg.tar"} {
		dst := filepath.Join(t.TempDir(), "out.gpkg.tar")
		if _, err := Repack(src, dst, repackOpts(t, e, 1)); err != nil {
			t.Fatal(err)
		}
		images = append(images, member(outerMembers(t, dst), "image.tar.zst"))
	}
	for i := 1; i < len(images); i++ {
		if !bytes.Equal(images[0], images[i]) {
			t.Errorf("image member %d differs from the XPAK's re-pack", i)
		}
	}
}

// TestRepackVerifiesLikePortage checks a re-packed file with real gpg the
// way portage 3.0.82's gpkg._verify_binpkg does: the clearsigned Manifest,
// then every member against its .sig and its Manifest line.
func TestRepackVerifiesLikePortage(t *testing.T) {
	e := testKey(t)
	gpg, home := gpgHome(t, e)
	dst := filepath.Join(t.TempDir(), "hello-1.0-3.gpkg.tar")
	if _, err := Repack("testdata/gpkg-signed/app-misc/hello/hello-1.0-1.gpkg.tar", dst, repackOpts(t, e, 3)); err != nil {
		t.Fatal(err)
	}
	ms := outerMembers(t, dst)
	manifest := member(ms, "Manifest")
	if !bytes.HasPrefix(manifest, []byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nDATA gpkg-1 0 BLAKE2B ")) {
		t.Fatalf("Manifest is not clearsigned as gpg does:\n%s", manifest)
	}
	text := gpgVerify(t, gpg, home, []string{"--output", "-", "-"}, manifest)
	lines := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		f := strings.Fields(l)
		lines[f[1]] = f
	}
	dir := t.TempDir()
	for _, m := range ms {
		base := m.name[strings.LastIndex(m.name, "/")+1:]
		if !strings.HasPrefix(m.name, "hello-1.0-3/") {
			t.Errorf("member %s not under hello-1.0-3/", m.name)
		}
		if base == "Manifest" {
			continue
		}
		f, ok := lines[base]
		if !ok || f[2] != fmt.Sprint(len(m.data)) {
			t.Fatalf("member %s: Manifest line %v", base, f)
		}
		b2, s5 := blake2b.Sum512(m.data), sha512.Sum512(m.data)
		if f[3] != "BLAKE2B" || f[4] != hex.EncodeToString(b2[:]) || f[5] != "SHA512" || f[6] != hex.EncodeToString(s5[:]) {
			t.Errorf("member %s does not match its Manifest line", base)
		}
		if strings.HasSuffix(base, ".tar.zst") {
			sig := filepath.Join(dir, base+".sig")
			if err := os.WriteFile(sig, member(ms, base+".sig"), 0o644); err != nil {
				t.Fatal(err)
			}
			gpgVerify(t, gpg, home, []string{sig, "-"}, m.data)
		}
	}
}

// hostileGPKG builds an unsigned GPKG whose Manifest is correct, so only
// the image decides whether it is refused.
func hostileGPKG(t *testing.T, entries []tar.Header, contents map[string]string) string {
	t.Helper()
	var img bytes.Buffer
	tw := tar.NewWriter(&img)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "image/", Mode: 0o755})
	for _, h := range entries {
		h := h
		c := contents[h.Name]
		h.Size = int64(len(c))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, c)
	}
	tw.Close()
	var meta bytes.Buffer
	mw := tar.NewWriter(&meta)
	for k, v := range map[string]string{"CATEGORY": "app-misc\n", "PF": "evil-1\n", "SLOT": "0\n", "EAPI": "8\n"} {
		mw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "metadata/" + k, Mode: 0o644, Size: int64(len(v))})
		io.WriteString(mw, v)
	}
	mw.Close()
	zst := func(b []byte) []byte {
		var out bytes.Buffer
		zw, _ := zstd.NewWriter(&out)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
	members := []tmember{{"gpkg-1", nil}, {"metadata.tar.zst", zst(meta.Bytes())}, {"image.tar.zst", zst(img.Bytes())}}
	var manifest strings.Builder
	var outer bytes.Buffer
	ow := tar.NewWriter(&outer)
	for _, m := range members {
		b2, s5 := blake2b.Sum512(m.data), sha512.Sum512(m.data)
		fmt.Fprintf(&manifest, "DATA %s %d BLAKE2B %x SHA512 %x\n", m.name, len(m.data), b2, s5)
		ow.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "evil-1/" + m.name, Mode: 0o644, Size: int64(len(m.data))})
		ow.Write(m.data)
	}
	ow.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "evil-1/Manifest", Mode: 0o644, Size: int64(manifest.Len())})
	io.WriteString(ow, manifest.String())
	ow.Close()
	p := filepath.Join(t.TempDir(), "evil-1.gpkg.tar")
	if err := os.WriteFile(p, outer.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRepackRefusesHostileImages: whatever the votes say, an image that
// portage 3.0.82 would extract outside the image (it writes through
// symlinks) or that holds device nodes or bad hardlinks is never served.
func TestRepackRefusesHostileImages(t *testing.T) {
	e := testKey(t)
	for _, tc := range []struct {
		name    string
		entries []tar.Header
		want    error
	}{
		{"write through symlink", []tar.Header{
			{Typeflag: tar.TypeDir, Name: "image/etc/", Mode: 0o755},
			{Typeflag: tar.TypeSymlink, Name: "image/etc/cron.d", Linkname: "/etc/cron.d", Mode: 0o777},
			{Typeflag: tar.TypeReg, Name: "image/etc/cron.d/evil", Mode: 0o644},
		}, xpak.ErrThroughSymlink},
		{"traversal", []tar.Header{{Typeflag: tar.TypeReg, Name: "image/../../etc/shadow", Mode: 0o644}}, xpak.ErrPathTraversal},
		{"absolute", []tar.Header{{Typeflag: tar.TypeReg, Name: "/etc/shadow", Mode: 0o644}}, nil},
		{"device node", []tar.Header{{Typeflag: tar.TypeChar, Name: "image/dev/mem", Devmajor: 1, Devminor: 1, Mode: 0o666}}, xpak.ErrDeviceNode},
		{"hardlink outside", []tar.Header{{Typeflag: tar.TypeLink, Name: "image/x", Linkname: "/etc/shadow"}}, xpak.ErrBadHardlink},
		{"hardlink to nothing", []tar.Header{{Typeflag: tar.TypeLink, Name: "image/x", Linkname: "image/y"}}, xpak.ErrBadHardlink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := hostileGPKG(t, tc.entries, map[string]string{"image/etc/cron.d/evil": "* * * * * root sh\n"})
			dst := filepath.Join(t.TempDir(), "out.gpkg.tar")
			_, err := Repack(src, dst, repackOpts(t, e, 1))
			if !errors.Is(err, ErrRepack) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Repack = %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(dst); err == nil {
				t.Error("a refused package was written")
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*tmp*")); len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
	// The same builder with a benign image is accepted: the refusals above
	// come from the image, not from the test container.
	// Owner names are kept (fowners is installed as written, and names
	// are covered by the image digest Repack re-checks); see
	// TestRepackOwnerIDs for the numeric ids.
	ok := hostileGPKG(t, []tar.Header{
		{Typeflag: tar.TypeDir, Name: "image/etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "image/etc/x", Mode: 0o640, Uid: 250, Gid: 250, Uname: "portage", Gname: "portage"},
	}, map[string]string{"image/etc/x": "x"})
	dst := filepath.Join(t.TempDir(), "ok.gpkg.tar")
	if _, err := Repack(ok, dst, repackOpts(t, e, 1)); err != nil {
		t.Fatalf("benign control package refused: %v", err)
	}
	hdrs := strings.Join(imageHeaders(t, outerMembers(t, dst)), "\n")
	if !strings.Contains(hdrs, "image/etc/x 0 640 0:0 portage:portage 1") {
		t.Errorf("owners not kept:\n%s", hdrs)
	}
}

// TestRepackOwnerIDs: the image digest covers an owner's name, and its
// numeric id only when the name is empty. A numeric id beside a name is
// therefore one peer's choice and is served as 0; an id without a name is
// attested and kept.
func TestRepackOwnerIDs(t *testing.T) {
	e := testKey(t)
	src := hostileGPKG(t, []tar.Header{
		{Typeflag: tar.TypeDir, Name: "image/etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "image/etc/named", Mode: 0o644, Uid: 1000, Gid: 1000, Uname: "root", Gname: "root"},
		{Typeflag: tar.TypeReg, Name: "image/etc/numeric", Mode: 0o644, Uid: 250, Gid: 251},
		{Typeflag: tar.TypeReg, Name: "image/etc/mixed", Mode: 0o644, Uid: 4242, Gid: 252, Uname: "portage"},
	}, map[string]string{"image/etc/named": "a", "image/etc/numeric": "b", "image/etc/mixed": "c"})
	dst := filepath.Join(t.TempDir(), "ids.gpkg.tar")
	if _, err := Repack(src, dst, repackOpts(t, e, 1)); err != nil {
		t.Fatal(err)
	}
	hdrs := strings.Join(imageHeaders(t, outerMembers(t, dst)), "\n")
	for _, want := range []string{
		"image/etc/named 0 644 0:0 root:root 1",
		"image/etc/numeric 0 644 250:251 : 1",
		"image/etc/mixed 0 644 0:252 portage: 1",
	} {
		if !strings.Contains(hdrs, want) {
			t.Errorf("no %q in the re-packed image:\n%s", want, hdrs)
		}
	}
}

func TestRepackAttestedDigest(t *testing.T) {
	e := testKey(t)
	opts := repackOpts(t, e, 1)
	opts.ImageDigest = [32]byte{1}
	_, err := Repack(repackSources[0], filepath.Join(t.TempDir(), "x.gpkg.tar"), opts)
	if !errors.Is(err, ErrRepack) || !strings.Contains(err.Error(), "attested") {
		t.Fatalf("Repack with a different attested digest = %v", err)
	}
}

// TestRepackAttestedMetadata: with a CPV and a metadata digest attested,
// a source that is another package or whose metadata hashes otherwise is
// refused, naming what differs; the attested one is re-packed.
func TestRepackAttestedMetadata(t *testing.T) {
	e := testKey(t)
	// Every key and value, in order: any change to the metadata changes it.
	digest := func(m *xpak.Metadata) ([32]byte, error) {
		h := sha256.New()
		for _, k := range m.Keys() {
			v, _ := m.Raw(k)
			fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(v))
			h.Write(v)
		}
		return [32]byte(h.Sum(nil)), nil
	}
	src := repackSources[0]
	pkg, err := xpak.ReadFile(src, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := digest(pkg.Metadata)
	for _, tt := range []struct {
		name   string
		cpv    string
		md     [32]byte
		digest func(*xpak.Metadata) ([32]byte, error)
		err    string
	}{
		{"attested", pkg.Metadata.CPV(), want, digest, ""},
		{"another CPV", "app-misc/other-1.0", want, digest, "attested app-misc/other-1.0"},
		{"another metadata digest", pkg.Metadata.CPV(), [32]byte{1}, digest, "metadata digest"},
		{"no digest function", pkg.Metadata.CPV(), want, nil, "DigestMetadata is not set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := repackOpts(t, e, 1)
			opts.CPV, opts.MetadataDigest, opts.DigestMetadata = tt.cpv, tt.md, tt.digest
			_, err := Repack(src, filepath.Join(t.TempDir(), "x.gpkg.tar"), opts)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Repack of the attested package: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrRepack) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Repack = %v, want an error naming %q", err, tt.err)
			}
		})
	}
}

// BenchmarkRepack measures Repack of a generated 64 MiB GPKG (read,
// validate, spool, sort, write, sign, re-read): go test -bench Repack
// -run ^$ ./portagehook
func BenchmarkRepack(b *testing.B) {
	const size = 64 << 20
	content := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), size/55+1)[:size]
	dir := b.TempDir()
	src := filepath.Join(dir, "big-1.gpkg.tar")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	meta := xpak.NewMetadata(map[string][]byte{"CATEGORY": []byte("app-misc\n"), "PF": []byte("big-1\n"), "SLOT": []byte("0\n"), "EAPI": []byte("8\n")})
	err = xpak.WriteGPKG(f, xpak.GPKGOptions{Basename: "big-1", MTime: repackTime, TempDir: dir}, meta, func(add xpak.ImageAdder) error {
		if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: "usr", Mode: 0o755}, nil); err != nil {
			return err
		}
		return add(&tar.Header{Typeflag: tar.TypeReg, Name: "usr/big", Mode: 0o644, Size: size}, bytes.NewReader(content))
	})
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	e, err := LoadOrCreateSigningKey(filepath.Join(dir, "k.asc"), "bench")
	if err != nil {
		b.Fatal(err)
	}
	opts := RepackOptions{BuildID: 1, Signer: NewSigner(e, repackTime), Covered: testCovered, MTime: repackTime, TempDir: dir}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if _, err := Repack(src, filepath.Join(dir, "out.gpkg.tar"), opts); err != nil {
			b.Fatal(err)
		}
	}
}
