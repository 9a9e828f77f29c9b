package trust

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports polices the package boundary: trust decides, it never talks
// to the network, and it stays independent of the rest of the daemon so it
// can be reviewed on its own.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowedLibp2p := map[string]bool{
		"github.com/libp2p/go-libp2p/core/crypto":    true,
		"github.com/libp2p/go-libp2p/core/crypto/pb": true,
		"github.com/libp2p/go-libp2p/core/peer":      true,
	}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			switch {
			case path == "net" || strings.HasPrefix(path, "net/") && path != "net/netip":
				t.Errorf("%s imports %s: trust does no networking", file, path)
			case strings.HasPrefix(path, "github.com/gentoo-p2p/gentoo-p2pd/"):
				t.Errorf("%s imports %s: trust imports nothing of ours", file, path)
			case strings.HasPrefix(path, "github.com/libp2p/") && !allowedLibp2p[path]:
				t.Errorf("%s imports %s: only libp2p keys and peer ids belong here", file, path)
			}
		}
	}
}
