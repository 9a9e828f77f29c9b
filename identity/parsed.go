package identity

import (
	"fmt"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Parsed is one package's metadata with environment.bz2 decompressed and
// parsed at most once. The metadata digest, the build descriptor and the
// served sizes each read the environment; the daemon derives all three
// from every build in PKGDIR, and decoding it once per derivation (a bzip2
// reader allocates its whole 900 kB block) was most of what indexing a
// PKGDIR cost. The results are those of MetadataDigest,
// DescriptorFromMetadata and ServedSizes. Not safe for concurrent use.
type Parsed struct {
	m      *xpak.Metadata
	env    *Environment // nil when the package has no environment.bz2
	envErr error
	done   bool
	// text is environment.bz2 decoded by the caller (ParseDecoded).
	text    []byte
	decoded bool
}

// Parse wraps m; nothing is decoded until a result needs it.
func Parse(m *xpak.Metadata) *Parsed { return &Parsed{m: m} }

// ParseDecoded is Parse for a caller that holds m's environment.bz2
// decoded already (xpak.Taps.Environment, as xpak checks its bound): env
// is its text, used instead of decoding it again. It is ignored when m
// has no environment.bz2.
func ParseDecoded(m *xpak.Metadata, env []byte) *Parsed {
	return &Parsed{m: m, text: env, decoded: true}
}

// environment decodes and parses environment.bz2 on first use; nil, nil
// when the package has none.
func (p *Parsed) environment() (*Environment, error) {
	if p.done {
		return p.env, p.envErr
	}
	p.done = true
	raw, ok := p.m.Raw(environmentKey)
	if !ok {
		return nil, nil
	}
	text, err := p.text, error(nil)
	if !p.decoded {
		text, err = DecompressEnvironment(raw)
	} else if len(text) > MaxEnvironmentSize {
		err = fmt.Errorf("%w: environment.bz2 expands beyond %d bytes", ErrEnvironmentTooLarge, MaxEnvironmentSize)
	}
	p.text = nil // parsed below: not held twice
	if err != nil {
		p.envErr = err
		return nil, err
	}
	if p.env, err = ParseEnvironment(text); err != nil {
		p.envErr = fmt.Errorf("%s: %w", environmentKey, err)
		return nil, p.envErr
	}
	return p.env, nil
}

// MetadataDigest is MetadataDigest of the wrapped metadata.
func (p *Parsed) MetadataDigest() ([32]byte, error) {
	if p.m == nil {
		return [32]byte{}, ErrNoMetadata
	}
	return metadataDigest(p.m, p.environment)
}

// Descriptor is DescriptorFromMetadata of the wrapped metadata.
func (p *Parsed) Descriptor(cache *MD5Cache) (Descriptor, error) {
	if p.m == nil {
		return Descriptor{}, ErrNoMetadata
	}
	return descriptorFromMetadata(p.m, cache, p.environment)
}

// ServedSizes is ServedSizes of pkg, whose metadata p wraps.
func (p *Parsed) ServedSizes(pkg *xpak.Package) (xpak.ServedSizes, error) {
	if pkg.Metadata != p.m {
		return xpak.ServedSizes{}, fmt.Errorf("identity: ServedSizes of a package whose metadata was not parsed")
	}
	return servedSizes(pkg, func(key string, raw []byte) ([]byte, bool, error) {
		if key != environmentKey {
			return servedRewrite(key, raw)
		}
		env, err := p.environment()
		if err != nil {
			return nil, false, err
		}
		v, err := compressEnvironment(env.WithoutHostVarying().Render())
		return v, err == nil, err
	})
}
