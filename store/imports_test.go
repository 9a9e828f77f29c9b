package store

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportsNothingOfOurs keeps the store independent of trust and
// identity: it stores opaque blobs, so a change to the attestation format
// can never require a storage migration.
func TestImportsNothingOfOurs(t *testing.T) {
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
			if strings.Contains(imp.Path.Value, "github.com/gentoo-p2p/gentoo-p2pd") {
				t.Errorf("%s imports %s; package store must import nothing of ours", f, imp.Path.Value)
			}
		}
	}
}
