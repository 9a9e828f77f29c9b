package trust

import (
	"archive/tar"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/blake2b"
)

const fixtureKey = "testdata/gpkg/signed-zstd-multi-instance.pubkey.asc"

func fixtureKeyring(t *testing.T) openpgp.EntityList {
	t.Helper()
	kr, err := LoadKeyring(fixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// otherEntity generates a fresh signing key that is not the fixture's.
func otherEntity(t *testing.T) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity("Other Signer", "", "other@example.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func signedFixtures(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/gpkg/signed/*.gpkg.tar")
	if err != nil || len(files) != 4 {
		t.Fatalf("signed fixtures: %v %v", files, err)
	}
	return files
}

// member is one outer-tar member held in memory (test fixtures are small).
type member struct {
	name string
	typ  byte
	data []byte
}

func readMembers(t testing.TB, file string) []member {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []member
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, member{hdr.Name, hdr.Typeflag, data})
	}
}

func writeMembers(t *testing.T, members []member) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: 0o644, Size: int64(len(m.data)), Format: tar.FormatUSTAR}
		if m.typ == tar.TypeSymlink {
			hdr.Size, hdr.Linkname = 0, "elsewhere"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if m.typ == tar.TypeReg {
			if _, err := tw.Write(m.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "pkg.gpkg.tar")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// resignGPKG rebuilds a package the way portage's writer does, signed by e:
// a detached armored .sig after each data member and a clearsigned Manifest
// with SHA512 and BLAKE2B of every member.
func resignGPKG(t *testing.T, src string, e, manifestSigner *openpgp.Entity) string {
	t.Helper()
	var out []member
	var manifest strings.Builder
	record := func(m member) {
		s := sha512.Sum512(m.data)
		b := blake2b.Sum512(m.data)
		base := m.name[strings.IndexByte(m.name, '/')+1:]
		fmt.Fprintf(&manifest, "DATA %s %d BLAKE2B %s SHA512 %s\n", base, len(m.data), hex.EncodeToString(b[:]), hex.EncodeToString(s[:]))
	}
	for _, m := range readMembers(t, src) {
		if strings.HasSuffix(m.name, ".sig") || strings.HasSuffix(m.name, "/Manifest") {
			continue
		}
		out = append(out, m)
		record(m)
		if strings.HasSuffix(m.name, "/gpkg-1") {
			continue
		}
		var sig bytes.Buffer
		if err := openpgp.ArmoredDetachSign(&sig, e, bytes.NewReader(m.data), nil); err != nil {
			t.Fatal(err)
		}
		sm := member{m.name + ".sig", tar.TypeReg, sig.Bytes()}
		out = append(out, sm)
		record(sm)
	}
	var signed bytes.Buffer
	w, err := clearsign.Encode(&signed, manifestSigner.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, manifest.String()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dir := out[0].name[:strings.IndexByte(out[0].name, '/')]
	out = append(out, member{dir + "/Manifest", tar.TypeReg, signed.Bytes()})
	return writeMembers(t, out)
}

func TestVerifyGPKGFixtures(t *testing.T) {
	kr := fixtureKeyring(t)
	other := otherEntity(t)
	for _, file := range signedFixtures(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if err := VerifyGPKGSignatures(file, kr); err != nil {
				t.Fatalf("real portage-signed package: %v", err)
			}
			if err := VerifyGPKGSignatures(file, openpgp.EntityList{other}); !errors.Is(err, ErrUntrustedKey) {
				t.Fatalf("with another key: %v, want ErrUntrustedKey", err)
			}
			if err := VerifyGPKGSignatures(file, append(openpgp.EntityList{other}, kr...)); err != nil {
				t.Fatalf("keyring with an extra key: %v", err)
			}
			if err := VerifyGPKGSignatures(file, nil); !errors.Is(err, ErrUntrustedKey) {
				t.Fatalf("empty keyring: %v", err)
			}
		})
	}
}

func TestVerifyGPKGUnsigned(t *testing.T) {
	kr := fixtureKeyring(t)
	files, _ := filepath.Glob("testdata/gpkg/unsigned/*.gpkg.tar")
	if len(files) != 2 {
		t.Fatalf("unsigned fixtures: %v", files)
	}
	for _, file := range files {
		if err := VerifyGPKGSignatures(file, kr); !errors.Is(err, ErrUnsigned) {
			t.Errorf("%s: %v, want ErrUnsigned", file, err)
		}
	}
}

// TestVerifyGPKGResigned: a package signed by a generated key (with
// go-crypto's clearsign writer rather than gpg) verifies against that key
// and not against the fixture key, so the check is not fixture-specific.
func TestVerifyGPKGResigned(t *testing.T) {
	other := otherEntity(t)
	file := resignGPKG(t, "testdata/gpkg/signed/layout-1.0-r1-1.gpkg.tar", other, other)
	if err := VerifyGPKGSignatures(file, openpgp.EntityList{other}); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGPKGSignatures(file, fixtureKeyring(t)); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("fixture key on re-signed package: %v", err)
	}
	// Manifest by a trusted key, members by an outsider: refused.
	outsider := otherEntity(t)
	mixed := resignGPKG(t, "testdata/gpkg/signed/layout-1.0-r1-1.gpkg.tar", outsider, other)
	if err := VerifyGPKGSignatures(mixed, openpgp.EntityList{other}); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("members signed by an outsider: %v", err)
	}
}

// flipInMember flips one byte of a member's data in a copy of file.
func flipInMember(t *testing.T, file, suffix string, at int) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(raw)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no member *%s in %s: %v", suffix, file, err)
		}
		if strings.HasSuffix(hdr.Name, suffix) {
			off := int(r.Size()) - r.Len() // data starts right after the header
			head := make([]byte, 8)
			if _, err := io.ReadFull(tr, head); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw[off:off+8], head) {
				t.Fatal("data offset computation is wrong")
			}
			if at < 0 {
				at += int(hdr.Size)
			}
			raw[off+at] ^= 0x01
			break
		}
	}
	out := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(out, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyGPKGTampered(t *testing.T) {
	kr := fixtureKeyring(t)
	src := "testdata/gpkg/signed/hello-1.0-1.gpkg.tar"
	members := readMembers(t, src)
	find := func(suffix string) int {
		for i, m := range members {
			if strings.HasSuffix(m.name, suffix) {
				return i
			}
		}
		t.Fatalf("no %s", suffix)
		return -1
	}
	edit := func(f func(ms []member) []member) string {
		ms := make([]member, len(members))
		copy(ms, members)
		return writeMembers(t, f(ms))
	}
	otherSig := func() []byte {
		var sig bytes.Buffer
		if err := openpgp.ArmoredDetachSign(&sig, otherEntity(t), bytes.NewReader(members[find("image.tar.zst")].data), nil); err != nil {
			t.Fatal(err)
		}
		return sig.Bytes()
	}
	manifestIdx := find("/Manifest")
	cases := []struct {
		name string
		file string
		want error
	}{
		{"byte flipped in image", flipInMember(t, src, "image.tar.zst", 700), ErrBadPGPSignature},
		{"last byte flipped in image", flipInMember(t, src, "image.tar.zst", -1), ErrBadPGPSignature},
		{"byte flipped in metadata", flipInMember(t, src, "metadata.tar.zst", 100), ErrBadPGPSignature},
		{"Manifest text altered", flipInMember(t, src, "/Manifest", 200), ErrBadPGPSignature},
		{"image signature altered", flipInMember(t, src, "image.tar.zst.sig", 120), ErrBadPGPSignature},
		{"image signature removed", edit(func(ms []member) []member {
			i := find("image.tar.zst.sig")
			return append(ms[:i], ms[i+1:]...)
		}), ErrUnsigned},
		{"all signatures removed, Manifest kept", edit(func(ms []member) []member {
			var out []member
			for _, m := range ms {
				if !strings.HasSuffix(m.name, ".sig") {
					out = append(out, m)
				}
			}
			return out
		}), ErrUnsigned},
		{"Manifest removed", edit(func(ms []member) []member {
			return append(ms[:manifestIdx], ms[manifestIdx+1:]...)
		}), ErrUnsigned},
		{"Manifest clearsignature stripped", edit(func(ms []member) []member {
			b, _ := clearsign.Decode(ms[manifestIdx].data)
			ms[manifestIdx] = member{ms[manifestIdx].name, tar.TypeReg, b.Plaintext}
			return ms
		}), ErrUnsigned},
		{"metadata signature swapped onto image", edit(func(ms []member) []member {
			ms[find("image.tar.zst.sig")] = member{ms[find("image.tar.zst.sig")].name, tar.TypeReg, ms[find("metadata.tar.zst.sig")].data}
			return ms
		}), ErrBadPGPSignature},
		{"image re-signed by an outsider", edit(func(ms []member) []member {
			ms[find("image.tar.zst.sig")] = member{ms[find("image.tar.zst.sig")].name, tar.TypeReg, otherSig()}
			return ms
		}), ErrBadPGPSignature}, // its size and digest no longer match the signed Manifest
		{"extra member", edit(func(ms []member) []member {
			return append(ms, member{"hello-1.0-1/extra", tar.TypeReg, []byte("x")})
		}), ErrMalformedGPKG},
		{"duplicate member", edit(func(ms []member) []member {
			return append(ms, ms[find("image.tar.zst")])
		}), ErrMalformedGPKG},
		{"symlink member", edit(func(ms []member) []member {
			return append(ms, member{"hello-1.0-1/link", tar.TypeSymlink, nil})
		}), ErrMalformedGPKG},
		{"second directory", edit(func(ms []member) []member {
			ms[find("gpkg-1")] = member{"other-1/gpkg-1", tar.TypeReg, nil}
			return ms
		}), ErrMalformedGPKG},
		{"nested path", edit(func(ms []member) []member {
			return append(ms, member{"hello-1.0-1/a/b", tar.TypeReg, nil})
		}), ErrMalformedGPKG},
		{"traversal", edit(func(ms []member) []member {
			return append(ms, member{"../gpkg-1", tar.TypeReg, nil})
		}), ErrMalformedGPKG},
		{"no gpkg-1", edit(func(ms []member) []member {
			i := find("gpkg-1")
			return append(ms[:i], ms[i+1:]...)
		}), ErrMalformedGPKG},
		{"not a tar", func() string {
			f := filepath.Join(t.TempDir(), "x.gpkg.tar")
			_ = os.WriteFile(f, bytes.Repeat([]byte("not a tar "), 100), 0o644)
			return f
		}(), ErrMalformedGPKG},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyGPKGSignatures(tc.file, kr)
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyGPKGSignatures = %v, want %v", err, tc.want)
			}
		})
	}
	if err := VerifyGPKGSignatures(filepath.Join(t.TempDir(), "missing.gpkg.tar"), kr); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestLoadKeyring(t *testing.T) {
	armored := fixtureKeyring(t)
	if len(armored) != 1 || fmt.Sprintf("%X", armored[0].PrimaryKey.Fingerprint) != "B45BBFD7D3DCDD8B67BD55342DB57FD77F58AEB7" {
		t.Fatalf("fixture key: %d entities", len(armored))
	}
	dir := t.TempDir()
	// Binary export of two keys.
	other := otherEntity(t)
	var bin bytes.Buffer
	if err := armored[0].Serialize(&bin); err != nil {
		t.Fatal(err)
	}
	if err := other.Serialize(&bin); err != nil {
		t.Fatal(err)
	}
	binFile := filepath.Join(dir, "keys.gpg")
	if err := os.WriteFile(binFile, bin.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyring(binFile)
	if err != nil || len(kr) != 2 {
		t.Fatalf("binary keyring: %d, %v", len(kr), err)
	}
	if err := VerifyGPKGSignatures(signedFixtures(t)[0], kr); err != nil {
		t.Fatalf("verify with binary keyring: %v", err)
	}
	// Two armored blocks in one file.
	asc, err := os.ReadFile(fixtureKey)
	if err != nil {
		t.Fatal(err)
	}
	var two bytes.Buffer
	two.Write(asc)
	w, err := armorPublicKey(&two, other)
	if err != nil || w != nil {
		t.Fatal(err)
	}
	twoFile := filepath.Join(dir, "two.asc")
	if err := os.WriteFile(twoFile, two.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if kr, err := LoadKeyring(twoFile); err != nil || len(kr) != 2 {
		t.Fatalf("two armored blocks: %d, %v", len(kr), err)
	}
	empty := filepath.Join(dir, "empty.asc")
	_ = os.WriteFile(empty, nil, 0o644)
	for name, path := range map[string]string{"directory": dir, "empty": empty, "missing": filepath.Join(dir, "nope")} {
		if _, err := LoadKeyring(path); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// armorPublicKey appends e's armored public key to w.
func armorPublicKey(w io.Writer, e *openpgp.Entity) (io.Writer, error) {
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.Serialize(aw); err != nil {
		return nil, err
	}
	return nil, aw.Close()
}
