package materialize

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

func TestDropStalePartials(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mz := New(Options{Store: st})
	old := filepath.Join(st.PartialDir(), "aa.part")
	fresh := filepath.Join(st.PartialDir(), "bb.part")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	week := time.Now().Add(-8 * 24 * time.Hour)
	if err := os.Chtimes(old, week, week); err != nil {
		t.Fatal(err)
	}
	mz.dropStalePartials(time.Now().Add(-partialMaxAge))
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Error("a partial download older than a week was kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("a recent partial download was dropped")
	}
}
