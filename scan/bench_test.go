package scan

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// BenchmarkSyncUnchanged measures the steady state: a PKGDIR of 2000
// binpkgs already indexed, where Sync must only stat.
func BenchmarkSyncUnchanged(b *testing.B) {
	base := b.TempDir()
	pkgdir := filepath.Join(base, "pkgdir")
	src := fxXPAKMulti + "/app-misc/hello/hello-1.0-1.xpak"
	for i := range 2000 {
		dst := filepath.Join(pkgdir, fmt.Sprintf("cat-%d/pkg%d/pkg%d-1.0-1.xpak", i%40, i, i))
		if err := copyFile(src, dst); err != nil {
			b.Fatal(err)
		}
	}
	st, err := store.Open(filepath.Join(base, "state"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ix := newFakeIndexer()
	sc := New(pkgdir, st, ix, nil)
	if ch, err := sc.Sync(context.Background()); err != nil || len(ch.Added) != 2000 {
		b.Fatalf("initial Sync: %d added, %v", len(ch.Added), err)
	}
	b.ResetTimer()
	for b.Loop() {
		ch, err := sc.Sync(context.Background())
		if err != nil || ch.Unchanged != 2000 {
			b.Fatalf("Sync: %+v %v", ch.Unchanged, err)
		}
	}
	if ix.total() != 2000 {
		b.Fatalf("unchanged files were re-indexed: %d calls", ix.total())
	}
}
