package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClock drives the cache's notion of time so LRU order is explicit.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func commitN(t *testing.T, c *Cache, blob string) CacheEntry {
	t.Helper()
	f, err := c.CreateTemp()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(blob); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e, err := c.Commit(f.Name(), sum(blob), CacheMeta{CPV: "cat/" + blob})
	if err != nil {
		t.Fatalf("Commit(%q): %v", blob, err)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file %s still exists after Commit: %v", f.Name(), err)
	}
	return e
}

func TestCacheCommitAndGC(t *testing.T) {
	s := openTest(t, t.TempDir())
	c := s.Cache()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c.now = clk.now

	blobs := []string{"aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc", "dddddddddd"} // 10 bytes each
	for _, b := range blobs {
		commitN(t, c, b)
		clk.advance(2 * TouchGranularity)
	}
	if got := c.Usage(); got != 40 {
		t.Fatalf("Usage = %d, want 40", got)
	}
	data, err := os.ReadFile(c.Path(sum("cccccccccc")))
	if err != nil || string(data) != "cccccccccc" {
		t.Fatalf("cached file = %q %v", data, err)
	}
	// A duplicate commit keeps one copy.
	commitN(t, c, "aaaaaaaaaa")
	if got := c.Usage(); got != 40 {
		t.Fatalf("Usage after duplicate = %d, want 40", got)
	}
	// a is the oldest, but touching it makes b the least recently used.
	if err := c.Touch(sum("aaaaaaaaaa")); err != nil {
		t.Fatal(err)
	}
	keepC := func(sha [32]byte) bool { return sha == sum("cccccccccc") }

	tests := []struct {
		budget    int64
		wantFreed int64
		wantLeft  []string
	}{
		{budget: 40, wantFreed: 0, wantLeft: []string{"aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc", "dddddddddd"}},
		{budget: 35, wantFreed: 10, wantLeft: []string{"aaaaaaaaaa", "cccccccccc", "dddddddddd"}}, // b: LRU
		{budget: 20, wantFreed: 10, wantLeft: []string{"aaaaaaaaaa", "cccccccccc"}},               // c kept, d next
		{budget: 0, wantFreed: 10, wantLeft: []string{"cccccccccc"}},                              // only kept survives
	}
	for _, tt := range tests {
		freed, err := c.GC(tt.budget, keepC)
		if err != nil {
			t.Fatalf("GC(%d): %v", tt.budget, err)
		}
		if freed != tt.wantFreed {
			t.Errorf("GC(%d) freed %d, want %d", tt.budget, freed, tt.wantFreed)
		}
		var left []string
		for _, b := range blobs {
			has, err := c.Has(sum(b))
			if err != nil {
				t.Fatal(err)
			}
			_, statErr := os.Stat(c.Path(sum(b)))
			if has != (statErr == nil) {
				t.Errorf("GC(%d): %s: entry %v but file %v", tt.budget, b, has, statErr)
			}
			if has {
				left = append(left, b)
			}
		}
		if strings.Join(left, ",") != strings.Join(tt.wantLeft, ",") {
			t.Errorf("GC(%d) left %v, want %v", tt.budget, left, tt.wantLeft)
		}
		if c.Usage() > tt.budget && len(left) > 1 {
			t.Errorf("GC(%d): usage %d over budget with evictable files left", tt.budget, c.Usage())
		}
	}
	if c.Usage() != 10 {
		t.Errorf("final usage %d, want 10", c.Usage())
	}
	if n, _ := s.Counts(); n.CacheFiles != 1 || n.CacheBytes != 10 {
		t.Errorf("Counts = %+v", n)
	}
}

func TestCacheTouchGranularity(t *testing.T) {
	s := openTest(t, t.TempDir())
	c := s.Cache()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c.now = clk.now
	e := commitN(t, c, "x")
	clk.advance(TouchGranularity / 2)
	_ = c.Touch(e.SHA256)
	got, _, _ := c.Get(e.SHA256)
	if !got.LastAccess.Equal(e.LastAccess) {
		t.Errorf("touch within granularity rewrote last access")
	}
	clk.advance(TouchGranularity)
	_ = c.Touch(e.SHA256)
	got, _, _ = c.Get(e.SHA256)
	if !got.LastAccess.Equal(clk.t) {
		t.Errorf("LastAccess = %v, want %v", got.LastAccess, clk.t)
	}
	if err := c.Touch(sum("not cached")); err != nil {
		t.Errorf("Touch of an uncached sha: %v", err)
	}
}

func TestCacheCommitRejectsMismatch(t *testing.T) {
	s := openTest(t, t.TempDir())
	c := s.Cache()
	f, err := c.CreateTemp()
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("actual")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Commit(f.Name(), sum("claimed"), CacheMeta{}); !errors.Is(err, ErrCacheMismatch) {
		t.Fatalf("Commit of wrong bytes: %v, want ErrCacheMismatch", err)
	}
	if has, _ := c.Has(sum("claimed")); has || c.Usage() != 0 {
		t.Error("mismatched file was recorded")
	}
}

func TestCacheReconcileOnOpen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	c := s.Cache()
	kept := commitN(t, c, "kept")
	vanished := commitN(t, c, "vanished")
	resized := commitN(t, c, "resized")
	s.Close()

	// Simulate crashes: a file deleted behind the store's back, one
	// rewritten, an unreferenced complete file, a temp file; plus a
	// stranger's file that must survive.
	if err := os.Remove(c.Path(vanished.SHA256)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Path(resized.SHA256), []byte("resized, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := sum("orphan")
	orphanPath := c.Path(orphan)
	if err := os.MkdirAll(filepath.Dir(orphanPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orphanPath, []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(c.Dir(), tempPrefix+"123")
	if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	stranger := filepath.Join(c.Dir(), "README")
	if err := os.WriteFile(stranger, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir)
	c = s.Cache()
	entries, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].SHA256 != kept.SHA256 || entries[0].Meta.CPV != "cat/kept" || entries[0].Path != c.Path(kept.SHA256) {
		t.Errorf("entries after reconcile = %+v, want only %q", entries, "kept")
	}
	if c.Usage() != kept.Size {
		t.Errorf("usage %d, want %d", c.Usage(), kept.Size)
	}
	for _, p := range []string{orphanPath, tmp, c.Path(resized.SHA256)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived reconcile: %v", p, err)
		}
	}
	if _, err := os.Stat(stranger); err != nil {
		t.Errorf("reconcile removed a file it does not own: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestPartialDir(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if fi, err := os.Stat(s.PartialDir()); err != nil || !fi.IsDir() || filepath.Dir(s.PartialDir()) != dir {
		t.Errorf("PartialDir %s: %v %v", s.PartialDir(), fi, err)
	}
}

func TestPruneLeaves(t *testing.T) {
	s := openTest(t, t.TempDir())
	loc := local("/p/a.tbz2", "local bytes", "bk")
	if err := s.PutLocal(loc); err != nil {
		t.Fatal(err)
	}
	cached := commitN(t, s.Cache(), "cached bytes")
	gone := sum("gone bytes")
	for _, sha := range [][32]byte{loc.FileSHA256, cached.SHA256, gone} {
		if err := s.PutLeaves(sha, [][32]byte{sha}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneLeaves()
	if err != nil || n != 1 {
		t.Fatalf("PruneLeaves = %d %v, want 1", n, err)
	}
	for _, tt := range []struct {
		sha  [32]byte
		want bool
	}{{loc.FileSHA256, true}, {cached.SHA256, true}, {gone, false}} {
		if _, ok, _ := s.GetLeaves(tt.sha); ok != tt.want {
			t.Errorf("leaves of %x present = %v, want %v", tt.sha[:4], ok, tt.want)
		}
	}
	// Once the local package leaves PKGDIR, its leaves go too.
	if _, _, err := s.DeleteLocal(loc.Path); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.PruneLeaves(); n != 1 {
		t.Errorf("second PruneLeaves dropped %d, want 1", n)
	}
}

// CommitVerified moves a file in without hashing it, and the content a
// caller verified is kept with the entry, across a reopen.
func TestCacheCommitVerifiedKeepsContent(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	c := s.Cache()
	f, err := c.CreateTemp()
	if err != nil {
		t.Fatal(err)
	}
	const blob = "verified-bytes"
	if _, err := f.WriteString(blob); err != nil {
		t.Fatal(err)
	}
	f.Close()
	meta := CacheMeta{CPV: "cat/pkg-1", BuildKey: "bk", ImageDigest: sum("image"), MetadataDigest: sum("metadata")}
	e, err := c.CommitVerified(f.Name(), sum(blob), meta)
	if err != nil {
		t.Fatal(err)
	}
	if e.Size != int64(len(blob)) || e.Path != c.Path(sum(blob)) {
		t.Fatalf("entry %+v", e)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still at its old path: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir).Cache()
	got, ok, err := c.Get(sum(blob))
	if err != nil || !ok || got.Meta != meta {
		t.Fatalf("after reopen: %+v %v %v; want meta %+v", got.Meta, ok, err, meta)
	}
	if _, err := c.CommitVerified(filepath.Join(dir, "missing"), sum("x"), CacheMeta{}); err == nil {
		t.Error("CommitVerified of a missing file succeeded")
	}
}
