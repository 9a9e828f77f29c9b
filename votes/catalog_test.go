package votes

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// catalogOf makes n attestations of invented builds of about size bytes
// each, by attesters signing per of them each, dated an hour ago on.
func catalogOf(t testing.TB, n, per, size int) []*trust.Signed {
	t.Helper()
	var out []*trust.Signed
	for i := 0; i < n; i += per {
		k, _ := mustKey(t)
		for j := i; j < min(n, i+per); j++ {
			s, err := hostile.Junk(k, testPlatform, j, size, time.Now().Add(-time.Hour+time.Duration(j)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
	}
	return out
}

func has(t testing.TB, vb *Book, ss ...*trust.Signed) int {
	t.Helper()
	n := 0
	for _, s := range ss {
		ok, err := vb.store.HasAttestation(s.ID())
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			n++
		}
	}
	return n
}

// countingCatalog serves vb's catalog and records the cursors asked for
// attestation pages (demand pages are served, not recorded).
type countingCatalog struct {
	mu      sync.Mutex
	cursors []p2p.CatalogCursor
	serve   func(ctx context.Context, platform string, cur p2p.CatalogCursor) ([][]byte, error)
}

func (c *countingCatalog) handler(ctx context.Context, platform string, cur p2p.CatalogCursor) ([][]byte, error) {
	if _, demand := isDemandRequest(platform); !demand {
		c.mu.Lock()
		c.cursors = append(c.cursors, cur)
		c.mu.Unlock()
	}
	return c.serve(ctx, platform, cur)
}

func (c *countingCatalog) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cursors)
}

// A newcomer syncing a peer's catalog pages through it and ends up holding
// every record, the endorsements among them, and the address of the one
// record the peer attested itself.
func TestSyncCatalogBetweenTwoBooks(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, false, nil)
	ctx := context.Background()
	// Just over one page of bytes, stored at a as ingest stores them.
	recs := catalogOf(t, catalogPageBytes/(58<<10)+2, 13, 58<<10)
	var rs []store.AttestationRecord
	for _, s := range recs {
		rs = append(rs, a.attestationRecord(s, arrival{}))
	}
	if _, err := a.store.PutAttestations(rs); err != nil {
		t.Fatal(err)
	}
	own := junk(t, a.key, 9999, 1000)
	if err := a.StoreOwn(own); err != nil {
		t.Fatal(err)
	}
	_, priv := newSigner(t)
	e := NewEndorsement(recs[3].Attestation.BuildKey, a.platform, recs[3].Attestation.Content, priv)
	if _, err := a.IngestEndorsement(ctx, e.Marshal(), a.self, false); err != nil {
		t.Fatal(err)
	}
	cc := &countingCatalog{serve: a.ServeCatalog}
	a.node.Serve(p2p.Handlers{Catalog: cc.handler})

	n, next, more, err := b.syncCatalogFrom(ctx, a.self, p2p.CatalogCursor{})
	if err != nil || more || n != len(recs)+1 || next.Since == 0 || next.After == nil {
		t.Fatalf("sync: %d new, next %+v, more %v, %v; want %d, done at the newest record", n, next, more, err, len(recs)+1)
	}
	if got := has(t, b.Book, append(recs, own)...); got != len(recs)+1 {
		t.Fatalf("b holds %d of %d records", got, len(recs)+1)
	}
	if cc.calls() < 3 || cc.cursors[1].After == nil {
		t.Fatalf("%d catalog requests (cursors %v); want paging over several pages", cc.calls(), cc.cursors)
	}
	if es, _ := b.store.EndorsementsFor(string(recs[3].Attestation.BuildKey)); len(es) != 1 || !bytes.Equal(es[0], e.Marshal()) {
		t.Fatalf("b holds %d endorsements, want a's", len(es))
	}
	r, _, _ := b.store.GetAttestation(own.ID())
	if r.Addr != a.node.Addr().String() || r.From != a.self.String() {
		t.Errorf("a's own record: addr %q from %s; want a's address", r.Addr, r.From)
	}
	r, _, _ = b.store.GetAttestation(recs[0].ID())
	if r.Addr != "" {
		t.Errorf("a relayed record carries the address %q", r.Addr)
	}
	// Again: nothing new.
	if n, _, _, err := b.syncCatalogFrom(ctx, a.self, p2p.CatalogCursor{}); n != 0 || err != nil {
		t.Fatalf("second sync: %d new, %v", n, err)
	}

	// An offline peer fails the sync and leaves the cursor where it was.
	a.node.SetOnline(false)
	cur := p2p.CatalogCursor{Since: 42, After: []byte{1}}
	if _, next, more, err := b.syncCatalogFrom(ctx, a.self, cur); !errors.Is(err, memnet.ErrOffline) || more || next.Since != 42 {
		t.Fatalf("offline peer: next %+v, more %v, %v", next, more, err)
	}
}

// A peer that ignores the cursor and repeats its page gets each blob
// judged once, and the sync ends; forgeries and unwanted endorsements in
// it are skipped, the rest kept.
func TestSyncCatalogFromAPeerRepeatingItsPage(t *testing.T) {
	net := memnet.New()
	b := joinBook(t, net, false, nil)
	_, liar := mustKey(t)
	recs := catalogOf(t, 5, 5, 1000)
	forged := *recs[0]
	forged.Signature = append([]byte(nil), recs[0].Signature...)
	forged.Signature[0] ^= 1
	_, priv := newSigner(t)
	nk, _ := mustKey(t)
	nobody := junk(t, nk, 77, 1000).Attestation
	unwanted := NewEndorsement(nobody.BuildKey, b.platform, nobody.Content, priv)
	page := append(blobsOf(recs...), forged.Marshal(), unwanted.Marshal())
	slices.Reverse(page)
	cc := &countingCatalog{serve: func(context.Context, string, p2p.CatalogCursor) ([][]byte, error) { return page, nil }}
	net.Join(liar).Serve(p2p.Handlers{Catalog: cc.handler})

	n, _, more, err := b.syncCatalogFrom(context.Background(), liar, p2p.CatalogCursor{})
	if n != len(recs) || more || err != nil {
		t.Fatalf("sync from a repeating peer: %d new, more %v, %v; want %d", n, more, err, len(recs))
	}
	if cc.calls() != 2 {
		t.Fatalf("%d requests to a peer repeating its page, want 2", cc.calls())
	}
	if es, _ := b.store.EndorsementsFor(string(nobody.BuildKey)); len(es) != 0 {
		t.Fatalf("foreign endorsement of an unattested build kept")
	}
	if b.Rejected() != 1 {
		t.Fatalf("%d rejections, want the forgery", b.Rejected())
	}
}

// One sync stops after maxCatalogPages pages and says where to go on; the
// cursor follows the latest record of a page in (time, id) order, however
// the page was ordered.
func TestSyncCatalogStopsAfterMaxPages(t *testing.T) {
	const perPage = 2
	net := memnet.New()
	b := joinBook(t, net, false, nil)
	ctx := context.Background()
	recs := catalogOf(t, maxCatalogPages*perPage+3, 50, 600)
	// b knows them all already: the sync costs no writes.
	if n, err := b.ingestBatch(ctx, blobsOf(recs...), arrival{}); n != len(recs) || err != nil {
		t.Fatalf("b took %d of %d: %v", n, len(recs), err)
	}
	cursorOf := func(s *trust.Signed) p2p.CatalogCursor {
		id := s.ID()
		return p2p.CatalogCursor{Since: s.Attestation.Time.Unix(), After: id[:]}
	}
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(x, y *trust.Signed) int {
		switch cx, cy := cursorOf(x), cursorOf(y); {
		case cursorAfter(cx, cy):
			return 1
		case cursorAfter(cy, cx):
			return -1
		}
		return 0
	})
	// An honest pager, latest record first in each page.
	cc := &countingCatalog{serve: func(_ context.Context, _ string, cur p2p.CatalogCursor) ([][]byte, error) {
		var page [][]byte
		for _, s := range sorted {
			if cursorAfter(cursorOf(s), cur) && len(page) < perPage {
				page = append(page, s.Marshal())
			}
		}
		slices.Reverse(page)
		return page, nil
	}}
	_, pager := mustKey(t)
	net.Join(pager).Serve(p2p.Handlers{Catalog: cc.handler})

	n, next, more, err := b.syncCatalogFrom(ctx, pager, p2p.CatalogCursor{})
	want := cursorOf(sorted[maxCatalogPages*perPage-1])
	if n != 0 || !more || err != nil || next.Since != want.Since || !bytes.Equal(next.After, want.After) {
		t.Fatalf("first sync: %d new, next %+v, more %v, %v; want more from %+v", n, next, more, err, want)
	}
	if cc.calls() != maxCatalogPages {
		t.Fatalf("%d pages asked for, want %d", cc.calls(), maxCatalogPages)
	}
	_, next, more, err = b.syncCatalogFrom(ctx, pager, next)
	if last := cursorOf(sorted[len(sorted)-1]); more || err != nil || next.Since != last.Since || !bytes.Equal(next.After, last.After) {
		t.Fatalf("second sync: next %+v, more %v, %v; want done at the newest record %+v", next, more, err, last)
	}
	if got := cc.calls() - maxCatalogPages; got != 3 {
		t.Fatalf("second sync asked for %d pages, want 3 (two with records, one empty)", got)
	}
}

// SyncLoop syncs every connected peer at once, and peers that connect
// later at the next tick; a peer that fails does not stop the others.
func TestSyncLoopFillsTheCatalog(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, false, nil)
	b.syncTick = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	_, mute := mustKey(t)
	net.Join(mute) // serves nothing: every sync from it fails
	first := catalogOf(t, 4, 2, 1000)
	if n, err := a.ingestBatch(ctx, blobsOf(first...), arrival{}); n != len(first) || err != nil {
		t.Fatal(n, err)
	}
	// c connects later.
	c := joinBook(t, net, true, nil)
	c.node.SetOnline(false)
	later := catalogOf(t, 3, 3, 1000)
	if n, err := c.ingestBatch(ctx, blobsOf(later...), arrival{}); n != len(later) || err != nil {
		t.Fatal(n, err)
	}
	go func() {
		defer close(done)
		b.SyncLoop(ctx)
	}()
	eventually(t, "a's records at b", func() bool { return has(t, b.Book, first...) == len(first) })

	c.node.SetOnline(true)
	eventually(t, "the late peer's records at b", func() bool { return has(t, b.Book, later...) == len(later) })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SyncLoop did not return after its context ended")
	}
}

// After a completed sync, SyncLoop syncs a peer again only from just
// before the newest record it saw there (catching a record that arrived
// since, dated a little earlier), and from the start again once the full
// interval has passed.
func TestSyncLoopResyncsFromWhereItEnded(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, false, nil)
	b.syncTick = 5 * time.Millisecond
	b.resyncEvery = 20 * time.Millisecond
	b.resyncMargin = 10 * time.Minute
	b.fullSyncEvery = 200 * time.Millisecond
	cc := &countingCatalog{serve: a.ServeCatalog}
	a.node.Serve(p2p.Handlers{Catalog: cc.handler, Attestations: a.ServeAttestations, OnGossip: a.OnGossip})
	newest := syncThenLate(t, a.Book, b.Book)
	// Syncs start where the cursor has no After: from the start (full)
	// or from the resume point; the pages after the first go on from a
	// record (After set).
	starts := func() (full, resumed []p2p.CatalogCursor) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for _, c := range cc.cursors {
			switch {
			case c.After != nil:
			case c.Since == 0:
				full = append(full, c)
			default:
				resumed = append(resumed, c)
			}
		}
		return full, resumed
	}
	eventually(t, "resumed syncs and a second full one", func() bool {
		full, resumed := starts()
		return len(full) >= 2 && len(resumed) >= 2
	})
	want := newest.Add(-10 * time.Minute).Unix()
	_, resumed := starts()
	for i, c := range resumed {
		if c.Since > want {
			t.Errorf("resumed sync %d started at %d, after the newest record less the margin (%d)", i, c.Since, want)
		}
		if c.Since < want-int64(time.Hour/time.Second) {
			t.Errorf("resumed sync %d started at %d, long before the newest record (%d): that is a full sync", i, c.Since, newest.Unix())
		}
	}
}

// An attest/1 answer leads with the build's endorsements, then one vote
// per attester (the most agreed content first), then further records, up
// to its byte cap; a variant key answers with its builds' records.
func TestServeAttestationsOrderAndCap(t *testing.T) {
	vb := offlineBook(t, nil)
	ctx := context.Background()
	k0, _ := mustKey(t)
	base := junk(t, k0, 1, 1000)
	honest := agreeing(t, base, 3)
	var padded []*trust.Signed
	const sybils = 18 // their records are over the cap by a few
	for i := range sybils {
		k, _ := mustKey(t)
		c := base.Attestation.Content
		c.Image[0], c.Image[1] = 0xee, byte(i)
		for j := range maxAttestationsPerAttester {
			padded = append(padded, resign(t, base, k, func(a *trust.Attestation) {
				a.Content = c
				a.Time = time.Now().Add(-2*time.Hour + time.Duration(j)*time.Second)
				a.Index["DESCRIPTION"] = string(bytes.Repeat([]byte{'x'}, 15<<10))
				a.Index["KEYWORDS"] = string(bytes.Repeat([]byte{'y'}, 15<<10))
				a.Index["LICENSE"] = string(bytes.Repeat([]byte{'z'}, 14<<10))
			}))
		}
	}
	// Stored as ingest stores them, in one transaction (the checks on the
	// way in are tested elsewhere).
	var recs []store.AttestationRecord
	for _, s := range append(padded, honest...) {
		recs = append(recs, vb.attestationRecord(s, arrival{from: s.Attester}))
	}
	if _, err := vb.store.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	_, priv := newSigner(t)
	e := NewEndorsement(base.Attestation.BuildKey, vb.platform, base.Attestation.Content, priv)
	if _, err := vb.IngestEndorsement(ctx, e.Marshal(), vb.self, false); err != nil {
		t.Fatal(err)
	}
	bk, err := base.Attestation.BuildKey.CID()
	if err != nil {
		t.Fatal(err)
	}
	out, err := vb.ServeAttestations(ctx, bk)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 || !bytes.Equal(out[0], e.Marshal()) {
		t.Fatal("the answer does not lead with the endorsement")
	}
	var who []peer.ID
	size := 0
	for _, b := range out[1:] {
		s, err := trust.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		who = append(who, s.Attester)
		size += len(b)
	}
	if size > attestAnswerBytes || len(who) >= len(padded)+len(honest) {
		t.Fatalf("answer of %d attestations, %d bytes: not capped at %d", len(who), size, attestAnswerBytes)
	}
	lead, want := slices.Clone(who[:3]), attesters(honest)
	slices.Sort(lead)
	slices.Sort(want)
	if !slices.Equal(lead, want) {
		t.Errorf("the answer starts with %v, want the three agreeing votes %v", who[:3], attesters(honest))
	}
	firsts := slices.Clone(who[:3+sybils])
	slices.Sort(firsts)
	if len(slices.Compact(firsts)) != 3+sybils {
		t.Errorf("the first %d votes are not one per attester", 3+sybils)
	}

	vk, err := base.Attestation.VariantKey.CID()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := vb.ServeAttestations(ctx, vk); err != nil || len(out) < 1+len(honest) || !bytes.Equal(out[0], e.Marshal()) {
		t.Fatalf("variant key answer: %d blobs, %v", len(out), err)
	}
	unknown, _ := junk(t, k0, 2, 1000).Attestation.BuildKey.CID()
	if out, err := vb.ServeAttestations(ctx, unknown); err != nil || len(out) != 0 {
		t.Fatalf("unknown key: %d blobs, %v", len(out), err)
	}
}

// PublishOwn announces an own attestation that another daemon's validator
// fetches and takes, with the address it came from; StoreOwn keeps it
// here, and once withdrawn here a catalog sync does not bring it back.
func TestStoreAndPublishOwn(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, true, nil) // serves the record it announces
	ctx := context.Background()
	own := junk(t, b.key, 1, 1000)
	if err := b.StoreOwn(own); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishOwn(ctx, own); err != nil {
		t.Fatal(err)
	}
	if b.node.Published() != 1 {
		t.Fatalf("b published %d messages", b.node.Published())
	}
	r, ok, err := a.store.GetAttestation(own.ID())
	if err != nil || !ok {
		t.Fatalf("gossip did not reach a: %v", err)
	}
	if r.Addr != b.node.Addr().String() || r.Attester != b.self.String() {
		t.Errorf("a's record: addr %q attester %s; want b's address", r.Addr, r.Attester)
	}
	// Withdrawn at b (its file left PKGDIR): a's catalog must not bring
	// it back.
	if _, err := b.store.DeleteAttestation(own.ID()); err != nil {
		t.Fatal(err)
	}
	if n, _, _, err := b.syncCatalogFrom(ctx, a.self, p2p.CatalogCursor{}); n != 0 || err != nil {
		t.Fatalf("sync: %d new, %v", n, err)
	}
	if has(t, b.Book, own) != 0 {
		t.Fatal("a withdrawn own attestation came back from a peer's catalog")
	}
	b.node.SetOnline(false)
	if err := b.PublishOwn(ctx, own); err == nil {
		t.Fatal("published while offline")
	}
}

// A record dated up to a day ahead is valid (checkClaims); the resume
// point must not follow it past the records honest peers make now.
func TestResumeCursorIgnoresFutureDates(t *testing.T) {
	began := time.Unix(1_800_000_000, 0)
	margin := 15 * time.Minute
	future := p2p.CatalogCursor{Since: began.Add(20 * time.Hour).Unix(), After: []byte{1}}
	if got, want := resumeCursor(future, began, margin).Since, began.Add(-margin).Unix(); got != want {
		t.Errorf("after a record dated 20 h ahead the resume point is %d, want %d (the sync's start less the margin)", got, want)
	}
	past := p2p.CatalogCursor{Since: began.Add(-2 * time.Hour).Unix(), After: []byte{1}}
	if got, want := resumeCursor(past, began, margin).Since, began.Add(-2*time.Hour-margin).Unix(); got != want {
		t.Errorf("resume point %d, want %d (the newest record less the margin)", got, want)
	}
}
