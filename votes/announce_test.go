package votes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"golang.org/x/time/rate"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// tapped joins a Book to net whose catalog/3 answers go through a tap, so
// a test can count and replace them.
func tapped(t *testing.T, net *memnet.Network) (member, *idTap) {
	t.Helper()
	m := joinBook(t, net, false, nil)
	tp := &idTap{book: m.Book}
	m.node.Serve(tp.handlers())
	if err := m.node.JoinPlatform(m.platform); err != nil {
		t.Fatal(err)
	}
	return m, tp
}

func attID(s *trust.Signed) wire.CatalogID {
	return wire.CatalogID{Kind: wire.RecordAttestation, ID: s.ID()}
}

// An own attestation travels as its id: each receiver asks the publisher
// for the record once and stores it; what a receiver reads is the record
// and an announcement of a few dozen bytes, and a receiver that already
// holds it asks for nothing.
func TestAnnouncementFetchesEachRecordOnce(t *testing.T) {
	net := memnet.New()
	a, tap := tapped(t, net)
	b := joinBook(t, net, true, nil)
	c := joinBook(t, net, true, nil)
	ctx := context.Background()
	own := junk(t, a.key, 1, 2000)
	if err := a.StoreOwn(own); err != nil {
		t.Fatal(err)
	}
	// c has it already (a catalog sync brought it): it must not ask.
	if _, err := c.IngestFrom(ctx, own.Marshal(), a.self); err != nil {
		t.Fatal(err)
	}
	before := b.node.BytesIn()
	if err := a.PublishOwn(ctx, own); err != nil {
		t.Fatal(err)
	}
	if has(t, b.Book, own) != 1 || has(t, c.Book, own) != 1 {
		t.Fatalf("b holds %d, c holds %d of the announced record", has(t, b.Book, own), has(t, c.Book, own))
	}
	if asked := tap.askedIDs(); len(asked) != 1 || asked[0] != own.ID() {
		t.Fatalf("a was asked for %x, want the one record, by b only", asked)
	}
	msg := Announcement(attID(own))
	read := b.node.BytesIn() - before
	if want := int64(len(msg) + len(own.Marshal())); read != want {
		t.Errorf("b read %d bytes, want the announcement (%d) and the record (%d)", read, len(msg), len(own.Marshal()))
	}
	if len(msg) > 40 {
		t.Errorf("an announcement of one id takes %d bytes", len(msg))
	}
}

// The relay that delivered an announcement is asked first; what it does
// not send is asked of the origin. A relay that sends a record not asked
// for, or a record that fails its checks, gets the message rejected; one
// that sends nothing, with an origin that sends nothing either, gets it
// ignored: not forwarded, nobody penalised.
func TestAnnouncementRelayAndOrigin(t *testing.T) {
	net := memnet.New()
	origin, otap := tapped(t, net)
	relay, rtap := tapped(t, net)
	v := joinBook(t, net, true, nil)
	ctx := context.Background()
	s1, s2 := junk(t, origin.key, 1, 1000), junk(t, origin.key, 2, 1000)
	if err := origin.StoreOwnAll([]*trust.Signed{s1, s2}); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.IngestFrom(ctx, s1.Marshal(), origin.self); err != nil {
		t.Fatal(err)
	}
	msg := Announcement(attID(s1), attID(s2))
	if err := v.OnGossip(origin.self, relay.self, v.platform, msg); err != nil {
		t.Fatalf("announcement of two records, one at the relay: %v", err)
	}
	if has(t, v.Book, s1, s2) != 2 {
		t.Fatal("the records were not taken")
	}
	if got := rtap.askedIDs(); len(got) != 2 {
		t.Errorf("the relay was asked %d ids, want both", len(got))
	}
	if got := otap.askedIDs(); len(got) != 1 || got[0] != s2.ID() {
		t.Errorf("the origin was asked %x, want only what the relay lacked", got)
	}
	// Each record arrived from the peer that sent it: the attester's own
	// answer is evidence of its address, the relay's is not.
	r1, _, _ := v.store.GetAttestation(s1.ID())
	r2, _, _ := v.store.GetAttestation(s2.ID())
	if r1.From != relay.self.String() || r1.Addr != "" || r2.From != origin.self.String() || r2.Addr != origin.node.Addr().String() {
		t.Errorf("from the relay: from %s addr %q; from the origin: from %s addr %q", r1.From, r1.Addr, r2.From, r2.Addr)
	}

	// Nothing to be had: ignored.
	s3 := junk(t, origin.key, 3, 1000)
	err := v.OnGossip(origin.self, relay.self, v.platform, Announcement(attID(s3)))
	if !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("a record nobody sends: %v, want ignored", err)
	}

	// A record not asked for: rejected, nothing stored.
	s4, other := junk(t, origin.key, 4, 1000), junk(t, origin.key, 5, 1000)
	rtap.records = func(context.Context, []wire.CatalogID) ([][]byte, error) {
		return [][]byte{other.Marshal()}, nil
	}
	err = v.OnGossip(origin.self, relay.self, v.platform, Announcement(attID(s4)))
	if !errors.Is(err, ErrUnaskedRecord) || errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("a record not asked for: %v, want rejected", err)
	}
	if has(t, v.Book, s4, other) != 0 {
		t.Fatal("a record from a lying relay was stored")
	}

	// The record asked for, with a broken signature: rejected.
	forged := *s4
	forged.Signature = append([]byte(nil), s4.Signature...)
	forged.Signature[3] ^= 1
	bad := forged.Marshal()
	rtap.records = func(context.Context, []wire.CatalogID) ([][]byte, error) { return [][]byte{bad}, nil }
	badID := wire.CatalogID{Kind: wire.RecordAttestation, ID: sha256.Sum256(bad)}
	err = v.OnGossip(origin.self, relay.self, v.platform, Announcement(badID))
	if !errors.Is(err, errRejected) || errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("a record that fails its checks: %v, want rejected", err)
	}
}

// Announcements that are not one to 64 distinct ids of a known kind are
// rejected before anything is asked.
func TestParseAnnouncementRefuses(t *testing.T) {
	id := wire.CatalogID{Kind: wire.RecordAttestation, ID: [32]byte{1}}
	many := make([]wire.CatalogID, maxAnnouncedIDs+1)
	for i := range many {
		many[i] = wire.CatalogID{Kind: wire.RecordDemand, ID: [32]byte{byte(i), 7}}
	}
	for name, msg := range map[string][]byte{
		"no ids":        Announcement(),
		"too many":      Announcement(many...),
		"short":         Announcement(id)[:20],
		"trailing":      append(Announcement(id), 0),
		"unknown kind":  Announcement(wire.CatalogID{Kind: 'x', ID: id.ID}),
		"the same id":   Announcement(id, id),
		"no count":      {gossipTagIDs},
		"huge count":    {gossipTagIDs, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"overlong vint": {gossipTagIDs, 0x81, 0x00},
	} {
		if _, err := parseAnnouncement(msg[1:]); !errors.Is(err, ErrBadAnnouncement) {
			t.Errorf("%s: %v, want ErrBadAnnouncement", name, err)
		}
	}
	ids, err := parseAnnouncement(Announcement(many[:maxAnnouncedIDs]...)[1:])
	if err != nil || len(ids) != maxAnnouncedIDs || ids[3] != many[3] {
		t.Fatalf("64 ids: %d, %v", len(ids), err)
	}
}

func FuzzParseAnnouncement(f *testing.F) {
	f.Add(Announcement(wire.CatalogID{Kind: wire.RecordAttestation, ID: [32]byte{1}})[1:])
	f.Add([]byte{0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := parseAnnouncement(b)
		if err != nil {
			return
		}
		if len(ids) == 0 || len(ids) > maxAnnouncedIDs {
			t.Fatalf("%d ids accepted", len(ids))
		}
		if again := Announcement(ids...)[1:]; !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, which encodes back as %x", b, again)
		}
	})
}

// Each record an announcement makes this daemon fetch and verify takes a
// token of the relay's gossip rate: an announcement of more records than
// the relay's burst is ignored before anything is asked.
func TestAnnouncementPaysPerRecord(t *testing.T) {
	net := memnet.New()
	relay, tap := tapped(t, net)
	v := joinBook(t, net, true, nil)
	v.gossipRates = wire.NewPeerRates(rate.Limit(1e-6), 10) // a burst of 10 that does not refill during the test
	var ids []wire.CatalogID
	for i := range 12 {
		s := junk(t, relay.key, i, 500)
		if err := relay.StoreOwn(s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, attID(s))
	}
	err := v.OnGossip(relay.self, relay.self, v.platform, Announcement(ids...))
	if !errors.Is(err, wire.ErrGossipIgnore) || len(tap.askedIDs()) != 0 {
		t.Fatalf("12 records from a relay with a burst of 10: %v, %d asked", err, len(tap.askedIDs()))
	}
	if err := v.OnGossip(relay.self, relay.self, v.platform, Announcement(ids[:5]...)); err != nil {
		t.Fatalf("5 records within the burst: %v", err)
	}
	if err := v.OnGossip(relay.self, relay.self, v.platform, Announcement(ids[5:10]...)); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("5 more records once the burst is spent: %v, want ignored", err)
	}
}

// A relay that never answers holds at most relayFetching fetches and
// relayQueued validations of this daemon's: past that its announcements
// are ignored at once, and once it answers every queued one completes.
func TestAnnouncementFetchesPerRelayBounded(t *testing.T) {
	net := memnet.New()
	relay, tap := tapped(t, net)
	v := joinBook(t, net, true, nil)
	v.gossipRates = wire.NewPeerRates(rate.Inf, 1)
	var ids []wire.CatalogID
	for i := range relayQueued + 1 {
		s := junk(t, relay.key, i, 300)
		if err := relay.StoreOwn(s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, attID(s))
	}
	var mu sync.Mutex
	inFlight, most := 0, 0
	answer := make(chan struct{})
	tap.records = func(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		<-answer
		mu.Lock()
		inFlight--
		mu.Unlock()
		return relay.ServeCatalogRecords(ctx, want)
	}
	errs := make(chan error, relayQueued)
	for _, id := range ids[:relayQueued] {
		go func() { errs <- v.OnGossip(relay.self, relay.self, v.platform, Announcement(id)) }()
	}
	queued := func() int {
		v.fetching.mu.Lock()
		defer v.fetching.mu.Unlock()
		if q := v.fetching.m[relay.self]; q != nil {
			return q.n
		}
		return 0
	}
	eventually(t, "every announcement queued", func() bool { return queued() == relayQueued })
	err := v.OnGossip(relay.self, relay.self, v.platform, Announcement(ids[relayQueued]))
	if !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("an announcement past the relay's queue: %v, want ignored", err)
	}
	close(answer)
	for range relayQueued {
		if err := <-errs; err != nil {
			t.Fatalf("a queued announcement: %v", err)
		}
	}
	if most > relayFetching {
		t.Errorf("%d fetches from one relay at once, want at most %d", most, relayFetching)
	}
	if queued() != 0 {
		t.Errorf("%d fetches still counted", queued())
	}
}

// An announcement is forwarded only when it brought something and this
// daemon holds all it names: a replay of records held here, and this
// daemon's own withdrawn record announced back, are ignored — neither
// travels on through it.
func TestAnnouncementReplayIgnored(t *testing.T) {
	net := memnet.New()
	relay, _ := tapped(t, net)
	v := joinBook(t, net, true, nil)
	s := junk(t, relay.key, 1, 800)
	if err := relay.StoreOwn(s); err != nil {
		t.Fatal(err)
	}
	msg := Announcement(attID(s))
	if err := v.OnGossip(relay.self, relay.self, v.platform, msg); err != nil {
		t.Fatalf("first announcement: %v", err)
	}
	if err := v.OnGossip(relay.self, relay.self, v.platform, msg); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("a replay of it: %v, want ignored", err)
	}
	mine := junk(t, v.key, 2, 800) // v's own, withdrawn here: the relay kept a copy
	if _, err := relay.IngestFrom(t.Context(), mine.Marshal(), v.self); err != nil {
		t.Fatal(err)
	}
	if err := v.OnGossip(relay.self, relay.self, v.platform, Announcement(attID(mine))); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("own withdrawn record announced back: %v, want ignored", err)
	}
	if has(t, v.Book, mine) != 0 {
		t.Fatal("own withdrawn record taken back")
	}
}
