package scan

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// indexerFunc adapts a function to Indexer.
type indexerFunc func(path string) (store.LocalPackage, error)

func (f indexerFunc) Index(path string) (store.LocalPackage, error) { return f(path) }

// readIndexer indexes with the real binpkg reader, as the daemon does (minus
// identity and pieces, which are not scan's concern).
func readIndexer(path string) (store.LocalPackage, error) {
	p, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		return store.LocalPackage{}, err
	}
	id, _ := p.Metadata.BuildID()
	return store.LocalPackage{
		FileSHA256:  p.FileSHA256,
		Format:      string(p.Format),
		CPV:         p.Metadata.CPV(),
		BuildID:     id,
		ImageDigest: p.ImageDigest,
	}, nil
}

// TestSyncWithRealReader runs every fixture layout through the real
// reader and checks that what the file name says (ParseName) agrees with
// what the package's metadata says.
func TestSyncWithRealReader(t *testing.T) {
	images := make(map[string][32]byte) // "cpv use" → image digest, across layouts
	for _, fx := range []string{fxGPKGMulti, fxGPKGCat, fxXPAKMulti, fxXPAKCat} {
		t.Run(fx, func(t *testing.T) {
			sc := New(fx, openStore(t, t.TempDir()), indexerFunc(readIndexer), nil)
			ch, err := sc.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(ch.Errors) != 0 || len(ch.Added) < 4 {
				t.Fatalf("Sync: %d added, errors %v", len(ch.Added), ch.Errors)
			}
			abs, _ := filepath.Abs(fx)
			for _, p := range ch.Added {
				rel := filepath.ToSlash(strings.TrimPrefix(p.Path, abs+"/"))
				n, ok := ParseName(rel)
				if !ok {
					t.Fatalf("%s: ParseName rejects an indexed file", rel)
				}
				if p.CPV != n.Category+"/"+n.PF || p.BuildID != n.BuildID || p.Format != n.Format {
					t.Errorf("%s: metadata says %s build %d %s; name says %+v", rel, p.CPV, p.BuildID, p.Format, n)
				}
				if p.FileSHA256 != sha256.Sum256(mustRead(t, p.Path)) {
					t.Errorf("%s: file sha256 mismatch", rel)
				}
				if strings.HasSuffix(rel, "hello-1.0-2.gpkg.tar") {
					continue // the USE=foo build has other files
				}
				if d, seen := images[p.CPV]; seen && d != p.ImageDigest {
					t.Errorf("%s: image digest differs from the same build in another layout", rel)
				}
				images[p.CPV] = p.ImageDigest
			}
		})
	}
}
