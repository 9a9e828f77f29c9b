package xpak

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// wrapImage puts an uncompressed image tar into a real package file of
// format f, zstd-compressed.
func wrapImage(t *testing.T, f Format, imageTar []byte) []byte {
	t.Helper()
	if f == FormatXPAK {
		return buildXPAK(zstdBytes(t, imageTar), baseMetadata())
	}
	return buildGPKG(t, "evil-1.0", standardMembers(t, imageTar, baseMetadata()), nil)
}

// TestHostileImages writes each hostile image as a real tar, then as a
// real XPAK or GPKG file, and checks both ImageDigest and Read name the
// problem.
func TestHostileImages(t *testing.T) {
	dir := func(n string) tentry { return tentry{name: n, typ: tar.TypeDir, mode: 0o755} }
	file := func(n string) tentry { return tentry{name: n, body: "x"} }
	sym := func(n, to string) tentry { return tentry{name: n, typ: tar.TypeSymlink, mode: 0o777, link: to} }
	hard := func(n, to string) tentry { return tentry{name: n, typ: tar.TypeLink, link: to} }
	cases := []struct {
		name    string
		format  Format
		entries []tentry
		want    error // nil: accepted
	}{
		{"dotdot", FormatXPAK, []tentry{file("../x")}, ErrPathTraversal},
		{"dot-slash-dotdot", FormatXPAK, []tentry{file("./../x")}, ErrPathTraversal},
		{"image-dotdot", FormatGPKG, []tentry{file("image/../x")}, ErrPathTraversal},
		{"inner-dotdot", FormatXPAK, []tentry{file("./a/../../x")}, ErrPathTraversal},
		{"inner-dotdot-gpkg", FormatGPKG, []tentry{file("image/a/../../x")}, ErrPathTraversal},
		{"trailing-dotdot", FormatXPAK, []tentry{dir("./a/..")}, ErrPathTraversal},
		{"absolute", FormatXPAK, []tentry{file("/etc/passwd")}, ErrPathTraversal},
		{"absolute-gpkg", FormatGPKG, []tentry{file("/etc/passwd")}, ErrPathTraversal},
		{"absolute-after-image", FormatGPKG, []tentry{file("image//etc/passwd")}, ErrPathTraversal},
		{"outside-image", FormatGPKG, []tentry{file("etc/passwd")}, ErrBadName},
		{"empty-component", FormatXPAK, []tentry{file("./usr//bin")}, ErrBadName},
		{"dot-component", FormatXPAK, []tentry{file("./usr/./bin")}, ErrBadName},
		{"through-symlink", FormatXPAK, []tentry{dir("./usr"), sym("./usr/lib", "/tmp"), file("./usr/lib/evil")}, ErrThroughSymlink},
		{"through-symlink-deep", FormatGPKG, []tentry{sym("image/etc", "../../etc"), file("image/etc/cron.d/evil")}, ErrThroughSymlink},
		{"symlink-over-implied-dir", FormatXPAK, []tentry{file("./a/b"), sym("./a", "/")}, ErrThroughSymlink},
		{"symlink-outside-is-fine", FormatXPAK, []tentry{dir("./usr"), sym("./usr/passwd", "../../../../etc/passwd"), sym("./usr/abs", "/etc/shadow")}, nil},
		{"under-regular-file", FormatXPAK, []tentry{file("./a"), file("./a/b")}, ErrPathConflict},
		{"hardlink-missing", FormatXPAK, []tentry{hard("./a", "./nothing")}, ErrBadHardlink},
		{"hardlink-later", FormatXPAK, []tentry{hard("./a", "./b"), file("./b")}, ErrBadHardlink},
		{"hardlink-dir", FormatXPAK, []tentry{dir("./d"), hard("./a", "./d")}, ErrBadHardlink},
		{"hardlink-symlink", FormatXPAK, []tentry{sym("./s", "/etc/shadow"), hard("./a", "./s")}, ErrBadHardlink},
		{"hardlink-outside", FormatXPAK, []tentry{hard("./a", "/etc/shadow")}, ErrBadHardlink},
		{"hardlink-traversal", FormatGPKG, []tentry{hard("image/a", "image/../../etc/shadow")}, ErrBadHardlink},
		{"hardlink-to-hardlink", FormatXPAK, []tentry{file("./f"), hard("./a", "./f"), hard("./b", "./a")}, ErrBadHardlink},
		{"hardlink-ok", FormatXPAK, []tentry{file("./f"), hard("./a", "./f")}, nil},
		{"duplicate", FormatXPAK, []tentry{file("./x"), file("./x")}, ErrDuplicatePath},
		{"duplicate-prefix-forms", FormatXPAK, []tentry{file("./x"), file("x")}, ErrDuplicatePath},
		{"duplicate-dir-slash", FormatGPKG, []tentry{dir("image/d"), dir("image/d/")}, ErrDuplicatePath},
		{"char-device", FormatXPAK, []tentry{{name: "./dev/mem", typ: tar.TypeChar, devMajor: 1}}, ErrDeviceNode},
		{"block-device", FormatGPKG, []tentry{{name: "image/dev/sda", typ: tar.TypeBlock, devMajor: 8}}, ErrDeviceNode},
		{"fifo-is-fine", FormatXPAK, []tentry{{name: "./run/fifo", typ: tar.TypeFifo}}, nil},
		{"contiguous-type", FormatXPAK, []tentry{{name: "./x", typ: tar.TypeCont}}, ErrUnknownType},
		{"root-not-dir", FormatXPAK, []tentry{sym(".", "/")}, ErrPathConflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := buildTar(t, c.entries)
			_, _, err := ImageDigest(bytes.NewReader(raw), c.format, DefaultLimits())
			check := func(what string, err error) {
				t.Helper()
				if c.want == nil {
					if err != nil {
						t.Errorf("%s: %v", what, err)
					}
					return
				}
				if !errors.Is(err, c.want) {
					t.Errorf("%s: got %v, want %v", what, err, c.want)
				}
			}
			check("ImageDigest", err)
			_, err = readBytes(wrapImage(t, c.format, raw), DefaultLimits())
			check("Read", err)
		})
	}
}

// zeroFrames returns n concatenated zstd frames of 1 MiB of zeros each:
// a valid stream that expands n MiB from a few dozen bytes per MiB.
func zeroFrames(t *testing.T, n int) []byte {
	frame := zstdBytes(t, make([]byte, 1<<20))
	return bytes.Repeat(frame, n)
}

// allocatedDuring reports bytes allocated while f ran.
func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestBombs: 1 GiB of zeros behind a few KB of zstd, with MaxImageBytes
// 64 MiB, fails with ErrTooLarge without allocating anything like it.
func TestBombs(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxImageBytes = 64 << 20
	zeros := zeroFrames(t, 1024)

	// A file entry claiming 1 GiB, its content the zeros.
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: "./big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 30})
	bigFile := append(zstdBytes(t, hdr.Bytes()), zeros...)

	// A small valid tar, then the zeros after its end-of-archive marker.
	trailing := append(zstdBytes(t, buildTar(t, []tentry{{name: "./a", body: "a"}})), zeros...)

	// Many 1 MiB files whose declared sizes each pass.
	var many []tentry
	for i := range 80 {
		many = append(many, tentry{name: "./f" + strings.Repeat("x", i), body: string(make([]byte, 1<<20))})
	}
	manyFiles := zstdBytes(t, buildTar(t, many))

	for name, payload := range map[string][]byte{"big-file": bigFile, "after-eof": trailing, "many-files": manyFiles} {
		t.Run(name, func(t *testing.T) {
			t.Logf("compressed %d bytes", len(payload))
			var err error
			alloc := allocatedDuring(func() { _, _, err = ImageDigest(bytes.NewReader(payload), FormatXPAK, lim) })
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("ImageDigest: %v, want ErrTooLarge", err)
			}
			if alloc > 48<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
			file := buildXPAK(payload, baseMetadata())
			alloc = allocatedDuring(func() { _, err = readBytes(file, lim) })
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Read: %v, want ErrTooLarge", err)
			}
			if alloc > 48<<20 {
				t.Errorf("Read allocated %d MiB", alloc>>20)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	big := bytes.Repeat([]byte("A"), 10<<20)
	t.Run("xpak-10MB-value", func(t *testing.T) {
		md := baseMetadata()
		md["DESCRIPTION"] = big
		_, err := readBytes(buildXPAK(zstdBytes(t, buildTar(t, []tentry{{name: "./a", body: "a"}})), md), DefaultLimits())
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("gpkg-10MB-value", func(t *testing.T) {
		md := baseMetadata()
		md["DESCRIPTION"] = big
		_, err := readBytes(buildGPKG(t, "evil-1.0", standardMembers(t, buildTar(t, []tentry{{name: "image/a", body: "a"}}), md), nil), DefaultLimits())
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "DESCRIPTION") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("metadata-total", func(t *testing.T) {
		md := baseMetadata()
		for _, k := range []string{"A", "B", "C", "D", "E"} {
			md[k] = big[:7<<20]
		}
		_, err := readBytes(buildXPAK(zstdBytes(t, buildTar(t, []tentry{{name: "./a", body: "a"}})), md), DefaultLimits())
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("max-entries", func(t *testing.T) {
		var es []tentry
		for i := range 100 {
			es = append(es, tentry{name: "./f" + strings.Repeat("x", i), body: "x"})
		}
		lim := DefaultLimits()
		lim.MaxEntries = 50
		_, _, err := ImageDigest(bytes.NewReader(buildTar(t, es)), FormatXPAK, lim)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v", err)
		}
		lim.MaxEntries = 100
		if _, n, err := ImageDigest(bytes.NewReader(buildTar(t, es)), FormatXPAK, lim); err != nil || n != 100 {
			t.Fatalf("at the limit: %d %v", n, err)
		}
	})
	t.Run("name-bytes", func(t *testing.T) {
		var es []tentry
		for i := range 100 {
			es = append(es, tentry{name: "./" + strings.Repeat("n", 1000) + strings.Repeat("x", i), body: "x"})
		}
		lim := DefaultLimits()
		lim.MaxNameBytes = 50 << 10
		if _, _, err := ImageDigest(bytes.NewReader(buildTar(t, es)), FormatXPAK, lim); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("environment-bomb", func(t *testing.T) {
		// environment.bz2 of the real fixture is fine with defaults and
		// too large for a 1 KiB value limit.
		p, err := ReadFile("testdata/portage/xpak/bzip2/app-misc/hello-1.0.tbz2", DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Metadata.Environment(Limits{MaxMetadataValue: 1024}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v", err)
		}
	})
}

// validXPAK is a small well-formed XPAK file and the offset of XPAKPACK.
func validXPAK(t *testing.T) ([]byte, int) {
	payload := zstdBytes(t, buildTar(t, []tentry{{name: "./a", body: "a"}}))
	return buildXPAK(payload, baseMetadata()), len(payload)
}

func TestHostileXPAK(t *testing.T) {
	ok, start := validXPAK(t)
	if _, err := readBytes(ok, DefaultLimits()); err != nil {
		t.Fatalf("valid xpak: %v", err)
	}
	put32 := func(b []byte, off int, v uint32) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	n := len(ok)
	idxLen := int(binary.BigEndian.Uint32(ok[start+8:]))
	dataLen := int(binary.BigEndian.Uint32(ok[start+12:]))
	indexAt := start + 16

	// An index with one entry whose offset/length we choose.
	entry := func(off, ln uint32) []byte {
		var idx bytes.Buffer
		binary.Write(&idx, binary.BigEndian, uint32(8))
		idx.WriteString("CATEGORY")
		binary.Write(&idx, binary.BigEndian, off)
		binary.Write(&idx, binary.BigEndian, ln)
		return assembleXPAK(ok[:start], idx.Bytes(), []byte("app-misc\n"))
	}
	rawIndex := func(idx []byte) []byte { return assembleXPAK(ok[:start], idx, []byte("data")) }

	cases := []struct {
		name string
		file []byte
		want error
	}{
		{"trailer-len-max", put32(ok, n-8, 0xFFFFFFFF), ErrBadXPAK},
		{"trailer-len-zero", put32(ok, n-8, 0), ErrBadXPAK},
		{"trailer-len-past-start", put32(ok, n-8, uint32(n)), ErrBadXPAK},
		{"trailer-len-off-by-5", put32(ok, n-8, uint32(n-8-start+5)), ErrBadXPAK},
		{"index-len-max", put32(ok, start+8, 0xFFFFFFFF), ErrBadXPAK},
		{"data-len-max", put32(ok, start+12, 0xFFFFFFFF), ErrBadXPAK},
		// 0xFFFFFFF0 + (idx+data+0x10) wraps to idx+data in 32 bits.
		{"lengths-wrap-32bit", put32(put32(ok, start+8, 0xFFFFFFF0), start+12, uint32(idxLen+dataLen+0x10)), ErrBadXPAK},
		{"no-xpakpack", put32(ok, start, 0x41414141), ErrBadXPAK},
		{"offset-past-data", entry(9, 1), ErrBadXPAK},
		{"offset-length-wrap", entry(0xFFFFFFFF, 2), ErrBadXPAK},
		{"length-past-data", entry(0, 10), ErrBadXPAK},
		{"name-len-max", put32(ok, indexAt, 0xFFFFFFFF), ErrBadXPAK},
		{"name-len-zero", rawIndex([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), ErrBadXPAK},
		{"index-entry-truncated", rawIndex([]byte{0, 0, 0, 1, 'A', 0, 0}), ErrBadXPAK},
		{"key-traversal", rawIndex(append([]byte{0, 0, 0, 4, '.', '.', '/', 'x'}, 0, 0, 0, 0, 0, 0, 0, 1)), ErrBadMetadata},
		{"duplicate-key", assembleXPAK(ok[:start], bytes.Repeat(append([]byte{0, 0, 0, 1, 'A'}, 0, 0, 0, 0, 0, 0, 0, 1), 2), []byte("x")), ErrBadMetadata},
		{"missing-category", assembleXPAK(ok[:start], nil, nil), ErrBadMetadata},
		{"trailer-cut", ok[:n-4], ErrUnknownFormat},
		{"payload-cut", append(bytes.Clone(ok[:10]), ok[start:]...), ErrTruncated},
		{"payload-truncated-stream", append(bytes.Clone(ok[:start-6]), ok[start:]...), ErrTruncated},
		{"unknown-compression", buildXPAK([]byte("PK\x03\x04 this is a zip, not a tar"), baseMetadata()), ErrUnknownCompression},
		{"empty", nil, ErrUnknownFormat},
	}
	_ = dataLen
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readBytes(c.file, DefaultLimits())
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
	// The unknown magic is named in the error.
	_, err := readBytes(buildXPAK([]byte("PK\x03\x04 zip"), baseMetadata()), DefaultLimits())
	if err == nil || !strings.Contains(err.Error(), "504b0304") {
		t.Errorf("error does not name the magic: %v", err)
	}
}

func TestHostileGPKG(t *testing.T) {
	imageTar := buildTar(t, []tentry{{name: "image", typ: tar.TypeDir, mode: 0o755}, {name: "image/a", body: "a"}})
	std := standardMembers(t, imageTar, baseMetadata())
	if _, err := readBytes(buildGPKG(t, "evil-1.0", std, nil), DefaultLimits()); err != nil {
		t.Fatalf("valid gpkg: %v", err)
	}
	with := func(ms ...gmember) []gmember { return append(append([]gmember(nil), std...), ms...) }
	manifest := func(ms []gmember) []byte {
		var b strings.Builder
		for _, m := range ms {
			b.WriteString(manifestLine(m))
		}
		return []byte(b.String())
	}
	tampered := append([]gmember(nil), std...)
	tampered[2] = gmember{"image.tar.zst", zstdBytes(t, buildTar(t, []tentry{{name: "image/a", body: "b"}}))}

	other := zstdBytes(t, buildTar(t, []tentry{{name: "image/evil", body: "evil"}}))
	clear := func(text string) []byte {
		return []byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + text +
			"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n")
	}
	cases := []struct {
		name    string
		file    []byte
		want    error
		mention string
	}{
		{"image-changed", buildGPKG(t, "evil-1.0", tampered, manifest(std)), ErrManifestMismatch, "image.tar.zst"},
		{"size-lie", buildGPKG(t, "evil-1.0", std, []byte(strings.Replace(string(manifest(std)), "image.tar.zst "+strconv.Itoa(len(std[2].data)), "image.tar.zst 1", 1))), ErrManifestMismatch, "image.tar.zst"},
		{"duplicate-member", buildGPKG(t, "evil-1.0", with(gmember{"image.tar.zst", other}), nil), ErrDuplicateMember, "image.tar.zst"},
		{"second-image", buildGPKG(t, "evil-1.0", with(gmember{"image.tar.xz", other}), nil), ErrDuplicateMember, "image.tar.xz"},
		{"duplicate-manifest", buildGPKG(t, "evil-1.0", with(gmember{"Manifest", manifest(std)}), manifest(std)), ErrDuplicateMember, "Manifest"},
		{"not-in-manifest", buildGPKG(t, "evil-1.0", std, manifest(std[:2])), ErrNotInManifest, "image.tar.zst"},
		{"manifest-lists-absent", buildGPKG(t, "evil-1.0", std, manifest(with(gmember{"image.tar.zst.sig", []byte("x")}))), ErrMissingMember, "image.tar.zst.sig"},
		{"unknown-member", buildGPKG(t, "evil-1.0", with(gmember{"evil.sh", []byte("rm -rf /")}), nil), ErrUnknownMember, "evil.sh"},
		{"unknown-compression", buildGPKG(t, "evil-1.0", []gmember{std[0], std[1], {"image.tar.zst", []byte("PK\x03\x04 zip zip zip")}}, nil), ErrUnknownCompression, "504b0304"},
		{"first-not-gpkg-1", buildGPKG(t, "evil-1.0", []gmember{std[1], std[0], std[2]}, nil), ErrBadGPKG, "gpkg-1"},
		{"other-dir", buildGPKG(t, "evil-1.0", with(gmember{"../x/image.tar", nil}), nil), ErrBadGPKG, ""},
		{"no-image", buildGPKG(t, "evil-1.0", std[:2], nil), ErrMissingMember, "image"},
		{"no-manifest", stripManifest(t, buildGPKG(t, "evil-1.0", std, nil)), ErrMissingMember, "Manifest"},
		{"manifest-garbage", buildGPKG(t, "evil-1.0", std, []byte("HELLO world\n")), ErrBadManifest, ""},
		{"manifest-no-hash", buildGPKG(t, "evil-1.0", std, []byte("DATA gpkg-1 0 MD5 abc\n")), ErrBadManifest, ""},
		{"manifest-bad-hex", buildGPKG(t, "evil-1.0", std, []byte(strings.Replace(string(manifest(std)), "SHA512 ", "SHA512 zz", 1))), ErrBadManifest, ""},
		{"unsigned-line-after-signature", buildGPKG(t, "evil-1.0", std, append(clear(string(manifest(std))), manifest(std)...)), ErrBadManifest, "after"},
		{"signed-manifest-mismatch", buildGPKG(t, "evil-1.0", tampered, clear(string(manifest(std)))), ErrManifestMismatch, "image.tar.zst"},
		{"image-traversal", buildGPKG(t, "evil-1.0", standardMembers(t, buildTar(t, []tentry{{name: "image/../../etc/cron.d/x", body: "x"}}), baseMetadata()), nil), ErrPathTraversal, ""},
		{"metadata-outside", buildGPKG(t, "evil-1.0", []gmember{std[0], {"metadata.tar.zst", zstdBytes(t, buildTar(t, []tentry{{name: "../CATEGORY", body: "x"}}))}, std[2]}, nil), ErrBadMetadata, ""},
		{"metadata-symlink", buildGPKG(t, "evil-1.0", []gmember{std[0], {"metadata.tar.zst", zstdBytes(t, buildTar(t, []tentry{{name: "metadata/CATEGORY", typ: tar.TypeSymlink, link: "/etc/shadow"}}))}, std[2]}, nil), ErrBadMetadata, ""},
		{"truncated-manifest", truncate(buildGPKG(t, "evil-1.0", std, nil), 1024+600), ErrTruncated, ""},
		{"truncated-image", truncate(buildGPKG(t, "evil-1.0", std, nil), 1024+1024+len(std[2].data)/2), ErrTruncated, ""},
	}
	if _, err := readBytes(buildTar(t, []tentry{{name: "README", body: "just a tarball"}}), DefaultLimits()); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("plain tar: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readBytes(c.file, DefaultLimits())
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q does not mention %q", err, c.mention)
			}
		})
	}
	// Hash pairs in either order, an unknown extra hash, CRLF endings and
	// blank lines are all fine.
	var swapped strings.Builder
	for _, m := range std {
		f := strings.Fields(manifestLine(m))
		swapped.WriteString(strings.Join([]string{f[0], f[1], f[2], "SHA512", f[6], "SHA256", "00", "BLAKE2B", f[4]}, " ") + "\r\n\n")
	}
	if _, err := readBytes(buildGPKG(t, "evil-1.0", std, []byte(swapped.String())), DefaultLimits()); err != nil {
		t.Errorf("swapped hash order: %v", err)
	}
	// Only one known hash is enough, and it is checked.
	var onlySHA strings.Builder
	for _, m := range std {
		f := strings.Fields(manifestLine(m))
		onlySHA.WriteString(strings.Join([]string{f[0], f[1], f[2], "SHA512", f[6]}, " ") + "\n")
	}
	if _, err := readBytes(buildGPKG(t, "evil-1.0", std, []byte(onlySHA.String())), DefaultLimits()); err != nil {
		t.Errorf("SHA512 only: %v", err)
	}
	if _, err := readBytes(buildGPKG(t, "evil-1.0", tampered, []byte(onlySHA.String())), DefaultLimits()); !errors.Is(err, ErrManifestMismatch) {
		t.Errorf("SHA512 only, tampered: %v", err)
	}
	// A clearsigned Manifest with dash-escaping parses and marks the
	// package signed when both .sig members exist.
	sigs := with(gmember{"metadata.tar.zst.sig", []byte("sig1")}, gmember{"image.tar.zst.sig", []byte("sig2")})
	p, err := readBytes(buildGPKG(t, "evil-1.0", sigs, clear("- "+string(manifest(sigs)))), DefaultLimits())
	if err != nil || !p.Signed || string(p.Signatures["image.tar.zst.sig"]) != "sig2" {
		t.Fatalf("signed: %v %+v", err, p)
	}
}

// stripManifest removes the Manifest member from a GPKG built by buildGPKG.
func stripManifest(t *testing.T, b []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if strings.HasSuffix(h.Name, "/Manifest") {
			continue
		}
		tw.WriteHeader(h)
		buf := new(bytes.Buffer)
		buf.ReadFrom(tr)
		tw.Write(buf.Bytes())
	}
	tw.Close()
	return out.Bytes()
}

// truncate drops the last n bytes.
func truncate(b []byte, n int) []byte { return b[:len(b)-n] }
