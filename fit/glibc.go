package fit

import (
	"strconv"
	"strings"
)

// glibcPrefix starts every glibc symbol version name.
const glibcPrefix = "GLIBC_"

// glibcMarkers are the glibc version names that are not numbered but
// exist only from a release on: a binary needing one needs that release.
// (GLIBC_PRIVATE is left out on purpose: it ties a binary to one glibc
// build, which portage already expresses as a slot-operator dependency.)
var glibcMarkers = map[string]string{
	"GLIBC_ABI_DT_RELR": "GLIBC_2.36", // DT_RELR relocations, glibc 2.36
}

// glibcVersion returns the numbered version a symbol version name stands
// for ("GLIBC_2.34" for itself, "GLIBC_2.36" for GLIBC_ABI_DT_RELR) and
// its numbers, or ok=false for names that are no glibc release.
func glibcVersion(name string) (version string, nums []int, ok bool) {
	if m, found := glibcMarkers[name]; found {
		name = m
	}
	rest, found := strings.CutPrefix(name, glibcPrefix)
	if !found || rest == "" {
		return "", nil, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) > 4 {
		return "", nil, false
	}
	for _, p := range parts {
		if p == "" || len(p) > 6 || strings.TrimLeft(p, "0123456789") != "" {
			return "", nil, false
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return "", nil, false
		}
		nums = append(nums, n)
	}
	return name, nums, true
}

// compareGlibc orders two glibc version names numerically ("GLIBC_2.4" <
// "GLIBC_2.34"); a name that is no version sorts below every version, and
// "" below that.
func compareGlibc(a, b string) int {
	_, na, oka := glibcVersion(a)
	_, nb, okb := glibcVersion(b)
	switch {
	case !oka && !okb:
		return strings.Compare(a, b)
	case !oka:
		return -1
	case !okb:
		return 1
	}
	for i := 0; i < len(na) || i < len(nb); i++ {
		var x, y int
		if i < len(na) {
			x = na[i]
		}
		if i < len(nb) {
			y = nb[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// maxGlibc returns the higher of a current maximum and a symbol version
// name, ignoring names that are no glibc release.
func maxGlibc(cur, name string) string {
	v, _, ok := glibcVersion(name)
	if !ok {
		return cur
	}
	if cur == "" || compareGlibc(v, cur) > 0 {
		return v
	}
	return cur
}
