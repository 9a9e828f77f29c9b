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

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestCatalogSyncPages: a catalog larger than one response reaches a
// newcomer whole, over catalog/3 between two real daemons: one ids page,
// then the records by id, each answer bounded at about 2 MiB. The records
// here carry a descriptor with a thousand USE flags (some 20 KiB), so 2.5
// answers' worth is a few hundred records rather than thousands
// (verifying those under -race took minutes on a loaded machine), and
// the newcomer must still ask for records three times; catalog/2 is not
// used between two daemons that speak 3.
func TestCatalogSyncPages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	a, err := testnet.Start(ctx, testnet.NodeOptions{Name: "a", Dir: dir, Logger: testLogger(),
		Configure: func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }})
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
	use := make([]string, 1000)
	for i := range use {
		use[i] = fmt.Sprintf("use_flag_%04d", i)
	}
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	record := func(i int) store.AttestationRecord {
		desc := identity.Descriptor{
			CPV: fmt.Sprintf("app-misc/pkg%d-1.0", i), EbuildDigest: fmt.Sprintf("%064x", i),
			Eclasses: map[string]string{}, USE: use, CHOST: testnet.FixturePortage.CHOST,
			CFLAGS: testnet.FixturePortage.CFLAGS, CXXFLAGS: testnet.FixturePortage.CXXFLAGS, LDFLAGS: testnet.FixturePortage.LDFLAGS,
		}
		raw, _ := json.Marshal(desc)
		att := trust.Attestation{
			Version: trust.AttestationVersion, BuildKey: desc.BuildKey(), VariantKey: desc.VariantKey(),
			CPV: desc.CPV, Platform: desc.Platform(), Descriptor: raw,
			Content:    trust.ContentID{Image: sha256.Sum256([]byte{byte(i), byte(i >> 8)}), Metadata: sha256.Sum256([]byte(desc.CPV))},
			FileSHA256: sha256.Sum256([]byte(desc.CPV + "file")), Size: 1000, PieceSize: 262144, Format: "gpkg",
			PieceRoot: sha256.Sum256([]byte(desc.CPV + "root")),
			// Several share a second, as real catalogs do.
			Time:   base.Add(time.Duration(i/3) * time.Second),
			Served: trust.ServedSizes{MetadataTar: 10240, ImageTar: 10240},
		}
		s, err := trust.Sign(att, keys[i%len(keys)])
		if err != nil {
			t.Fatal(err)
		}
		a := s.Attestation
		return store.AttestationRecord{ID: s.ID(), BuildKey: string(a.BuildKey), VariantKey: string(a.VariantKey), CPV: a.CPV,
			Platform: a.Platform, Attester: s.Attester.String(), Content: a.Content.String(), Blob: s.Marshal(), ReceivedAt: time.Now(), Time: a.Time.Unix()}
	}
	first := record(0)
	const pageBytes = 2 << 20
	total := 5*pageBytes/2/len(first.Blob) + 1
	recs := []store.AttestationRecord{first}
	for i := 1; i < total; i++ {
		recs = append(recs, record(i))
	}
	if _, err := a.Daemon.Store().PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	catalogOK := fmt.Sprintf("gentoo_p2pd_stream_requests_served_total{protocol=%q,result=\"ok\"}", p2p.CatalogIDsProtocol)
	oldOK := fmt.Sprintf("gentoo_p2pd_stream_requests_served_total{protocol=%q,result=\"ok\"}", p2p.CatalogProtocol)
	before, oldBefore := metricSum(t, a.Daemon.MetricsURL(), catalogOK), metricSum(t, a.Daemon.MetricsURL(), oldOK)
	e, err := testnet.Start(ctx, testnet.NodeOptions{Name: "e", Dir: dir, Bootstrap: []string{a.Addr()}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	// Polled on the store's record count: status reads every record's
	// fields, which under -race costs as much as the sync it waits for.
	held := func() int {
		c, err := e.Daemon.Store().Counts()
		if err != nil {
			t.Fatal(err)
		}
		return c.Attestations
	}
	if err := testnet.WaitFor(ctx, 150*time.Second, "the newcomer's catalog to fill", func() bool {
		return held() >= total
	}); err != nil {
		t.Fatalf("%v: newcomer holds %d of %d", err, held(), total)
	}
	if n := e.Daemon.API().Status(ctx).CatalogAttestations; n != total {
		t.Errorf("the newcomer's status counts %d catalog attestations, want %d", n, total)
	}
	pages := metricSum(t, a.Daemon.MetricsURL(), catalogOK) - before
	t.Logf("%d records of %d bytes came in %v catalog/3 answers", total, len(first.Blob), pages)
	if pages < 4 {
		t.Errorf("the catalog came in %v catalog/3 answers, want an ids page and at least 3 of records", pages)
	}
	if old := metricSum(t, a.Daemon.MetricsURL(), oldOK) - oldBefore; old != 0 {
		t.Errorf("%v catalog/2 answers between two daemons that speak catalog/3", old)
	}
}
