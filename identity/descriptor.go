package identity

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Domain strings of the descriptor encodings (docs/PROTOCOL.md).
const (
	buildDomain    = "gentoo-p2p build v1\n"
	variantDomain  = "gentoo-p2p variant v1\n"
	platformDomain = "gentoo-p2p platform v1\n"
)

var (
	// ErrIncompleteMetadata means a key the build descriptor needs (CATEGORY,
	// PF, CHOST, IUSE_EFFECTIVE, the <PF>.ebuild) is missing or malformed.
	ErrIncompleteMetadata = errors.New("identity: incomplete metadata")
	// ErrBadRequires means REQUIRES is not "arch: soname… arch: soname…".
	ErrBadRequires = errors.New("identity: malformed REQUIRES")
)

// Descriptor is what a build is: the inputs that, for a reproducible
// package, determine its content. Its canonical encoding hashes to the build
// key (the DHT key under which peers provide and attest builds) and, without
// the linked libraries, to the variant key. Attestations embed it as JSON,
// hence the tags; every field is normalised by Canonical, so a descriptor
// decoded from a stranger hashes the same as the one its builder made.
type Descriptor struct {
	// CPV is CATEGORY/PF, e.g. "app-misc/hello-1.0".
	CPV string `json:"cpv"`
	// EbuildDigest is the lowercase hex SHA-256 of the <PF>.ebuild the
	// package carries (byte-identical to the ebuild in the tree).
	EbuildDigest string `json:"ebuild_digest"`
	// Eclasses maps each inherited eclass to its lowercase hex MD5 as the
	// repository's metadata/md5-cache records it, or to "" when no matching
	// md5-cache entry was available (names only; see docs/PROTOCOL.md).
	Eclasses map[string]string `json:"eclasses"`
	// USE is the enabled USE flags limited to IUSE_EFFECTIVE, sorted.
	USE []string `json:"use"`
	// CHOST and the compiler and linker flags, whitespace-normalised.
	CHOST    string `json:"chost"`
	CFLAGS   string `json:"cflags"`
	CXXFLAGS string `json:"cxxflags"`
	FFLAGS   string `json:"fflags"`
	FCFLAGS  string `json:"fcflags"`
	LDFLAGS  string `json:"ldflags"`
	// SlotDeps are the RDEPEND atoms with a resolved slot operator
	// ("dev-libs/libfoo:0/2.1="), sorted, without duplicates: the library
	// ABIs the build linked against.
	SlotDeps []string `json:"slot_deps"`
	// Requires is REQUIRES per ABI ("x86_64" → sorted sonames).
	Requires map[string][]string `json:"requires"`
}

// DescriptorFromMetadata derives the descriptor of a built package from its
// metadata. cache may be nil; it is used for eclass digests only when its
// repository name matches the package's `repository` key (or is unknown),
// its record's _md5_ equals the MD5 of the package's own ebuild, and its
// eclass names equal INHERITED (when the package records INHERITED).
func DescriptorFromMetadata(m *xpak.Metadata, cache *MD5Cache) (Descriptor, error) {
	return Parse(m).Descriptor(cache)
}

func descriptorFromMetadata(m *xpak.Metadata, cache *MD5Cache, environment func() (*Environment, error)) (Descriptor, error) {
	cat, pf := m.Category(), m.PF()
	if !validPkgComponent(cat) || !validPkgComponent(pf) {
		return Descriptor{}, fmt.Errorf("%w: CATEGORY %q / PF %q", ErrIncompleteMetadata, cat, pf)
	}
	d := Descriptor{CPV: cat + "/" + pf}
	ebuild, ok := m.Raw(pf + ".ebuild")
	if !ok {
		return Descriptor{}, fmt.Errorf("%w: no %s.ebuild", ErrIncompleteMetadata, pf)
	}
	sum := sha256.Sum256(ebuild)
	d.EbuildDigest = hex.EncodeToString(sum[:])
	if d.CHOST = normalizeFlags(m.Get("CHOST")); d.CHOST == "" {
		return Descriptor{}, fmt.Errorf("%w: no CHOST", ErrIncompleteMetadata)
	}

	inherited := m.Words("INHERITED")
	d.Eclasses = make(map[string]string, len(inherited))
	for _, e := range inherited {
		d.Eclasses[e] = ""
	}
	if cache != nil && (cache.RepoName() == "" || cache.RepoName() == m.Get("repository")) {
		entry, found, err := cache.Entry(d.CPV)
		if err != nil {
			return Descriptor{}, err
		}
		ebuildMD5 := md5.Sum(ebuild)
		if found && entry.EbuildMD5 == hex.EncodeToString(ebuildMD5[:]) &&
			(!m.Has("INHERITED") || sameKeys(entry.Eclasses, d.Eclasses)) {
			d.Eclasses = maps.Clone(entry.Eclasses)
		}
	}

	// Without IUSE_EFFECTIVE every USE variant would share one key; refuse
	// rather than collide.
	if !m.Has("IUSE_EFFECTIVE") {
		return Descriptor{}, fmt.Errorf("%w: no IUSE_EFFECTIVE", ErrIncompleteMetadata)
	}
	effective := map[string]bool{}
	for _, f := range m.IUSEEffective() {
		effective[f] = true
	}
	for _, f := range m.USE() {
		if effective[f] {
			d.USE = append(d.USE, f)
		}
	}
	d.USE = sortedUnique(d.USE)

	flag := func(key string) (string, error) {
		if m.Has(key) {
			return normalizeFlags(m.Get(key)), nil
		}
		// Portage does not always store FFLAGS/FCFLAGS as keys; the
		// environment has the value the build ran with.
		env, err := environment()
		if err != nil || env == nil {
			return "", err
		}
		s, _ := env.Vars[key].Scalar()
		return normalizeFlags(s), nil
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"CFLAGS", &d.CFLAGS}, {"CXXFLAGS", &d.CXXFLAGS}, {"FFLAGS", &d.FFLAGS}, {"FCFLAGS", &d.FCFLAGS}, {"LDFLAGS", &d.LDFLAGS}} {
		v, err := flag(f.key)
		if err != nil {
			return Descriptor{}, err
		}
		*f.dst = v
	}

	d.SlotDeps = SlotOperatorDeps(m.Get("RDEPEND"))
	req, err := ParseRequires(m.Get("REQUIRES"))
	if err != nil {
		return Descriptor{}, err
	}
	d.Requires = req
	return d, nil
}

func sameKeys(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func sortedUnique(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// normalizeFlags collapses runs of ASCII whitespace to one space and trims
// the ends, so "-O2  -pipe\n" and "-O2 -pipe" are the same setting.
func normalizeFlags(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
	}), " ")
}

// SlotOperatorDeps extracts from a dependency string the atoms whose slot
// dependency ends in "=" (the slot operator as portage resolved it at build
// time, e.g. "dev-libs/libfoo:0/2.1=" or "dev-libs/bar:2=[abi_x86_32(-)]"),
// sorted and without duplicates. Blockers are skipped; USE conditionals and
// groups are looked through. Atoms are kept as written.
func SlotOperatorDeps(depend string) []string {
	var out []string
	for _, tok := range strings.Fields(depend) {
		if tok == "||" || tok == "(" || tok == ")" || strings.HasSuffix(tok, "?") || strings.HasPrefix(tok, "!") {
			continue
		}
		atom, _, _ := strings.Cut(tok, "[")
		_, slot, ok := strings.Cut(atom, ":")
		if !ok || strings.HasPrefix(slot, ":") {
			continue // no slot dependency, or a ::repo dependency
		}
		if strings.HasSuffix(slot, "=") {
			out = append(out, tok)
		}
	}
	return sortedUnique(out)
}

// ParseRequires parses REQUIRES ("x86_64: libc.so.6 libm.so.6 x86_32:
// libc.so.6") into ABI → sorted, de-duplicated sonames. An empty string is
// an empty map; a soname before any "abi:" is ErrBadRequires.
func ParseRequires(s string) (map[string][]string, error) {
	out := map[string][]string{}
	arch := ""
	for _, tok := range strings.Fields(s) {
		if a, ok := strings.CutSuffix(tok, ":"); ok {
			if a == "" {
				return nil, fmt.Errorf("%w: empty ABI name in %q", ErrBadRequires, s)
			}
			arch = a
			if _, seen := out[arch]; !seen {
				out[arch] = []string{}
			}
			continue
		}
		if arch == "" {
			return nil, fmt.Errorf("%w: soname %q before any ABI", ErrBadRequires, tok)
		}
		out[arch] = append(out[arch], tok)
	}
	for a, l := range out {
		out[a] = sortedUnique(l)
	}
	return out, nil
}

// Canonical is the build key preimage, docs/PROTOCOL.md byte for byte:
// "gentoo-p2p build v1\n" and the normalised fields as netstrings.
func (d Descriptor) Canonical() []byte {
	b := d.appendVariant([]byte(buildDomain))
	deps := sortedUnique(d.SlotDeps)
	b = netstring(b, "slot_deps")
	b = netstring(b, strconv.Itoa(len(deps)))
	for _, a := range deps {
		b = netstring(b, a)
	}
	arches := slices.Sorted(maps.Keys(d.Requires))
	b = netstring(b, "requires")
	b = netstring(b, strconv.Itoa(len(arches)))
	for _, a := range arches {
		libs := sortedUnique(d.Requires[a])
		b = netstring(b, a)
		b = netstring(b, strconv.Itoa(len(libs)))
		for _, l := range libs {
			b = netstring(b, l)
		}
	}
	return b
}

// VariantCanonical is the variant key preimage: "gentoo-p2p variant v1\n"
// and the fields of Canonical up to and including LDFLAGS.
func (d Descriptor) VariantCanonical() []byte {
	return d.appendVariant([]byte(variantDomain))
}

func (d Descriptor) appendVariant(b []byte) []byte {
	b = netstring(b, "cpv")
	b = netstring(b, d.CPV)
	b = netstring(b, "ebuild")
	b = netstring(b, d.EbuildDigest)
	names := slices.Sorted(maps.Keys(d.Eclasses))
	b = netstring(b, "eclasses")
	b = netstring(b, strconv.Itoa(len(names)))
	for _, n := range names {
		b = netstring(b, n)
		b = netstring(b, d.Eclasses[n])
	}
	use := sortedUnique(d.USE)
	b = netstring(b, "use")
	b = netstring(b, strconv.Itoa(len(use)))
	for _, f := range use {
		b = netstring(b, f)
	}
	for _, f := range []struct{ name, value string }{
		{"chost", d.CHOST}, {"cflags", d.CFLAGS}, {"cxxflags", d.CXXFLAGS},
		{"fflags", d.FFLAGS}, {"fcflags", d.FCFLAGS}, {"ldflags", d.LDFLAGS},
	} {
		b = netstring(b, f.name)
		b = netstring(b, normalizeFlags(f.value))
	}
	return b
}

// BuildKey is the DHT key of the build: CIDv1, codec raw (0x55), multihash
// sha2-256 of Canonical().
func (d Descriptor) BuildKey() keys.Build { return keys.BuildFromCID(rawCID(d.Canonical())) }

// VariantKey is the coarser DHT key of every build of this cpv, ebuild,
// USE and flags, whatever libraries it linked: CIDv1, raw, sha2-256 of
// VariantCanonical(). A peer that cannot yet resolve its libraries looks
// builds up by it and picks one whose SlotDeps its system satisfies.
func (d Descriptor) VariantKey() keys.Variant {
	return keys.VariantFromCID(rawCID(d.VariantCanonical()))
}

func rawCID(b []byte) cid.Cid {
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		panic("identity: sha2-256 multihash: " + err.Error()) // cannot happen: a fixed, registered code
	}
	return cid.NewCidV1(cid.Raw, h)
}

// Platform is a short stable name for the gossip topic of builds a peer can
// use: the CHOST, "-", and the first 16 hex digits of SHA-256 over
// "gentoo-p2p platform v1\n" followed by ns(CHOST) ns(CFLAGS) ns(CXXFLAGS)
// ns(FFLAGS) ns(FCFLAGS) ns(LDFLAGS) (whitespace-normalised), e.g.
// "x86_64-pc-linux-gnu-3f0c…". Peers with the same toolchain settings meet
// on one topic; a collision only means extra gossip.
func (d Descriptor) Platform() string {
	b := []byte(platformDomain)
	for _, v := range []string{d.CHOST, d.CFLAGS, d.CXXFLAGS, d.FFLAGS, d.FCFLAGS, d.LDFLAGS} {
		b = netstring(b, normalizeFlags(v))
	}
	sum := sha256.Sum256(b)
	return normalizeFlags(d.CHOST) + "-" + hex.EncodeToString(sum[:8])
}
