package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestCatalogSyncPages: a catalog larger than one response (p2p caps a
// response at 4096 blobs) reaches a newcomer whole, page by page.
func TestCatalogSyncPages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	a, err := testnet.Start(ctx, testnet.NodeOptions{Name: "a", Dir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	// Four attesters of many builds each (each within its storage budget
	// on the newcomer).
	var keys []crypto.PrivKey
	for range 4 {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	// More attestations than one page of the catalog protocol, all for
	// a's platform.
	total := p2p.MaxBlobs + 300
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	recs := make([]store.AttestationRecord, 0, total)
	for i := range total {
		desc := identity.Descriptor{
			CPV: fmt.Sprintf("app-misc/pkg%d-1.0", i), EbuildDigest: fmt.Sprintf("%064x", i),
			Eclasses: map[string]string{}, USE: []string{}, CHOST: testnet.FixturePortage.CHOST,
			CFLAGS: testnet.FixturePortage.CFLAGS, CXXFLAGS: testnet.FixturePortage.CXXFLAGS, LDFLAGS: testnet.FixturePortage.LDFLAGS,
		}
		raw, _ := json.Marshal(desc)
		att := trust.Attestation{
			Version: trust.AttestationVersion, BuildKey: desc.BuildKey().String(), VariantKey: desc.VariantKey().String(),
			CPV: desc.CPV, Platform: desc.Platform(), Descriptor: raw,
			Content:    trust.ContentID{Image: sha256.Sum256([]byte{byte(i), byte(i >> 8)}), Metadata: sha256.Sum256([]byte(desc.CPV))},
			FileSHA256: sha256.Sum256([]byte(desc.CPV + "file")), Size: 1000, PieceSize: 262144, Format: "gpkg",
			PieceRoot: sha256.Sum256([]byte(desc.CPV + "root")),
			// Several share a second, as real catalogs do.
			Time: base.Add(time.Duration(i/3) * time.Second),
		}
		s, err := trust.Sign(att, keys[i%len(keys)])
		if err != nil {
			t.Fatal(err)
		}
		a := s.Attestation
		recs = append(recs, store.AttestationRecord{ID: s.ID(), BuildKey: a.BuildKey, VariantKey: a.VariantKey, CPV: a.CPV,
			Platform: a.Platform, Attester: s.Attester.String(), Content: a.Content.String(), Blob: s.Marshal(), ReceivedAt: time.Now(), Time: a.Time.Unix()})
	}
	if _, err := a.Daemon.Store().PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	e, err := testnet.Start(ctx, testnet.NodeOptions{Name: "e", Dir: dir, Bootstrap: []string{a.Addr()}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if err := testnet.WaitFor(ctx, 150*time.Second, "the newcomer's catalog to fill", func() bool {
		return e.Daemon.API().Status(ctx).CatalogAttestations >= total
	}); err != nil {
		t.Fatalf("%v: newcomer holds %d of %d", err, e.Daemon.API().Status(ctx).CatalogAttestations, total)
	}
}
