package identity

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package a leaf of the data flow: no networking, and
// nothing of ours but xpak (docs/ARCHITECTURE.md).
func TestImports(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			switch {
			case path == "net" || strings.HasPrefix(path, "net/") || strings.Contains(path, "libp2p"):
				t.Errorf("%s imports %s: identity must not do networking", name, path)
			case strings.HasPrefix(path, "github.com/gentoo-p2p/gentoo-p2pd/") && path != "github.com/gentoo-p2p/gentoo-p2pd/xpak":
				t.Errorf("%s imports %s: identity may import only xpak of ours", name, path)
			}
		}
	}
}
