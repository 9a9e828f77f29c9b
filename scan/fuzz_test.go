package scan

import (
	"io/fs"
	"path/filepath"
	"strconv"
	"testing"
)

// FuzzParseName checks that ParseName never panics and that whatever it
// accepts names a file back to the same Name.
func FuzzParseName(f *testing.F) {
	for _, root := range []string{"testdata"} {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(filepath.Join(root, "gpkg", "zstd-multi-instance"), path)
				f.Add(filepath.ToSlash(rel))
				rel, _ = filepath.Rel(filepath.Join(root, "xpak", "bzip2"), path)
				f.Add(filepath.ToSlash(rel))
			}
			return nil
		})
	}
	for _, s := range []string{"hello-1.0.tbz2", "All/x-1.tbz2", "a/b/b-1-01.xpak", "a/b/b-1-+2.gpkg.tar", "a//b.tbz2", "Packages"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		n, ok := ParseName(rel)
		if !ok {
			return
		}
		ext := ".tbz2"
		if n.Format == "gpkg" {
			ext = ".gpkg.tar"
		}
		var again string
		switch n.Layout {
		case LayoutFlat:
			again = n.PF + ext
		case LayoutAll:
			again = "All/" + n.PF + ext
		case LayoutCategory:
			again = n.Category + "/" + n.PF + ext
		case LayoutMultiInstance:
			if n.Format == "xpak" {
				ext = ".xpak"
			}
			again = n.Category + "/" + n.PN + "/" + n.PF + "-" + strconv.FormatInt(n.BuildID, 10) + ext
		default:
			t.Fatalf("ParseName(%q) accepted with layout %q", rel, n.Layout)
		}
		n2, ok := ParseName(again)
		if !ok || n2 != n {
			t.Fatalf("ParseName(%q) = %+v, but its name %q parses as %+v, %v", rel, n, again, n2, ok)
		}
	})
}
