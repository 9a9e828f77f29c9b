package identity

import (
	"fmt"
	"regexp"
)

// A peer's demand names a package and USE flags that a builder hands to
// portage (packaging/gentoo-p2pd-build) and that search and status print:
// both must be what portage's grammar allows and nothing else, so a
// stranger's record can carry neither a second package.use line nor a
// terminal escape.
var (
	cpvPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9+_.-]*/[A-Za-z0-9_][A-Za-z0-9+_-]*-[0-9][A-Za-z0-9._-]*$`)
	// usePattern is PMS 3.1.4: a letter or digit, then letters, digits,
	// +, _, @ and -.
	usePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+_@-]*$`)
)

// MaxUSEFlags bounds the enabled USE flags of one buildable descriptor
// (real packages with every USE_EXPAND enabled have a few hundred).
const MaxUSEFlags = 1024

// CheckBuildable reports whether d names a package and USE flags a builder
// may hand to portage: a category/package-version and flags portage's
// grammar allows, at most MaxUSEFlags of them.
func (d Descriptor) CheckBuildable() error {
	if len(d.CPV) > 256 || !cpvPattern.MatchString(d.CPV) {
		return fmt.Errorf("cpv %q is not category/package-version", d.CPV)
	}
	if len(d.USE) > MaxUSEFlags {
		return fmt.Errorf("%d USE flags, more than %d", len(d.USE), MaxUSEFlags)
	}
	for _, f := range d.USE {
		if len(f) > 128 || !usePattern.MatchString(f) {
			return fmt.Errorf("USE flag %q is not a USE flag name", f)
		}
	}
	return nil
}
