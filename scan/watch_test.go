package scan

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// cancelAfterFirst indexes with fakeIndexer and cancels the Sync's context
// once the first file has been indexed, so the Sync stops mid-way with
// that file recorded.
type cancelAfterFirst struct {
	*fakeIndexer
	cancel context.CancelFunc
}

func (c cancelAfterFirst) Index(path string) (store.LocalPackage, error) {
	p, err := c.fakeIndexer.Index(path)
	c.cancel()
	return p, err
}

// TestSyncCancelledKeepsChanges: a Sync cancelled mid-way returns the
// files it already recorded together with ctx.Err(): the one whose
// indexing cancelled it, and any other indexed at the same time (one per
// core), and indexes no further file.
func TestSyncCancelledKeepsChanges(t *testing.T) {
	pkgdir := filepath.Join(t.TempDir(), "pkgdir")
	copyTree(t, fxXPAKMulti, pkgdir)
	st := openStore(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ix := cancelAfterFirst{newFakeIndexer(), cancel}
	sc := New(pkgdir, st, ix, nil)
	ch, err := sc.Sync(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v, want context.Canceled", err)
	}
	if n := ix.total(); len(ch.Added) != n || n < 1 || n > runtime.GOMAXPROCS(0) {
		t.Fatalf("cancelled Sync returned %d added after %d index calls, want as many, at least 1 and at most one per core", len(ch.Added), n)
	}
	for _, p := range ch.Added {
		if !recorded(st, p.Path) {
			t.Errorf("%s returned as added but not in the store", p.Path)
		}
	}
}

// TestWatchReportsCancelledSync: what a cancelled Sync recorded is still
// reported to onChange. Otherwise the file is in the store at its current
// stat, so no later Sync reports it either, and the daemon never attests
// it.
func TestWatchReportsCancelledSync(t *testing.T) {
	pkgdir := filepath.Join(t.TempDir(), "pkgdir")
	copyTree(t, fxXPAKMulti, pkgdir)
	st := openStore(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc := New(pkgdir, st, cancelAfterFirst{newFakeIndexer(), cancel}, nil)
	var log changeLog
	if err := sc.Watch(ctx, log.add); err != nil {
		t.Fatalf("Watch = %v", err)
	}
	recs, err := st.ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 1 || len(recs) > runtime.GOMAXPROCS(0) {
		t.Fatalf("store holds %d records after the cancelled Sync, want 1 to one per core", len(recs))
	}
	for _, r := range recs {
		if !log.has(func(ch Changes) bool { return contains(ch.Added, r.Path) }) {
			t.Fatalf("%s was recorded but never reported to onChange", r.Path)
		}
	}
}
