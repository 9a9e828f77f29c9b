package votes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// Range-based set reconciliation over catalog/3 (docs/PROTOCOL.md): a
// client asks a peer for the count and fingerprint of the ids in each of
// a few time slices of its catalog, compares them with its own, splits
// the slices that differ, and lists ids (the ids path, with all its
// checks) only of the small slices that still differ. A resync that
// finds nothing missing then costs one answer of a few dozen bytes
// whatever the catalog, not the ids of the whole catalog.
//
// A slice covers exactly what an ids page of it lists: the attestations
// (or demand records) dated in it and, with the attestations, the
// endorsements of their build keys, each once per slice (time 0 does not
// place an endorsement, its build key's attestations do).

// Bounds of reconciliation.
const (
	// maxFingerprintIDs bounds the ids one fingerprints answer covers, so
	// its work (a cursor pass over the platform-time index, each
	// attestation's metadata, its build key's endorsements) is about eight
	// ids pages' whatever the range asked; past it the answer holds only
	// the slices before, and the client asks again for the rest.
	maxFingerprintIDs = 16384
	// maxReconcileRequests bounds the fingerprints requests of one sync:
	// ranges still unresolved then are listed.
	maxReconcileRequests = 32
	// listBelow: a slice that differs and holds at most this many ids on
	// either side is listed rather than split. Splitting costs a round
	// trip and an answer of at most 16 × 19 bytes, what 8 ids cost
	// listed; a slice of 32 ids (1.2 kB) is listed at once.
	listBelow = 32
	// ReconcileAhead is how far past now a reconciliation reaches:
	// records may be dated up to a day ahead (checkClaims refuses later
	// ones), and a peer's clock may run an hour ahead.
	ReconcileAhead = 25 * time.Hour
)

// errReconcileNotServed: the first fingerprints request of a sync found
// the operation not served (wire.ErrNotSupported), so syncPages lists
// ids instead.
var errReconcileNotServed = errors.New("votes: catalog/3 fingerprints not served")

// demandFloor is the oldest second of demand a page serves or a sync
// asks for (DemandHorizon).
func (vb *Book) demandFloor() int64 { return vb.standing.now().Add(-DemandHorizon).Unix() }

// ServeCatalogFingerprints answers a fingerprints request of catalog/3:
// platform's [from, until) split by wire.SliceBounds into n slices, the
// count and fingerprint of each slice's ids, in order, as an ids page of
// the slice would list them; fewer slices when the next would take the
// answer past maxFingerprintIDs. One pass of the store's platform-time
// index, then the endorsements of each slice's build keys.
func (vb *Book) ServeCatalogFingerprints(ctx context.Context, platform string, from, until int64, n int) ([]wire.CatalogSlice, error) {
	if from < 0 || from >= until || n < 1 || int64(n) > until-from {
		return nil, fmt.Errorf("votes: %d fingerprint slices of [%d, %d)", n, from, until)
	}
	sums, err := vb.catalogSlices(platform, wire.SliceBounds(from, until, n), maxFingerprintIDs)
	if err != nil {
		return nil, err
	}
	out := make([]wire.CatalogSlice, len(sums))
	for i := range sums {
		out[i] = sums[i].fp.Slice()
	}
	return out, nil
}

// sliceSum is one slice of this store's catalog: its ids' fingerprint,
// and the newest attestation (or demand record) in it, by (time, id).
type sliceSum struct {
	fp     wire.Fingerprint
	newest wire.CatalogCursor
}

// errSliceFull stops a walk at maxIDs.
var errSliceFull = errors.New("votes: fingerprint work bound reached")

// catalogSlices sums this store's ids of platform (or of its demand, in
// DemandNamespace, never before DemandHorizon) in each slice
// [bounds[i], bounds[i+1]): the slices before the one that would take
// the ids past maxIDs.
func (vb *Book) catalogSlices(platform string, bounds []int64, maxIDs int) ([]sliceSum, error) {
	n := len(bounds) - 1
	sums := make([]sliceSum, n)
	keys := make([]map[string]bool, n) // each slice's build keys
	from, until := bounds[0], bounds[n]
	p, demand := isDemandRequest(platform)
	walk := vb.store.WalkPlatformIDs
	if demand {
		walk = vb.store.WalkDemandIDs
		from = max(from, vb.demandFloor()+1) // what a page from the floor lists
	}
	full := n // slices before it are whole
	ids, i := 0, 0
	err := walk(p, from, until, func(e store.CatalogEntry) error {
		for e.Time >= bounds[i+1] {
			i++
		}
		if ids++; ids > maxIDs {
			full = i
			return errSliceFull
		}
		sums[i].fp.Add(e.ID)
		sums[i].newest = wire.CatalogCursor{Since: e.Time, After: e.ID[:]}
		if !demand {
			if keys[i] == nil {
				keys[i] = map[string]bool{}
			}
			keys[i][e.BuildKey] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, errSliceFull) {
		return nil, err
	}
	// Endorsements after the walk: a read transaction is not opened
	// inside another (a writer waiting between them would deadlock).
	ids = 0
	for i := range full {
		ids += int(sums[i].fp.Count())
	}
	for i := range full {
		for k := range keys[i] {
			es, err := vb.store.EndorsementIDs(k)
			if err != nil {
				return nil, err
			}
			es = es[:min(len(es), maxEndorsementIDs)]
			if ids += len(es); ids > maxIDs {
				return sums[:i], nil
			}
			for _, id := range es {
				sums[i].fp.Add(id)
			}
		}
	}
	return sums[:full], nil
}

// syncReconciled syncs p's catalog for platform from cur by
// reconciliation: it compares fingerprints of [cur, now+ReconcileAhead)
// in slices, splits those that differ until they are small (listBelow)
// or the bounds are reached (maxReconcileRequests and the sync's own),
// then lists the slices that differ, oldest first, and fetches what it
// lacks (idSync.pages). n, next and more are syncCatalogFrom's: next is
// the newest record of the peer's range, whether listed or in a slice
// found equal to this store's; a sync cut short while listing goes on
// from where the listing stopped. A peer that does not serve fingerprints
// fails the first request with errReconcileNotServed, before anything is
// done.
func (s *idSync) syncReconciled(cur wire.CatalogCursor) (n int, next wire.CatalogCursor, more bool, err error) {
	vb := s.vb
	from := cur.Since + 1 // after every record of second Since
	if len(cur.After) > 0 {
		from = cur.Since // records of that second after After, and some held before
	}
	from = max(from, 1)
	until := time.Now().Add(ReconcileAhead).Unix()
	if from >= until {
		return 0, cur, false, nil
	}
	next = cur
	var list [][2]int64 // slices to list
	queue := [][2]int64{{from, until}}
	asked := 0
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if r[1]-r[0] < wire.MinCatalogSlices || asked == maxReconcileRequests || s.requests == 0 || s.got >= maxSyncBytes {
			list = append(list, r)
			continue
		}
		k := int(min(wire.MaxCatalogSlices, r[1]-r[0]))
		s.requests--
		asked++
		pctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		theirs, err := vb.net.CatalogFingerprints(pctx, s.p, s.platform, r[0], r[1], k)
		cancel()
		if err != nil {
			if asked == 1 && errors.Is(err, wire.ErrNotSupported) {
				err = fmt.Errorf("%w: %w", errReconcileNotServed, err)
			}
			return 0, cur, false, err
		}
		if len(theirs) > k {
			return 0, cur, false, fmt.Errorf("%w: %d fingerprint slices, %d asked", ErrBadIDPage, len(theirs), k)
		}
		s.got += wire.CatalogSlicesBytes(theirs)
		bounds := wire.SliceBounds(r[0], r[1], k)
		ours, err := vb.catalogSlices(s.platform, bounds[:len(theirs)+1], maxSyncIDs)
		if err != nil {
			return 0, cur, false, err
		}
		for i, t := range theirs {
			sl := [2]int64{bounds[i], bounds[i+1]}
			var mine wire.CatalogSlice
			if i < len(ours) {
				mine = ours[i].fp.Slice()
			}
			switch {
			case i < len(ours) && mine == t:
				if ours[i].newest.After != nil && cursorAfter(ours[i].newest, next) {
					next = ours[i].newest
				}
			case t.Count <= listBelow || i < len(ours) && mine.Count <= listBelow:
				list = append(list, sl)
			default:
				queue = append(queue, sl)
			}
		}
		switch rest := len(theirs); rest {
		case k:
		case 0:
			// The first slice alone is past the peer's work bound:
			// split it, and ask again for the others.
			queue = append(queue, [2]int64{bounds[0], bounds[1]}, [2]int64{bounds[1], r[1]})
		default:
			queue = append(queue, [2]int64{bounds[rest], r[1]})
		}
	}
	// Oldest first, adjacent slices as one: a listing cut short leaves
	// everything before its cursor done.
	slices.SortFunc(list, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	var merged [][2]int64
	for _, r := range list {
		if m := len(merged); m > 0 && merged[m-1][1] >= r[0] {
			merged[m-1][1] = max(merged[m-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	for _, r := range merged {
		start := wire.CatalogCursor{Since: r[0] - 1}
		if r[0] == from && len(cur.After) > 0 {
			start = cur
		}
		added, last, cut, err := s.pages(start, r[1], false)
		n += added
		if err != nil {
			return n, cur, false, err
		}
		if cut {
			return n, last, true, nil
		}
		if last.After != nil && cursorAfter(last, next) {
			next = last
		}
	}
	return n, next, false, nil
}

// maxSyncIDs bounds this store's own slices summed for one fingerprints
// answer of a peer: the store's whole catalog, within reason.
const maxSyncIDs = 1 << 24
