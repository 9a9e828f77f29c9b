package scan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A builder's PKGDIR (Extra) is indexed beside PKGDIR; a missing one keeps
// its records and never costs PKGDIR's, and a missing PKGDIR keeps its
// records while the builder's are still indexed.
func TestSyncExtra(t *testing.T) {
	base := t.TempDir()
	pkgdir, built := filepath.Join(base, "pkgdir"), filepath.Join(base, "build", "pkgdir")
	copyTree(t, fxGPKGMulti, pkgdir)
	copyTree(t, fxGPKGMulti, built)
	st := openStore(t, filepath.Join(base, "state"))
	sc := New(pkgdir, st, newFakeIndexer(), nil)
	sc.Extra = []string{built}
	ctx := context.Background()
	ch, err := sc.Sync(ctx)
	if err != nil || len(ch.Added) != 10 {
		t.Fatalf("first Sync: %d added, %v; want both directories' 10", len(ch.Added), err)
	}
	hello := "app-misc/hello/hello-1.0-2.gpkg.tar"
	if !recorded(st, filepath.Join(built, hello)) || !recorded(st, filepath.Join(pkgdir, hello)) {
		t.Fatal("a file of either directory is not recorded")
	}

	if err := os.Rename(built, built+".away"); err != nil {
		t.Fatal(err)
	}
	ch, err = sc.Sync(ctx)
	if err != nil || !ch.Empty() || ch.Unchanged != 5 || !recorded(st, filepath.Join(built, hello)) {
		t.Fatalf("builder's PKGDIR missing: %+v, %v; want nothing removed", ch, err)
	}
	if err := os.Rename(built+".away", built); err != nil {
		t.Fatal(err)
	}

	if err := os.Rename(pkgdir, pkgdir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(built, hello)); err != nil {
		t.Fatal(err)
	}
	ch, err = sc.Sync(ctx)
	if !errors.Is(err, ErrNoPKGDIR) {
		t.Fatalf("PKGDIR missing: %v, want ErrNoPKGDIR", err)
	}
	if len(ch.Removed) != 1 || ch.Removed[0].Path != filepath.Join(built, hello) || !recorded(st, filepath.Join(pkgdir, hello)) {
		t.Fatalf("PKGDIR missing: removed %s; want only the builder's deleted file, PKGDIR's records kept", paths(ch.Removed))
	}

	// Without Extra a missing PKGDIR changes nothing, as before.
	sc.Extra = nil
	ch, err = sc.Sync(ctx)
	if !errors.Is(err, ErrNoPKGDIR) || !ch.Empty() {
		t.Fatalf("PKGDIR missing, no Extra: %+v, %v", ch, err)
	}
}
