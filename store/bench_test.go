package store

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPutAttestation measures one durable write (one bbolt
// transaction with fsync, five index entries).
func BenchmarkPutAttestation(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, err := s.PutAttestation(AttestationRecord{
			BuildKey: fmt.Sprintf("bk%d", i%1000), VariantKey: "vk", CPV: "cat/pkg-1", Platform: "amd64",
			Attester: fmt.Sprintf("peer%d", i%50), Blob: []byte(fmt.Sprintf("attestation %d", i)), ReceivedAt: time.Now(),
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutAttestations1000 measures a catalog-sync sized batch: 1000
// attestations in one transaction.
func BenchmarkPutAttestations1000(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	n := 0
	for b.Loop() {
		batch := make([]AttestationRecord, 1000)
		for i := range batch {
			batch[i] = AttestationRecord{
				BuildKey: fmt.Sprintf("bk%d", n%1000), VariantKey: "vk", CPV: "cat/pkg-1", Platform: "amd64",
				Attester: fmt.Sprintf("peer%d", n%50), Blob: []byte(fmt.Sprintf("attestation %d", n)),
			}
			n++
		}
		if _, err := s.PutAttestations(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestationsFor measures a vote lookup in a store holding 20k
// attestations over 1000 build keys.
func BenchmarkAttestationsFor(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.db.NoSync = true // setup only: durability is not what is measured
	for i := range 20000 {
		blob := make([]byte, 300)
		copy(blob, fmt.Sprintf("attestation %d", i))
		if _, err := s.PutAttestation(AttestationRecord{
			BuildKey: fmt.Sprintf("bk%d", i%1000), Platform: "amd64", Attester: fmt.Sprintf("peer%d", i%50), Blob: blob,
		}); err != nil {
			b.Fatal(err)
		}
	}
	s.db.NoSync = false
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.AttestationsFor(fmt.Sprintf("bk%d", i%1000)); err != nil {
			b.Fatal(err)
		}
	}
}

// catalogStore holds 100k attestations of ~2.5 KiB (an honest record's
// size) on one platform, over 1000 seconds.
func catalogStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	s.db.NoSync = true // setup only
	const total = 100_000
	for i := 0; i < total; i += 1000 {
		batch := make([]AttestationRecord, 1000)
		for j := range batch {
			n := i + j
			blob := make([]byte, 2500)
			copy(blob, fmt.Sprintf("attestation %d", n))
			batch[j] = AttestationRecord{BuildKey: fmt.Sprintf("bk%d", n), VariantKey: "vk", CPV: "cat/pkg-1", Platform: "amd64",
				Attester: fmt.Sprintf("peer%d", n%500), Blob: blob, Time: int64(1_700_000_000 + n/100)}
		}
		if _, err := s.PutAttestations(batch); err != nil {
			b.Fatal(err)
		}
	}
	s.db.NoSync = false
	return s
}

// BenchmarkPlatformPage100k is what one catalog/2 answer costs now: one
// page (2048 records or 2 MiB) walked from the time index of a store
// holding 100k attestations. Compare B/op with BenchmarkCatalogWhole100k,
// the whole-platform load each answer used to make.
//
//	go test -run '^$' -bench 'Catalog(Page|Whole)100k' -benchmem ./store/
func BenchmarkPlatformPage100k(b *testing.B) {
	s := catalogStore(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		page, err := s.PlatformPage("amd64", int64(1_700_000_000+(i*37)%900), nil, 2048, 2<<20)
		if err != nil || len(page) == 0 {
			b.Fatalf("page: %d records, %v", len(page), err)
		}
	}
}

// BenchmarkCatalogWhole100k loads the whole platform, as catalog/1 did per
// request before it paged from the store.
func BenchmarkCatalogWhole100k(b *testing.B) {
	s := catalogStore(b)
	b.ResetTimer()
	for b.Loop() {
		recs, err := s.Catalog("amd64")
		if err != nil || len(recs) != 100_000 {
			b.Fatalf("catalog: %d records, %v", len(recs), err)
		}
	}
}
