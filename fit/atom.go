package fit

import (
	"regexp"
	"strings"
)

// versionSuffix is a PMS version at the end of a CPV: "-1.2.3b_pre4-r1".
var versionSuffix = regexp.MustCompile(`-[0-9]+(\.[0-9]+)*[a-z]?((_alpha|_beta|_pre|_rc|_p)[0-9]*)*(-r[0-9]+)?$`)

// splitCPV splits "dev-libs/libfoo-2.1-r1" into "dev-libs/libfoo" and
// "2.1-r1".
func splitCPV(cpv string) (cp, version string, ok bool) {
	loc := versionSuffix.FindStringIndex(cpv)
	if loc == nil || loc[0] == 0 || !strings.Contains(cpv[:loc[0]], "/") {
		return "", "", false
	}
	return cpv[:loc[0]], cpv[loc[0]+1:], true
}

// slotDep is one slot-operator dependency as portage resolved it at build
// time: ">=dev-libs/foo-1:0/2=[bar]" is dev-libs/foo, slot 0, subslot 2.
type slotDep struct {
	atom    string // as written
	cp      string
	slot    string
	subslot string // "" when the atom names the slot only
}

// parseSlotDep reads a slot-operator atom; ok is false for atoms without
// a resolved slot (":=" alone, ":*") or that are no package atom.
func parseSlotDep(atom string) (slotDep, bool) {
	d := slotDep{atom: atom}
	a, _, _ := strings.Cut(atom, "[")
	a, slot, found := strings.Cut(a, ":")
	if !found {
		return d, false
	}
	slot, ok := strings.CutSuffix(slot, "=")
	if !ok || slot == "" || slot == "*" {
		return d, false
	}
	var hasSub bool
	d.slot, d.subslot, hasSub = strings.Cut(slot, "/")
	if d.slot == "" || hasSub && (d.subslot == "" || strings.Contains(d.subslot, "/")) {
		return d, false
	}
	op := strings.TrimLeft(a, "<>=~!")
	if op != a {
		cp, _, ok := splitCPV(strings.TrimSuffix(op, "*"))
		if !ok {
			return d, false
		}
		d.cp = cp
	} else {
		d.cp = a
	}
	cat, pn, ok := strings.Cut(d.cp, "/")
	if cat == "" || pn == "" || !ok || strings.Contains(pn, "/") {
		return d, false
	}
	return d, true
}

// text is the dependency as a user reads it: "dev-libs/foo:0/2".
func (d slotDep) text() string {
	if d.subslot == "" {
		return d.cp + ":" + d.slot
	}
	return d.cp + ":" + d.slot + "/" + d.subslot
}
