package fit

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// ErrDoesNotFit is wrapped by every Fits error: the build would install
// here and then fail to run, or break what is installed. The message
// names the first unmet need.
var ErrDoesNotFit = errors.New("does not fit this machine")

// Build is what Fits knows of one build: what the network agreed on about
// it (the descriptor's slot dependencies, REQUIRES and flags, the index's
// SLOT and PROVIDES) and the Needs of its content. BuildOf makes one from
// a descriptor.
type Build struct {
	CPV string
	// Slot is the build's SLOT ("0/2.1"): what it offers the slot
	// dependencies of builds installed alongside it.
	Slot string
	// SlotDeps are its slot-operator dependencies as resolved at build
	// time ("dev-libs/foo:0/1=").
	SlotDeps []string
	// Requires are the sonames it links per ABI (REQUIRES).
	Requires map[string][]string
	// Provides are the sonames it offers per ABI (PROVIDES): what it
	// offers builds installed alongside it.
	Provides map[string][]string
	Needs    Needs
	// CFLAGS, CXXFLAGS, FFLAGS, FCFLAGS and LDFLAGS as the descriptor has
	// them, -march=native resolved (identity.ResolveNative): their -march
	// and -m flags name instructions the CPU must have.
	CFLAGS, CXXFLAGS, FFLAGS, FCFLAGS, LDFLAGS string
}

// BuildOf is the Build of a descriptor, the index fields the network
// agreed on for it (SLOT, PROVIDES; votes.AgreedIndex or the file's own
// metadata) and its content's Needs.
func BuildOf(d identity.Descriptor, index map[string]string, needs Needs) (Build, error) {
	provides, err := identity.ParseRequires(index["PROVIDES"])
	if err != nil {
		return Build{}, fmt.Errorf("%s: PROVIDES: %w", d.CPV, err)
	}
	return Build{
		CPV: d.CPV, Slot: index["SLOT"], SlotDeps: d.SlotDeps, Requires: d.Requires, Provides: provides,
		Needs: needs, CFLAGS: d.CFLAGS, CXXFLAGS: d.CXXFLAGS, FFLAGS: d.FFLAGS, FCFLAGS: d.FCFLAGS, LDFLAGS: d.LDFLAGS,
	}, nil
}

// Alongside is what the other builds listed with one offer it: portage
// installs a build's dependencies in the same emerge, so a soname or a
// slot/subslot another listed build provides is as good as an installed
// one (as long as that build fits too: FitAll).
type Alongside struct {
	sonames map[string]map[string]bool // ABI → soname
	slots   map[string][]string        // cat/pn → "slot/subslot"
}

// NewAlongside collects the PROVIDES and SLOT of builds.
func NewAlongside(builds []Build) *Alongside {
	a := &Alongside{sonames: map[string]map[string]bool{}, slots: map[string][]string{}}
	for _, b := range builds {
		for abi, libs := range b.Provides {
			addSonames(a.sonames, abi, libs)
		}
		// A build whose SLOT the network did not agree on offers no slot.
		if cp, _, ok := splitCPV(b.CPV); ok && b.Slot != "" {
			slot, sub := splitSlot(b.Slot)
			a.slots[cp] = append(a.slots[cp], slot+"/"+sub)
		}
	}
	return a
}

func (a *Alongside) hasSoname(abi, soname string) bool {
	return a != nil && a.sonames[abi][soname]
}

func (a *Alongside) hasSlot(d slotDep) bool {
	if a == nil {
		return false
	}
	for _, s := range a.slots[d.cp] {
		slot, sub, _ := strings.Cut(s, "/")
		if slot == d.slot && (d.subslot == "" || sub == d.subslot) {
			return true
		}
	}
	return false
}

// Fits returns nil when b runs on m, with also (nil for none) installed
// in the same emerge, or an error wrapping ErrDoesNotFit that names the
// first unmet need: compiler flags that still say native, glibc, the
// x86-64 level, the -march and -m flags, sonames, slot dependencies, in
// that order.
func (m *Machine) Fits(b Build, also *Alongside) error {
	if reason := m.unmet(b, also); reason != "" {
		return fmt.Errorf("%w: %s %s", ErrDoesNotFit, b.CPV, reason)
	}
	return nil
}

// FitAll checks builds listed together: each may count on what the
// others provide, but only on those that fit themselves, so builds are
// dropped until the rest stand on each other and on m. The result has one
// entry per build, nil for those that fit.
func (m *Machine) FitAll(builds []Build) []error {
	errs := make([]error, len(builds))
	for {
		var fitting []Build
		for i, b := range builds {
			if errs[i] == nil {
				fitting = append(fitting, b)
			}
		}
		also := NewAlongside(fitting)
		dropped := false
		for i, b := range builds {
			if errs[i] != nil {
				continue
			}
			if errs[i] = m.Fits(b, also); errs[i] != nil {
				dropped = true
			}
		}
		if !dropped {
			return errs
		}
	}
}

func (m *Machine) unmet(b Build, also *Alongside) string {
	for _, f := range b.flags() {
		if n := identity.NativeFlag(f.value); n != "" {
			return fmt.Sprintf("was built with %s in %s, which names the builder's CPU, not instructions this one can be checked for", n, f.key)
		}
	}
	ix := m.indexed()
	if b.Needs.Glibc != "" {
		switch {
		case m.Glibc == "":
			return fmt.Sprintf("needs %s, and this system has no glibc", b.Needs.Glibc)
		case compareGlibc(b.Needs.Glibc, m.Glibc) > 0:
			return fmt.Sprintf("needs %s, this system's glibc offers up to %s", b.Needs.Glibc, m.Glibc)
		}
	}
	if l := b.Needs.X86Level; l > m.X86Level {
		return fmt.Sprintf("needs %s (%s), this CPU is %s", levelName(l), strings.Join(m.lacking(ix, levelFlags(l)), " "), levelName(m.X86Level))
	}
	for _, f := range b.flags() {
		if r := m.unmetFlags(ix, f); r != "" {
			return r
		}
	}
	for _, abi := range slices.Sorted(maps.Keys(b.Requires)) {
		for _, so := range slices.Sorted(slices.Values(b.Requires[abi])) {
			if !ix.sonames[abi][so] && !also.hasSoname(abi, so) {
				return fmt.Sprintf("needs %s (%s), which no installed package provides", so, abi)
			}
		}
	}
	for _, atom := range slices.Sorted(slices.Values(b.SlotDeps)) {
		d, ok := parseSlotDep(atom)
		if !ok || also.hasSlot(d) {
			continue
		}
		if r := unmetSlot(ix, d); r != "" {
			return r
		}
	}
	return ""
}

// unmetSlot checks one slot dependency against the installed packages.
func unmetSlot(ix *machineIndex, d slotDep) string {
	var other []string
	for _, p := range ix.slots[d.cp] {
		if p.Slot == d.slot && (d.subslot == "" || p.SubSlot == d.subslot) {
			return ""
		}
		other = append(other, p.Slot+"/"+p.SubSlot)
	}
	if len(other) == 0 {
		return fmt.Sprintf("was built against %s, which is not installed", d.text())
	}
	slices.Sort(other)
	return fmt.Sprintf("was built against %s, installed is %s", d.text(), strings.Join(other, ", "))
}

// lacking is the flags of want this CPU does not show; all of them when
// its flags are unknown.
func (m *Machine) lacking(ix *machineIndex, want []string) []string {
	var out []string
	for _, f := range want {
		if !ix.flags[f] {
			out = append(out, f)
		}
	}
	return out
}

type flagVar struct{ key, value string }

func (b Build) flags() []flagVar {
	var out []flagVar
	for _, f := range []flagVar{{"CFLAGS", b.CFLAGS}, {"CXXFLAGS", b.CXXFLAGS}, {"FFLAGS", b.FFLAGS}, {"FCFLAGS", b.FCFLAGS}, {"LDFLAGS", b.LDFLAGS}} {
		if strings.TrimSpace(f.value) != "" {
			out = append(out, f)
		}
	}
	return out
}

// requirement is one instruction set extension a flag string asks for.
type requirement struct {
	ext    string // gcc's name, "avx2"
	origin string // the flag that asked for it: "-march=haswell", "-mavx2"
	pos    int    // the origin's place in the flag string
}

// unmetFlags checks the -march and -m flags of one flag variable as gcc
// reads them: -march=NAME enables its extensions, each -mX / -mno-X
// turns one on or off whatever its position, the last one winning, and
// -mno-X also turns off what builds on X.
func (m *Machine) unmetFlags(ix *machineIndex, f flagVar) string {
	words := strings.Fields(f.value)
	march, marchPos := "", -1
	for i, w := range words {
		if v, ok := strings.CutPrefix(w, "-march="); ok {
			march, marchPos = v, i
		}
	}
	in := ""
	if f.key != "CFLAGS" {
		in = " in " + f.key
	}
	req := map[string]requirement{} // by extension
	var exts []string
	switch level := marchLevel(march); {
	case march == "":
	case level > 0:
		for l := 1; l <= level; l++ {
			exts = append(exts, levelGCC[l]...)
		}
	case m.March != nil:
		var err error
		if exts, err = m.March(march); err != nil {
			return fmt.Sprintf("was built with -march=%s%s, which this system's gcc does not know", march, in)
		}
	}
	for _, x := range exts {
		if _, known := isaFlags[x]; known {
			req[x] = requirement{ext: x, origin: "-march=" + march, pos: marchPos}
		}
	}
	for i, w := range words {
		name, ok := strings.CutPrefix(w, "-m")
		if !ok || strings.Contains(name, "=") {
			continue
		}
		if off, isNo := strings.CutPrefix(name, "no-"); isNo {
			if off == "sse4" {
				off = "sse4.1"
			}
			for x := range req {
				if builtOn(x, off) {
					delete(req, x)
				}
			}
			continue
		}
		if _, known := isaFlags[name]; known {
			req[name] = requirement{ext: name, origin: w, pos: i}
		}
	}
	// Report by the first flag that asked for something missing, with
	// everything that flag asked for and this CPU lacks.
	reqs := slices.SortedFunc(maps.Values(req), func(a, b requirement) int {
		if a.pos != b.pos {
			return a.pos - b.pos
		}
		return strings.Compare(a.ext, b.ext)
	})
	for i, r := range reqs {
		lack := m.lacking(ix, isaFlags[r.ext])
		if len(lack) == 0 {
			continue
		}
		for _, o := range reqs[i+1:] {
			if o.origin != r.origin {
				break
			}
			for _, l := range m.lacking(ix, isaFlags[o.ext]) {
				if !slices.Contains(lack, l) {
					lack = append(lack, l)
				}
			}
		}
		if marchLevel(march) > 0 && r.origin == "-march="+march {
			return fmt.Sprintf("was built with %s%s, this CPU is %s (lacks %s)", r.origin, in, levelName(m.X86Level), strings.Join(lack, " "))
		}
		return fmt.Sprintf("was built with %s%s, this CPU lacks %s", r.origin, in, strings.Join(lack, " "))
	}
	return ""
}

// levelGCC is each x86-64 level's extensions by their gcc names: what
// -march=x86-64[-vN] enables.
var levelGCC = [][]string{
	1: {"mmx", "sse", "sse2", "fxsr"},
	2: {"cx16", "sahf", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3"},
	3: {"avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"},
	4: {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}

// marchLevel is the level -march=x86-64 (1) or x86-64-vN (N) names, 0 for
// any other value.
func marchLevel(march string) int {
	switch march {
	case "x86-64":
		return 1
	case "x86-64-v2", "x86-64-v3", "x86-64-v4":
		return int(march[len(march)-1] - '0')
	}
	return 0
}
