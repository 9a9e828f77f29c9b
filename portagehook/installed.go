package portagehook

import (
	"os"
	"path/filepath"
	"strings"
)

// InstalledPackages reads the category/PN of every package installed in
// portage's vdb (/var/db/pkg/CAT/PF). A missing vdb is an empty set.
func InstalledPackages(vdb string) map[string]bool {
	out := map[string]bool{}
	cats, err := os.ReadDir(vdb)
	if err != nil {
		return out
	}
	for _, c := range cats {
		if !c.IsDir() || strings.HasPrefix(c.Name(), ".") {
			continue
		}
		pkgs, err := os.ReadDir(filepath.Join(vdb, c.Name()))
		if err != nil {
			continue
		}
		for _, p := range pkgs {
			if pn, ok := SplitPN(p.Name()); ok && p.IsDir() {
				out[c.Name()+"/"+pn] = true
			}
		}
	}
	return out
}
