package portagehook

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports polices the architecture: portagehook knows nothing of
// libp2p or of the network layer, and xpak stays free of OpenPGP.
func TestImports(t *testing.T) {
	check := func(glob string, banned ...string) {
		files, _ := filepath.Glob(glob)
		if len(files) == 0 {
			t.Fatalf("no files match %s", glob)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, b := range banned {
					if strings.Contains(p, b) {
						t.Errorf("%s imports %s", f, p)
					}
				}
			}
		}
	}
	check("*.go", "libp2p", "gentoo-p2pd/p2p", "gentoo-p2pd/daemon", "viper")
	check("../xpak/gpkgwrite.go", "openpgp", "gentoo-p2pd/")
}
