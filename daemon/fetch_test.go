package daemon

import (
	"errors"
	"log/slog"
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
		d := &Daemon{store: st, cfg: &config.Config{Mode: mode}, log: slog.New(slog.DiscardHandler)}
		if _, err := (contentSource{d}).Open([32]byte{1, 2, 3}); !errors.Is(err, transfer.ErrNotFound) {
			t.Errorf("mode %s: Open of an unknown file: %v, want transfer.ErrNotFound", mode, err)
		}
	}
}
