package portagehook

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// ErrSigningKey reports a signing key file that cannot be used.
var ErrSigningKey = errors.New("portagehook: signing key")

// LoadSigningKey reads the daemon's signing key from path and never
// creates one: commands that only need the key (setup-portage, a dry run,
// a sudo run with the daemon down) must not leave a fresh key and state
// directory behind that the daemon never uses. A missing file is an error
// wrapping both ErrSigningKey and fs.ErrNotExist.
func LoadSigningKey(path string) (*openpgp.Entity, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist: %w", ErrSigningKey, path, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("%w: %v", ErrSigningKey, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by others (mode %o): want 0600", ErrSigningKey, path, fi.Mode().Perm())
	}
	el, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSigningKey, path, err)
	}
	if len(el) != 1 || el[0].PrivateKey == nil || el[0].PrivateKey.Encrypted {
		return nil, fmt.Errorf("%w: %s: want exactly one unencrypted private key", ErrSigningKey, path)
	}
	return el[0], nil
}

// LoadOrCreateSigningKey returns the daemon's OpenPGP signing key, stored
// armored and unencrypted at path (mode 0600), creating an Ed25519 key with
// user id name on first use. Portage verifies the GPKGs the gateway serves
// against this key (setup-portage imports its public half), so it must
// survive restarts.
func LoadOrCreateSigningKey(path string, name string) (*openpgp.Entity, error) {
	e, err := LoadSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return e, err
	}
	cfg := &packet.Config{
		Algorithm:     packet.PubKeyAlgoEdDSA, // v4 Ed25519: gpg 2.2 verifies it
		DefaultHash:   crypto.SHA512,
		DefaultCipher: packet.CipherAES256,
	}
	e, err = openpgp.NewEntity(name, "gentoo-p2pd binhost gateway", "", cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: generate: %v", ErrSigningKey, err)
	}
	var buf bytes.Buffer
	aw, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.SerializePrivateWithoutSigning(aw, cfg); err != nil {
		return nil, fmt.Errorf("%w: serialize: %v", ErrSigningKey, err)
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	if err := writeFileAtomic(path, buf.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSigningKey, err)
	}
	return e, nil
}

// ExportPublic returns the armored public key, the form `gpg --import`
// takes and setup-portage installs into /etc/portage/gnupg.
func ExportPublic(e *openpgp.Entity) ([]byte, error) {
	var buf bytes.Buffer
	aw, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.Serialize(aw); err != nil {
		return nil, fmt.Errorf("%w: export: %v", ErrSigningKey, err)
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Fingerprint returns the key's fingerprint as gpg prints it (upper-case
// hex), the form ownertrust lines use.
func Fingerprint(e *openpgp.Entity) string {
	return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
}

// OpenPGPSigner signs GPKG members with the daemon's key the way portage's
// FEATURES=binpkg-signing does with gpg: armored detached signatures and a
// clearsigned Manifest, SHA-512. Every signature it writes has one length
// for its key (an armor Comment header pads it), so the size of a served
// file is known before its content is (xpak.SizedSigner). It implements
// xpak.Signer.
type OpenPGPSigner struct {
	entity *openpgp.Entity
	at     time.Time
	sizes  *signatureSizes
}

var _ xpak.SizedSigner = (*OpenPGPSigner)(nil)

// signatureSizes are the fixed lengths of one key's signature blocks,
// measured once per key from a deterministic sample.
type signatureSizes struct {
	once             sync.Once
	err              error
	detached, inline int // armored signature block lengths, padding included
	// clearBase is what ClearSign adds to a Manifest-like text: the
	// armor header, and the padded signature block.
	clearBase int
}

// sigPad is how far past the sample's length a block is padded: room for
// 8 more signature bytes (MPIs lose leading zero bytes at random) and a
// Comment header line.
const sigPad = 24

// NewSigner returns a signer whose signatures carry creation time at, so a
// re-pack of the same content is byte-identical (Ed25519 signatures are
// deterministic; no random salt notation is added). A zero at means "now".
// Times before the key's creation are raised to it: gpg refuses signatures
// older than their key.
func NewSigner(e *openpgp.Entity, at time.Time) *OpenPGPSigner {
	if !at.IsZero() && at.Before(e.PrimaryKey.CreationTime) {
		at = e.PrimaryKey.CreationTime
	}
	return &OpenPGPSigner{entity: e, at: at, sizes: &signatureSizes{}}
}

// At returns a copy of s that signs with creation time t.
func (s *OpenPGPSigner) At(t time.Time) *OpenPGPSigner {
	c := NewSigner(s.entity, t)
	c.sizes = s.sizes
	return c
}

func (s *OpenPGPSigner) config() *packet.Config {
	deterministic := false
	cfg := &packet.Config{
		DefaultHash:                           crypto.SHA512,
		NonDeterministicSignaturesViaNotation: &deterministic,
	}
	if !s.at.IsZero() {
		at := s.at
		cfg.Time = func() time.Time { return at }
	}
	return cfg
}

// measure fixes the padded lengths from signatures of fixed inputs at the
// key's creation time: deterministic, so the lengths (and every predicted
// file size) are the same after a restart.
func (s *OpenPGPSigner) measure() (*signatureSizes, error) {
	z := s.sizes
	z.once.Do(func() {
		sample := &OpenPGPSigner{entity: s.entity, at: s.entity.PrimaryKey.CreationTime}
		var d, c bytes.Buffer
		if z.err = openpgp.ArmoredDetachSign(&d, sample.entity, bytes.NewReader(nil), sample.config()); z.err != nil {
			return
		}
		if z.err = sample.clearSign(&c, []byte("gentoo-p2pd")); z.err != nil {
			return
		}
		block, err := signatureBlock(c.Bytes())
		if err != nil {
			z.err = err
			return
		}
		z.detached, z.inline = d.Len()+sigPad, len(block)+sigPad
		// A Manifest-like text is copied as it is, with its last line
		// break before the (padded) signature block: its ClearSign
		// output is a constant longer than it.
		// (ClearSign writes the message up to the signature block, the
		// block padded to z.inline, and a line break.)
		text := []byte("DATA metadata.tar 1 BLAKE2B 0 SHA512 0\n")
		var m bytes.Buffer
		if z.err = sample.clearSign(&m, text); z.err != nil {
			return
		}
		if block, z.err = signatureBlock(m.Bytes()); z.err != nil {
			return
		}
		z.clearBase = m.Len() - len(block) + z.inline + 1 - len(text)
	})
	return z, z.err
}

// ClearSignSize is the length of ClearSign's output for a text of textLen
// bytes that ends with a line break, has no line starting with '-' (which
// would be dash-escaped) and no trailing white space: a GPKG Manifest.
// Computed from the measured sample, not signed: a Packages index of
// thousands of builds predicts every SIZE from it.
func (s *OpenPGPSigner) ClearSignSize(textLen int) int64 {
	z, err := s.measure()
	if err != nil {
		return 0 // ClearSign reports the error
	}
	return int64(z.clearBase + textLen)
}

// SignatureSize is the length of every DetachSign output.
func (s *OpenPGPSigner) SignatureSize() int64 {
	z, err := s.measure()
	if err != nil {
		return 0 // DetachSign reports the error
	}
	return int64(z.detached) + 1 // the line break after the armor
}

// DetachSign writes an armored detached binary signature of r, padded to
// SignatureSize.
func (s *OpenPGPSigner) DetachSign(w io.Writer, r io.Reader) error {
	z, err := s.measure()
	if err != nil {
		return fmt.Errorf("portagehook: detached signature: %w", err)
	}
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, s.entity, r, s.config()); err != nil {
		return fmt.Errorf("portagehook: detached signature: %w", err)
	}
	padded, err := padSignature(buf.Bytes(), z.detached)
	if err != nil {
		return err
	}
	if _, err := w.Write(padded); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// ClearSign writes text clearsigned, as gpg --clear-sign does, its
// signature block padded to one length for this key.
func (s *OpenPGPSigner) ClearSign(w io.Writer, text []byte) error {
	z, err := s.measure()
	if err != nil {
		return fmt.Errorf("portagehook: clearsign: %w", err)
	}
	var buf bytes.Buffer
	if err := s.clearSign(&buf, text); err != nil {
		return err
	}
	block, err := signatureBlock(buf.Bytes())
	if err != nil {
		return err
	}
	padded, err := padSignature(block, z.inline)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf.Bytes()[:buf.Len()-len(block)]); err != nil {
		return err
	}
	if _, err := w.Write(padded); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

func (s *OpenPGPSigner) clearSign(w io.Writer, text []byte) error {
	cfg := s.config()
	key, ok := s.entity.SigningKey(cfg.Now())
	if !ok || key.PrivateKey == nil {
		return fmt.Errorf("%w: no usable signing key", ErrSigningKey)
	}
	cw, err := clearsign.Encode(w, key.PrivateKey, cfg)
	if err != nil {
		return fmt.Errorf("portagehook: clearsign: %w", err)
	}
	// gpg does not sign the line break that ends the text (it separates
	// the text from the armor); go-crypto would sign an empty last line.
	if _, err := cw.Write(bytes.TrimSuffix(text, []byte("\n"))); err != nil {
		return fmt.Errorf("portagehook: clearsign: %w", err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("portagehook: clearsign: %w", err)
	}
	return nil
}

const sigBegin = "-----BEGIN PGP SIGNATURE-----\n"

// signatureBlock returns the armored signature block that ends a
// clearsigned message.
func signatureBlock(msg []byte) ([]byte, error) {
	i := bytes.LastIndex(msg, []byte(sigBegin))
	if i < 0 {
		return nil, fmt.Errorf("portagehook: clearsign: no signature block")
	}
	return msg[i:], nil
}

// padSignature inserts an armor "Comment:" header (which gpg ignores and
// no signature covers) into an armored signature block so it is exactly
// target bytes long.
func padSignature(block []byte, target int) ([]byte, error) {
	const line = "Comment: \n"
	k := target - len(block) - len(line)
	if k < 1 || !bytes.HasPrefix(block, []byte(sigBegin)) {
		return nil, fmt.Errorf("portagehook: signature block of %d bytes does not fit the fixed length %d", len(block), target)
	}
	out := make([]byte, 0, target)
	out = append(out, sigBegin...)
	out = append(out, "Comment: "...)
	out = append(out, bytes.Repeat([]byte("."), k)...)
	out = append(out, '\n')
	out = append(out, block[len(sigBegin):]...)
	return out, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, fsynced and renamed, so a crash never leaves half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		_ = f.Close() // the deferred Remove discards it; err is the one to report
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
