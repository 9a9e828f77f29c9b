package trust

import (
	"archive/tar"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/blake2b"
)

// Limits on the small members of a GPKG; the image is streamed and has no
// cap here (xpak.Limits bounds what is inside it).
const (
	maxGPKGMembers   = 32
	maxManifestSize  = 1 << 20
	maxSignatureSize = 64 << 10
	maxKeyringSize   = 16 << 20
	gpkgVersionFile  = "gpkg-1"
	gpkgManifestFile = "Manifest"
)

// gpkgMember is one member of the outer tar as seen in the first pass.
type gpkgMember struct {
	name string // full name, "<dir>/<base>"
	base string
	size int64
}

// VerifyGPKGSignatures checks a GPKG's OpenPGP signatures the way portage's
// gpkg.py does with binpkg-request-signature, against keyring instead of a
// GnuPG home (being in keyring is the "fully trusted" of gpg):
//
//   - the outer tar holds regular files "<dir>/<name>" only, one common dir,
//     no duplicates, and a gpkg-1 member;
//   - the Manifest is clearsigned by a keyring key; its DATA lines (name,
//     size, SHA512 and/or BLAKE2B) must match every member but itself,
//     exactly once each;
//   - every member except the Manifest, the .sig files and gpkg-1 has a
//     detached "<name>.sig" that verifies over its bytes with a keyring key.
//
// Members are streamed (the image is never held in memory): a first pass
// reads the names, the Manifest and the signatures, a second hashes and
// verifies each member. Errors wrap ErrUnsigned, ErrBadPGPSignature,
// ErrUntrustedKey or ErrMalformedGPKG and name the member.
func VerifyGPKGSignatures(path string, keyring openpgp.EntityList) error {
	if len(keyring) == 0 {
		return fmt.Errorf("%w: %s: empty keyring", ErrUntrustedKey, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("trust: verify gpkg: %w", err)
	}
	defer f.Close()

	members, small, err := scanGPKG(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	manifest, err := verifyManifest(small[gpkgManifestFile], keyring)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// Cross-check names, sizes and signatures before touching the data.
	present := make(map[string]bool, len(members))
	for _, m := range members {
		present[m.base] = true
	}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if m.base == gpkgManifestFile {
			continue
		}
		rec, ok := manifest[m.base]
		if !ok {
			return fmt.Errorf("%s: %w: member %s is not in the Manifest", path, ErrMalformedGPKG, m.name)
		}
		seen[m.base] = true
		if rec.size != m.size {
			return fmt.Errorf("%s: %w: member %s is %d bytes, Manifest says %d", path, ErrBadPGPSignature, m.name, m.size, rec.size)
		}
		if strings.HasSuffix(m.base, ".sig") {
			if signed := strings.TrimSuffix(m.base, ".sig"); !present[signed] || signed == gpkgManifestFile {
				return fmt.Errorf("%s: %w: signature %s has no member to sign", path, ErrMalformedGPKG, m.name)
			}
			continue
		}
		if m.base != gpkgVersionFile {
			if _, ok := small[m.base+".sig"]; !ok {
				return fmt.Errorf("%s: %w: member %s has no detached signature %s.sig", path, ErrUnsigned, m.name, m.base)
			}
		}
	}
	for name := range manifest {
		if !seen[name] {
			return fmt.Errorf("%s: %w: Manifest lists %s, which the container lacks", path, ErrMalformedGPKG, name)
		}
	}

	// Second pass: stream every member through its hashes and signature.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("trust: verify gpkg %s: %w", path, err)
	}
	tr := tar.NewReader(f)
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if i != len(members) {
				return fmt.Errorf("%s: %w: container changed while verifying", path, ErrMalformedGPKG)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w: %v", path, ErrMalformedGPKG, err)
		}
		if i >= len(members) || hdr.Name != members[i].name || hdr.Size != members[i].size {
			return fmt.Errorf("%s: %w: container changed while verifying", path, ErrMalformedGPKG)
		}
		base := members[i].base
		if base == gpkgManifestFile {
			continue
		}
		var sig []byte
		if !strings.HasSuffix(base, ".sig") && base != gpkgVersionFile {
			sig = small[base+".sig"]
		}
		if err := verifyMember(tr, manifest[base], sig, keyring); err != nil {
			return fmt.Errorf("%s: member %s: %w", path, hdr.Name, err)
		}
	}
}

// scanGPKG reads the outer tar once: member list with structure checks, and
// the Manifest and .sig contents (capped), keyed by base name.
func scanGPKG(r io.Reader) ([]gpkgMember, map[string][]byte, error) {
	tr := tar.NewReader(r)
	var members []gpkgMember
	small := make(map[string][]byte)
	names := make(map[string]bool)
	dir := ""
	hasVersion := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: outer tar: %v", ErrMalformedGPKG, err)
		}
		if len(members) == maxGPKGMembers {
			return nil, nil, fmt.Errorf("%w: more than %d members", ErrMalformedGPKG, maxGPKGMembers)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, nil, fmt.Errorf("%w: member %q is not a regular file (type %q)", ErrMalformedGPKG, hdr.Name, hdr.Typeflag)
		}
		d, base, ok := strings.Cut(hdr.Name, "/")
		if !ok || d == "" || base == "" || strings.Contains(base, "/") || d == "." || d == ".." || base == "." || base == ".." {
			return nil, nil, fmt.Errorf("%w: member %q is not <dir>/<name>", ErrMalformedGPKG, hdr.Name)
		}
		if dir == "" {
			dir = d
		} else if d != dir {
			return nil, nil, fmt.Errorf("%w: members in two directories %q and %q", ErrMalformedGPKG, dir, d)
		}
		if names[base] {
			return nil, nil, fmt.Errorf("%w: duplicate member %q", ErrMalformedGPKG, hdr.Name)
		}
		names[base] = true
		if hdr.Size < 0 {
			return nil, nil, fmt.Errorf("%w: member %q has negative size", ErrMalformedGPKG, hdr.Name)
		}
		members = append(members, gpkgMember{name: hdr.Name, base: base, size: hdr.Size})
		switch {
		case base == gpkgVersionFile:
			hasVersion = true
		case base == gpkgManifestFile:
			b, err := readCapped(tr, hdr.Size, maxManifestSize)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: Manifest: %v", ErrMalformedGPKG, err)
			}
			small[base] = b
		case strings.HasSuffix(base, ".sig"):
			b, err := readCapped(tr, hdr.Size, maxSignatureSize)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformedGPKG, hdr.Name, err)
			}
			small[base] = b
		}
	}
	if !hasVersion {
		return nil, nil, fmt.Errorf("%w: no %s member", ErrMalformedGPKG, gpkgVersionFile)
	}
	if _, ok := small[gpkgManifestFile]; !ok {
		return nil, nil, fmt.Errorf("%w: no Manifest", ErrUnsigned)
	}
	return members, small, nil
}

// readCapped reads a member of the given size if it is within limit.
func readCapped(r io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%d bytes, cap %d", size, limit)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// manifestRecord is one DATA line of a GPKG Manifest.
type manifestRecord struct {
	size   int64
	hashes map[string][]byte // "SHA512", "BLAKE2B" -> digest
}

// verifyManifest checks the clearsignature and parses the signed text.
func verifyManifest(data []byte, keyring openpgp.EntityList) (map[string]manifestRecord, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP SIGNED MESSAGE-----")) {
		return nil, fmt.Errorf("%w: Manifest is not clearsigned", ErrUnsigned)
	}
	block, rest := clearsign.Decode(trimmed)
	if block == nil {
		return nil, fmt.Errorf("%w: Manifest clearsignature does not parse", ErrBadPGPSignature)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the Manifest signature", ErrMalformedGPKG)
	}
	if _, err := block.VerifySignature(keyring, &packet.Config{}); err != nil {
		return nil, fmt.Errorf("gpkg Manifest: %w", classifyPGPError(err))
	}
	return parseManifest(block.Plaintext)
}

// parseManifest parses the signed DATA lines: "DATA <name> <size> (<HASH>
// <hex>)…". Every line must be DATA, names unique, sizes decimal, and at
// least one supported hash present.
func parseManifest(text []byte) (map[string]manifestRecord, error) {
	out := make(map[string]manifestRecord)
	for _, line := range strings.Split(string(text), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if fields[0] != "DATA" || len(fields) < 3 || len(fields)%2 != 1 {
			return nil, fmt.Errorf("%w: Manifest line %q: want DATA <name> <size> and <hash> <hex> pairs", ErrMalformedGPKG, line)
		}
		name := fields[1]
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%w: Manifest lists %s twice", ErrMalformedGPKG, name)
		}
		size, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("%w: Manifest size of %s %q", ErrMalformedGPKG, name, fields[2])
		}
		rec := manifestRecord{size: size, hashes: make(map[string][]byte)}
		for i := 3; i < len(fields); i += 2 {
			algo := fields[i]
			if algo != "SHA512" && algo != "BLAKE2B" {
				continue // portage ignores hashes it does not know
			}
			sum, err := hex.DecodeString(strings.ToLower(fields[i+1]))
			if err != nil || len(sum) != 64 {
				return nil, fmt.Errorf("%w: Manifest %s digest of %s", ErrMalformedGPKG, algo, name)
			}
			rec.hashes[algo] = sum
		}
		if len(rec.hashes) == 0 {
			return nil, fmt.Errorf("%w: Manifest gives no SHA512 or BLAKE2B for %s", ErrMalformedGPKG, name)
		}
		out[name] = rec
	}
	return out, nil
}

// verifyMember streams one member through its Manifest hashes and, if sig
// is non-nil, its detached signature.
func verifyMember(r io.Reader, rec manifestRecord, sig []byte, keyring openpgp.EntityList) error {
	hashes := make(map[string]hash.Hash, 2)
	writers := make([]io.Writer, 0, 2)
	for algo := range rec.hashes {
		var h hash.Hash
		if algo == "SHA512" {
			h = sha512.New()
		} else {
			h, _ = blake2b.New512(nil)
		}
		hashes[algo] = h
		writers = append(writers, h)
	}
	data := io.TeeReader(r, io.MultiWriter(writers...))
	if sig != nil {
		sigReader, err := signatureReader(sig)
		if err != nil {
			return err
		}
		if _, err := openpgp.CheckDetachedSignature(keyring, data, sigReader, &packet.Config{}); err != nil {
			return classifyPGPError(err)
		}
	}
	// Hash whatever the signature check did not read (all of it without one).
	if _, err := io.Copy(io.Discard, data); err != nil {
		return fmt.Errorf("%w: read: %v", ErrMalformedGPKG, err)
	}
	for algo, h := range hashes {
		if !bytes.Equal(h.Sum(nil), rec.hashes[algo]) {
			return fmt.Errorf("%w: %s digest differs from the Manifest", ErrBadPGPSignature, algo)
		}
	}
	return nil
}

// signatureReader accepts an armored or binary detached signature.
func signatureReader(sig []byte) (io.Reader, error) {
	if bytes.HasPrefix(bytes.TrimLeft(sig, " \t\r\n"), []byte("-----BEGIN PGP SIGNATURE-----")) {
		block, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return nil, fmt.Errorf("%w: signature armor: %v", ErrBadPGPSignature, err)
		}
		if block.Type != openpgp.SignatureType {
			return nil, fmt.Errorf("%w: armored block is %q, want a signature", ErrBadPGPSignature, block.Type)
		}
		return block.Body, nil
	}
	return bytes.NewReader(sig), nil
}

// classifyPGPError maps go-crypto errors to this package's sentinels.
func classifyPGPError(err error) error {
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return fmt.Errorf("%w: signed by a key outside the keyring", ErrUntrustedKey)
	case errors.Is(err, pgperrors.ErrKeyExpired), errors.Is(err, pgperrors.ErrKeyRevoked):
		return fmt.Errorf("%w: %v", ErrUntrustedKey, err)
	default:
		return fmt.Errorf("%w: %v", ErrBadPGPSignature, err)
	}
}

// LoadKeyring reads OpenPGP public keys from a file, armored (.asc, one or
// more blocks) or binary (a .gpg export). GnuPG homes and keybox files
// (pubring.kbx) are not read: export the keys with gpg --export.
func LoadKeyring(file string) (openpgp.EntityList, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("trust: load keyring: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("trust: load keyring: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("trust: load keyring %s: is a directory; export the keys to a file with gpg --export", file)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyringSize+1))
	if err != nil {
		return nil, fmt.Errorf("trust: load keyring %s: %w", file, err)
	}
	if len(data) > maxKeyringSize {
		return nil, fmt.Errorf("trust: load keyring %s: larger than %d bytes", file, maxKeyringSize)
	}
	var list openpgp.EntityList
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		rest := data
		for {
			start := bytes.Index(rest, []byte("-----BEGIN PGP"))
			if start < 0 {
				break
			}
			block, err := armor.Decode(bytes.NewReader(rest[start:]))
			if err != nil {
				return nil, fmt.Errorf("trust: load keyring %s: armor: %w", file, err)
			}
			if block.Type != openpgp.PublicKeyType && block.Type != openpgp.PrivateKeyType {
				return nil, fmt.Errorf("trust: load keyring %s: armored %q is not a key block", file, block.Type)
			}
			keys, err := openpgp.ReadKeyRing(block.Body)
			if err != nil {
				return nil, fmt.Errorf("trust: load keyring %s: %w", file, err)
			}
			list = append(list, keys...)
			end := bytes.Index(rest[start:], []byte("-----END PGP"))
			if end < 0 {
				break
			}
			rest = rest[start+end+len("-----END PGP"):]
		}
	} else {
		keys, err := openpgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("trust: load keyring %s: %w", file, err)
		}
		list = keys
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("trust: load keyring %s: no keys", file)
	}
	return list, nil
}
