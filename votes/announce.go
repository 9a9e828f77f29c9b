package votes

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
)

// Records travel on a platform topic by id: a daemon gossips the kind and
// id of a record it signed (gossipTagIDs), and a receiver that lacks the
// record asks the peer that relayed the message for it over catalog/3's
// records request, checks it as any record from the network, and only
// then lets GossipSub forward the message. GossipSub delivers each
// message about once per mesh neighbour (5–7 copies a peer, measured in
// docs/SCALE.md); a copy of an announcement is ~100 bytes where an
// attestation is ~2.4 KB, so the copies cost ids and each record crosses
// once. A relay forwards only what it validated, so it holds what it
// announces.
const gossipTagIDs = 'i'

// maxAnnouncedIDs bounds the ids of one announcement, and announceBytes
// the records fetched for one: an honest announcement names a few
// records of a few KB.
const (
	maxAnnouncedIDs = 64
	announceBytes   = 4 << 20
)

// Fetches on behalf of one relay's announcements: at most
// relayFetching at once, and at most relayQueued in flight or waiting.
// GossipSub validates messages in a shared pool (1,024 at a time per
// topic); a relay that accepts a records request and never answers would
// otherwise hold a validation for each of its announcements until the
// timeout, and a few such relays would hold them all. An honest batch
// (a builder announcing 64 records at once) waits its turn.
const (
	relayFetching = 8
	relayQueued   = 64
)

// relayFetches counts the fetches each relay's announcements have in
// flight or waiting; an entry goes when its count is 0.
type relayFetches struct {
	mu sync.Mutex
	m  map[peer.ID]*relayQueue
}

type relayQueue struct {
	n     int           // in flight or waiting
	slots chan struct{} // in flight
}

// acquire waits for one of p's fetch slots; it fails at once when p has
// relayQueued fetches queued, or when ctx ends first.
func (r *relayFetches) acquire(ctx context.Context, p peer.ID) (release func(), err error) {
	r.mu.Lock()
	q := r.m[p]
	if q == nil {
		if r.m == nil {
			r.m = make(map[peer.ID]*relayQueue)
		}
		q = &relayQueue{slots: make(chan struct{}, relayFetching)}
		r.m[p] = q
	}
	if q.n >= relayQueued {
		r.mu.Unlock()
		return nil, fmt.Errorf("%s has %d announced fetches queued", p, q.n)
	}
	q.n++
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		if q.n--; q.n == 0 {
			delete(r.m, p)
		}
		r.mu.Unlock()
	}
	select {
	case q.slots <- struct{}{}:
		return func() { <-q.slots; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// ErrBadAnnouncement: an announcement that is not one to 64 distinct ids
// of kinds catalog/3 serves.
var ErrBadAnnouncement = errors.New("votes: bad announcement")

// Announcement encodes ids as a gossip message: the tag, uvarint(count),
// then count × (kind, [32]id). The network simulator measures GossipSub
// with it.
func Announcement(ids ...wire.CatalogID) []byte {
	b := append([]byte{gossipTagIDs}, varint.ToUvarint(uint64(len(ids)))...)
	for _, id := range ids {
		b = append(b, id.Kind)
		b = append(b, id.ID[:]...)
	}
	return b
}

// ParseAnnouncement decodes a whole announcement message, tag included.
func ParseAnnouncement(msg []byte) ([]wire.CatalogID, error) {
	if len(msg) == 0 || msg[0] != gossipTagIDs {
		return nil, fmt.Errorf("%w: not an announcement", ErrBadAnnouncement)
	}
	return parseAnnouncement(msg[1:])
}

// parseAnnouncement decodes an announcement's payload (after the tag).
func parseAnnouncement(b []byte) ([]wire.CatalogID, error) {
	n, k, err := varint.FromUvarint(b)
	if err != nil {
		return nil, fmt.Errorf("%w: count: %w", ErrBadAnnouncement, err)
	}
	b = b[k:]
	if n == 0 || n > maxAnnouncedIDs {
		return nil, fmt.Errorf("%w: %d ids (want 1..%d)", ErrBadAnnouncement, n, maxAnnouncedIDs)
	}
	if uint64(len(b)) != n*33 {
		return nil, fmt.Errorf("%w: %d bytes for %d ids", ErrBadAnnouncement, len(b), n)
	}
	ids := make([]wire.CatalogID, n)
	seen := make(map[[32]byte]bool, n)
	for i := range ids {
		ids[i].Kind = b[0]
		copy(ids[i].ID[:], b[1:33])
		b = b[33:]
		switch ids[i].Kind {
		case wire.RecordAttestation, wire.RecordEndorsement, wire.RecordDemand:
		default:
			return nil, fmt.Errorf("%w: id %d has kind 0x%02x", ErrBadAnnouncement, i, ids[i].Kind)
		}
		if seen[ids[i].ID] {
			return nil, fmt.Errorf("%w: id %x twice", ErrBadAnnouncement, ids[i].ID[:8])
		}
		seen[ids[i].ID] = true
	}
	return ids, nil
}

// announce gossips the id of one record this daemon stored (its own
// attestation, endorsement or demand) on platform's topic, joining it
// first.
func (vb *Book) announce(ctx context.Context, platform string, kind byte, blob []byte) error {
	if err := vb.net.JoinPlatform(platform); err != nil {
		return err
	}
	return vb.net.Publish(ctx, platform, Announcement(wire.CatalogID{Kind: kind, ID: sha256.Sum256(blob)}))
}

// ingestAnnounced validates an announcement for GossipSub: the records it
// names that this store lacks are fetched from relay (from origin too, when
// the message names one, for any relay did not send), checked and stored exactly as whole
// records from gossip are. It accepts (nil) when every record is held
// afterwards, rejects (an error) a malformed announcement, a record not
// asked for or one that fails its checks, and ignores (wire.ErrGossipIgnore)
// one whose records could not all be had or kept: not forwarded, nothing
// counted against anyone.
func (vb *Book) ingestAnnounced(ctx context.Context, origin, relay peer.ID, platform string, payload []byte) error {
	ids, err := parseAnnouncement(payload)
	if err != nil {
		vb.reject("announcement", relay, err)
		return err
	}
	held, err := vb.heldRecords(ids)
	if err != nil {
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err)
	}
	var want []wire.CatalogID
	for i, id := range ids {
		if held[i] < 0 {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		// Nothing new: an honest announcement names records its
		// publisher just stored, so this is a copy (or a replay) that
		// must not travel on through this daemon.
		return fmt.Errorf("%w: every record announced is held here", wire.ErrGossipIgnore)
	}
	// The message took one of the relay's gossip tokens; each further
	// record to fetch and verify takes one more, so announcing many ids
	// at once costs a relay what gossiping the records would.
	if len(want) > 1 && !vb.gossipRates.AllowN(relay, len(want)-1) {
		return fmt.Errorf("%w: %s relays more than limits.peer_gossip_rate", wire.ErrGossipIgnore, relay)
	}
	vb.metrics.announced.Add(float64(len(want)))
	kinds := make(map[[32]byte]byte, len(want))
	for _, id := range want {
		kinds[id.ID] = id.Kind
	}
	// What each source sent: a record is taken as arriving from the peer
	// that sent it (its address is evidence of where the attester sits
	// when that peer is the attester).
	type sent struct {
		from             peer.ID
		atts, ends, dems [][]byte
	}
	var got []sent
	var short error
	sources := []peer.ID{relay}
	if origin != "" && origin != relay { // GossipSub messages name no origin: p2p.GossipSubOptions
		sources = append(sources, origin)
	}
	for _, from := range sources {
		if len(want) == 0 || from == vb.self {
			continue
		}
		release, err := vb.fetching.acquire(ctx, from)
		if err != nil {
			short = err
			continue
		}
		requests := 1
		blobs, _, _, err := vb.fetchRecords(ctx, from, want, announceBytes, &requests)
		release()
		if errors.Is(err, ErrUnaskedRecord) {
			vb.reject("announcement", from, err)
			return err
		}
		if err != nil {
			short = err
		}
		have := make(map[[32]byte]bool, len(blobs))
		batch := sent{from: from}
		for _, b := range blobs {
			id := sha256.Sum256(b)
			if err := matchesKind(b, kinds[id]); err != nil {
				vb.reject("announcement", from, err)
				return err
			}
			have[id] = true
			switch kinds[id] {
			case wire.RecordAttestation:
				batch.atts = append(batch.atts, b)
			case wire.RecordEndorsement:
				batch.ends = append(batch.ends, b)
			default:
				batch.dems = append(batch.dems, b)
			}
		}
		got = append(got, batch)
		rest := want[:0:0]
		for _, id := range want {
			if !have[id.ID] {
				rest = append(rest, id)
			}
		}
		want = rest
	}
	var ignored error
	if len(want) > 0 {
		ignored = fmt.Errorf("%d of the records announced were not sent", len(want))
		if short != nil {
			ignored = fmt.Errorf("%w: %w", ignored, short)
		}
	}
	// Attestations first, a source's in one transaction: endorsements are
	// kept only for build keys someone attested.
	for _, g := range got {
		if len(g.atts) == 0 {
			continue
		}
		_, err := vb.ingest(ctx, g.atts, vb.arrivalFrom(g.from), true)
		switch {
		case err == nil:
		case errors.Is(err, errRejected) && !errors.Is(err, errBudget) && !errors.Is(err, errTooMany):
			return err
		default:
			ignored = err
		}
	}
	// An endorsement or demand record that fails its checks rejects the
	// announcement at once; one over a bound only keeps it from travelling.
	take := func(err error) error {
		if err != nil && !errors.Is(err, wire.ErrGossipIgnore) {
			return err
		}
		ignored = cmp.Or(err, ignored)
		return nil
	}
	for _, g := range got {
		for _, b := range g.ends {
			if _, err := vb.IngestEndorsement(ctx, b, g.from, false); take(err) != nil {
				return err
			}
		}
		for _, b := range g.dems {
			if err := vb.ingestDemand(b, g.from, platform); take(err) != nil {
				return err
			}
		}
	}
	if ignored != nil {
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, ignored)
	}
	// Forwarded only if every record is held now: the next peers ask this
	// daemon for them. A record can pass its checks and still not be
	// kept (this daemon's own, withdrawn here; a demand superseded).
	if held, err := vb.heldRecords(ids); err != nil {
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err)
	} else if slices.Contains(held, -1) {
		return fmt.Errorf("%w: a record announced was not kept here", wire.ErrGossipIgnore)
	}
	return nil
}
