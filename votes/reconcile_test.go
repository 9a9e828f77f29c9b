package votes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// reconTap is idTap with catalog/3's reconciliation served too: it counts
// the fingerprints requests and bounded ids pages, and fingerprints, when
// set, replaces the Book's answer (a lying server).
type reconTap struct {
	*idTap

	mu           sync.Mutex
	fps          int
	untilPages   int
	ranges       [][2]int64 // of the attestation fingerprints asked
	fingerprints func(ctx context.Context, platform string, from, until int64, n int) ([]wire.CatalogSlice, error)
}

func (rt *reconTap) handlers() p2p.Handlers {
	h := rt.idTap.handlers()
	h.CatalogIDsUntil = func(ctx context.Context, platform string, cur wire.CatalogCursor, until int64) ([]wire.CatalogID, error) {
		rt.mu.Lock()
		rt.untilPages++
		rt.mu.Unlock()
		return rt.book.ServeCatalogIDsUntil(ctx, platform, cur, until)
	}
	h.CatalogFingerprints = func(ctx context.Context, platform string, from, until int64, n int) ([]wire.CatalogSlice, error) {
		rt.mu.Lock()
		rt.fps++
		if _, demand := isDemandRequest(platform); !demand {
			rt.ranges = append(rt.ranges, [2]int64{from, until})
		}
		serve := rt.fingerprints
		rt.mu.Unlock()
		if serve != nil {
			return serve(ctx, platform, from, until, n)
		}
		return rt.book.ServeCatalogFingerprints(ctx, platform, from, until, n)
	}
	return h
}

// counts are the fingerprints requests and bounded pages so far, and
// forgets them.
func (rt *reconTap) counts() (fps, untilPages int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	fps, untilPages = rt.fps, rt.untilPages
	rt.fps, rt.untilPages = 0, 0
	return fps, untilPages
}

// spreadCatalog is n records of per attesters each, dated evenly over the
// span before now, oldest first.
func spreadCatalog(t testing.TB, n, per int, span time.Duration) []*trust.Signed {
	t.Helper()
	start := time.Now().Add(-span)
	var out []*trust.Signed
	for i := 0; i < n; i += per {
		k, _ := mustKey(t)
		for j := i; j < min(n, i+per); j++ {
			s, err := hostile.Junk(k, testPlatform, j, 600, start.Add(time.Duration(j)*span/time.Duration(n)))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
	}
	return out
}

// twoCatalogs makes a serving a's catalog of recs with an endorsement of
// the build key of recs[endorsed], and b holding all but missing (and
// the endorsement too, unless lacksEndorsement).
func twoCatalogs(t *testing.T, recs []*trust.Signed, endorsed int, missing []*trust.Signed, lacksEndorsement bool) (a, b member, e []byte, tap *reconTap) {
	t.Helper()
	net := memnet.New()
	a = joinBook(t, net, false, nil)
	b = joinBook(t, net, false, nil)
	ctx := t.Context()
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	_, priv := newSigner(t)
	end := NewEndorsement(recs[endorsed].Attestation.BuildKey, a.platform, recs[endorsed].Attestation.Content, priv)
	e = end.Marshal()
	var held []*trust.Signed
	for _, s := range recs {
		if !slices.Contains(missing, s) {
			held = append(held, s)
		}
	}
	if n, err := b.ingestBatch(ctx, blobsOf(held...), arrival{}); n != len(held) || err != nil {
		t.Fatalf("b took %d of %d: %v", n, len(held), err)
	}
	for _, m := range []member{a, b} {
		if m.Book == b.Book && lacksEndorsement {
			continue
		}
		if _, err := m.IngestEndorsement(ctx, e, a.self, false); err != nil {
			t.Fatal(err)
		}
	}
	tap = &reconTap{idTap: &idTap{book: a.Book}}
	a.node.Serve(tap.handlers())
	return a, b, e, tap
}

// newestOf is the cursor of the newest of recs.
func newestOf(recs []*trust.Signed) wire.CatalogCursor {
	last := recs[0]
	for _, s := range recs {
		if c, l := s.ID(), last.ID(); s.Attestation.Time.After(last.Attestation.Time) ||
			s.Attestation.Time.Equal(last.Attestation.Time) && bytes.Compare(c[:], l[:]) > 0 {
			last = s
		}
	}
	id := last.ID()
	return wire.CatalogCursor{Since: last.Attestation.Time.Unix(), After: id[:]}
}

// Two Books holding the same catalog: a full sync (from the start, as on
// connecting and daily) costs one fingerprints answer of a few dozen
// bytes, and the same sync by listing ids costs the ids of the whole
// catalog, measured side by side. Neither asks for a record, and both
// end at the newest record, where the hourly resync goes on from.
func TestReconcileEqualCatalogsCostsOnlyFingerprints(t *testing.T) {
	recs := spreadCatalog(t, 600, 20, 30*24*time.Hour)
	a, b, _, tap := twoCatalogs(t, recs, 300, nil, false)
	ctx := t.Context()

	before := b.node.BytesIn()
	n, next, more, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	if n != 0 || more || err != nil {
		t.Fatalf("sync: %d new, more %v, %v", n, more, err)
	}
	reconciled := b.node.BytesIn() - before
	if want := newestOf(recs); next.Since != want.Since || !bytes.Equal(next.After, want.After) {
		t.Fatalf("sync ended at %+v, want the newest record %+v", next, want)
	}
	fps, pages := tap.counts()
	if fps != 1 || pages != 0 || len(tap.askedIDs()) != 0 {
		t.Fatalf("%d fingerprints requests, %d ids pages, records asked; want one request and nothing else", fps, pages)
	}

	// The same sync from a peer that does not reconcile: the ids.
	a.node.Serve(tap.idTap.handlers())
	before = b.node.BytesIn()
	if n, listNext, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{}); n != 0 || err != nil || !bytes.Equal(listNext.After, next.After) {
		t.Fatalf("listing: %d new, ended at %+v, %v", n, listNext, err)
	}
	listed := b.node.BytesIn() - before
	t.Logf("a full sync of %d records: %d bytes by fingerprints, %d by listing ids", len(recs), reconciled, listed)
	if reconciled > 64 || reconciled*100 > listed {
		t.Fatalf("reconciling equal catalogs received %d bytes; want at most 64 and under 1%% of listing's %d", reconciled, listed)
	}
	if len(tap.askedIDs()) != 0 {
		t.Fatal("the listing asked for records b holds")
	}
}

// Catalogs that differ by a few records in different time slices, and by
// an endorsement of a build key whose attestations both hold: the sync
// fetches exactly those, and what it receives besides them is a small
// part of the ids listing.
func TestReconcileFetchesExactlyWhatDiffers(t *testing.T) {
	recs := spreadCatalog(t, 800, 20, 30*24*time.Hour)
	missing := []*trust.Signed{recs[3], recs[400], recs[401], recs[577], recs[799]}
	a, b, e, tap := twoCatalogs(t, recs, 650, missing, true)
	ctx := t.Context()

	before := b.node.BytesIn()
	n, next, more, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	if n != len(missing) || more || err != nil {
		t.Fatalf("sync: %d new, more %v, %v; want the %d missing", n, more, err, len(missing))
	}
	received := b.node.BytesIn() - before
	want := [][32]byte{sha256.Sum256(e)}
	fetched := int64(len(e))
	for _, s := range missing {
		want = append(want, s.ID())
		fetched += int64(len(s.Marshal()))
	}
	if got := tap.askedIDs(); !sameIDs(got, want) {
		t.Fatalf("asked for %d records, want exactly the %d missing", len(got), len(want))
	}
	if got := has(t, b.Book, recs...); got != len(recs) {
		t.Fatalf("b holds %d of %d", got, len(recs))
	}
	if es, _ := b.store.EndorsementsFor(string(recs[650].Attestation.BuildKey)); len(es) != 1 || !bytes.Equal(es[0], e) {
		t.Fatalf("b holds %d endorsements of the build key, want a's", len(es))
	}
	if w := newestOf(recs); next.Since != w.Since || !bytes.Equal(next.After, w.After) {
		t.Fatalf("sync ended at %+v, want the newest record", next)
	}
	fps, pages := tap.counts()
	listing := int64(2 + (len(recs)+1)*CatalogIDBytes)
	overhead := received - fetched
	t.Logf("%d records and an endorsement missing of %d: %d bytes besides them (%d fingerprints requests, %d ids pages), listing %d", len(missing), len(recs), overhead, fps, pages, listing)
	if overhead*5 > listing {
		t.Fatalf("received %d bytes besides the records, want under a fifth of the listing's %d", overhead, listing)
	}

	// Again: equal now, one answer.
	before = b.node.BytesIn()
	if n, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{}); n != 0 || err != nil {
		t.Fatalf("second sync: %d new, %v", n, err)
	}
	if got := b.node.BytesIn() - before; got > 64 {
		t.Fatalf("second sync received %d bytes", got)
	}
}

// A peer lying in its fingerprints stores nothing wrong: equal to the
// client's own hides its records from this sync only (an honest sync
// brings them); made-up counts and fingerprints cost the client at most
// maxReconcileRequests answers before it lists, and the listing's checks
// decide what is fetched: exactly what it lacks.
func TestReconcileWithALyingPeer(t *testing.T) {
	recs := spreadCatalog(t, 400, 20, 10*24*time.Hour)
	missing := []*trust.Signed{recs[10], recs[390]}
	a, b, _, tap := twoCatalogs(t, recs, 0, missing, false)
	ctx := t.Context()

	// Claims to hold exactly what the client holds.
	tap.fingerprints = func(_ context.Context, platform string, from, until int64, n int) ([]wire.CatalogSlice, error) {
		return b.ServeCatalogFingerprints(ctx, platform, from, until, n)
	}
	if n, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{}); n != 0 || err != nil {
		t.Fatalf("sync from a peer mirroring b's fingerprints: %d new, %v", n, err)
	}
	if got := has(t, b.Book, missing...); got != 0 || len(tap.askedIDs()) != 0 {
		t.Fatalf("b holds %d of the hidden records", got)
	}

	// Counts past listBelow and fingerprints of nothing, at every level.
	tap.fingerprints = func(_ context.Context, _ string, from, until int64, n int) ([]wire.CatalogSlice, error) {
		out := make([]wire.CatalogSlice, n)
		for i := range out {
			out[i] = wire.CatalogSlice{Count: 1 << 40, Fingerprint: [16]byte{byte(i), 1}}
		}
		return out, nil
	}
	tap.counts()
	n, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	fps, _ := tap.counts()
	if fps > maxReconcileRequests {
		t.Fatalf("%d fingerprints requests, bound %d", fps, maxReconcileRequests)
	}
	if err != nil || n != len(missing) {
		t.Fatalf("sync from a peer lying about counts: %d new, %v; want the %d missing, listed", n, err, len(missing))
	}
	if got := tap.askedIDs(); !sameIDs(got, [][32]byte{missing[0].ID(), missing[1].ID()}) {
		t.Fatalf("asked for %d records, want the 2 missing", len(got))
	}

	// An answer of more slices than asked (memnet trims as p2p does)
	// and one of no slice at all: bounded too, and nothing wrong stored.
	tap.fingerprints = func(context.Context, string, int64, int64, int) ([]wire.CatalogSlice, error) { return nil, nil }
	stored, _ := b.store.TotalUsage()
	if n, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{}); n != 0 || err != nil {
		t.Fatalf("sync from a peer answering no slice: %d new, %v", n, err)
	}
	if fps, _ := tap.counts(); fps > maxReconcileRequests {
		t.Fatalf("%d fingerprints requests, bound %d", fps, maxReconcileRequests)
	}
	if after, _ := b.store.TotalUsage(); after.Records != stored.Records {
		t.Fatalf("b's store went from %d to %d records", stored.Records, after.Records)
	}
}

// A bounded ids page that lists a record at or after its bound is a lie
// about the page: refused, nothing of it stored.
func TestReconcileRefusesAPageBeyondItsBound(t *testing.T) {
	recs := spreadCatalog(t, 200, 20, 30*24*time.Hour)
	a, b, _, tap := twoCatalogs(t, recs, 0, recs[40:41], false)
	ctx := t.Context()
	h := tap.handlers()
	h.CatalogIDsUntil = func(ctx context.Context, platform string, cur wire.CatalogCursor, until int64) ([]wire.CatalogID, error) {
		return a.ServeCatalogIDs(ctx, platform, cur) // the whole rest of the catalog
	}
	a.node.Serve(h)
	if _, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{}); !errors.Is(err, ErrBadIDPage) {
		t.Fatalf("sync: %v, want ErrBadIDPage", err)
	}
	if has(t, b.Book, recs[40]) != 0 || len(tap.askedIDs()) != 0 {
		t.Fatal("a record of a page beyond its bound was fetched")
	}
}

// A peer without the fingerprints operation (a catalog/3 daemon before
// it) is synced by listing ids, with the same result.
func TestReconcileFallsBackToListing(t *testing.T) {
	recs := spreadCatalog(t, 100, 20, 24*time.Hour)
	a, b, _, tap := twoCatalogs(t, recs, 0, recs[7:9], false)
	a.node.Serve(tap.idTap.handlers())
	n, next, more, err := b.syncCatalogFrom(t.Context(), a.self, wire.CatalogCursor{})
	if n != 2 || more || err != nil {
		t.Fatalf("sync: %d new, more %v, %v; want the 2 missing", n, more, err)
	}
	if w := newestOf(recs); !bytes.Equal(next.After, w.After) {
		t.Fatalf("sync ended at %+v, want the newest record", next)
	}
	idt := tap.idTap
	idt.mu.Lock()
	pages := idt.pages
	idt.mu.Unlock()
	if fps, _ := tap.counts(); fps != 0 || pages == 0 {
		t.Fatalf("%d fingerprints requests and %d ids pages; want a listing", fps, pages)
	}
}

// Both ends compute one slice's fingerprint from the same ids: the
// attestations dated in it and their build keys' endorsements, in any
// order, so a client compares its own with a peer's; a count past the
// work bound answers only the slices before.
func TestCatalogSlicesFollowIDPages(t *testing.T) {
	recs := spreadCatalog(t, 60, 20, time.Hour)
	a, _, e, _ := twoCatalogs(t, recs, 5, nil, false)
	from, until := recs[0].Attestation.Time.Unix(), recs[59].Attestation.Time.Unix()+1
	sums, err := a.catalogSlices(a.platform, []int64{from, until}, 1000)
	if err != nil || len(sums) != 1 {
		t.Fatalf("catalogSlices = %d slices, %v", len(sums), err)
	}
	ids, err := a.ServeCatalogIDsUntil(t.Context(), a.platform, wire.CatalogCursor{Since: from - 1}, until)
	if err != nil || len(ids) != 61 {
		t.Fatalf("ids page of the slice: %d ids, %v; want 60 and the endorsement", len(ids), err)
	}
	var fp wire.Fingerprint
	for i := len(ids) - 1; i >= 0; i-- {
		fp.Add(ids[i].ID)
	}
	if got := sums[0].fp.Slice(); got != fp.Slice() || got.Count != 61 {
		t.Fatalf("slice %+v, ids page %+v", got, fp.Slice())
	}
	if !slices.ContainsFunc(ids, func(id wire.CatalogID) bool { return id.ID == sha256.Sum256(e) }) {
		t.Fatal("the endorsement is not listed")
	}
	if sums, err := a.catalogSlices(a.platform, []int64{from, from + 1800, until}, 40); err != nil || len(sums) != 1 {
		t.Fatalf("past the work bound: %d slices, %v; want the first alone", len(sums), err)
	}
	if sums, err := a.catalogSlices(a.platform, []int64{from, until}, 60); err != nil || len(sums) != 0 {
		t.Fatalf("a first slice past the work bound: %d slices, %v; want none", len(sums), err)
	}
}

// SyncLoop over reconciliation keeps the schedule's cursor: a full sync
// asks for the fingerprints of everything from the first second, the
// hourly one from the newest record it saw less the margin, and a record
// that reaches the peer after a sync, dated inside the margin, arrives.
func TestSyncLoopReconcilesFromWhereItEnded(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	b.syncTick = 5 * time.Millisecond
	b.resyncEvery = 20 * time.Millisecond
	b.resyncMargin = 10 * time.Minute
	b.fullSyncEvery = 200 * time.Millisecond
	tap := &reconTap{idTap: &idTap{book: a.Book}}
	a.node.Serve(tap.handlers())
	newest := syncThenLate(t, a.Book, b.Book)
	// A sync's first request spans at least ReconcileAhead; the requests
	// of the slices it splits are shorter.
	starts := func() (full, resumed []int64) {
		tap.mu.Lock()
		defer tap.mu.Unlock()
		for _, r := range tap.ranges {
			switch {
			case r[1]-r[0] < int64(ReconcileAhead/time.Second):
			case r[0] == 1:
				full = append(full, r[0])
			default:
				resumed = append(resumed, r[0])
			}
		}
		return full, resumed
	}
	eventually(t, "resumed syncs and a second full one", func() bool {
		full, resumed := starts()
		return len(full) >= 2 && len(resumed) >= 2
	})
	want := newest.Add(-10*time.Minute).Unix() + 1
	_, resumed := starts()
	for i, from := range resumed {
		if from > want {
			t.Errorf("resumed sync %d reconciled from %d, after the newest record less the margin (%d)", i, from, want)
		}
		if from < want-int64(time.Hour/time.Second) {
			t.Errorf("resumed sync %d reconciled from %d, long before the newest record (%d): that is a full sync", i, from, newest.Unix())
		}
	}
}
