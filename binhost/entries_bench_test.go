package binhost

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// BenchmarkEntriesUnderFlood measures the gateway catalog (what every
// Packages request evaluates) while one identity's full storage budget of
// 54 KiB junk attestations sits in the store.
//
//	go test -run '^$' -bench EntriesUnderFlood -benchmem ./binhost/
func BenchmarkEntriesUnderFlood(b *testing.B) {
	cfg := config.Defaults()
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	selfKey, err := hostile.Identity()
	if err != nil {
		b.Fatal(err)
	}
	self, _ := peer.IDFromPrivateKey(selfKey)
	plat := hostile.Platform{CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -pipe", CXXFLAGS: "-O2 -pipe", LDFLAGS: "-Wl,-O1"}
	vb := votes.New(votes.Options{
		Store: st, Policy: policy, Self: self, Platform: plat.Platform(),
		Limits: cfg.Limits, Files: xpak.DefaultLimits(), Net: memnet.New().Join(self),
	})
	ls := New(Options{Store: st, Votes: vb, Platform: plat.Platform(), Prefetch: config.PrefetchAll})

	k, err := hostile.Identity()
	if err != nil {
		b.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	now := time.Now()
	for i := range 400 {
		s, err := hostile.Junk(k, plat, i, 54<<10, now.Add(-time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		// Past its budget the flooder's records are kept (evicting its
		// older ones) but not relayed: stored, with an error.
		if added, err := vb.IngestFrom(context.Background(), s.Marshal(), id); !added {
			b.Fatalf("junk %d not stored: %v", i, err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := ls.Entries(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
