package votes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// idTap serves a Book's catalog/3 and counts what clients asked of it:
// ids pages, and the records asked for and sent. ids and records, when
// set, replace the Book's answers (a lying server).
type idTap struct {
	book *Book

	mu      sync.Mutex
	pages   int
	asked   []wire.CatalogID
	sent    int // records sent
	ids     func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error)
	records func(ctx context.Context, want []wire.CatalogID) ([][]byte, error)
}

func (tp *idTap) handlers() p2p.Handlers {
	return p2p.Handlers{
		Catalog:  tp.book.ServeCatalog,
		OnGossip: tp.book.OnGossip,
		CatalogIDs: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
			tp.mu.Lock()
			tp.pages++
			serve := tp.ids
			tp.mu.Unlock()
			if serve != nil {
				return serve(ctx, platform, cur)
			}
			return tp.book.ServeCatalogIDs(ctx, platform, cur)
		},
		CatalogRecords: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
			tp.mu.Lock()
			tp.asked = append(tp.asked, want...)
			serve := tp.records
			tp.mu.Unlock()
			if serve == nil {
				serve = tp.book.ServeCatalogRecords
			}
			out, err := serve(ctx, want)
			tp.mu.Lock()
			tp.sent += len(out)
			tp.mu.Unlock()
			return out, err
		},
	}
}

// askedIDs are the ids asked for so far, and forgets them.
func (tp *idTap) askedIDs() [][32]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out [][32]byte
	for _, w := range tp.asked {
		out = append(out, w.ID)
	}
	tp.asked = nil
	return out
}

func sameIDs(a, b [][32]byte) bool {
	cmp := func(x, y [32]byte) int { return bytes.Compare(x[:], y[:]) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// A client that holds most of a peer's catalog gets only the records it
// lacks: it is asked for those ids and no other, and what crosses the
// network is the ids and those records, a small part of the catalog/2
// answer of the same sync. A second sync asks for no record at all.
func TestSyncByIDsFetchesOnlyWhatIsMissing(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 60, 10, 3000)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	_, priv := newSigner(t)
	e := NewEndorsement(recs[7].Attestation.BuildKey, a.platform, recs[7].Attestation.Content, priv)
	if _, err := a.IngestEndorsement(ctx, e.Marshal(), a.self, false); err != nil {
		t.Fatal(err)
	}
	// b has everything but five records and the endorsement, as if it
	// had missed a little gossip.
	missing := []*trust.Signed{recs[0], recs[7], recs[30], recs[58], recs[59]}
	var held []*trust.Signed
	for _, s := range recs {
		if !slices.Contains(missing, s) {
			held = append(held, s)
		}
	}
	if n, err := b.ingestBatch(ctx, blobsOf(held...), arrival{}); n != len(held) || err != nil {
		t.Fatalf("b took %d of %d: %v", n, len(held), err)
	}
	tap := &idTap{book: a.Book}
	a.node.Serve(tap.handlers())

	before := b.node.BytesIn()
	n, next, more, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	if err != nil || more || n != len(missing) {
		t.Fatalf("sync: %d new, more %v, %v; want the %d missing", n, more, err, len(missing))
	}
	want := [][32]byte{sha256.Sum256(e.Marshal())}
	missingBytes := len(e.Marshal())
	for _, s := range missing {
		want = append(want, s.ID())
		missingBytes += len(s.Marshal())
	}
	if got := tap.askedIDs(); !sameIDs(got, want) {
		t.Fatalf("asked for %d records, want exactly the %d missing", len(got), len(want))
	}
	if got := has(t, b.Book, recs...); got != len(recs) {
		t.Fatalf("b holds %d of %d after the sync", got, len(recs))
	}
	if es, _ := b.store.EndorsementsFor(string(recs[7].Attestation.BuildKey)); len(es) != 1 || !bytes.Equal(es[0], e.Marshal()) {
		t.Fatalf("b holds %d endorsements, want a's", len(es))
	}
	last := recs[len(recs)-1]
	if lid := last.ID(); next.Since != last.Attestation.Time.Unix() || !bytes.Equal(next.After, lid[:]) {
		t.Fatalf("sync ended at %+v, want the newest record", next)
	}
	received := b.node.BytesIn() - before
	full := len(e.Marshal())
	for _, s := range recs {
		full += len(s.Marshal())
	}
	ids := int64((len(recs) + 1) * CatalogIDBytes)
	if received < int64(missingBytes) || received > int64(missingBytes)+ids+64 {
		t.Fatalf("received %d bytes; want the %d of the missing records and at most %d of ids", received, missingBytes, ids)
	}
	t.Logf("catalog/3 sync received %d bytes where catalog/2 sends %d", received, full)

	// Again from the start, as the daily full sync does: ids only.
	before = b.node.BytesIn()
	if n, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{}); n != 0 || err != nil {
		t.Fatalf("second sync: %d new, %v", n, err)
	}
	if got := tap.askedIDs(); len(got) != 0 {
		t.Fatalf("second sync asked for %d records, want none", len(got))
	}
	if received := b.node.BytesIn() - before; received > ids+64 {
		t.Fatalf("second sync received %d bytes, want only ids (%d)", received, ids)
	}
}

// A newcomer with an empty store is filled by catalog/3 alone, page after
// page, when many records share one second: the cursor goes on inside the
// second, no record is skipped and none is asked for twice.
func TestSyncByIDsFillsANewcomerAcrossPagesInOneSecond(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	var recs []*trust.Signed
	for i := range 25 {
		k, _ := mustKey(t)
		s, err := hostile.Junk(k, testPlatform, i, 800, at)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, s)
	}
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	a.pageIDs = 4
	tap := &idTap{book: a.Book}
	a.node.Serve(tap.handlers())

	n, err := b.SyncFrom(ctx, a.self)
	if err != nil || n != len(recs) {
		t.Fatalf("SyncFrom: %d new, %v; want %d", n, err, len(recs))
	}
	if got := has(t, b.Book, recs...); got != len(recs) {
		t.Fatalf("newcomer holds %d of %d", got, len(recs))
	}
	asked := tap.askedIDs()
	want := make([][32]byte, len(recs))
	for i, s := range recs {
		want[i] = s.ID()
	}
	if !sameIDs(asked, want) {
		t.Fatalf("asked for %d records, want each of the %d once", len(asked), len(recs))
	}
	// 7 attestation pages (4 a page, then an empty one) and the demand
	// pages.
	if tap.pages < (len(recs)+3)/4+1 {
		t.Fatalf("%d ids pages, want paging inside the second", tap.pages)
	}
	if b.Rejected() != 0 {
		t.Fatalf("%d honest records rejected", b.Rejected())
	}
}

// Demand pages go by ids too: a client that holds some of a peer's demand
// records is sent only the others.
func TestDemandSyncByIDsFetchesOnlyWhatIsMissing(t *testing.T) {
	net := memnet.New()
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	layout := fixtureDescriptor(t, "app-misc/layout-1.0-r1.gpkg.tar")
	platform := hello.Platform()
	a := onPlatform(t, joinBook(t, net, true, nil), platform)
	c := onPlatform(t, joinBook(t, net, true, nil), platform)
	b := onPlatform(t, joinBook(t, net, false, nil), platform)
	ctx := t.Context()
	for _, rec := range []struct {
		m    member
		desc identity.Descriptor
	}{{a, hello}, {c, hello}} {
		if _, err := rec.m.RecordDemand(ctx, rec.desc, trust.DemandSource); err != nil {
			t.Fatal(err)
		}
	}
	tap := &idTap{book: a.Book}
	a.node.Serve(tap.handlers())
	if n, _, _, err := b.syncDemandFrom(ctx, a.self, wire.CatalogCursor{}); n != 2 || err != nil {
		t.Fatalf("first demand sync: %d new, %v; want 2", n, err)
	}
	if got := tap.askedIDs(); len(got) != 2 {
		t.Fatalf("first demand sync asked for %d records, want 2", len(got))
	}
	// c wants layout too; b, not subscribed, learns it only by syncing.
	if _, err := c.RecordDemand(ctx, layout, trust.DemandSource); err != nil {
		t.Fatal(err)
	}
	blob, ok, err := a.store.DemandBlob(string(layout.VariantKey()), c.self.String())
	if err != nil || !ok {
		t.Fatalf("a did not get c's new demand by gossip: %v", err)
	}
	if n, _, _, err := b.syncDemandFrom(ctx, a.self, wire.CatalogCursor{}); n != 1 || err != nil {
		t.Fatalf("second demand sync: %d new, %v; want 1", n, err)
	}
	if got := tap.askedIDs(); !sameIDs(got, [][32]byte{sha256.Sum256(blob)}) {
		t.Fatalf("second demand sync asked for %d records, want only the new one", len(got))
	}
	if b.WantCount(layout.VariantKey()) != 1 || b.WantCount(hello.VariantKey()) != 2 {
		t.Fatal("demand synced by ids is not counted")
	}
}

// A server that lies in catalog/3 is refused with a named error: nothing
// it sent in the lying page is stored, and the cursor stays where it was.
func TestSyncByIDsRefusesALyingServer(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 6, 6, 1000)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	other := catalogOf(t, 1, 1, 1000)[0]
	honestIDs := func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
		return a.ServeCatalogIDs(ctx, platform, cur)
	}
	tests := []struct {
		name    string
		ids     func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error)
		records func(ctx context.Context, want []wire.CatalogID) ([][]byte, error)
		wantErr error
		what    string
		holds   bool // the client holds a's records already
	}{
		{
			name: "a record not asked for",
			ids:  honestIDs,
			records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
				return [][]byte{other.Marshal()}, nil
			},
			wantErr: ErrUnaskedRecord,
		},
		{
			name: "records out of the order asked",
			ids:  honestIDs,
			records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
				out, err := a.ServeCatalogRecords(ctx, want)
				slices.Reverse(out)
				return out, err
			},
			wantErr: ErrUnaskedRecord,
		},
		{
			name: "a record twice",
			ids:  honestIDs,
			records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
				out, err := a.ServeCatalogRecords(ctx, want[:1])
				return append(out, out...), err
			},
			wantErr: ErrUnaskedRecord,
		},
		{
			name: "an id listed at another time than its record's",
			ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
				ids, err := a.ServeCatalogIDs(ctx, platform, cur)
				if len(ids) > 0 {
					ids[len(ids)-1].Time++
				}
				return ids, err
			},
			wantErr: ErrIDMismatch,
			what:    "listed at",
		},
		{
			name: "an id the client holds listed at another time",
			ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
				ids, err := a.ServeCatalogIDs(ctx, platform, cur)
				if len(ids) > 0 {
					ids[len(ids)-1].Time++
				}
				return ids, err
			},
			wantErr: ErrIDMismatch,
			what:    "listed at",
			holds:   true,
		},
		{
			name: "ids out of order",
			ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
				ids, err := a.ServeCatalogIDs(ctx, platform, cur)
				slices.Reverse(ids)
				return ids, err
			},
			wantErr: ErrBadIDPage,
			what:    "is not after",
		},
		{
			name: "too many ids",
			ids: func(context.Context, string, wire.CatalogCursor) ([]wire.CatalogID, error) {
				out := make([]wire.CatalogID, wire.MaxCatalogIDs+1)
				for i := range out {
					out[i] = wire.CatalogID{Kind: wire.RecordAttestation, Time: int64(i + 1)}
					out[i].ID[0] = byte(i)
				}
				return out, nil
			},
			wantErr: wire.ErrProtocol, // refused by the transport, as p2p refuses it
			what:    "ids exceed",
		},
		{
			name: "a demand id in an attestation page",
			ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
				ids, err := a.ServeCatalogIDs(ctx, platform, cur)
				if len(ids) > 0 {
					ids[0].Kind = wire.RecordDemand
				}
				return ids, err
			},
			wantErr: ErrBadIDPage,
			what:    "kind",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := joinBook(t, net, false, nil)
			held := 0
			if tt.holds {
				if n, err := b.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
					t.Fatalf("b took %d of %d: %v", n, len(recs), err)
				}
				held = len(recs)
			}
			tap := &idTap{book: a.Book, ids: tt.ids, records: tt.records}
			a.node.Serve(tap.handlers())
			start := wire.CatalogCursor{Since: 7}
			n, next, more, err := b.syncCatalogFrom(ctx, a.self, start)
			if !errors.Is(err, tt.wantErr) || (tt.what != "" && !strings.Contains(err.Error(), tt.what)) {
				t.Fatalf("sync from a lying server: %v; want %v (%q)", err, tt.wantErr, tt.what)
			}
			if n != 0 || more || next.Since != start.Since || next.After != nil {
				t.Fatalf("lying page: %d stored, next %+v, more %v; want nothing, the cursor unmoved", n, next, more)
			}
			if got := has(t, b.Book, append(recs, other)...); got != held {
				t.Fatalf("%d records of a lying page stored", got-held)
			}
		})
	}
}

// checkIDPage's refusals, one by one.
func TestCheckIDPage(t *testing.T) {
	id := func(b byte) [32]byte { return [32]byte{b} }
	att := func(at int64, b byte) wire.CatalogID {
		return wire.CatalogID{Kind: wire.RecordAttestation, Time: at, ID: id(b)}
	}
	end := wire.CatalogID{Kind: wire.RecordEndorsement, ID: id(0xee)}
	x := id(5)
	tests := []struct {
		name   string
		ids    []wire.CatalogID
		cur    wire.CatalogCursor
		demand bool
		ok     bool
		until  int64
	}{
		{"in order", []wire.CatalogID{end, att(5, 1), att(5, 2), att(6, 0)}, wire.CatalogCursor{Since: 4}, false, true, 0},
		{"inside the cursor's second", []wire.CatalogID{att(5, 6)}, wire.CatalogCursor{Since: 5, After: x[:]}, false, true, 0},
		{"the cursor's own record", []wire.CatalogID{att(5, 5)}, wire.CatalogCursor{Since: 5, After: x[:]}, false, false, 0},
		{"in the second the cursor passed", []wire.CatalogID{att(5, 1)}, wire.CatalogCursor{Since: 5}, false, false, 0},
		{"out of order", []wire.CatalogID{att(6, 1), att(5, 2)}, wire.CatalogCursor{}, false, false, 0},
		{"twice", []wire.CatalogID{end, att(6, 1), end}, wire.CatalogCursor{}, false, false, 0},
		{"an endorsement in a demand page", []wire.CatalogID{end}, wire.CatalogCursor{}, true, false, 0},
		{"demand in a demand page", []wire.CatalogID{{Kind: wire.RecordDemand, Time: 1, ID: x}}, wire.CatalogCursor{}, true, true, 0},
		{"too many", make([]wire.CatalogID, wire.MaxCatalogIDs+1), wire.CatalogCursor{}, false, false, 0},
		{name: "before the bound", ids: []wire.CatalogID{end, att(5, 1), att(6, 0)}, cur: wire.CatalogCursor{Since: 4}, ok: true, until: 7},
		{name: "at the bound", ids: []wire.CatalogID{att(5, 1), att(7, 0)}, cur: wire.CatalogCursor{Since: 4}, until: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkIDPage(tt.ids, tt.cur, tt.until, tt.demand)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadIDPage)) {
				t.Fatalf("checkIDPage = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// A peer that predates catalog/3 is synced over catalog/2 instead, with
// the same result.
func TestSyncFallsBackToCatalog2(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 9, 3, 1000)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	cc := &countingCatalog{serve: a.ServeCatalog}
	a.node.Serve(p2p.Handlers{Catalog: cc.handler})
	n, err := b.SyncFrom(ctx, a.self)
	if err != nil || n != len(recs) || cc.calls() == 0 {
		t.Fatalf("SyncFrom an older peer: %d new, %v, %d catalog/2 pages; want %d over catalog/2", n, err, cc.calls(), len(recs))
	}
}

// A peer that answers one record a request has a page cut at
// maxRecordRequests: the cursor stops before the first record not
// fetched, the sync says there is more, and the next sync goes on from
// there without asking for anything twice.
func TestSyncByIDsCutShortGoesOnFromTheFirstRecordNotFetched(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, maxRecordRequests+6, 20, 500)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	tap := &idTap{book: a.Book, records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
		return a.ServeCatalogRecords(ctx, want[:1])
	}}
	a.node.Serve(tap.handlers())
	n, next, more, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	stop := recs[maxRecordRequests-1] // catalogOf dates them in order
	sid := stop.ID()
	if err != nil || !more || n != maxRecordRequests || next.Since != stop.Attestation.Time.Unix() || !bytes.Equal(next.After, sid[:]) {
		t.Fatalf("cut sync: %d new, next %+v, more %v, %v; want %d and more from the last fetched", n, next, more, err, maxRecordRequests)
	}
	if tap.sent != maxRecordRequests {
		t.Fatalf("%d records sent for %d requests", tap.sent, maxRecordRequests)
	}
	n, _, more, err = b.syncCatalogFrom(ctx, a.self, next)
	if err != nil || more || n != len(recs)-maxRecordRequests {
		t.Fatalf("second sync: %d new, more %v, %v; want the other %d", n, more, err, len(recs)-maxRecordRequests)
	}
	if got := has(t, b.Book, recs...); got != len(recs) || tap.sent != len(recs) {
		t.Fatalf("b holds %d of %d, %d records sent; want each sent once", got, len(recs), tap.sent)
	}
}
