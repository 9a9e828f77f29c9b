package identity

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// metadataDomain starts every metadata digest v1 preimage, so a digest of
// one kind can never be mistaken for another.
const metadataDomain = "gentoo-p2p metadata v1\n"

// ErrNoMetadata means a nil Metadata was passed.
var ErrNoMetadata = errors.New("identity: no metadata")

// Record tags of the metadata digest v1 encoding.
const (
	tagKey      = "m" // a covered metadata key
	tagEnv      = "e" // environment.bz2 is present
	tagVar      = "v" // a covered environment variable
	tagFunction = "f" // an environment function
)

// netstring appends the netstring encoding of s (decimal length, ':', the
// bytes, ','), which makes a concatenation of fields unambiguous whatever
// bytes they contain.
func netstring(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, ',')
}

// MetadataDigest is the metadata digest v1 of m: SHA-256 over
// MetadataCanonical(m). Honest builds of one build (any builder, XPAK or
// GPKG, any compression) have the same digest; anything portage acts on at
// install time is covered or is stripped by the gateway.
func MetadataDigest(m *xpak.Metadata) ([32]byte, error) {
	return Parse(m).MetadataDigest()
}

func metadataDigest(m *xpak.Metadata, environment func() (*Environment, error)) ([32]byte, error) {
	pre, err := metadataCanonical(m, environment)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(pre), nil
}

// MetadataCanonical returns the preimage of the metadata digest v1, byte for
// byte as docs/PROTOCOL.md specifies it. It is exported so that `trust
// explain` and tests can show what two disagreeing builds differ in.
func MetadataCanonical(m *xpak.Metadata) ([]byte, error) {
	if m == nil {
		return nil, ErrNoMetadata
	}
	return metadataCanonical(m, Parse(m).environment)
}

func metadataCanonical(m *xpak.Metadata, environment func() (*Environment, error)) ([]byte, error) {
	out := []byte(metadataDomain)
	var env *Environment
	for _, k := range m.Keys() {
		raw, _ := m.Raw(k)
		switch {
		case k == environmentKey:
			var err error
			if env, err = environment(); err != nil {
				return nil, err
			}
		case isEbuildKey(k):
			out = appendRecord(out, tagKey, k, string(raw))
		case IsCovered(k):
			out = appendRecord(out, tagKey, k, string(trimASCIISpace(raw)))
		}
	}
	if env == nil {
		return out, nil
	}
	out = appendRecord(out, tagEnv, environmentKey, "")
	covered := env.WithoutHostVarying()
	for _, n := range covered.VarNames() {
		out = appendRecord(out, tagVar, n, covered.Vars[n].Text)
	}
	for _, n := range covered.FuncNames() {
		out = appendRecord(out, tagFunction, n, covered.Funcs[n])
	}
	return out, nil
}

func appendRecord(b []byte, tag, name, value string) []byte {
	b = netstring(b, tag)
	b = netstring(b, name)
	return netstring(b, value)
}

// CanonicalEnvironment turns a package's environment.bz2 into the plain text
// the gateway must serve in its place (after compressing it with bzip2):
// the covered variables and all functions, re-rendered from the parse, with
// every host-varying variable stripped. Everything in it is covered by the
// metadata digest.
func CanonicalEnvironment(bz2 []byte) ([]byte, error) {
	text, err := DecompressEnvironment(bz2)
	if err != nil {
		return nil, err
	}
	env, err := ParseEnvironment(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", environmentKey, err)
	}
	return env.WithoutHostVarying().Render(), nil
}

// CanonicalValue is the value the gateway must write for covered key k,
// given the raw value a package carries: *.ebuild keys verbatim, every other
// key with surrounding whitespace trimmed and one newline appended (portage's
// own layout). It is exactly what the metadata digest covers, plus the
// newline.
func CanonicalValue(k string, raw []byte) []byte {
	if isEbuildKey(k) {
		return bytes.Clone(raw)
	}
	return append(bytes.Clone(trimASCIISpace(raw)), '\n')
}

// trimASCIISpace trims the ASCII whitespace bytes " \t\n\r\v\f" from both
// ends; unlike bytes.TrimSpace it leaves non-ASCII bytes alone, so the
// encoding does not depend on Unicode tables.
func trimASCIISpace(b []byte) []byte { return bytes.Trim(b, " \t\n\r\v\f") }
