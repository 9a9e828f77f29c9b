package binhost

import (
	"context"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// BenchmarkEntriesUnderFlood measures the gateway catalog while one
// identity's full storage budget of 54 KiB junk attestations sits in the
// store: kept (nothing changed since the last request) and evaluated (the
// first request of a new book and listings).
//
//	go test -run '^$' -bench EntriesUnderFlood -benchmem ./binhost/
func BenchmarkEntriesUnderFlood(b *testing.B) {
	cfg := config.Defaults()
	cfg.Trust.FreshWeight = 100 // a closed network: every attester counts
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		b.Fatal(err)
	}
	plat := hostile.Platform{CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -pipe", CXXFLAGS: "-O2 -pipe", LDFLAGS: "-Wl,-O1"}
	self := jobtest.NewPeer(b, memnet.New(), jobtest.WithPolicy(policy), jobtest.WithPlatform(plat.Platform()))
	vb := self.Book
	ls := New(Options{Store: self.Store, Votes: vb, Platform: plat.Platform(), Prefetch: config.PrefetchAll, Machine: func() (*fit.Machine, error) { return jobtest.Machine(), nil }})

	k, id := jobtest.NewKey(b)
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
	// kept: nothing changed since the last request.
	b.Run("kept", func(b *testing.B) {
		for b.Loop() {
			if _, err := ls.Entries(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	// evaluated: a fresh book and listings each time (a restart), so the
	// junk is walked again.
	b.Run("evaluated", func(b *testing.B) {
		for b.Loop() {
			fresh := votes.New(votes.Options{Store: self.Store, Policy: policy, Self: self.ID, Platform: plat.Platform(), Limits: cfg.Limits})
			ls := New(Options{Store: self.Store, Votes: fresh, Platform: plat.Platform(), Prefetch: config.PrefetchAll, Machine: func() (*fit.Machine, error) { return jobtest.Machine(), nil }})
			if _, err := ls.Entries(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
