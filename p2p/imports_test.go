package p2p

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestImports keeps p2p ignorant of portage and trust: payloads are opaque
// bytes, so no package of ours (xpak, identity, trust, store, ...) may be
// imported, and no payload decoding can creep into the network layer.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			if strings.Contains(imp.Path.Value, "github.com/gentoo-p2p/gentoo-p2pd") {
				t.Errorf("%s imports %s; p2p imports nothing of ours", f, imp.Path.Value)
			}
		}
	}
}
