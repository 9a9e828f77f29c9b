package scan

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestImports keeps scan a leaf above store: the indexer (identity, pieces,
// xpak) is injected by the daemon, so scan never grows those dependencies.
func TestImports(t *testing.T) {
	allowed := map[string]bool{`"github.com/gentoo-p2p/gentoo-p2pd/store"`: true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
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
			if strings.Contains(imp.Path.Value, "github.com/gentoo-p2p/gentoo-p2pd") && !allowed[imp.Path.Value] {
				t.Errorf("%s imports %s; scan may import only store", f, imp.Path.Value)
			}
		}
	}
}
