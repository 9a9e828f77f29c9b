package daemon

import (
	"context"
	"errors"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

// BenchmarkEntriesUnderFlood measures the gateway catalog (what every
// Packages request evaluates) while one identity's full storage budget of
// 54 KiB junk attestations sits in the store.
//
//	go test -run '^$' -bench EntriesUnderFlood -benchmem ./daemon/
func BenchmarkEntriesUnderFlood(b *testing.B) {
	d := offlineDaemon(b, func(c *config.Config) { c.Gateway.Prefetch = config.PrefetchAll })
	k, id := mustKey(b)
	for i := range 400 {
		// Past its budget the flooder's records are kept (evicting its
		// older ones) but not relayed: errFlooding.
		if _, err := d.ingestAttestation(context.Background(), junk(b, k, i, 54<<10).Marshal(), arrival{from: id}, false); err != nil && !errors.Is(err, errFlooding) {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := (gatewayCatalog{d}).Entries(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
