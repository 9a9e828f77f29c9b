package votes

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// servingBook serves a store of 100k attestations of ~2.5 KiB on one
// platform, one build key each, over 1000 seconds.
func servingBook(b *testing.B) *Book {
	b.Helper()
	st, err := store.Open(filepath.Join(b.TempDir(), "state"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	for i := 0; i < 100_000; i += 1000 {
		batch := make([]store.AttestationRecord, 1000)
		for j := range batch {
			n := i + j
			blob := make([]byte, 2500)
			copy(blob, fmt.Sprintf("attestation %d", n))
			batch[j] = store.AttestationRecord{BuildKey: fmt.Sprintf("bk%d", n), VariantKey: "vk", CPV: "cat/pkg-1", Platform: "amd64",
				Attester: fmt.Sprintf("peer%d", n%500), Blob: blob, Time: int64(1_700_000_000 + n/100)}
		}
		if _, err := st.PutAttestations(batch); err != nil {
			b.Fatal(err)
		}
	}
	return New(Options{Store: st, Platform: "amd64", Limits: config.Defaults().Limits})
}

// BenchmarkServeFingerprints100k is the work bound of one fingerprints
// answer (maxFingerprintIDs ids walked, from the whole range asked), and
// BenchmarkServeIDPage100k that of one ids page, side by side:
//
//	go test -run '^$' -bench 'Serve(Fingerprints|IDPage)100k' -benchmem ./votes/
func BenchmarkServeFingerprints100k(b *testing.B) {
	vb := servingBook(b)
	b.ResetTimer()
	for b.Loop() {
		sl, err := vb.ServeCatalogFingerprints(b.Context(), "amd64", 1, 1_800_000_000, wire.MaxCatalogSlices)
		if err != nil || len(sl) == 0 {
			b.Fatalf("%d slices, %v", len(sl), err)
		}
	}
}

func BenchmarkServeIDPage100k(b *testing.B) {
	vb := servingBook(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ids, err := vb.ServeCatalogIDs(b.Context(), "amd64", wire.CatalogCursor{Since: int64(1_700_000_000 + (i*37)%900)})
		if err != nil || len(ids) == 0 {
			b.Fatalf("%d ids, %v", len(ids), err)
		}
	}
}
