package portagehook

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
)

func testKey(t *testing.T) *openpgp.Entity {
	t.Helper()
	e, err := LoadOrCreateSigningKey(filepath.Join(t.TempDir(), "signing.asc"), "gentoo-p2pd test")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestLoadOrCreateSigningKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.asc")
	a, err := LoadOrCreateSigningKey(path, "gentoo-p2pd on host")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if !bytes.HasPrefix(raw, []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
		t.Errorf("key file is not an armored private key:\n%.80s", raw)
	}
	b, err := LoadOrCreateSigningKey(path, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(a) != Fingerprint(b) {
		t.Fatalf("reloaded key %s, created %s", Fingerprint(b), Fingerprint(a))
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSigningKey(path, "x"); err == nil {
		t.Fatal("a world-readable private key was accepted")
	}
	pub, err := ExportPublic(a)
	if err != nil {
		t.Fatal(err)
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(pub))
	if err != nil || len(el) != 1 || el[0].PrivateKey != nil {
		t.Fatalf("exported public key: %v (%d entities)", err, len(el))
	}
}

// TestLoadSigningKey: loading never creates — a missing key is an error
// wrapping fs.ErrNotExist and leaves no file or directory behind — and an
// existing key loads as LoadOrCreateSigningKey made it.
func TestLoadSigningKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "signing.asc")
	_, err := LoadSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrSigningKey) || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadSigningKey of a missing key = %v, want ErrSigningKey and fs.ErrNotExist naming %s", err, path)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("LoadSigningKey created %v", ents)
	}
	made, err := LoadOrCreateSigningKey(path, "gentoo-p2pd on host")
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(got) != Fingerprint(made) {
		t.Fatalf("loaded %s, created %s", Fingerprint(got), Fingerprint(made))
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigningKey(path); !errors.Is(err, ErrSigningKey) || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("group-readable key: %v", err)
	}
}

func TestSignerVerifiesWithGoCrypto(t *testing.T) {
	e := testKey(t)
	s := NewSigner(e, e.PrimaryKey.CreationTime)
	msg := []byte("image.tar.zst contents\x00\x01")
	var sig bytes.Buffer
	if err := s.DetachSign(&sig, bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	kr := openpgp.EntityList{e}
	if _, err := openpgp.CheckArmoredDetachedSignature(kr, bytes.NewReader(msg), bytes.NewReader(sig.Bytes()), nil); err != nil {
		t.Fatalf("detached signature does not verify: %v", err)
	}
	if _, err := openpgp.CheckArmoredDetachedSignature(kr, bytes.NewReader(append(msg, 'x')), bytes.NewReader(sig.Bytes()), nil); err == nil {
		t.Fatal("signature verifies a different message")
	}
	manifest := []byte("DATA gpkg-1 0 BLAKE2B 00 SHA512 00\n-dash line\n")
	var cs bytes.Buffer
	if err := s.ClearSign(&cs, manifest); err != nil {
		t.Fatal(err)
	}
	b, _ := clearsign.Decode(cs.Bytes())
	if b == nil {
		t.Fatalf("not clearsigned:\n%s", cs.Bytes())
	}
	if !bytes.Equal(b.Plaintext, bytes.TrimSuffix(manifest, []byte("\n"))) && !bytes.Equal(b.Plaintext, manifest) {
		t.Errorf("clearsigned plaintext %q, want %q", b.Plaintext, manifest)
	}
	if _, err := b.VerifySignature(kr, nil); err != nil {
		t.Fatalf("clearsigned Manifest does not verify: %v", err)
	}
	if !strings.Contains(cs.String(), "Hash: SHA512\n") {
		t.Errorf("clearsign header lacks Hash: SHA512:\n%s", cs.String())
	}
}

func TestSignerDeterministic(t *testing.T) {
	e := testKey(t)
	at := time.Now().Add(time.Hour).Truncate(time.Second)
	var a, b bytes.Buffer
	if err := NewSigner(e, at).DetachSign(&a, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if err := NewSigner(e, at).DetachSign(&b, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two signatures of the same data at the same time differ")
	}
	var c, d bytes.Buffer
	if err := NewSigner(e, at).ClearSign(&c, []byte("DATA x\n")); err != nil {
		t.Fatal(err)
	}
	if err := NewSigner(e, at).ClearSign(&d, []byte("DATA x\n")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Bytes(), d.Bytes()) {
		t.Fatal("two clearsignatures of the same text at the same time differ")
	}
}

// gpgHome makes a GNUPGHOME that trusts e ultimately, exactly as
// setup-portage prepares /etc/portage/gnupg. It skips the test when gpg is
// not installed.
func gpgHome(t *testing.T, e *openpgp.Entity) (gpg, home string) {
	t.Helper()
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		t.Fatal("gpg not installed: real-gpg verification needs it (.ci/run installs gnupg)")
	}
	home, err = os.MkdirTemp("", "gnupg-") // short path: gpg-agent socket length
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	pub, err := ExportPublic(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := gpgImport(gpg, home, pub, Fingerprint(e)); err != nil {
		t.Fatal(err)
	}
	return gpg, home
}

// gpgVerify runs gpg the way portage's checksum_helper does and applies its
// rule: GOODSIG plus TRUST_ULTIMATE or TRUST_FULLY in the status output.
func gpgVerify(t *testing.T, gpg, home string, args []string, stdin []byte) []byte {
	t.Helper()
	cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--no-tty", "--no-auto-check-trustdb", "--status-fd", "2", "--verify"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gpg --verify: %v\n%s", err, stderr.String())
	}
	st := stderr.String()
	if !strings.Contains(st, "[GNUPG:] GOODSIG") ||
		!(strings.Contains(st, "[GNUPG:] TRUST_ULTIMATE") || strings.Contains(st, "[GNUPG:] TRUST_FULLY")) {
		t.Fatalf("gpg status lacks GOODSIG + TRUST_ULTIMATE/FULLY (portage would refuse):\n%s", st)
	}
	return stdout.Bytes()
}

func TestSignerVerifiesWithGPG(t *testing.T) {
	e := testKey(t)
	gpg, home := gpgHome(t, e)
	s := NewSigner(e, time.Time{})
	data := []byte("payload bytes\n")
	var sig bytes.Buffer
	if err := s.DetachSign(&sig, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sigPath := filepath.Join(t.TempDir(), "x.sig")
	if err := os.WriteFile(sigPath, sig.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	gpgVerify(t, gpg, home, []string{sigPath, "-"}, data)

	manifest := []byte("DATA gpkg-1 0 BLAKE2B aa SHA512 bb\nDATA image.tar.zst 12 BLAKE2B cc SHA512 dd\n")
	var cs bytes.Buffer
	if err := s.ClearSign(&cs, manifest); err != nil {
		t.Fatal(err)
	}
	out := gpgVerify(t, gpg, home, []string{"--output", "-", "-"}, cs.Bytes())
	if !bytes.Equal(out, manifest) {
		t.Fatalf("gpg recovered Manifest %q, want %q", out, manifest)
	}
}

// TestSignatureLengthFixed: every signature of one key has one length,
// whatever the input (Ed25519 MPIs lose leading zero bytes at random, about
// one signature in 160), so a served file's size is known before its
// content; the length survives a restart (a new signer of the same key);
// and a padded signature still verifies with gpg, as portage runs it.
func TestSignatureLengthFixed(t *testing.T) {
	e := testKey(t)
	s := NewSigner(e, time.Unix(1795234524, 0))
	want := s.SignatureSize()
	if want <= 0 {
		t.Fatalf("SignatureSize %d", want)
	}
	var clearLen int
	var padded []byte
	for i := range 600 {
		var sig bytes.Buffer
		in := []byte(strconv.Itoa(i))
		if err := s.At(time.Unix(1795234524+int64(i%7), 0)).DetachSign(&sig, bytes.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		if int64(sig.Len()) != want {
			t.Fatalf("input %d: signature is %d bytes, SignatureSize %d", i, sig.Len(), want)
		}
		var cs bytes.Buffer
		if err := s.ClearSign(&cs, []byte(fmt.Sprintf("DATA x %06d\n", i))); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			clearLen, padded = cs.Len(), sig.Bytes()
		} else if cs.Len() != clearLen {
			t.Fatalf("text %d: clearsigned %d bytes, first was %d", i, cs.Len(), clearLen)
		}
	}
	if again := NewSigner(e, time.Time{}).SignatureSize(); again != want {
		t.Errorf("a new signer of the same key: SignatureSize %d, was %d", again, want)
	}
	gpg, home := gpgHome(t, e)
	sigPath := filepath.Join(t.TempDir(), "x.sig")
	if err := os.WriteFile(sigPath, padded, 0o644); err != nil {
		t.Fatal(err)
	}
	gpgVerify(t, gpg, home, []string{sigPath, "-"}, []byte("0"))
}

// TestClearSignSize: ClearSignSize, computed, is the length of a real
// ClearSign of Manifest-like texts of many lengths (one to many lines,
// sizes of every width), at several signing times.
func TestClearSignSize(t *testing.T) {
	e := testKey(t)
	s := NewSigner(e, time.Unix(1795234524, 0))
	zeros := strings.Repeat("0", 128)
	for i, sizes := range [][]int64{{0}, {1, 2}, {512, 1024, 99999, 7}, {1 << 40, 3, 123456789012, 42}, {5, 5, 5, 5, 5, 5, 5, 5}} {
		var text bytes.Buffer
		for j, n := range sizes {
			fmt.Fprintf(&text, "DATA member-%d.tar %d BLAKE2B %s SHA512 %s\n", j, n, zeros, zeros)
		}
		var out bytes.Buffer
		if err := s.At(time.Unix(1795234524+int64(i)*3601, 0)).ClearSign(&out, text.Bytes()); err != nil {
			t.Fatal(err)
		}
		if got := s.ClearSignSize(text.Len()); got != int64(out.Len()) {
			t.Errorf("text of %d bytes: ClearSignSize %d, ClearSign wrote %d", text.Len(), got, out.Len())
		}
	}
}
