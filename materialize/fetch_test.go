package materialize

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
)

// TestContentSourceUnknownFile: a file this daemon does not hold is
// transfer.ErrNotFound, so the fetch server answers "not found" (not
// "internal") and logs nothing per request.
func TestContentSourceUnknownFile(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, mode := range []config.Mode{config.ModeShare, config.ModeMirror, config.ModeConsume} {
		mz := New(Options{Store: st, Mode: mode})
		if _, err := mz.Open([32]byte{1, 2, 3}); !errors.Is(err, transfer.ErrNotFound) {
			t.Errorf("mode %s: Open of an unknown file: %v, want transfer.ErrNotFound", mode, err)
		}
	}
}

// A served file whose piece layer the store lacks is hashed once, and the
// layer kept for the next request.
func TestContentSourceKeepsAComputedLayer(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mz := New(Options{Store: st, Mode: config.ModeShare})
	path := filepath.Join(t.TempDir(), "pkg.gpkg.tar")
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), 600<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	sha := [32]byte{9}
	f, err := mz.openFile(sha, path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kept, ok, err := st.GetLeaves(sha)
	if err != nil || !ok || len(kept) != 3 || kept[0] != f.Leaves()[0] {
		t.Fatalf("layer kept: %d leaves, %v, %v; want the 3 just computed", len(kept), ok, err)
	}
}
