package votes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// fakeEndorsementIDs are n endorsement ids of records that exist nowhere.
func fakeEndorsementIDs(n int) []wire.CatalogID {
	out := make([]wire.CatalogID, n)
	for i := range out {
		out[i].Kind = wire.RecordEndorsement
		if _, err := rand.Read(out[i].ID[:]); err != nil {
			panic(err)
		}
	}
	return out
}

// A server that fills every ids page with endorsement ids it never sends,
// beside one attestation the client holds so the cursor moves, gets a
// bounded number of requests from one sync: never an id asked for twice
// when it lists the same ones again, and no more than maxSyncRequests
// when it lists new ones on every page. (Before, one sync made 64 ids
// requests and 1,024 records requests, each with its own 30 s timeout.)
func TestSyncByIDsBoundsTheRequestsOfOneSync(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 80, 10, 500)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	same := fakeEndorsementIDs(wire.MaxCatalogIDs - 1)
	for _, tt := range []struct {
		name string
		fake func() []wire.CatalogID
	}{
		{"the same ids on every page", func() []wire.CatalogID { return same }},
		{"new ids on every page", func() []wire.CatalogID { return fakeEndorsementIDs(wire.MaxCatalogIDs - 1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := joinBook(t, net, false, nil)
			if n, err := b.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
				t.Fatalf("b took %d of %d: %v", n, len(recs), err)
			}
			var mu sync.Mutex
			recordRequests := 0
			tap := &idTap{book: a.Book,
				ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
					ids, err := a.ServeCatalogIDs(ctx, platform, cur)
					if err != nil || len(ids) == 0 {
						return ids, err
					}
					return append(append([]wire.CatalogID{}, tt.fake()...), ids[0]), nil
				},
				records: func(context.Context, []wire.CatalogID) ([][]byte, error) {
					mu.Lock()
					recordRequests++
					mu.Unlock()
					return nil, nil
				}}
			a.node.Serve(tap.handlers())
			_, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
			if err != nil {
				t.Fatalf("sync: %v", err)
			}
			asked := tap.askedIDs()
			seen := map[[32]byte]bool{}
			for _, id := range asked {
				if seen[id] {
					t.Fatalf("id %x asked for twice in one sync", id[:8])
				}
				seen[id] = true
			}
			if total := tap.pages + recordRequests; total > maxSyncRequests {
				t.Fatalf("one sync made %d requests (%d ids pages, %d records requests); want at most %d",
					total, tap.pages, recordRequests, maxSyncRequests)
			}
		})
	}
}

// Every request of a sync ends by the sync's deadline, whatever its own
// 30 s timeout would allow.
func TestSyncByIDsHasADeadline(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 20, 10, 500)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	a.pageIDs = 5
	b.syncTime = 10 * time.Second // under a request's own 30 s
	var mu sync.Mutex
	var deadlines []time.Time
	note := func(ctx context.Context) {
		dl, ok := ctx.Deadline()
		if !ok {
			dl = time.Now().Add(24 * time.Hour)
		}
		mu.Lock()
		deadlines = append(deadlines, dl)
		mu.Unlock()
	}
	tap := &idTap{book: a.Book,
		ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
			note(ctx)
			return a.ServeCatalogIDs(ctx, platform, cur)
		},
		records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
			note(ctx)
			return a.ServeCatalogRecords(ctx, want)
		}}
	a.node.Serve(tap.handlers())
	n, _, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	// The sync began before now: its deadline is before now + syncTime.
	end := time.Now().Add(b.syncTime)
	if err != nil || n != len(recs) {
		t.Fatalf("sync: %d new, %v; want %d", n, err, len(recs))
	}
	if len(deadlines) < 2 {
		t.Fatalf("%d requests seen", len(deadlines))
	}
	for i, dl := range deadlines {
		if dl.After(end) {
			t.Fatalf("request %d may run until %v, after the sync's deadline (%v at the latest)", i, dl, end)
		}
	}
}

// A peer that stops serving catalog/3 partway fails that sync with
// wire.ErrNotSupported, keeping what its pages stored and the cursor
// after them; it is not synced over again from the start over catalog/2
// within the same sync. The next sync goes on from there over catalog/2.
func TestSyncByIDsPeerThatStopsServingPartwayFailsTheSync(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 40, 10, 500)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	a.pageIDs = 5
	cc := &countingCatalog{serve: a.ServeCatalog}
	tap := &idTap{book: a.Book}
	var mu sync.Mutex
	calls := 0
	tap.ids = func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
		mu.Lock()
		calls++
		if calls == 3 {
			// From the next ids request on, a serves catalog/2 only.
			h := tap.handlers()
			h.CatalogIDs, h.Catalog = nil, cc.handler
			a.node.Serve(h)
		}
		mu.Unlock()
		return a.ServeCatalogIDs(ctx, platform, cur)
	}
	a.node.Serve(tap.handlers())
	n, next, more, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	if !errors.Is(err, wire.ErrNotSupported) || more || n != 15 || cc.calls() != 0 {
		t.Fatalf("sync: %d new, more %v, %v, %d catalog/2 pages; want 15 over catalog/3, then ErrNotSupported", n, more, err, cc.calls())
	}
	if last := recs[14].ID(); next.Since != recs[14].Attestation.Time.Unix() || !bytes.Equal(next.After, last[:]) {
		t.Fatalf("cursor %+v; want after the 15th record", next)
	}
	n, _, more, err = b.syncCatalogFrom(ctx, a.self, next)
	if err != nil || more || n != len(recs)-15 || cc.calls() == 0 {
		t.Fatalf("next sync: %d new, more %v, %v, %d catalog/2 pages; want the other %d over catalog/2", n, more, err, cc.calls(), len(recs)-15)
	}
}

// A record of another kind than its id was listed with is a lie about the
// page, refused before anything of it is stored: attestations listed as
// endorsements (whose times are not checked), an endorsement listed as an
// attestation.
func TestSyncByIDsRefusesAKindLie(t *testing.T) {
	net := memnet.New()
	ctx := t.Context()
	t.Run("attestations listed as endorsements", func(t *testing.T) {
		a := joinBook(t, net, false, nil)
		b := joinBook(t, net, false, nil)
		recs := catalogOf(t, 3, 3, 1000)
		if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
			t.Fatalf("a took %d of %d: %v", n, len(recs), err)
		}
		tap := &idTap{book: a.Book,
			ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
				ids, err := a.ServeCatalogIDs(ctx, platform, cur)
				for i := range ids {
					ids[i].Kind, ids[i].Time = wire.RecordEndorsement, 0
				}
				return ids, err
			},
			records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
				w := append([]wire.CatalogID{}, want...)
				for i := range w {
					w[i].Kind = wire.RecordAttestation
				}
				return a.ServeCatalogRecords(ctx, w)
			}}
		a.node.Serve(tap.handlers())
		n, next, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
		if !errors.Is(err, ErrIDMismatch) || !strings.Contains(err.Error(), "kind") || n != 0 || next.After != nil {
			t.Fatalf("sync: %d new, next %+v, %v; want ErrIDMismatch (kind), nothing stored", n, next, err)
		}
		if got := has(t, b.Book, recs...); got != 0 {
			t.Fatalf("%d records of a refused page stored", got)
		}
	})
	t.Run("an endorsement listed as an attestation", func(t *testing.T) {
		a := joinBook(t, net, false, nil)
		b := joinBook(t, net, false, nil)
		recs := catalogOf(t, 3, 3, 1000)
		if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
			t.Fatalf("a took %d of %d: %v", n, len(recs), err)
		}
		_, priv := newSigner(t)
		e := NewEndorsement(recs[0].Attestation.BuildKey, a.platform, recs[0].Attestation.Content, priv).Marshal()
		if _, err := a.IngestEndorsement(ctx, e, a.self, false); err != nil {
			t.Fatal(err)
		}
		eid := sha256.Sum256(e)
		tap := &idTap{book: a.Book,
			ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
				ids, err := a.ServeCatalogIDs(ctx, platform, cur)
				var out []wire.CatalogID
				for _, id := range ids {
					if id.ID != eid {
						out = append(out, id)
					}
				}
				if len(out) > 0 {
					// Last, just after the last attestation: in order.
					out = append(out, wire.CatalogID{Kind: wire.RecordAttestation, Time: out[len(out)-1].Time + 1, ID: eid})
				}
				return out, err
			},
			records: func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
				w := append([]wire.CatalogID{}, want...)
				for i := range w {
					if w[i].ID == eid {
						w[i].Kind = wire.RecordEndorsement
					}
				}
				return a.ServeCatalogRecords(ctx, w)
			}}
		a.node.Serve(tap.handlers())
		n, next, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
		if !errors.Is(err, ErrIDMismatch) || !strings.Contains(err.Error(), "kind") || n != 0 || next.After != nil {
			t.Fatalf("sync: %d new, next %+v, %v; want ErrIDMismatch (kind), nothing stored", n, next, err)
		}
		held, err := b.store.HasEndorsements([][32]byte{eid})
		if err != nil {
			t.Fatal(err)
		}
		if got := has(t, b.Book, recs...); got != 0 || held[0] {
			t.Fatalf("%d attestations and the endorsement (%v) of a refused page stored", got, held[0])
		}
	})
}

// One ids page's fetch stops at fetchBytes: the records past it are not
// held in memory but left to the next sync, which starts before the first
// of them.
func TestSyncByIDsCapsTheBytesFetchedForAPage(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 10, 10, 1000)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	b.fetchBytes = 0
	for _, s := range recs[:3] {
		b.fetchBytes += len(s.Marshal())
	}
	tap := &idTap{book: a.Book}
	a.node.Serve(tap.handlers())
	n, next, more, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	third := recs[2].ID()
	if err != nil || !more || n != 3 || next.Since != recs[2].Attestation.Time.Unix() || !bytes.Equal(next.After, third[:]) {
		t.Fatalf("sync: %d new, next %+v, more %v, %v; want 3 (fetchBytes), more after the third", n, next, more, err)
	}
	total := n
	for range len(recs) {
		if !more {
			break
		}
		n, next, more, err = b.syncCatalogFrom(ctx, a.self, next)
		if err != nil || n == 0 {
			t.Fatalf("next sync: %d new, %v", n, err)
		}
		total += n
	}
	if total != len(recs) || has(t, b.Book, recs...) != len(recs) {
		t.Fatalf("%d of %d stored over the syncs", total, len(recs))
	}
}

// An attestation held from before the store kept times moves the cursor
// by its own signed time, never by the one the server lists it with: a
// server that lists it far in the future, to have the client step over
// everything up to then, is caught in the lie.
func TestSyncByIDsHeldRecordWithoutTimeMovesTheCursorByItsOwn(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, false, nil)
	b := joinBook(t, net, false, nil)
	ctx := t.Context()
	recs := catalogOf(t, 4, 4, 1000)
	if n, err := a.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("a took %d of %d: %v", n, len(recs), err)
	}
	old := b.attestationRecord(recs[0], arrival{})
	old.Time = 0 // stored before the store kept times
	if _, err := b.store.PutAttestations([]store.AttestationRecord{old}); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(365 * 24 * time.Hour).Unix()
	tap := &idTap{book: a.Book, ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
		ids, err := a.ServeCatalogIDs(ctx, platform, cur)
		if len(ids) == 0 || ids[0].ID != recs[0].ID() {
			return ids, err
		}
		held := ids[0]
		held.Time = future
		return append(ids[1:], held), err
	}}
	a.node.Serve(tap.handlers())
	n, next, _, err := b.syncCatalogFrom(ctx, a.self, wire.CatalogCursor{})
	if !errors.Is(err, ErrIDMismatch) || n != 0 || next.Since >= future {
		t.Fatalf("sync: %d new, next %+v, %v; want ErrIDMismatch, the cursor not moved to the listed time", n, next, err)
	}
}

// A demand record synced by ids has its signature checked once, and one
// listed at another time than its own refuses the page before anything
// of it is stored.
func TestDemandSyncByIDsChecksEachSignatureOnce(t *testing.T) {
	net := memnet.New()
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	platform := hello.Platform()
	a := onPlatform(t, joinBook(t, net, true, nil), platform)
	c := onPlatform(t, joinBook(t, net, true, nil), platform)
	ctx := t.Context()
	for _, m := range []member{a, c} {
		if _, err := m.RecordDemand(ctx, hello, trust.DemandSource); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("honest", func(t *testing.T) {
		b := onPlatform(t, joinBook(t, net, false, nil), platform)
		var mu sync.Mutex
		checks := 0
		b.decodeDemand = func(blob []byte) (*trust.SignedDemand, error) {
			mu.Lock()
			checks++
			mu.Unlock()
			return trust.DecodeDemand(blob)
		}
		a.node.Serve((&idTap{book: a.Book}).handlers())
		if n, _, _, err := b.syncDemandFrom(ctx, a.self, wire.CatalogCursor{}); n != 2 || err != nil {
			t.Fatalf("demand sync: %d new, %v; want 2", n, err)
		}
		if checks != 2 {
			t.Fatalf("%d signature checks for 2 demand records", checks)
		}
		// A builder plans from the same records again and again: Wanted
		// checks a record's signature the first time it reads it only.
		for range 3 {
			if w, err := b.Wanted(platform, 0); err != nil || len(w) != 1 || w[0].Wanters != 2 || w[0].CPV != hello.CPV {
				t.Fatalf("Wanted = %+v, %v", w, err)
			}
		}
		if checks != 3 {
			t.Fatalf("%d signature checks after three plans, want the one record read once more", checks)
		}
	})
	t.Run("listed at another time", func(t *testing.T) {
		b := onPlatform(t, joinBook(t, net, false, nil), platform)
		a.node.Serve((&idTap{book: a.Book, ids: func(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
			ids, err := a.ServeCatalogIDs(ctx, platform, cur)
			if len(ids) > 0 {
				ids[len(ids)-1].Time++
			}
			return ids, err
		}}).handlers())
		n, _, _, err := b.syncDemandFrom(ctx, a.self, wire.CatalogCursor{})
		if !errors.Is(err, ErrIDMismatch) || n != 0 || b.WantCount(hello.VariantKey()) != 0 {
			t.Fatalf("demand sync: %d new, %v, %d wants stored; want ErrIDMismatch, nothing stored", n, err, b.WantCount(hello.VariantKey()))
		}
	})
}
