package votes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// onPlatform moves m's catalog (what it syncs and serves) to platform and
// joins its topic there, as a daemon of that platform.
func onPlatform(t testing.TB, m member, platform string) member {
	t.Helper()
	m.platform = platform
	if err := m.node.JoinPlatform(platform); err != nil {
		t.Fatal(err)
	}
	return m
}

// A Book that joins after demand was gossiped learns it from a peer's
// catalog sync: Wanted shows every variant with its wanters, a second
// sync adds nothing, and SyncLoop does the same for a peer it meets.
func TestDemandSyncTeachesANewcomer(t *testing.T) {
	net := memnet.New()
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	layout := fixtureDescriptor(t, "app-misc/layout-1.0-r1.gpkg.tar")
	platform := hello.Platform()
	a := onPlatform(t, joinBook(t, net, true, nil), platform)
	c := onPlatform(t, joinBook(t, net, true, nil), platform)
	ctx := t.Context()
	for _, rec := range []struct {
		m    member
		desc identity.Descriptor
	}{{a, hello}, {a, layout}, {c, hello}} {
		if _, err := rec.m.RecordDemand(ctx, rec.desc, trust.DemandSource); err != nil {
			t.Fatal(err)
		}
	}
	if a.WantCount(hello.VariantKey()) != 2 {
		t.Fatal("gossip did not bring c's demand to a")
	}
	// b comes online afterwards: gossip is gone, the sync brings it.
	b := onPlatform(t, joinBook(t, net, false, nil), platform)
	if w, _ := b.Wanted(platform, 0); len(w) != 0 {
		t.Fatalf("newcomer wants %+v before any sync", w)
	}
	n, err := b.SyncFrom(ctx, a.self)
	if err != nil || n != 3 {
		t.Fatalf("SyncFrom: %d new, %v; want a's 3 demand records", n, err)
	}
	wants, err := b.Wanted(platform, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(wants) != 2 || wants[0].Variant != hello.VariantKey() || wants[0].Wanters != 2 ||
		wants[1].Variant != layout.VariantKey() || wants[1].Wanters != 1 {
		t.Fatalf("newcomer wants %+v; want hello by 2, layout by 1", wants)
	}
	if wants[0].Descriptor.VariantKey() != hello.VariantKey() {
		t.Fatal("synced want does not describe its variant")
	}
	if n, err := b.SyncFrom(ctx, a.self); n != 0 || err != nil {
		t.Fatalf("second sync: %d new, %v", n, err)
	}
	if b.Rejected() != 0 {
		t.Fatalf("%d honest records rejected", b.Rejected())
	}

	// The loop a daemon runs: a peer seen for the first time is synced,
	// demand included.
	d := onPlatform(t, joinBook(t, net, false, nil), platform)
	d.syncTick = 5 * time.Millisecond
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.SyncLoop(lctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	eventually(t, "demand at the newcomer's SyncLoop", func() bool {
		return d.WantCount(hello.VariantKey()) == 2 && d.WantCount(layout.VariantKey()) == 1
	})
}

// A daemon that predates demand sync answers the demand namespace with an
// empty page (it holds no attestations of such a platform), and the sync
// ends without error.
func TestDemandSyncFromAnOlderPeer(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	a.node.Serve(p2p.Handlers{Catalog: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([][]byte, error) {
		recs, err := a.store.PlatformPage(platform, cur.Since, cur.After, wire.MaxBlobs/2, a.pageBytes) // the old ServeCatalog's read
		out := [][]byte{}
		for _, r := range recs {
			out = append(out, r.Blob)
		}
		return out, err
	}})
	if n, next, more, err := b.syncDemandFrom(t.Context(), a.self, wire.CatalogCursor{}); n != 0 || more || err != nil || next.After != nil {
		t.Fatalf("demand sync from an old peer: %d, %+v, %v, %v", n, next, more, err)
	}
}

// A sync page mixing hostile records with honest ones: the forged,
// relabelled and other-platform records are rejected and counted, the
// stale one and this daemon's own echo are not kept, and the honest ones
// around them are all stored.
func TestDemandSyncRefusesHostileRecordsKeepsTheRest(t *testing.T) {
	net := memnet.New()
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	layout := fixtureDescriptor(t, "app-misc/layout-1.0-r1.gpkg.tar")
	platform := hello.Platform()
	a := joinBook(t, net, false, nil)
	b := onPlatform(t, joinBook(t, net, false, nil), platform)
	now := time.Now().Add(-time.Hour)
	k, _ := mustKey(t)
	forged := *signDemand(t, k, layout, now, nil)
	forged.Signature = append([]byte(nil), forged.Signature...)
	forged.Signature[7] ^= 1
	elsewhere := hello
	elsewhere.CFLAGS = "-O3 -pipe"
	var honest []*trust.SignedDemand
	for i := range 4 {
		hk, _ := mustKey(t)
		honest = append(honest, signDemand(t, hk, hello, now.Add(time.Duration(i)*time.Second), nil))
	}
	page := [][]byte{
		honest[0].Marshal(),
		signDemand(t, k, hello, now, func(d *trust.Demand) { d.VariantKey = layout.VariantKey() }).Marshal(), // relabelled
		forged.Marshal(),
		honest[1].Marshal(),
		signDemand(t, k, elsewhere, now, nil).Marshal(), // valid, another platform
		[]byte("not a demand record"),
		signDemand(t, k, layout, now.Add(-DemandHorizon-time.Hour), nil).Marshal(), // past the horizon
		signDemand(t, b.key, layout, now, nil).Marshal(),                           // b's own, echoed
		honest[2].Marshal(),
		honest[3].Marshal(),
	}
	var mu sync.Mutex
	var asked []string
	a.node.Serve(p2p.Handlers{Catalog: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([][]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, platform)
		if len(asked) > 1 {
			return nil, nil
		}
		return page, nil
	}})
	n, next, more, err := b.syncDemandFrom(t.Context(), a.self, wire.CatalogCursor{})
	if err != nil || more || n != len(honest) {
		t.Fatalf("sync: %d new, more %v, %v; want the %d honest records", n, more, err, len(honest))
	}
	if asked[0] != DemandNamespace+platform {
		t.Fatalf("asked for %q, want %q", asked[0], DemandNamespace+platform)
	}
	if next.Since != honest[3].Demand.Time.Unix() {
		t.Fatalf("cursor at %d, want the newest honest record's time %d", next.Since, honest[3].Demand.Time.Unix())
	}
	if got := b.WantCount(hello.VariantKey()); got != len(honest) {
		t.Fatalf("hello wanted by %d, want %d", got, len(honest))
	}
	if b.WantCount(layout.VariantKey()) != 0 || b.WantCount(elsewhere.VariantKey()) != 0 {
		t.Fatal("a hostile, stale or echoed record was kept")
	}
	if b.Rejected() != 4 {
		t.Fatalf("%d rejections; want 4 (relabelled, forged, other platform, garbage)", b.Rejected())
	}
}

// Pages are bounded by the server (bytes and records per page), and a
// client stops after maxCatalogPages however many records a peer invents.
func TestDemandSyncPageBounds(t *testing.T) {
	net := memnet.New()
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	platform := hello.Platform()
	a := onPlatform(t, joinBook(t, net, false, nil), platform)
	b := onPlatform(t, joinBook(t, net, false, nil), platform)
	now := time.Now().Add(-time.Hour)
	var blobs [][]byte
	for i := range 12 {
		k, id := mustKey(t)
		s := signDemand(t, k, hello, now.Add(time.Duration(i/3)*time.Second), nil)
		if err := a.OnGossip(id, id, platform, demandMsg(s)); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, s.Marshal())
	}
	a.pageBytes = 2*len(blobs[0]) + 1 // three records reach it
	var mu sync.Mutex
	pages := 0
	a.node.Serve(p2p.Handlers{Catalog: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([][]byte, error) {
		bs, err := a.ServeCatalog(ctx, platform, cur)
		size := 0
		for _, b := range bs {
			size += len(b)
		}
		if len(bs) > 3 || len(bs) > 1 && size-len(bs[len(bs)-1]) >= a.pageBytes {
			t.Errorf("page of %d records, %d bytes: over the bound of %d bytes", len(bs), size, a.pageBytes)
		}
		mu.Lock()
		pages++
		mu.Unlock()
		return bs, err
	}})
	n, _, more, err := b.syncDemandFrom(t.Context(), a.self, wire.CatalogCursor{})
	if err != nil || more || n != len(blobs) {
		t.Fatalf("sync: %d new, more %v, %v; want all %d", n, more, err, len(blobs))
	}
	if pages < len(blobs)/3 {
		t.Fatalf("%d pages for %d records of at most 3 a page", pages, len(blobs))
	}

	// A peer inventing a fresh record for every page is left after
	// maxCatalogPages, with more to come from where the sync stopped.
	k, _ := mustKey(t)
	calls := 0
	a.node.Serve(p2p.Handlers{Catalog: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([][]byte, error) {
		calls++
		d := hello
		d.USE = []string{fmt.Sprintf("invented%d", calls)}
		return [][]byte{signDemand(t, k, d, now.Add(time.Duration(calls)*time.Second), nil).Marshal()}, nil
	}})
	n, next, more, err := b.syncDemandFrom(t.Context(), a.self, wire.CatalogCursor{})
	if err != nil || !more || calls != maxCatalogPages || n != maxCatalogPages {
		t.Fatalf("endless peer: %d pages asked, %d new, more %v, %v; want %d pages, then more", calls, n, more, err, maxCatalogPages)
	}
	if next.Since != now.Add(maxCatalogPages*time.Second).Unix() {
		t.Fatalf("sync stopped at %d, want the last page's record", next.Since)
	}
	// An unreachable peer leaves the cursor where it was.
	a.node.SetOnline(false)
	if _, got, more, err := b.syncDemandFrom(t.Context(), a.self, next); !errors.Is(err, memnet.ErrOffline) || more || got.Since != next.Since {
		t.Fatalf("offline peer: %+v, %v, %v", got, more, err)
	}
}

// A demand page never reaches back past the horizon, whatever cursor is
// asked for: those records no longer count anywhere.
func TestServeDemandStopsAtTheHorizon(t *testing.T) {
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	platform := hello.Platform()
	a := onPlatform(t, joinBook(t, memnet.New(), false, nil), platform)
	now := time.Now().UTC().Truncate(time.Second)
	old, recent := signDemand(t, a.key, hello, now.Add(-29*24*time.Hour), nil), func() []byte {
		k, id := mustKey(t)
		s := signDemand(t, k, hello, now.Add(-time.Hour), nil)
		if err := a.OnGossip(id, id, platform, demandMsg(s)); err != nil {
			t.Fatal(err)
		}
		return s.Marshal()
	}()
	k, id := mustKey(t)
	if err := a.OnGossip(id, id, platform, demandMsg(signDemand(t, k, hello, old.Demand.Time, nil))); err != nil {
		t.Fatal(err)
	}
	page, err := a.ServeCatalog(t.Context(), DemandNamespace+platform, wire.CatalogCursor{})
	if err != nil || len(page) != 2 {
		t.Fatalf("page of %d records (%v), want both", len(page), err)
	}
	a.standing.now = func() time.Time { return now.Add(2 * 24 * time.Hour) } // the older one is 31 days old now
	page, err = a.ServeCatalog(t.Context(), DemandNamespace+platform, wire.CatalogCursor{})
	if err != nil || len(page) != 1 || string(page[0]) != string(recent) {
		t.Fatalf("page of %d records (%v), want only the one within the horizon", len(page), err)
	}
	// Attestation pages of the platform are not demand.
	if page, err := a.ServeCatalog(t.Context(), platform, wire.CatalogCursor{}); err != nil || len(page) != 0 {
		t.Fatalf("attestation page of %d blobs (%v), want none", len(page), err)
	}
}
