package votes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// Catalog sync by ids (/gentoo-p2p/catalog/3): a page answers the ids of
// the records catalog/2 would send, and the client asks only for those it
// does not hold. A daily full sync then costs the ids of the platform's
// catalog, not its records (docs/PROTOCOL.md, docs/SCALE.md).

// Errors of a peer that lies in catalog/3, for errors.Is. The sync that
// meets one fails; it is tried again later from where it stood.
var (
	// ErrBadIDPage: an ids page out of (time, id) order, not after the
	// cursor asked for, over MaxCatalogIDs, or of a kind the page cannot
	// hold.
	ErrBadIDPage = errors.New("votes: bad catalog ids page")
	// ErrUnaskedRecord: a records answer holds a record not asked for (its
	// SHA-256 is no id asked), one twice, or out of the order asked.
	ErrUnaskedRecord = errors.New("votes: catalog peer sent a record not asked for")
	// ErrIDMismatch: a record's signed time is not the time its id was
	// listed with.
	ErrIDMismatch = errors.New("votes: catalog record does not match its id")
)

// maxEndorsementIDs bounds the endorsement ids listed with one
// attestation, so a page always has room for the attestation itself.
const maxEndorsementIDs = wire.MaxCatalogIDs/2 - 1

// maxRecordRequests bounds the records requests of one ids page: an
// honest peer answers 256 records of a few KB in one (2 MiB a answer),
// so 64 carry a full page of the largest records there are.
const maxRecordRequests = 64

// maxSyncRequests bounds the requests of one catalog/3 sync, ids pages
// and records requests together, and maxSyncTime its time, each request
// keeping its own 30 s timeout within it. SyncLoop syncs its peers one
// after another: without these, a peer that lists ids it never sends
// held one sync for 64 pages of 64 requests, hours. An honest sync of
// records of a few KB reaches maxSyncBytes at about 100 requests; one
// cut short goes on at the next tick, from where it stopped.
const (
	maxSyncRequests = 128
	maxSyncTime     = 5 * time.Minute
)

// errCatalog3NotServed: the first ids request of a sync found catalog/3
// not served there, so syncPages syncs over catalog/2 instead.
var errCatalog3NotServed = errors.New("votes: catalog/3 not served")

// CatalogIDBytes is what one id of an ids page costs on the wire: its
// kind, its time (a uvarint of 5 bytes for any date from 1971 to 3058)
// and its id. A sync counts the ids it receives with it.
const CatalogIDBytes = 1 + 5 + 32

// ServeCatalogIDs answers an ids page of /gentoo-p2p/catalog/3: the ids
// of the records ServeCatalog would send from cur, in the same order (the
// endorsements of a build key, time 0, just before the first attestation
// of it the page names), at most MaxCatalogIDs/2 attestations and
// MaxCatalogIDs ids, at least one attestation when any is left. It reads
// the store's indexes and the records' metadata, never a blob.
func (vb *Book) ServeCatalogIDs(ctx context.Context, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
	return vb.serveIDs(platform, cur, 0)
}

// ServeCatalogIDsUntil answers a bounded ids page of catalog/3: the page
// ServeCatalogIDs answers, of the records dated before until.
func (vb *Book) ServeCatalogIDsUntil(ctx context.Context, platform string, cur wire.CatalogCursor, until int64) ([]wire.CatalogID, error) {
	return vb.serveIDs(platform, cur, max(until, 1))
}

// serveIDs is an ids page from cur, of records dated before until unless
// until is 0.
func (vb *Book) serveIDs(platform string, cur wire.CatalogCursor, until int64) ([]wire.CatalogID, error) {
	if p, ok := isDemandRequest(platform); ok {
		if floor := vb.demandFloor(); cur.Since < floor {
			cur = wire.CatalogCursor{Since: floor}
		}
		es, err := vb.store.DemandIDsUntil(p, cur.Since, cur.After, until, min(wire.MaxCatalogIDs, 2*vb.pageIDs))
		if err != nil {
			return nil, err
		}
		out := make([]wire.CatalogID, len(es))
		for i, e := range es {
			out[i] = wire.CatalogID{Kind: wire.RecordDemand, Time: e.Time, ID: e.ID}
		}
		return out, nil
	}
	es, err := vb.store.PlatformIDsUntil(platform, cur.Since, cur.After, until, vb.pageIDs)
	if err != nil {
		return nil, err
	}
	var out []wire.CatalogID
	sent := map[string]bool{}
	for _, e := range es {
		var group []wire.CatalogID
		if !sent[e.BuildKey] {
			sent[e.BuildKey] = true
			ids, err := vb.store.EndorsementIDs(e.BuildKey)
			if err != nil {
				return nil, err
			}
			for _, id := range ids[:min(len(ids), maxEndorsementIDs)] {
				group = append(group, wire.CatalogID{Kind: wire.RecordEndorsement, ID: id})
			}
		}
		group = append(group, wire.CatalogID{Kind: wire.RecordAttestation, Time: e.Time, ID: e.ID})
		if len(out) > 0 && len(out)+len(group) > wire.MaxCatalogIDs {
			break
		}
		out = append(out, group...)
	}
	return out, nil
}

// ServeCatalogRecords answers a records request of /gentoo-p2p/catalog/3:
// the blobs of the records asked for that are held, in the order asked,
// stopping after the one that reaches about catalogPageBytes (so sixteen
// answers at once stay in tens of MiB). A client asks again for those
// after the last one answered.
func (vb *Book) ServeCatalogRecords(ctx context.Context, want []wire.CatalogID) ([][]byte, error) {
	var out [][]byte
	size := 0
	for _, w := range want {
		if size >= vb.pageBytes || len(out) == wire.MaxRecordsAsked {
			break
		}
		var blob []byte
		var ok bool
		var err error
		switch w.Kind {
		case wire.RecordAttestation:
			var rec store.AttestationRecord
			rec, ok, err = vb.store.GetAttestation(w.ID)
			blob = rec.Blob
		case wire.RecordEndorsement:
			blob, ok, err = vb.store.EndorsementByID(w.ID)
		case wire.RecordDemand:
			blob, ok, err = vb.store.DemandBlobByID(w.ID)
		}
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, blob)
			size += len(blob)
		}
	}
	return out, nil
}

// judgeFunc takes a page's fetched records (syncBlobPages).
type judgeFunc = func(blobs [][]byte, ids [][32]byte, step func(at int64, id [32]byte) error) (int, error)

// idSync is one catalog/3 sync of a peer's catalog for platform: its
// bounds hold for the whole sync, whether it lists ids from a cursor
// (pages) or reconciles time ranges first and lists only those
// that differ (syncReconciled).
type idSync struct {
	vb       *Book
	ctx      context.Context
	p        peer.ID
	platform string
	demand   bool
	judge    judgeFunc
	got      int // bytes received, of ids, fingerprints and records
	requests int // requests left (maxSyncRequests)
	// asked are the ids asked for in this sync: none is asked twice.
	asked map[[32]byte]bool
}

// newIDSync starts a sync bounded by maxSyncRequests, maxSyncBytes and
// the Book's syncTime; the returned cancel ends it.
func (vb *Book) newIDSync(ctx context.Context, p peer.ID, platform string, judge judgeFunc) (*idSync, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, vb.syncTime)
	_, demand := isDemandRequest(platform)
	return &idSync{vb: vb, ctx: ctx, p: p, platform: platform, demand: demand, judge: judge,
		requests: maxSyncRequests, asked: map[[32]byte]bool{}}, cancel
}

// pages lists p's ids for platform from cur (of records dated before
// until, unless until is 0), asks for the records this store does not
// hold, and hands those to judge exactly as catalog/2's pages are (the
// same checks, budgets and bounds). A held record moves the cursor by
// the time this store holds for it; a fetched one by the time judge
// vetted. The sync's bounds (maxSyncRequests, maxSyncBytes, syncTime)
// hold besides, and no id is asked for twice in it, however often a peer
// lists it. With first, a peer that does not serve catalog/3 fails the
// first ids request with errCatalog3NotServed (wrapping
// wire.ErrNotSupported), before anything is done; a later failure is an
// ordinary error.
func (s *idSync) pages(cur wire.CatalogCursor, until int64, first bool) (n int, next wire.CatalogCursor, more bool, err error) {
	vb, ctx, p := s.vb, s.ctx, s.p
	for page := range maxCatalogPages {
		if s.got >= maxSyncBytes || s.requests == 0 {
			break
		}
		s.requests--
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var ids []wire.CatalogID
		if until > 0 {
			ids, err = vb.net.CatalogIDsUntil(pctx, p, s.platform, cur, until)
		} else {
			ids, err = vb.net.CatalogIDs(pctx, p, s.platform, cur)
		}
		cancel()
		if err != nil {
			if first && page == 0 && errors.Is(err, wire.ErrNotSupported) {
				err = fmt.Errorf("%w: %w", errCatalog3NotServed, err)
			}
			return n, cur, false, err
		}
		s.got += len(ids) * CatalogIDBytes
		if err := checkIDPage(ids, cur, until, s.demand); err != nil {
			return n, cur, false, err
		}
		listed := make(map[[32]byte]int64, len(ids))
		kinds := make(map[[32]byte]byte, len(ids))
		for _, id := range ids {
			listed[id.ID], kinds[id.ID] = id.Time, id.Kind
		}
		held, err := vb.heldRecords(ids)
		if err != nil {
			return n, cur, false, err
		}
		var want []wire.CatalogID
		for i, id := range ids {
			// An id asked for earlier in this sync and not had then is
			// not held there: a peer that lists it again (endorsement ids
			// are not ordered, so it can) gets no second request.
			if held[i] < 0 && !s.asked[id.ID] {
				s.asked[id.ID] = true
				want = append(want, id)
			}
		}
		budget := min(maxSyncBytes-s.got, vb.fetchBytes)
		blobs, done, size, err := vb.fetchRecords(ctx, p, want, budget, &s.requests)
		s.got += size
		if err != nil {
			return n, cur, false, err
		}
		// Records after the first one left unfetched are stepped over at
		// the next sync, not this one: the cursor stays before it.
		stop := len(ids)
		cut := done < len(want)
		if cut {
			for i, id := range ids {
				if id.ID == want[done].ID {
					stop = i
					break
				}
			}
		}
		moved := false
		next := cur
		var mismatch error
		step := func(at int64, id [32]byte) error {
			if t, ok := listed[id]; ok && t != at {
				mismatch = fmt.Errorf("%w: record %x is dated %d, listed at %d", ErrIDMismatch, id[:8], at, t)
				return mismatch
			}
			if c := (wire.CatalogCursor{Since: at, After: bytes.Clone(id[:])}); cursorAfter(c, next) {
				next, moved = c, true
			}
			return nil
		}
		for i, id := range ids[:stop] {
			switch {
			case held[i] < 0 || id.Kind == wire.RecordEndorsement:
			case held[i] == 0:
				// Held from before the store kept times: the cursor moves
				// by the time the record itself is signed with, never by
				// the one the peer claims.
				if at, ok := vb.heldAttestationTime(id.ID); ok {
					_ = step(at, id.ID) // a mismatch is kept in mismatch
				}
			default:
				_ = step(held[i], id.ID)
			}
		}
		if mismatch != nil {
			return n, cur, false, mismatch
		}
		hashes := make([][32]byte, len(blobs))
		for i, b := range blobs {
			hashes[i] = sha256.Sum256(b)
		}
		// A record listed as another kind than its own is a lie about
		// the page, refused before anything of it is stored; one listed
		// at another time than its own fails judge's step, before judge
		// stores anything (its signature checked once, by judge).
		for i, b := range blobs {
			if err := matchesKind(b, kinds[hashes[i]]); err != nil {
				return n, cur, false, err
			}
		}
		added, err := s.judge(blobs, hashes, step)
		n += added
		if err == nil {
			err = mismatch
		}
		if err != nil {
			// The cursor stays before this page: it is asked for again.
			return n, cur, false, err
		}
		cur = next
		if cut {
			return n, cur, true, nil
		}
		if !moved {
			return n, cur, false, nil
		}
	}
	return n, cur, true, nil
}

// heldAttestationTime is the signed time of an attestation this store
// holds without one in its metadata (stored before times were kept).
func (vb *Book) heldAttestationTime(id [32]byte) (int64, bool) {
	rec, ok, err := vb.store.GetAttestation(id)
	if err != nil || !ok {
		return 0, false
	}
	s, err := vb.Decode(rec.Blob)
	if err != nil {
		return 0, false
	}
	return s.Attestation.Time.Unix(), true
}

// matchesKind checks a fetched record against the kind its id was listed
// with: the kind decides whether its time is checked and whether it moves
// the cursor, so an endorsement listed as anything but 'e', or anything
// else listed as 'e', is a lie about the page.
func matchesKind(blob []byte, kind byte) error {
	if isEndorsement := bytes.HasPrefix(blob, endorsementMagic); isEndorsement != (kind == wire.RecordEndorsement) {
		id := sha256.Sum256(blob)
		return fmt.Errorf("%w: record %x is listed as kind %q", ErrIDMismatch, id[:8], kind)
	}
	return nil
}

// checkIDPage checks an ids page against the cursor it answers: at most
// MaxCatalogIDs; demand ids only in a demand page, attestations and
// endorsements only in an attestation page; attestation (or demand) ids
// after cur, dated before until (unless 0), and in strictly increasing
// (time, id) order, each listed once.
func checkIDPage(ids []wire.CatalogID, cur wire.CatalogCursor, until int64, demand bool) error {
	if len(ids) > wire.MaxCatalogIDs {
		return fmt.Errorf("%w: %d ids exceed %d", ErrBadIDPage, len(ids), wire.MaxCatalogIDs)
	}
	seen := make(map[[32]byte]bool, len(ids))
	prev := cur
	for i, id := range ids {
		if seen[id.ID] {
			return fmt.Errorf("%w: id %d (%x) listed twice", ErrBadIDPage, i, id.ID[:8])
		}
		seen[id.ID] = true
		switch {
		case demand && id.Kind != wire.RecordDemand,
			!demand && id.Kind != wire.RecordAttestation && id.Kind != wire.RecordEndorsement:
			return fmt.Errorf("%w: id %d of kind %q in a %s page", ErrBadIDPage, i, id.Kind, map[bool]string{true: "demand", false: "attestation"}[demand])
		case id.Kind == wire.RecordEndorsement:
			continue
		}
		if until > 0 && id.Time >= until {
			return fmt.Errorf("%w: id %d (%x) dated %d, the page ends before %d", ErrBadIDPage, i, id.ID[:8], id.Time, until)
		}
		c := wire.CatalogCursor{Since: id.Time, After: id.ID[:]}
		if len(prev.After) == 0 && c.Since <= prev.Since || len(prev.After) > 0 && !cursorAfter(c, prev) {
			return fmt.Errorf("%w: id %d (%d, %x) is not after (%d, %x)", ErrBadIDPage, i, id.Time, id.ID[:8], prev.Since, prev.After)
		}
		prev = c
	}
	return nil
}

// heldRecords reports for each id of a page whether this store holds the
// record: -1 when not, else its time (0 for an endorsement, or for an
// attestation stored before the store kept times).
func (vb *Book) heldRecords(ids []wire.CatalogID) ([]int64, error) {
	out := make([]int64, len(ids))
	var atts, ends, dems []int
	for i, id := range ids {
		switch id.Kind {
		case wire.RecordAttestation:
			atts = append(atts, i)
		case wire.RecordEndorsement:
			ends = append(ends, i)
		default:
			dems = append(dems, i)
		}
	}
	pick := func(ix []int) [][32]byte {
		out := make([][32]byte, len(ix))
		for j, i := range ix {
			out[j] = ids[i].ID
		}
		return out
	}
	mark := func(ix []int, times []int64, held []bool) {
		for j, i := range ix {
			out[i] = -1
			if held[j] {
				out[i] = times[j]
			}
		}
	}
	times, held, err := vb.store.AttestationTimes(pick(atts))
	if err != nil {
		return nil, err
	}
	mark(atts, times, held)
	if times, held, err = vb.store.DemandTimes(pick(dems)); err != nil {
		return nil, err
	}
	mark(dems, times, held)
	held, err = vb.store.HasEndorsements(pick(ends))
	if err != nil {
		return nil, err
	}
	mark(ends, make([]int64, len(ends)), held)
	return out, nil
}

// fetchRecords asks p for the records of want, MaxRecordsAsked at a time,
// and checks every answer: each blob must be one asked for, in the order
// asked, once. An answer stops where the peer's byte bound stopped it;
// the ids before its last blob that it left out are not held there. done
// is how many of want were answered either way; fewer than all when
// budget (the bytes left to the page), maxRecordRequests or the sync's
// requests left were reached first. A blob that would take the page over
// budget is dropped with those after it (but the first one is kept,
// whatever its size), so a page holds at most budget bytes until judged.
// size counts the blobs' bytes.
func (vb *Book) fetchRecords(ctx context.Context, p peer.ID, want []wire.CatalogID, budget int, requests *int) (blobs [][]byte, done, size int, err error) {
	for n := 0; done < len(want) && n < maxRecordRequests && *requests > 0 && size < budget; n++ {
		*requests--
		batch := want[done:min(len(want), done+wire.MaxRecordsAsked)]
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		answer, err := vb.net.CatalogRecords(pctx, p, batch)
		cancel()
		if err != nil {
			return blobs, done, size, err
		}
		if len(answer) == 0 {
			done += len(batch) // none of them is held there
			continue
		}
		j := 0
		for _, b := range answer {
			id := sha256.Sum256(b)
			for j < len(batch) && batch[j].ID != id {
				j++
			}
			if j == len(batch) {
				return nil, done, size, fmt.Errorf("%w: %x (of %d asked)", ErrUnaskedRecord, id[:8], len(batch))
			}
			if len(blobs) > 0 && size+len(b) > budget {
				return blobs, done + j, size, nil // cut before this one
			}
			j++
			blobs = append(blobs, b)
			size += len(b)
		}
		done += j
	}
	return blobs, done, size, nil
}
