package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// AttestationVersion is the attestation payload version this build
// writes. Version 2 added Served; version 1 records (no served form) are
// still accepted and count as votes, but a gateway cannot list their
// builds before it has them.
const AttestationVersion = 2

// minAttestationVersion is the oldest payload version accepted.
const minAttestationVersion = 1

// AttestationDomain prefixes the payload before signing, so a signature over
// an attestation can never be replayed as a signature over anything else a
// peer key signs (libp2p records, other protocols).
const AttestationDomain = "gentoo-p2p attestation v1\x00"

// Size caps: decoding reads at most this much, so a hostile peer cannot make
// us parse megabytes of JSON per record.
const (
	// MaxPayloadSize caps the attestation JSON (descriptors are a few KiB).
	MaxPayloadSize = 48 << 10
	// MaxSignedSize caps the whole signed envelope (base64 payload plus key
	// and signature).
	MaxSignedSize = 64 << 10
)

// Container formats an attestation may name.
const (
	FormatGPKG = "gpkg"
	FormatXPAK = "xpak"
)

// Builder records the toolchain an attester used. Portage is informational;
// the rest is the build environment that changes the bytes of honest
// builds (Builder.Class), so votes are compared only between compatible
// environments (Builder.Compatible): a
// gcc-13 build and a gcc-14 build of one build key are two builds, not a
// dispute. Fields after GCC are omitted from the wire form when empty, so
// attestations signed before they existed keep their canonical form.
type Builder struct {
	// Portage is the portage version (e.g. "3.0.82").
	Portage string `json:"portage"`
	// GCC is the compiler version (e.g. "12.2.0").
	GCC string `json:"gcc"`
	// Binutils is the assembler and linker version (e.g. "2.42").
	Binutils string `json:"binutils,omitempty"`
	// Libc is the C library the build compiled against (e.g. "glibc-2.40").
	Libc string `json:"libc,omitempty"`
	// BuildDir is portage's build prefix, PORTAGE_TMPDIR/portage (e.g.
	// "/var/tmp/portage"), stated only when the build's files contain it:
	// real packages compile it into their binaries
	// (__FILE__ in assert messages, libtool .la files), so two honest
	// builds in different directories differ.
	BuildDir string `json:"build_dir,omitempty"`
}

// Class is the part of the build environment that decides the bytes of a
// reproducible build: compiler, binutils, C library and build directory.
// "" when the attester stated none of them. Votes are compared by
// Builder.Compatible, where a field one side did not state matches any.
func (b Builder) Class() string {
	var parts []string
	if b.GCC != "" {
		parts = append(parts, "gcc "+b.GCC)
	}
	if b.Binutils != "" {
		parts = append(parts, "binutils "+b.Binutils)
	}
	if b.Libc != "" {
		parts = append(parts, b.Libc)
	}
	if b.BuildDir != "" {
		parts = append(parts, "built in "+b.BuildDir)
	}
	return strings.Join(parts, ", ")
}

// Compatible reports whether two attesters may have built in the same
// environment: every field the same, or not stated by one of them (an
// older daemon, or a toolchain upgraded since the build, states less).
func (b Builder) Compatible(o Builder) bool {
	same := func(x, y string) bool { return x == y || x == "" || y == "" }
	return same(b.GCC, o.GCC) && same(b.Binutils, o.Binutils) && same(b.Libc, o.Libc) && same(b.BuildDir, o.BuildDir)
}

// Attestation is one peer's claim: "I built build key BuildKey and got
// content Content; the container I hold has this SHA-256, size and piece
// root". It is only meaningful inside a Signed envelope.
type Attestation struct {
	// Version is AttestationVersion.
	Version int
	// BuildKey is the build key (the DHT key), its canonical CID string.
	BuildKey keys.Build
	// VariantKey is the coarser variant key, its canonical CID string.
	VariantKey keys.Variant
	// CPV is category/package-version, used for per-package policy overrides.
	CPV string
	// Platform names the gossip platform (CHOST and flags) the build is for.
	Platform string
	// Descriptor is the build descriptor's canonical JSON as identity writes
	// it; opaque here, checked against BuildKey by Bind.
	Descriptor json.RawMessage
	// Index holds the Packages index fields of the build (DEPEND, RDEPEND,
	// SLOT, USE, …) so the gateway can list a build before fetching it.
	// They are the attester's claim and are NOT covered by Content: the
	// gateway must take them from a counted attester of the allowed content
	// and portage only ever receives metadata re-derived from the fetched,
	// digest-checked package. Keys are metadata key names, values one line.
	Index map[string]string
	// Content is the voted-on content id (image and metadata digests).
	Content ContentID
	// FileSHA256 is the SHA-256 of the container file the attester serves.
	FileSHA256 [32]byte
	// Size is the container file size in bytes.
	Size int64
	// PieceRoot is the Merkle root of the container's pieces, so fetches can
	// verify each piece before the whole file is in.
	PieceRoot [32]byte
	// PieceSize is the piece size the root was computed with.
	PieceSize int64
	// Format is FormatGPKG or FormatXPAK.
	Format string
	// Builder is the toolchain that produced the build.
	Builder Builder
	// Time is when the attestation was made, UTC, whole seconds.
	Time time.Time
	// Served are the tar sizes of the build's served form (docs/PROTOCOL.md,
	// "The served form"): functions of the content, so every honest
	// reproducer states the same, and a gateway lists the build with its
	// exact SIZE before fetching it. Required from version 2.
	Served ServedSizes
	// Needs is what the content needs of the machine that runs it (the
	// highest GLIBC_ symbol version, the x86-64 ISA level its ELF files
	// state), derived from the image alone: agreed like the content, so a
	// gateway lists only builds this machine can run. Version 2, optional.
	Needs Needs
}

// Needs mirrors fit.Needs on the wire (trust imports nothing that reads
// packages).
type Needs struct {
	Glibc    string `json:"glibc,omitempty"`
	X86Level int    `json:"x86_level,omitempty"`
}

// ServedSizes are the served form's uncompressed tar sizes (the JSON of
// xpak.ServedSizes; trust imports nothing that reads packages).
type ServedSizes struct {
	MetadataTar int64 `json:"metadata_tar"`
	ImageTar    int64 `json:"image_tar"`
}

// attestationWire is the JSON form of Attestation: digests as lowercase hex.
type attestationWire struct {
	Version    int               `json:"version"`
	BuildKey   keys.Build        `json:"build_key"`
	VariantKey keys.Variant      `json:"variant_key"`
	CPV        string            `json:"cpv"`
	Platform   string            `json:"platform"`
	Descriptor json.RawMessage   `json:"descriptor,omitempty"`
	Index      map[string]string `json:"index,omitempty"`
	Content    ContentID         `json:"content"`
	FileSHA256 string            `json:"file_sha256"`
	Size       int64             `json:"size"`
	PieceRoot  string            `json:"piece_root"`
	PieceSize  int64             `json:"piece_size"`
	Format     string            `json:"format"`
	Builder    Builder           `json:"builder"`
	Time       time.Time         `json:"time"`
	Served     *ServedSizes      `json:"served,omitempty"`
	Needs      *Needs            `json:"needs,omitempty"`
}

// MarshalJSON writes the attestation's wire form (the signed payload format).
func (a Attestation) MarshalJSON() ([]byte, error) {
	return json.Marshal(attestationWire{
		Version:    a.Version,
		BuildKey:   a.BuildKey,
		VariantKey: a.VariantKey,
		CPV:        a.CPV,
		Platform:   a.Platform,
		Descriptor: a.Descriptor,
		Index:      a.Index,
		Content:    a.Content,
		FileSHA256: hex.EncodeToString(a.FileSHA256[:]),
		Size:       a.Size,
		PieceRoot:  hex.EncodeToString(a.PieceRoot[:]),
		PieceSize:  a.PieceSize,
		Format:     a.Format,
		Builder:    a.Builder,
		Time:       a.Time,
		Served:     servedWire(a),
		Needs:      needsWire(a),
	})
}

func needsWire(a Attestation) *Needs {
	if a.Needs == (Needs{}) {
		return nil
	}
	n := a.Needs
	return &n
}

func servedWire(a Attestation) *ServedSizes {
	if a.Version < 2 {
		return nil
	}
	s := a.Served
	return &s
}

// UnmarshalJSON parses the wire form strictly (unknown fields rejected) and
// validates every field.
func (a *Attestation) UnmarshalJSON(b []byte) error {
	parsed, err := parseAttestation(b)
	if err != nil {
		return err
	}
	*a = parsed
	return nil
}

// parseAttestation strictly decodes and validates one payload.
func parseAttestation(payload []byte) (Attestation, error) {
	if len(payload) > MaxPayloadSize {
		return Attestation{}, fmt.Errorf("%w: payload is %d bytes, cap %d", ErrMalformed, len(payload), MaxPayloadSize)
	}
	var w attestationWire
	if err := decodeStrict(payload, &w); err != nil {
		return Attestation{}, fmt.Errorf("%w: attestation payload: %v", ErrMalformed, err)
	}
	a := Attestation{
		Version:    w.Version,
		BuildKey:   w.BuildKey,
		VariantKey: w.VariantKey,
		CPV:        w.CPV,
		Platform:   w.Platform,
		Descriptor: w.Descriptor,
		Index:      w.Index,
		Content:    w.Content,
		Size:       w.Size,
		PieceSize:  w.PieceSize,
		Format:     w.Format,
		Builder:    w.Builder,
		Time:       w.Time,
	}
	if w.Served != nil {
		if w.Version < 2 {
			return Attestation{}, fmt.Errorf("%w: served in a version %d attestation", ErrMalformed, w.Version)
		}
		a.Served = *w.Served
	}
	if w.Needs != nil {
		if w.Version < 2 || *w.Needs == (Needs{}) {
			return Attestation{}, fmt.Errorf("%w: needs in a version %d attestation, or empty", ErrMalformed, w.Version)
		}
		a.Needs = *w.Needs
	}
	if err := parseDigest(w.FileSHA256, &a.FileSHA256); err != nil {
		return Attestation{}, fmt.Errorf("%w: file_sha256: %v", ErrMalformed, err)
	}
	if err := parseDigest(w.PieceRoot, &a.PieceRoot); err != nil {
		return Attestation{}, fmt.Errorf("%w: piece_root: %v", ErrMalformed, err)
	}
	if err := a.Validate(); err != nil {
		return Attestation{}, err
	}
	return a, nil
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// Validate checks that every field is present and well-formed: the version,
// canonical CID strings, a plausible cpv, non-zero digests, positive sizes, a
// known format and a UTC whole-second time. Sign and Decode call it.
func (a *Attestation) Validate() error {
	if a.Version < minAttestationVersion || a.Version > AttestationVersion {
		return fmt.Errorf("%w: attestation version %d, want %d to %d", ErrUnsupportedVersion, a.Version, minAttestationVersion, AttestationVersion)
	}
	if a.Version >= 2 && (a.Served.MetadataTar <= 0 || a.Served.ImageTar <= 0 ||
		a.Served.MetadataTar%512 != 0 || a.Served.ImageTar%512 != 0) {
		return fmt.Errorf("%w: served tar sizes %d and %d: want positive multiples of 512", ErrMalformed, a.Served.MetadataTar, a.Served.ImageTar)
	}
	if err := checkText("needs.glibc", a.Needs.Glibc, 32, false, false); err != nil {
		return err
	}
	if a.Needs.X86Level < 0 || a.Needs.X86Level > 4 {
		return fmt.Errorf("%w: needs.x86_level %d: want 0 to 4", ErrMalformed, a.Needs.X86Level)
	}
	if a.Version < 2 && (a.Served != (ServedSizes{}) || a.Needs != (Needs{})) {
		return fmt.Errorf("%w: served sizes or needs in a version %d attestation", ErrMalformed, a.Version)
	}
	if err := checkCID("build_key", string(a.BuildKey)); err != nil {
		return err
	}
	if err := checkCID("variant_key", string(a.VariantKey)); err != nil {
		return err
	}
	if err := checkText("cpv", a.CPV, 256, true, true); err != nil {
		return err
	}
	if strings.Count(a.CPV, "/") != 1 || strings.HasPrefix(a.CPV, "/") || strings.HasSuffix(a.CPV, "/") {
		return fmt.Errorf("%w: cpv %q: want category/package-version", ErrMalformed, a.CPV)
	}
	if err := checkText("platform", a.Platform, 512, true, false); err != nil {
		return err
	}
	if len(a.Descriptor) > 0 {
		if !json.Valid(a.Descriptor) || a.Descriptor[0] != '{' {
			return fmt.Errorf("%w: descriptor: not a JSON object", ErrMalformed)
		}
	}
	if err := checkIndex(a.Index); err != nil {
		return err
	}
	if a.Content.Image == ([32]byte{}) || a.Content.Metadata == ([32]byte{}) {
		return fmt.Errorf("%w: content: zero digest", ErrMalformed)
	}
	if a.FileSHA256 == ([32]byte{}) {
		return fmt.Errorf("%w: file_sha256: zero digest", ErrMalformed)
	}
	if a.PieceRoot == ([32]byte{}) {
		return fmt.Errorf("%w: piece_root: zero digest", ErrMalformed)
	}
	if a.Size <= 0 {
		return fmt.Errorf("%w: size %d: must be positive", ErrMalformed, a.Size)
	}
	if a.PieceSize <= 0 {
		return fmt.Errorf("%w: piece_size %d: must be positive", ErrMalformed, a.PieceSize)
	}
	if a.Format != FormatGPKG && a.Format != FormatXPAK {
		return fmt.Errorf("%w: format %q: want %q or %q", ErrMalformed, a.Format, FormatGPKG, FormatXPAK)
	}
	if err := checkText("builder.portage", a.Builder.Portage, 128, false, false); err != nil {
		return err
	}
	if err := checkText("builder.gcc", a.Builder.GCC, 128, false, false); err != nil {
		return err
	}
	if err := checkText("builder.binutils", a.Builder.Binutils, 128, false, false); err != nil {
		return err
	}
	if err := checkText("builder.libc", a.Builder.Libc, 128, false, false); err != nil {
		return err
	}
	if err := checkText("builder.build_dir", a.Builder.BuildDir, 512, false, false); err != nil {
		return err
	}
	if a.Time.IsZero() {
		return fmt.Errorf("%w: time: missing", ErrMalformed)
	}
	if a.Time.Location() != time.UTC || a.Time.Nanosecond() != 0 {
		return fmt.Errorf("%w: time %s: want UTC whole seconds", ErrMalformed, a.Time)
	}
	return nil
}

// checkCID requires s to parse as a CID and to be its canonical string, so
// one build key never has two spellings (which would split tallies and hide
// equivocation).
func checkCID(field, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s: missing", ErrMalformed, field)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrMalformed, field, s, err)
	}
	if c.String() != s {
		return fmt.Errorf("%w: %s %q: not the canonical CID string %q", ErrMalformed, field, s, c.String())
	}
	return nil
}

// maxIndexFields caps the number of index fields; portage writes about 20.
const maxIndexFields = 64

// checkIndex requires metadata-key-like names and one-line values.
func checkIndex(index map[string]string) error {
	if len(index) > maxIndexFields {
		return fmt.Errorf("%w: index: %d fields, cap %d", ErrMalformed, len(index), maxIndexFields)
	}
	for k, v := range index {
		if k == "" || len(k) > 64 {
			return fmt.Errorf("%w: index key %q", ErrMalformed, k)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
				return fmt.Errorf("%w: index key %q: want a metadata key name", ErrMalformed, k)
			}
		}
		if err := checkText("index."+k, v, 16<<10, false, false); err != nil {
			return err
		}
	}
	return nil
}

// checkText bounds a free-text field and rejects control characters and
// invalid UTF-8, which could forge lines in explanations; spaceless fields
// (cpv) reject spaces too.
func checkText(field, s string, maxLen int, required, spaceless bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%w: %s: missing", ErrMalformed, field)
		}
		return nil
	}
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s: %d bytes, cap %d", ErrMalformed, field, len(s), maxLen)
	}
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) || (spaceless && unicode.IsSpace(r)) || (!spaceless && unicode.IsSpace(r) && r != ' ') {
			return fmt.Errorf("%w: %s %q: contains a control character, unexpected space or invalid UTF-8", ErrMalformed, field, s)
		}
	}
	return nil
}

// Signed is a self-authenticating attestation: the exact payload bytes, the
// attester's libp2p public key and its signature over AttestationDomain +
// Payload. Anyone may relay it; nobody can alter it.
//
// Payload, PublicKey and Signature are the wire form. Attestation and
// Attester are derived from them by Sign and Decode and are not sent.
type Signed struct {
	// Payload is the attestation JSON exactly as signed.
	Payload []byte `json:"payload"`
	// PublicKey is crypto.MarshalPublicKey of the attester's Ed25519 key.
	PublicKey []byte `json:"public_key"`
	// Signature is the Ed25519 signature over AttestationDomain + Payload.
	Signature []byte `json:"signature"`

	// Attestation is Payload parsed.
	Attestation Attestation `json:"-"`
	// Attester is the peer id derived from PublicKey.
	Attester peer.ID `json:"-"`

	// verified is what open checked, so Verify need not check the
	// signature again while nothing changed; nil for a Signed built in
	// memory.
	verified *verifiedAs
}

// verifiedAs fingerprints a Signed as open verified it: its envelope, its
// parsed fields and its attester.
type verifiedAs struct {
	envelope, fields [32]byte
	attester         peer.ID
}

// envelopeSum fingerprints the signed bytes.
func envelopeSum(payload, pub, sig []byte) [32]byte {
	h := sha256.New()
	for _, b := range [][]byte{payload, pub, sig} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return [32]byte(h.Sum(nil))
}

// fieldsSum fingerprints every field of a, each length-prefixed (the Index
// in key order): two attestations with the same sum marshal alike. A field
// added to Attestation must be added here (TestVerifyNoticesEveryField).
func fieldsSum(a *Attestation) [32]byte {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.BigEndian.AppendUint64(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	num := func(n int64) { buf = binary.BigEndian.AppendUint64(buf, uint64(n)) }
	num(int64(a.Version))
	str(string(a.BuildKey))
	str(string(a.VariantKey))
	str(a.CPV)
	str(a.Platform)
	num(int64(len(a.Descriptor)))
	if a.Descriptor == nil {
		num(-1) // nil and empty marshal differently
	}
	buf = append(buf, a.Descriptor...)
	num(int64(len(a.Index)))
	if a.Index == nil {
		num(-1)
	}
	for _, k := range slices.Sorted(maps.Keys(a.Index)) {
		str(k)
		str(a.Index[k])
	}
	buf = append(buf, a.Content.Image[:]...)
	buf = append(buf, a.Content.Metadata[:]...)
	buf = append(buf, a.FileSHA256[:]...)
	num(a.Size)
	buf = append(buf, a.PieceRoot[:]...)
	num(a.PieceSize)
	str(a.Format)
	str(a.Builder.Portage)
	str(a.Builder.GCC)
	str(a.Builder.Binutils)
	str(a.Builder.Libc)
	str(a.Builder.BuildDir)
	zone, offset := a.Time.Zone()
	num(a.Time.Unix())
	num(int64(a.Time.Nanosecond()))
	str(zone)
	num(int64(offset))
	num(a.Served.MetadataTar)
	num(a.Served.ImageTar)
	str(a.Needs.Glibc)
	num(int64(a.Needs.X86Level))
	h.Write(buf)
	return [32]byte(h.Sum(nil))
}

// signedWire is the envelope on the wire.
type signedWire struct {
	Payload   []byte `json:"payload"`
	PublicKey []byte `json:"public_key"`
	Signature []byte `json:"signature"`
}

// Sign validates a, normalises its time to UTC whole seconds, sets the
// version if unset, and signs it with the attester's Ed25519 peer key.
func Sign(a Attestation, key crypto.PrivKey) (*Signed, error) {
	if key == nil || key.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("%w: attester key must be Ed25519", ErrUnsupportedKey)
	}
	if a.Version == 0 {
		a.Version = AttestationVersion
	}
	a.Time = a.Time.UTC().Truncate(time.Second)
	if err := a.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("%w: encode attestation: %v", ErrMalformed, err)
	}
	if len(payload) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: payload is %d bytes, cap %d", ErrMalformed, len(payload), MaxPayloadSize)
	}
	sig, err := key.Sign(signingBytes(AttestationDomain, payload))
	if err != nil {
		return nil, fmt.Errorf("trust: sign attestation: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("trust: marshal public key: %w", err)
	}
	s, err := open(payload, pub, sig)
	if err != nil {
		return nil, err
	}
	if n := len(s.Marshal()); n > MaxSignedSize {
		return nil, fmt.Errorf("%w: signed attestation is %d bytes, cap %d", ErrMalformed, n, MaxSignedSize)
	}
	return s, nil
}

// Decode parses a signed envelope as received from any peer, verifies the
// signature and the payload, and returns it with Attestation and Attester
// filled in. Errors wrap ErrMalformed, ErrUnsupportedVersion,
// ErrUnsupportedKey or ErrBadSignature.
func Decode(raw []byte) (*Signed, error) {
	if len(raw) > MaxSignedSize {
		return nil, fmt.Errorf("%w: signed attestation is %d bytes, cap %d", ErrMalformed, len(raw), MaxSignedSize)
	}
	var w signedWire
	if err := decodeStrict(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: signed attestation envelope: %v", ErrMalformed, err)
	}
	return open(w.Payload, w.PublicKey, w.Signature)
}

// open verifies payload, key and signature and derives the parsed fields.
func open(payload, pub, sig []byte) (*Signed, error) {
	if len(payload) == 0 || len(pub) == 0 || len(sig) == 0 {
		return nil, fmt.Errorf("%w: envelope needs payload, public_key and signature", ErrMalformed)
	}
	id, pk, err := parsePeerKey(pub)
	if err != nil {
		return nil, err
	}
	ok, err := pk.Verify(signingBytes(AttestationDomain, payload), sig)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: attestation signature by %s does not verify", ErrBadSignature, id)
	}
	a, err := parseAttestation(payload)
	if err != nil {
		return nil, err
	}
	canonical, err := json.Marshal(a)
	if err != nil || !bytes.Equal(canonical, payload) {
		return nil, fmt.Errorf("%w: attestation payload is not in canonical form", ErrMalformed)
	}
	out := &Signed{
		Payload:     bytes.Clone(payload),
		PublicKey:   bytes.Clone(pub),
		Signature:   bytes.Clone(sig),
		Attestation: a,
		Attester:    id,
	}
	out.verified = &verifiedAs{envelope: envelopeSum(payload, pub, sig), fields: fieldsSum(&a), attester: id}
	return out, nil
}

// parsePeerKey accepts only canonical encodings of Ed25519 libp2p keys.
func parsePeerKey(pub []byte) (peer.ID, crypto.PubKey, error) {
	pk, err := crypto.UnmarshalPublicKey(pub)
	if err != nil {
		return "", nil, fmt.Errorf("%w: public_key: %v", ErrMalformed, err)
	}
	if pk.Type() != pb.KeyType_Ed25519 {
		return "", nil, fmt.Errorf("%w: public_key is %s, want Ed25519", ErrUnsupportedKey, pk.Type())
	}
	again, err := crypto.MarshalPublicKey(pk)
	if err != nil || !bytes.Equal(again, pub) {
		return "", nil, fmt.Errorf("%w: public_key is not canonically encoded", ErrMalformed)
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		return "", nil, fmt.Errorf("%w: public_key: %v", ErrMalformed, err)
	}
	return id, pk, nil
}

// signingBytes returns domain + payload in a fresh slice.
func signingBytes(domain string, payload []byte) []byte {
	b := make([]byte, 0, len(domain)+len(payload))
	b = append(b, domain...)
	return append(b, payload...)
}

// Marshal returns the envelope's wire bytes (JSON with base64 fields). The
// encoding is deterministic, so ID is stable however the record travelled.
func (s *Signed) Marshal() []byte {
	b, err := json.Marshal(signedWire{Payload: s.Payload, PublicKey: s.PublicKey, Signature: s.Signature})
	if err != nil {
		// Three byte slices always marshal.
		panic(fmt.Sprintf("trust: marshal signed attestation: %v", err))
	}
	return b
}

// ID is the SHA-256 of Marshal(): the key under which stores and gossip
// deduplicate one signed attestation.
func (s *Signed) ID() [32]byte { return sha256.Sum256(s.Marshal()) }

// Verify re-checks a Signed that may have been built or modified in memory:
// the signature must verify over Payload, and Attestation and Attester must
// be exactly what Payload and PublicKey say. Evaluate and
// DetectEquivocation call it on every record they are handed.
//
// A Signed that Decode or Sign returned was verified then: while its
// signed bytes, its fields and its attester are still exactly what was
// verified (fingerprints, a few microseconds), Verify does not check the
// signature again, so a verdict over cached attestations costs no Ed25519
// verification per vote.
func (s *Signed) Verify() error {
	if s == nil {
		return fmt.Errorf("%w: nil signed attestation", ErrMalformed)
	}
	if v := s.verified; v != nil && v.attester == s.Attester &&
		v.envelope == envelopeSum(s.Payload, s.PublicKey, s.Signature) && v.fields == fieldsSum(&s.Attestation) {
		return nil
	}
	fresh, err := open(s.Payload, s.PublicKey, s.Signature)
	if err != nil {
		return err
	}
	if fresh.Attester != s.Attester {
		return fmt.Errorf("%w: attester %s does not own public key of %s", ErrBadSignature, s.Attester, fresh.Attester)
	}
	current, err := json.Marshal(s.Attestation)
	if err != nil || !bytes.Equal(current, s.Payload) {
		return fmt.Errorf("%w: attestation fields differ from the signed payload", ErrBadSignature)
	}
	return nil
}

// Binder recomputes what a descriptor commits to. The daemon implements it
// with identity (parse the descriptor, return Descriptor.BuildKey(),
// VariantKey() and its cpv), which this package cannot import.
type Binder func(descriptor json.RawMessage) (buildKey keys.Build, variantKey keys.Variant, cpv string, err error)

// Bind checks that the attestation's descriptor really yields its build key,
// variant key and cpv. Without it an attester could label a glibc build key
// with the cpv of a package whose per-package policy is weaker. An
// attestation without a descriptor fails.
func (a *Attestation) Bind(b Binder) error {
	if len(a.Descriptor) == 0 {
		return fmt.Errorf("%w: attestation for %s has no descriptor", ErrUnboundDescriptor, a.BuildKey)
	}
	bk, vk, cpv, err := b(a.Descriptor)
	if err != nil {
		return fmt.Errorf("%w: descriptor of %s: %v", ErrUnboundDescriptor, a.BuildKey, err)
	}
	switch {
	case bk != a.BuildKey:
		return fmt.Errorf("%w: descriptor yields build key %s, attestation says %s", ErrUnboundDescriptor, bk, a.BuildKey)
	case vk != a.VariantKey:
		return fmt.Errorf("%w: descriptor yields variant key %s, attestation says %s", ErrUnboundDescriptor, vk, a.VariantKey)
	case cpv != a.CPV:
		return fmt.Errorf("%w: descriptor names cpv %s, attestation says %s", ErrUnboundDescriptor, cpv, a.CPV)
	}
	return nil
}

// MarshalJSON writes the wire envelope, so API and store JSON carry a
// signed attestation exactly as peers exchange it.
func (s *Signed) MarshalJSON() ([]byte, error) { return s.Marshal(), nil }

// UnmarshalJSON runs Decode: a Signed never exists unverified, even when it
// comes out of a JSON document.
func (s *Signed) UnmarshalJSON(b []byte) error {
	d, err := Decode(b)
	if err != nil {
		return err
	}
	*s = *d
	return nil
}
