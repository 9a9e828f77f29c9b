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
