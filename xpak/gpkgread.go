package xpak

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/blake2b"
)

// Bounds on the small GPKG members held in memory.
const (
	maxManifestBytes  = 1 << 20
	maxSignatureBytes = 64 << 10
	// metadataTarOverhead allows for tar headers around the metadata
	// values when bounding the decoded metadata.tar.
	metadataTarOverhead = 4 << 20
)

// gpkgExtensions are the payload name suffixes GLEP 78 / portage use. The
// suffix only decides whether a member is known; its compression is read
// from its magic bytes.
var gpkgExtensions = []string{"", ".gz", ".bz2", ".xz", ".zst", ".lz4", ".lz", ".lzo"}

type memberKind int

const (
	memberUnknown memberKind = iota
	memberVersion
	memberMetadata
	memberImage
	memberSignature
	memberManifest
)

// classifyMember tells what a GPKG member's base name is.
func classifyMember(base string) memberKind {
	switch base {
	case "gpkg-1":
		return memberVersion
	case "Manifest":
		return memberManifest
	}
	payload := base
	sig := false
	if s, ok := strings.CutSuffix(base, ".sig"); ok {
		payload, sig = s, true
	}
	for _, stem := range []string{"metadata.tar", "image.tar"} {
		ext, ok := strings.CutPrefix(payload, stem)
		if !ok {
			continue
		}
		for _, e := range gpkgExtensions {
			if ext != e {
				continue
			}
			switch {
			case sig:
				return memberSignature
			case stem == "image.tar":
				return memberImage
			default:
				return memberMetadata
			}
		}
	}
	return memberUnknown
}

// memberSum is the size and Manifest hashes of one member's bytes. For a
// large member the hashing runs in its own goroutine (startAsync): BLAKE2B
// and SHA512 together cost more than decompressing zstd, and would
// otherwise make the decoding goroutine the bottleneck.
type memberSum struct {
	name    string
	size    int64
	blake2b hash.Hash
	sha512  hash.Hash
	ch      chan []byte // chunks for the hashing goroutine; nil when synchronous
	done    chan struct{}
}

func newMemberSum(name string) *memberSum {
	b, _ := blake2b.New512(nil) // nil key: cannot fail
	return &memberSum{name: name, blake2b: b, sha512: sha512.New()}
}

func (m *memberSum) Write(p []byte) (int, error) {
	m.size += int64(len(p))
	if m.ch == nil {
		m.blake2b.Write(p)
		m.sha512.Write(p)
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		bp := getBuf()
		b := (*bp)[:copy(*bp, p)]
		p = p[len(b):]
		m.ch <- b
	}
	return n, nil
}

func (m *memberSum) startAsync() {
	m.ch = make(chan []byte, asyncBuffers)
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		for b := range m.ch {
			m.blake2b.Write(b)
			m.sha512.Write(b)
			putBuf(&b)
		}
	}()
}

// finish waits for the hashing goroutine; the sums are final afterwards.
// Safe to call more than once.
func (m *memberSum) finish() {
	if m.ch != nil {
		close(m.ch)
		<-m.done
		m.ch = nil
	}
}

// readGPKG reads a GLEP 78 package: an outer tar of <dir>/gpkg-1 (first),
// <dir>/metadata.tar[.ext], <dir>/image.tar[.ext], optional .sig members
// and <dir>/Manifest. Every member except the Manifest is hashed while it
// streams past; the Manifest (written last by portage) is checked against
// those hashes at the end, so the file is read once.
func readGPKG(r io.ReaderAt, size int64, lim Limits, t Taps) (*Package, error) {
	fs := newFileStream(r, size, t.File)
	defer fs.release()
	ts := &tarStream{r: fs.br}
	tr := tar.NewReader(ts)
	p := &Package{Format: FormatGPKG, Size: size}
	var (
		dir                        string
		sums                       []*memberSum
		seen                       = make(map[string]bool)
		haveMeta, haveImage, first = false, false, true
		manifestRaw                []byte
		haveManifest               bool
	)
	defer func() {
		for _, s := range sums {
			s.finish() // never leave a hashing goroutine behind
		}
	}()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// A container cut after its last member's data (in its
			// padding, or before the end marker) is still cut short.
			if err := ts.end(); err != nil {
				return nil, fmt.Errorf("gpkg container: %w", err)
			}
			break
		}
		if err != nil {
			return nil, fs.containerError(err)
		}
		if first {
			d, base, _ := strings.Cut(hdr.Name, "/")
			if base != "gpkg-1" || d == "" || d == "." || d == ".." || hdr.Typeflag != tar.TypeReg {
				// A tar, but not a GPKG: both sentinels apply.
				return nil, fmt.Errorf("%w: %w: first member is %q, not <dir>/gpkg-1", ErrUnknownFormat, ErrBadGPKG, hdr.Name)
			}
		}
		d, base, ok := strings.Cut(hdr.Name, "/")
		if !ok || d == "" || base == "" || strings.Contains(base, "/") || d == "." || d == ".." {
			return nil, fmt.Errorf("%w: member %q is not <dir>/<name>", ErrBadGPKG, hdr.Name)
		}
		isFirst := first
		if first {
			dir, first = d, false
		} else if d != dir {
			return nil, fmt.Errorf("%w: member %q is outside %s/", ErrBadGPKG, hdr.Name, dir)
		}
		if seen[base] {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, hdr.Name)
		}
		seen[base] = true
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: member %q has tar type %q, not a regular file", ErrBadGPKG, hdr.Name, hdr.Typeflag)
		}
		if isSparse(hdr) {
			// Its holes would be read as zeros the file never stored:
			// a few hundred bytes would buy hashing and decoding up to
			// MaxImageBytes (53 s for a 3 KiB file, before this check).
			return nil, fmt.Errorf("%w: member %q is a sparse file", ErrBadGPKG, hdr.Name)
		}
		member := &memberReader{tr: tr, fs: fs}
		kind := classifyMember(base)
		switch kind {
		case memberUnknown:
			return nil, fmt.Errorf("%w: %q", ErrUnknownMember, hdr.Name)
		case memberMetadata:
			if haveMeta {
				return nil, fmt.Errorf("%w: second metadata member %q", ErrDuplicateMember, hdr.Name)
			}
			haveMeta = true
		case memberImage:
			if haveImage {
				return nil, fmt.Errorf("%w: second image member %q", ErrDuplicateMember, hdr.Name)
			}
			haveImage = true
		case memberVersion:
			if !isFirst {
				return nil, fmt.Errorf("%w: %q is not the first member", ErrBadGPKG, hdr.Name)
			}
		case memberManifest:
			if hdr.Size > maxManifestBytes {
				return nil, fmt.Errorf("%w: Manifest of %d bytes", ErrTooLarge, hdr.Size)
			}
			if manifestRaw, err = readExactly(member, hdr.Size, "Manifest"); err != nil {
				return nil, err
			}
			haveManifest = true
			continue
		}
		sum := newMemberSum(base)
		sums = append(sums, sum)
		if hdr.Size >= asyncThreshold {
			sum.startAsync()
		}
		body := io.TeeReader(member, sum)
		switch kind {
		case memberMetadata:
			if p.Metadata, err = readMetadataTar(body, lim); err != nil {
				return nil, fmt.Errorf("member %q: %w", hdr.Name, err)
			}
		case memberImage:
			pbr := bufio.NewReaderSize(body, 64<<10)
			c, err := peekForDecoder(pbr)
			if err != nil {
				return nil, fmt.Errorf("member %q: %w", hdr.Name, err)
			}
			p.Compression = c
			// The metadata is complete here when its member came first:
			// it passed every check of readMetadataTar, and its values'
			// sizes are checked against lim again at the end.
			res, err := digestImageStream(pbr, c, FormatGPKG, lim, t.imageFunc(p.Metadata), hdr.Size >= asyncThreshold)
			if err != nil {
				return nil, fmt.Errorf("member %q: %w", hdr.Name, err)
			}
			p.ImageDigest, p.ImageEntries, p.ImageTarSize, p.ServedOrder = res.digest, res.entries, res.tarSize, res.ordered
			body = pbr
		case memberSignature:
			if hdr.Size > maxSignatureBytes {
				return nil, fmt.Errorf("%w: signature %q of %d bytes", ErrTooLarge, hdr.Name, hdr.Size)
			}
			sig, err := readExactly(body, hdr.Size, hdr.Name)
			if err != nil {
				return nil, err
			}
			if p.Signatures == nil {
				p.Signatures = make(map[string][]byte)
			}
			p.Signatures[base] = sig
		}
		// Whatever the parser left (padding after a compressed stream)
		// still belongs to the member's Manifest hashes.
		if _, err := io.Copy(io.Discard, body); err != nil {
			return nil, fmt.Errorf("member %q: %w", hdr.Name, err)
		}
	}
	if first {
		return nil, fmt.Errorf("%w: empty tar", ErrBadGPKG)
	}
	var err error
	if p.FileSHA256, err = fs.finish(size); err != nil {
		return nil, err
	}
	switch {
	case !haveMeta:
		return nil, fmt.Errorf("%w: %s/metadata.tar*", ErrMissingMember, dir)
	case !haveImage:
		return nil, fmt.Errorf("%w: %s/image.tar*", ErrMissingMember, dir)
	case !haveManifest:
		return nil, fmt.Errorf("%w: %s/Manifest", ErrMissingMember, dir)
	}
	for name := range p.Signatures {
		if !seen[strings.TrimSuffix(name, ".sig")] {
			return nil, fmt.Errorf("%w: signature %s/%s for an absent member", ErrUnknownMember, dir, name)
		}
	}
	for _, s := range sums {
		s.finish()
	}
	signed, err := verifyManifest(manifestRaw, dir, sums)
	if err != nil {
		return nil, err
	}
	p.Manifest = manifestRaw
	p.Signed = signed && len(p.Signatures) >= 2
	if err := checkMetadata(p.Metadata, lim, t.Environment); err != nil {
		return nil, err
	}
	return p, nil
}

// containerError classifies an error of the outer tar: its end inside a
// header or member is truncation, a failure of the file underneath is
// returned as it is, and anything else archive/tar refuses is a broken
// container.
func (fs *fileStream) containerError(err error) error {
	switch {
	case hasSentinel(err):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF:
		return fmt.Errorf("%w: gpkg container ends early", ErrTruncated)
	case fs.ioErr != nil && errors.Is(err, fs.ioErr):
		return fmt.Errorf("gpkg container: %w", err)
	}
	return fmt.Errorf("%w: %v", ErrBadGPKG, err)
}

// memberReader reads one member's bytes from the outer tar and classifies
// the outer tar's errors where they happen, so that every parser above it
// (payload decoders, readExactly, the Manifest hashes) sees a container
// that ends early as ErrTruncated rather than a bare io.ErrUnexpectedEOF.
type memberReader struct {
	tr *tar.Reader
	fs *fileStream
}

func (m *memberReader) Read(p []byte) (int, error) {
	n, err := m.tr.Read(p)
	if err != nil && err != io.EOF {
		err = m.fs.containerError(err)
	}
	return n, err
}

// readMetadataTar decodes metadata.tar[.ext]: one regular file
// metadata/KEY per key.
func readMetadataTar(r io.Reader, lim Limits) (*Metadata, error) {
	pbr := bufio.NewReaderSize(r, 64<<10)
	c, err := peekForDecoder(pbr)
	if err != nil {
		return nil, err
	}
	bound := lim.MaxMetadataBytes + metadataTarOverhead
	dec, err := openPayload(pbr, c, "metadata tar", bound, lim)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	ts := &tarStream{r: dec}
	tr := tar.NewReader(ts)
	m := &Metadata{values: make(map[string][]byte)}
	var total int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if err := ts.end(); err != nil {
				return nil, streamError("metadata tar", err)
			}
			break
		}
		if err != nil {
			return nil, streamError("metadata tar", err)
		}
		if hdr.Typeflag == tar.TypeDir && strings.TrimSuffix(hdr.Name, "/") == "metadata" {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: metadata entry %q has tar type %q", ErrBadMetadata, hdr.Name, hdr.Typeflag)
		}
		if isSparse(hdr) {
			return nil, fmt.Errorf("%w: metadata entry %q is a sparse file", ErrBadMetadata, hdr.Name)
		}
		key, ok := strings.CutPrefix(hdr.Name, "metadata/")
		if !ok {
			return nil, fmt.Errorf("%w: metadata entry %q is outside metadata/", ErrBadMetadata, hdr.Name)
		}
		if err := checkKey(key); err != nil {
			return nil, err
		}
		if hdr.Size > lim.MaxMetadataValue {
			return nil, fmt.Errorf("%w: key %q is %d bytes (limit %d)", ErrTooLarge, key, hdr.Size, lim.MaxMetadataValue)
		}
		total += hdr.Size
		if total > lim.MaxMetadataBytes {
			return nil, fmt.Errorf("%w: metadata exceeds %d bytes", ErrTooLarge, lim.MaxMetadataBytes)
		}
		if _, dup := m.values[key]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrBadMetadata, key)
		}
		v, err := readExactly(tr, hdr.Size, "metadata/"+key)
		if err != nil {
			return nil, streamError("metadata tar", err)
		}
		m.values[key] = v
	}
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return nil, streamError("metadata tar", err)
	}
	return m, nil
}

// manifestEntry is one DATA line.
type manifestEntry struct {
	size    int64
	hashes  map[string][]byte
	present bool
}

const (
	pgpSignedHeader = "-----BEGIN PGP SIGNED MESSAGE-----"
	pgpSigBegin     = "-----BEGIN PGP SIGNATURE-----"
	pgpSigEnd       = "-----END PGP SIGNATURE-----"
)

// manifestText returns the text a Manifest vouches for: the whole file,
// or the signed part of an OpenPGP clearsigned one (RFC 4880 §7, dash
// escapes removed). Nothing outside the signed part is ever parsed.
func manifestText(raw []byte) (lines []string, signed bool, err error) {
	all := strings.Split(string(raw), "\n")
	for i := range all {
		all[i] = strings.TrimSuffix(all[i], "\r")
	}
	if len(all) == 0 || all[0] != pgpSignedHeader {
		if bytes.Contains(raw, []byte("-----BEGIN PGP")) {
			return nil, false, fmt.Errorf("%w: OpenPGP block not at the start", ErrBadManifest)
		}
		return all, false, nil
	}
	i := 1
	for i < len(all) && strings.TrimSpace(all[i]) != "" { // armor headers (Hash: …)
		i++
	}
	i++
	var text []string
	for ; i < len(all); i++ {
		if all[i] == pgpSigBegin {
			break
		}
		text = append(text, strings.TrimPrefix(all[i], "- "))
	}
	if i >= len(all) {
		return nil, false, fmt.Errorf("%w: clearsigned Manifest without a signature block", ErrBadManifest)
	}
	end := -1
	for j := i; j < len(all); j++ {
		if all[j] == pgpSigEnd {
			end = j
			break
		}
	}
	if end < 0 {
		return nil, false, fmt.Errorf("%w: unterminated signature block", ErrBadManifest)
	}
	for _, l := range all[end+1:] {
		if strings.TrimSpace(l) != "" {
			return nil, false, fmt.Errorf("%w: text after the signature block", ErrBadManifest)
		}
	}
	return text, true, nil
}

// knownHashes are the Manifest hashes this package checks, with their
// digest length; portage writes both.
var knownHashes = map[string]int{"BLAKE2B": blake2b.Size, "SHA512": sha512.Size}

// parseManifest reads DATA lines: "DATA <name> <size> (<HASH> <hex>)*",
// hash pairs in any order.
func parseManifest(lines []string) (map[string]*manifestEntry, error) {
	entries := make(map[string]*manifestEntry)
	for n, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] != "DATA" || len(f) < 3 || (len(f)-3)%2 != 0 {
			return nil, fmt.Errorf("%w: line %d: %q", ErrBadManifest, n+1, line)
		}
		name := f[1]
		if _, dup := entries[name]; dup {
			return nil, fmt.Errorf("%w: %q listed twice", ErrBadManifest, name)
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("%w: %q: bad size %q", ErrBadManifest, name, f[2])
		}
		e := &manifestEntry{size: size, hashes: make(map[string][]byte)}
		for i := 3; i < len(f); i += 2 {
			algo := f[i]
			if _, dup := e.hashes[algo]; dup {
				return nil, fmt.Errorf("%w: %q: %s given twice", ErrBadManifest, name, algo)
			}
			want, known := knownHashes[algo]
			if !known {
				e.hashes[algo] = nil // unknown algorithm: recorded, not checked
				continue
			}
			sum, err := hex.DecodeString(f[i+1])
			if err != nil || len(sum) != want {
				return nil, fmt.Errorf("%w: %q: bad %s value", ErrBadManifest, name, algo)
			}
			e.hashes[algo] = sum
		}
		if e.hashes["BLAKE2B"] == nil && e.hashes["SHA512"] == nil {
			return nil, fmt.Errorf("%w: %q has neither BLAKE2B nor SHA512", ErrBadManifest, name)
		}
		entries[name] = e
	}
	return entries, nil
}

// verifyManifest checks every member against its DATA line and every DATA
// line against a member.
func verifyManifest(raw []byte, dir string, sums []*memberSum) (signed bool, err error) {
	lines, signed, err := manifestText(raw)
	if err != nil {
		return false, err
	}
	entries, err := parseManifest(lines)
	if err != nil {
		return false, err
	}
	for _, s := range sums {
		e, ok := entries[s.name]
		if !ok {
			return false, fmt.Errorf("%w: %s/%s", ErrNotInManifest, dir, s.name)
		}
		e.present = true
		if e.size != s.size {
			return false, fmt.Errorf("%w: %s/%s is %d bytes, Manifest says %d", ErrManifestMismatch, dir, s.name, s.size, e.size)
		}
		// In a fixed order, so one file always fails with one message.
		for _, c := range []struct {
			algo string
			h    hash.Hash
		}{{"BLAKE2B", s.blake2b}, {"SHA512", s.sha512}} {
			algo, h := c.algo, c.h
			want := e.hashes[algo]
			if want != nil && !bytes.Equal(h.Sum(nil), want) {
				return false, fmt.Errorf("%w: %s/%s %s differs", ErrManifestMismatch, dir, s.name, algo)
			}
		}
	}
	for name, e := range entries {
		if !e.present {
			return false, fmt.Errorf("%w: Manifest lists %s/%s", ErrMissingMember, dir, name)
		}
	}
	return signed, nil
}
