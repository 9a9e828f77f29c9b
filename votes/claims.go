package votes

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// checkClaims rejects attestations whose claims contradict what the daemon
// can check without the file: the platform must be the descriptor's (or a
// build made with other CFLAGS could be listed for this machine), the
// container size must fit the configured limits (a fetch reserves that
// much disk), and the index claims must agree with the descriptor.
func (vb *Book) checkClaims(a trust.Attestation) error {
	var desc identity.Descriptor
	if err := json.Unmarshal(a.Descriptor, &desc); err != nil {
		return err
	}
	if err := refuseNativeFlags(desc); err != nil {
		return err
	}
	if p := desc.Platform(); p != a.Platform {
		return fmt.Errorf("platform %q, but the descriptor's CHOST and flags make %q", a.Platform, p)
	}
	// Catalog sync pages by attestation time: a date far in the future
	// would let one attester jump a newcomer past honest records, and
	// the store orders records by an unsigned time.
	if a.Time.After(time.Now().Add(24 * time.Hour)) {
		return fmt.Errorf("attestation dated %s, in the future", a.Time.Format(time.RFC3339))
	}
	if a.Time.Unix() <= 0 {
		return fmt.Errorf("attestation dated %s, before 1970", a.Time.Format(time.RFC3339))
	}
	if a.Size <= 0 || a.Size > vb.files.MaxImageBytes+maxContainerOverhead {
		return fmt.Errorf("container size %d outside 1..%d", a.Size, vb.files.MaxImageBytes+maxContainerOverhead)
	}
	return checkIndexClaims(desc, a.Index)
}

// refuseNativeFlags refuses a descriptor whose flags still say "native"
// (-march=native, -mtune=native, -mcpu=native): the same text builds other
// code on every CPU, so its build key and platform would not say what the
// content runs on. An honest builder resolves the flags first
// (identity.ResolveNative).
func refuseNativeFlags(desc identity.Descriptor) error {
	if key, flag := desc.NativeFlag(); flag != "" {
		return fmt.Errorf("descriptor %s has %s, which builds other code on every CPU: its builder must resolve it to the flags it means there", key, flag)
	}
	return nil
}

// maxContainerOverhead is what a container may add to its image: metadata,
// signatures, tar padding, and compression that did not compress.
const maxContainerOverhead = 64 << 20

// checkIndexClaims rejects index claims that contradict the descriptor the
// build key binds, or that name what no attester may claim. CATEGORY and
// PF (hence CPV and PATH), BUILD_ID, BUILD_TIME, SIZE and the digests are
// not index claims at all: the gateway takes the CPV from the descriptor
// and makes the rest itself. USE, the slot-operator atoms of RDEPEND and
// REQUIRES are checked against the descriptor; the other keys cannot be
// checked without the file, so the gateway uses them only where the
// counted voters agree (AgreedIndex) and lists the served file's own once
// it has it.
func checkIndexClaims(desc identity.Descriptor, index map[string]string) error {
	for k, v := range index {
		if !slices.Contains(IndexKeys(), k) {
			return fmt.Errorf("index claims key %q, which attestations may not carry", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("index key %s: value is not one line", k)
		}
	}
	// A key the attester leaves out contradicts nothing; it is simply not
	// listed until the file is here.
	if v, ok := index["USE"]; ok {
		use := strings.Fields(v)
		for _, f := range desc.USE {
			if !slices.Contains(use, f) {
				return fmt.Errorf("index USE lacks %q, which the descriptor enables", f)
			}
		}
		for _, f := range strings.Fields(index["IUSE"]) {
			f = strings.TrimLeft(f, "+-")
			if slices.Contains(use, f) && !slices.Contains(desc.USE, f) {
				return fmt.Errorf("index USE enables %q, which the descriptor does not", f)
			}
		}
	}
	if v, ok := index["RDEPEND"]; ok {
		if got, want := identity.SlotOperatorDeps(v), desc.SlotDeps; !slices.Equal(sortedCopy(got), sortedCopy(want)) {
			return fmt.Errorf("index RDEPEND resolves slot operators to %v, the descriptor to %v", got, want)
		}
	}
	if v, ok := index["REQUIRES"]; ok {
		req, err := identity.ParseRequires(v)
		if err != nil {
			return fmt.Errorf("index REQUIRES: %w", err)
		}
		if !sameRequires(req, desc.Requires) {
			return fmt.Errorf("index REQUIRES %q is not the descriptor's", v)
		}
	}
	return nil
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func sameRequires(a, b map[string][]string) bool {
	drop := func(m map[string][]string) map[string][]string {
		out := map[string][]string{}
		for k, v := range m {
			if len(v) > 0 {
				out[k] = sortedCopy(v)
			}
		}
		return out
	}
	return maps.EqualFunc(drop(a), drop(b), slices.Equal[[]string])
}

// ErrIndexDisputed means the attestations of an allowed content do not
// agree on an index field by a strict majority: the build is not listed
// before its file is here (portage would resolve dependencies from a
// field one attester chose).
var ErrIndexDisputed = errors.New("voters disagree on an index field")

// AgreedIndex is the index fields the attestations of an allowed content
// agree on: for each key any of them states, the value (or the absence)
// that a strict majority of them states. A key without a majority is
// ErrIndexDisputed: dropping it could drop a dependency portage must
// install, so the build is not listed until its own file says. A minority
// of voters can therefore neither change nor remove a field portage sees.
// (Before the file is here these fields describe a listing; once it is,
// the served file's own metadata replaces them.)
func AgreedIndex(atts []*trust.Signed) (map[string]string, error) {
	out := map[string]string{}
	keys := map[string]bool{}
	for _, s := range atts {
		for k := range s.Attestation.Index {
			keys[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		counts := map[string]int{} // value → voters; "\x00" = absent
		for _, s := range atts {
			v, ok := s.Attestation.Index[k]
			if !ok {
				v = "\x00"
			}
			counts[v]++
		}
		agreed := false
		for v, n := range counts {
			if 2*n > len(atts) {
				if v != "\x00" {
					out[k] = v
				}
				agreed = true
			}
		}
		if !agreed {
			return nil, fmt.Errorf("%w: %s", ErrIndexDisputed, k)
		}
	}
	return out, nil
}

// IndexKeys are the metadata keys an attestation's index may carry: the
// keys of a Packages stanza (portagehook.IndexKeys) that the metadata
// digest covers, CHOST aside (the index header carries it, from the
// descriptor). Sorted.
func IndexKeys() []string { return indexKeys }

var indexKeys = func() []string {
	var out []string
	for _, k := range portagehook.IndexKeys {
		if identity.IsCovered(k.Meta) && k.Meta != "CHOST" {
			out = append(out, k.Meta)
		}
	}
	slices.Sort(out)
	return out
}()

// AgreedServed is the served form's tar sizes of an allowed content: the
// value stated by a strict majority of its attestations that state one
// (older attestations state none). Honest reproducers compute the same
// sizes from the same content, so they agree; a minority cannot decide
// the SIZE portage is promised, and the gateway checks the sizes against
// the file before it serves a byte (a wrong value costs a download, never
// a different file). Zero when there is no majority.
func AgreedServed(atts []*trust.Signed) trust.ServedSizes {
	counts := map[trust.ServedSizes]int{}
	stating := 0
	for _, s := range atts {
		if v := s.Attestation.Served; v != (trust.ServedSizes{}) {
			counts[v]++
			stating++
		}
	}
	for v, n := range counts {
		if 2*n > stating {
			return v
		}
	}
	return trust.ServedSizes{}
}

// AgreedNeeds is what the content of an allowed build needs of the
// machine (glibc symbol version, x86-64 level): the value a strict
// majority of its attestations states, or ok false. A build without
// agreed needs is not listed before its file is here: a minority could
// otherwise hide that it needs a newer glibc.
func AgreedNeeds(atts []*trust.Signed) (trust.Needs, bool) {
	counts := map[trust.Needs]int{}
	for _, s := range atts {
		counts[s.Attestation.Needs]++
	}
	for v, n := range counts {
		if 2*n > len(atts) {
			return v, true
		}
	}
	return trust.Needs{}, false
}
