package scan

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func paths(ps []store.LocalPackage) string {
	var out []string
	for _, p := range ps {
		out = append(out, filepath.Base(p.Path))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestSyncIncremental(t *testing.T) {
	base := t.TempDir()
	pkgdir := filepath.Join(base, "pkgdir")
	stateDir := filepath.Join(base, "state")
	copyTree(t, fxGPKGMulti, pkgdir)
	ix := newFakeIndexer()
	ctx := context.Background()

	st := openStore(t, stateDir)
	sc := New(pkgdir, st, ix, nil)
	ch, err := sc.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Added) != 5 || ix.total() != 5 || len(ch.Errors) != 0 {
		t.Fatalf("first Sync: added %d, index calls %d, errors %v", len(ch.Added), ix.total(), ch.Errors)
	}
	hello2 := filepath.Join(pkgdir, "app-misc/hello/hello-1.0-2.gpkg.tar")
	rec, ok, err := st.GetLocal(hello2)
	data, _ := os.ReadFile(hello2)
	fi, _ := os.Stat(hello2)
	if err != nil || !ok || rec.FileSHA256 != sha256.Sum256(data) || rec.Size != fi.Size() ||
		rec.MTimeNS != fi.ModTime().UnixNano() || rec.Inode == 0 || rec.IndexedAt.IsZero() || rec.BuildKey != "bk-hello-1.0-2.gpkg.tar" {
		t.Errorf("record for %s = %+v (%v %v)", hello2, rec, ok, err)
	}

	ch, err = sc.Sync(ctx)
	if err != nil || ch.Unchanged != 5 || !ch.Empty() || ix.total() != 5 {
		t.Fatalf("second Sync: %+v %v, index calls %d", ch, err, ix.total())
	}

	// Restart: a new store handle and scanner re-hash nothing.
	st.Close()
	st = openStore(t, stateDir)
	sc = New(pkgdir, st, ix, nil)
	ch, err = sc.Sync(ctx)
	if err != nil || ch.Unchanged != 5 || !ch.Empty() || ix.total() != 5 {
		t.Fatalf("Sync after restart: %+v %v, index calls %d", ch, err, ix.total())
	}

	// Replace one file the way portage does (new file renamed over it),
	// delete another, add a third.
	hello1 := filepath.Join(pkgdir, "app-misc/hello/hello-1.0-1.gpkg.tar")
	tmp := hello1 + ".777"
	must(t, copyFile(fxGPKGCat+"/app-misc/hello-1.0.gpkg.tar", tmp))
	must(t, os.Rename(tmp, hello1))
	libfoo := filepath.Join(pkgdir, "dev-libs/libfoo/libfoo-2.1-1.gpkg.tar")
	must(t, os.Remove(libfoo))
	added := filepath.Join(pkgdir, "dev-libs/libfoo-2.1.tbz2")
	must(t, copyFile(fxXPAKCat+"/dev-libs/libfoo-2.1.tbz2", added))
	ch, err = sc.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if paths(ch.Replaced) != "hello-1.0-1.gpkg.tar" || paths(ch.Removed) != "libfoo-2.1-1.gpkg.tar" ||
		paths(ch.Added) != "libfoo-2.1.tbz2" || ch.Unchanged != 3 || len(ch.Errors) != 0 {
		t.Errorf("Sync after edits: replaced %q removed %q added %q unchanged %d errors %v",
			paths(ch.Replaced), paths(ch.Removed), paths(ch.Added), ch.Unchanged, ch.Errors)
	}
	if ix.total() != 7 || ix.count(hello1) != 2 || ix.count(added) != 1 {
		t.Errorf("index calls: total %d, hello1 %d, added %d", ix.total(), ix.count(hello1), ix.count(added))
	}
	if got, _ := st.LocalBySHA(sha256.Sum256(mustRead(t, hello1))); len(got) != 1 {
		t.Errorf("LocalBySHA of the replaced file: %d records", len(got))
	}

	// A bad binpkg is reported once, is not fatal, and is not re-read
	// until it changes.
	bad := filepath.Join(pkgdir, "app-misc/broken/broken-1-1.gpkg.tar")
	write(t, bad, strings.Repeat("x", 100))
	ch, err = sc.Sync(ctx)
	if err != nil || len(ch.Errors) != 1 || !strings.Contains(ch.Errors[0].Error(), bad) || ch.Unchanged != 5 {
		t.Fatalf("Sync with a bad binpkg: %+v %v", ch, err)
	}
	ch, err = sc.Sync(ctx)
	if err != nil || !ch.Empty() || ix.count(bad) != 1 {
		t.Errorf("second Sync re-read the bad binpkg: %+v %v calls %d", ch, err, ix.count(bad))
	}
	must(t, copyFile(fxGPKGCat+"/app-misc/consumer-1.0.gpkg.tar", bad))
	ch, err = sc.Sync(ctx)
	if err != nil || paths(ch.Added) != "broken-1-1.gpkg.tar" || ix.count(bad) != 2 {
		t.Errorf("Sync after fixing the binpkg: %+v %v", ch, err)
	}

	// A good file that turns bad loses its record.
	write(t, hello1, "truncated")
	ch, err = sc.Sync(ctx)
	if err != nil || paths(ch.Removed) != "hello-1.0-1.gpkg.tar" || len(ch.Errors) != 1 {
		t.Errorf("Sync after corrupting a file: removed %q errors %v (%v)", paths(ch.Removed), ch.Errors, err)
	}
	if _, ok, _ := st.GetLocal(hello1); ok {
		t.Error("corrupted file still recorded")
	}

	// A missing PKGDIR changes nothing.
	must(t, os.Rename(pkgdir, pkgdir+".away"))
	before, _ := st.ListLocal()
	if _, err := sc.Sync(ctx); !errors.Is(err, ErrNoPKGDIR) {
		t.Errorf("Sync of missing PKGDIR: %v", err)
	}
	if after, _ := st.ListLocal(); len(after) != len(before) {
		t.Errorf("missing PKGDIR withdrew records: %d → %d", len(before), len(after))
	}
	if err := st.Check(); err != nil {
		t.Error(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSyncCancelled(t *testing.T) {
	pkgdir := filepath.Join(t.TempDir(), "pkgdir")
	copyTree(t, fxXPAKMulti, pkgdir)
	ix := newFakeIndexer()
	sc := New(pkgdir, openStore(t, t.TempDir()), ix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sc.Sync(ctx); !errors.Is(err, context.Canceled) || ix.total() != 0 {
		t.Errorf("cancelled Sync: %v, index calls %d", err, ix.total())
	}
}

// changeLog collects what Watch reports.
type changeLog struct {
	mu  sync.Mutex
	all []Changes
}

func (c *changeLog) add(ch Changes) {
	c.mu.Lock()
	c.all = append(c.all, ch)
	c.mu.Unlock()
}

func (c *changeLog) has(pred func(Changes) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.all {
		if pred(ch) {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func recorded(st *store.Store, path string) bool {
	_, ok, err := st.GetLocal(path)
	return err == nil && ok
}

func contains(list []store.LocalPackage, path string) bool {
	for _, p := range list {
		if p.Path == path {
			return true
		}
	}
	return false
}

// portageWrite mimics portage: write <final>.<pid>, then rename it into
// place, creating the CAT/PN directories first.
func portageWrite(t *testing.T, src, final string) {
	t.Helper()
	tmp := final + ".31337"
	must(t, copyFile(src, tmp))
	must(t, os.Rename(tmp, final))
}

func TestWatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	base := t.TempDir()
	pkgdir := filepath.Join(base, "binpkgs") // created later, like a fresh system
	st, err := store.Open(filepath.Join(base, "state"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ix := newFakeIndexer()
	sc := New(pkgdir, st, ix, nil)
	sc.Debounce = 50 * time.Millisecond
	sc.MaxDelay = 500 * time.Millisecond
	sc.PollInterval = 20 * time.Millisecond

	log := &changeLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Watch(ctx, log.add) }()

	// PKGDIR appears; a package is written into a brand-new CAT/PN.
	hello := filepath.Join(pkgdir, "app-misc/hello/hello-1.0-1.gpkg.tar")
	must(t, os.MkdirAll(filepath.Dir(hello), 0o755))
	portageWrite(t, fxGPKGMulti+"/app-misc/hello/hello-1.0-1.gpkg.tar", hello)
	eventually(t, "first package indexed", func() bool { return recorded(st, hello) })
	eventually(t, "onChange reports it", func() bool {
		return log.has(func(c Changes) bool { return contains(c.Added, hello) })
	})

	// A second category and package created while watching (mkdir -p
	// races the watch on the new directories).
	libfoo := filepath.Join(pkgdir, "dev-libs/libfoo/libfoo-2.1-1.xpak")
	must(t, os.MkdirAll(filepath.Dir(libfoo), 0o755))
	portageWrite(t, fxXPAKMulti+"/dev-libs/libfoo/libfoo-2.1-1.xpak", libfoo)
	eventually(t, "package in a new category indexed", func() bool { return recorded(st, libfoo) })

	// A later package in an already watched PN directory.
	hello2 := filepath.Join(pkgdir, "app-misc/hello/hello-1.0-2.gpkg.tar")
	portageWrite(t, fxGPKGMulti+"/app-misc/hello/hello-1.0-2.gpkg.tar", hello2)
	eventually(t, "second instance indexed", func() bool { return recorded(st, hello2) })

	// Replacement.
	oldRec, _, _ := st.GetLocal(hello)
	portageWrite(t, fxGPKGCat+"/app-misc/hello-1.0.gpkg.tar", hello)
	eventually(t, "replacement re-indexed", func() bool {
		r, ok, _ := st.GetLocal(hello)
		return ok && r.FileSHA256 != oldRec.FileSHA256
	})
	eventually(t, "onChange reports the replacement", func() bool {
		return log.has(func(c Changes) bool { return contains(c.Replaced, hello) })
	})

	// Deletion.
	must(t, os.Remove(libfoo))
	eventually(t, "deletion noticed", func() bool { return !recorded(st, libfoo) })
	eventually(t, "onChange reports the removal", func() bool {
		return log.has(func(c Changes) bool { return contains(c.Removed, libfoo) })
	})

	// PKGDIR removed and recreated: Watch goes back to waiting, then
	// picks the new one up.
	must(t, os.RemoveAll(pkgdir))
	layout := filepath.Join(pkgdir, "app-misc/layout-1.0-r1.tbz2")
	eventually(t, "recreated PKGDIR watched", func() bool {
		if _, err := os.Stat(layout); err != nil {
			if os.MkdirAll(filepath.Dir(layout), 0o755) == nil {
				_ = copyFile(fxXPAKCat+"/app-misc/layout-1.0-r1.tbz2", layout)
			}
		}
		return recorded(st, layout)
	})
	if n := ix.count(hello2); n != 1 {
		t.Errorf("unchanged %s indexed %d times, want 1", hello2, n)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestWatchCancelWhileWaitingForPKGDIR(t *testing.T) {
	defer goleak.VerifyNone(t)
	st := openStore(t, t.TempDir())
	sc := New(filepath.Join(t.TempDir(), "never"), st, newFakeIndexer(), nil)
	sc.PollInterval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Watch(ctx, func(Changes) { t.Error("onChange without a PKGDIR") }) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil on cancel", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

// TestSyncEachOverlaps: the next batch is indexed while apply works on
// the one before, no more files are read at once than there are cores,
// and every file is still recorded once.
func TestSyncEachOverlaps(t *testing.T) {
	defer goleak.VerifyNone(t)
	base := t.TempDir()
	src := filepath.Join(base, "src")
	copyTree(t, fxGPKGMulti, src)
	data, err := os.ReadFile(filepath.Join(src, "app-misc/hello/hello-1.0-1.gpkg.tar"))
	if err != nil {
		t.Fatal(err)
	}
	pkgdir := filepath.Join(base, "pkgdir")
	dir := filepath.Join(pkgdir, "app-misc/hello")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 2*SyncBatch + 5
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, "hello-1.0-"+strconv.Itoa(i+1)+".gpkg.tar"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ix := &countingIndexer{fakeIndexer: newFakeIndexer()}
	sc := New(pkgdir, openStore(t, filepath.Join(base, "state")), ix, nil)
	var batches, added int
	overlapped := false
	err = sc.SyncEach(context.Background(), func(ch Changes) {
		batches++
		added += len(ch.Added)
		if batches == 1 {
			// Polled: the second batch's indexing starts on its own.
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if ix.total() > SyncBatch {
					overlapped = true
					break
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !overlapped {
		t.Error("the second batch was not indexed while the first was applied")
	}
	if ix.most > runtime.GOMAXPROCS(0) {
		t.Errorf("%d files indexed at once, more than GOMAXPROCS (%d)", ix.most, runtime.GOMAXPROCS(0))
	}
	if added != n || ix.total() != n || batches != 3 {
		t.Fatalf("%d batches, %d added, %d index calls; want 3, %d, %d", batches, added, ix.total(), n, n)
	}
}

// countingIndexer records how many Index calls run at once.
type countingIndexer struct {
	*fakeIndexer
	mu        sync.Mutex
	now, most int
}

func (c *countingIndexer) Index(path string) (store.LocalPackage, error) {
	c.mu.Lock()
	c.now++
	c.most = max(c.most, c.now)
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.now--; c.mu.Unlock() }()
	return c.fakeIndexer.Index(path)
}
