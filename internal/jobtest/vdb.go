package jobtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// WriteVDB installs the real binpkg at pkgPath into the vdb at vdb as
// portage records an install: a directory vdb/CATEGORY/PF holding one file
// per metadata key (the XPAK is that directory packed), plus a CONTENTS
// list, which is not metadata. It returns the package's category/PF.
func WriteVDB(t testing.TB, vdb, pkgPath string) string {
	t.Helper()
	pkg, err := xpak.ReadFile(pkgPath, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	m := pkg.Metadata
	dir := filepath.Join(vdb, m.Category(), m.PF())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range m.Keys() {
		v, _ := m.Raw(k)
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	contents := "dir /usr\nobj /usr/bin/" + m.PF() + " d41d8cd98f00b204e9800998ecf8427e 1700000000\n"
	if err := os.WriteFile(filepath.Join(dir, "CONTENTS"), []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	return m.Category() + "/" + m.PF()
}
