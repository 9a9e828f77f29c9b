package votes

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ServeAttestations answers /gentoo-p2p/attest/1 for a build or variant
// key: every verified attestation held, own and collected.
func (vb *Book) ServeAttestations(ctx context.Context, key cid.Cid) ([][]byte, error) {
	k := key.String()
	recs, err := vb.store.AttestationsFor(k)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		if recs, err = vb.store.AttestationsByVariantUpTo(k, 4*vb.answerBytes); err != nil {
			return nil, err
		}
	}
	vb.metrics.attestServed.Inc()
	// Endorsements first: a response is capped, and a flood of
	// attestations must not push signer backing out of it.
	var out [][]byte
	if len(recs) > 0 {
		if es, err := vb.store.EndorsementsFor(recs[0].BuildKey); err == nil {
			out = append(out, es...)
		}
	}
	// Then one vote per attester, of the contents the most distinct
	// attesters agree on first, then the attesters' further records: the
	// byte cap leaves out padded junk of few-attester contents, however
	// many records each of their identities sent.
	attesters := map[string]map[string]bool{}
	for _, r := range recs {
		if attesters[r.Content] == nil {
			attesters[r.Content] = map[string]bool{}
		}
		attesters[r.Content][r.Attester] = true
	}
	seen := map[string]bool{}
	first := make([]bool, len(recs))
	for i, r := range recs {
		first[i] = !seen[r.Attester]
		seen[r.Attester] = true
	}
	order := make([]int, len(recs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		a, b := recs[i], recs[j]
		if first[i] != first[j] {
			if first[i] {
				return -1
			}
			return 1
		}
		return cmp.Compare(len(attesters[b.Content]), len(attesters[a.Content]))
	})
	size := 0
	for _, i := range order {
		if size += len(recs[i].Blob); size > vb.answerBytes {
			break
		}
		out = append(out, recs[i].Blob)
	}
	return out, nil
}

// attestAnswerBytes bounds the attestations of one attest/1 answer: a
// build key's caps allow 512 records, and sixteen concurrent answers of
// those must not cost hundreds of MiB.
const attestAnswerBytes = 4 << 20

// ServeCatalog answers /gentoo-p2p/catalog/2: the platform's attestations
// after the cursor in (time, id) order, each led by the endorsements of its
// build key the answer has not carried yet. A page holds at most MaxBlobs
// blobs and about catalogPageBytes of them, endorsements included, and
// always at least one attestation, so a client paging from the last
// attestation it got always moves on. It is read from the store's time
// index, so its memory and work are the page's whatever the catalog
// holds. A platform in DemandNamespace asks for the platform's demand
// records instead (serveDemand).
func (vb *Book) ServeCatalog(ctx context.Context, platform string, cur wire.CatalogCursor) ([][]byte, error) {
	if p, ok := isDemandRequest(platform); ok {
		return vb.serveDemand(p, cur)
	}
	recs, err := vb.store.PlatformPage(platform, cur.Since, cur.After, wire.MaxBlobs/2, vb.pageBytes)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	size := 0
	sent := map[string]bool{}
	for _, r := range recs {
		group := [][]byte{}
		if !sent[r.BuildKey] {
			sent[r.BuildKey] = true
			es, err := vb.store.EndorsementsFor(r.BuildKey)
			if err != nil {
				return nil, err
			}
			group = append(group, es...)
		}
		group = append(group, r.Blob)
		n := 0
		for _, b := range group {
			n += len(b)
		}
		if len(out) > 0 && (len(out)+len(group) > wire.MaxBlobs || size+n > vb.pageBytes) {
			break
		}
		out = append(out, group...)
		size += n
	}
	return out, nil
}

// catalogPageBytes bounds one catalog page, endorsements included: a few
// hundred honest records, and what sixteen concurrent requests can make
// this daemon hold stays in tens of MiB.
const catalogPageBytes = 2 << 20

// syncCatalogFrom pulls a peer's catalog for our platform (a newcomer's way
// to fill its catalog without waiting for gossip), from cur on. It stops
// after maxCatalogPages pages, so a flood of records cannot keep one sync
// going for ever; more reports that the peer had more, and next is where
// to go on — after a completed sync, the newest record seen there (the
// cursor passed in when there was none), from which a later sync may
// resume.
func (vb *Book) syncCatalogFrom(ctx context.Context, p peer.ID, cur wire.CatalogCursor) (n int, next wire.CatalogCursor, more bool, err error) {
	via := vb.arrivalFrom(p)
	return vb.syncPages(ctx, p, vb.platform, cur, func(blobs [][]byte, ids [][32]byte, step func(at int64, id [32]byte) error) (int, error) {
		var atts, endorsements [][]byte
		for i, b := range blobs {
			if bytes.HasPrefix(b, endorsementMagic) {
				endorsements = append(endorsements, b)
				continue
			}
			atts = append(atts, b)
			// The next page starts after the last attestation in (time,
			// id) order, whatever order a peer sent.
			if s, err := vb.Decode(b); err == nil {
				if err := step(s.Attestation.Time.Unix(), ids[i]); err != nil {
					return 0, err // a lie about the page: nothing of it stored
				}
			}
		}
		added, err := vb.ingestBatch(ctx, atts, via)
		if err != nil {
			return added, err
		}
		// After the page's attestations: an endorsement by a signer not
		// configured here is kept only for a build key someone attested.
		for _, b := range endorsements {
			if _, err := vb.IngestEndorsement(ctx, b, p, false); err != nil {
				vb.log.Debug("catalog sync: endorsement not kept", "peer", p.String(), "err", err)
			}
		}
		return added, nil
	})
}

// syncPages syncs p's catalog for platform from cur: over catalog/3 by
// reconciliation (syncReconciled), or, from a peer that does not serve
// its fingerprints, by listing ids (idSync.pages), or, from a peer that
// predates catalog/3 or does not serve it, over catalog/2
// (syncBlobPages). Each fallback happens only when the first request of
// the sync is not served; a peer that stops serving partway fails this
// sync, and the next one starts where it stood.
func (vb *Book) syncPages(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor, judge judgeFunc) (n int, next wire.CatalogCursor, more bool, err error) {
	s, cancel := vb.newIDSync(ctx, p, platform, judge)
	defer cancel()
	n, next, more, err = s.syncReconciled(cur)
	if errors.Is(err, errReconcileNotServed) {
		n, next, more, err = s.pages(cur, 0, true)
	}
	if errors.Is(err, errCatalog3NotServed) {
		return vb.syncBlobPages(ctx, p, platform, cur, judge)
	}
	return n, next, more, err
}

// syncBlobPages pages through p's catalog/2 answers for platform from cur, within
// the bounds of one sync (maxCatalogPages, maxSyncBytes). judge takes each
// page's blobs, each once however often a peer repeats it, with their ids;
// it stores what it keeps, returns how many, and calls step for every
// record it vetted, before storing any, so the next page starts after the
// last of them in (time, id) order; a step that fails (catalog/3: a
// record dated otherwise than listed) fails judge, storing nothing. A page judge fails to store leaves the cursor before
// it, to be asked for again; a page that moves the cursor nowhere ends
// the sync. n, next and more are syncCatalogFrom's.
func (vb *Book) syncBlobPages(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor,
	judge func(blobs [][]byte, ids [][32]byte, step func(at int64, id [32]byte) error) (int, error)) (n int, next wire.CatalogCursor, more bool, err error) {
	seen := map[[32]byte]bool{}
	got := 0
	for range maxCatalogPages {
		if got >= maxSyncBytes {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		bs, err := vb.net.SyncCatalog(pctx, p, platform, cur)
		cancel()
		if err != nil {
			return n, cur, false, err
		}
		var blobs [][]byte
		var ids [][32]byte
		for _, b := range bs {
			// A peer that ignores the cursor repeats itself: judge each
			// blob once.
			id := sha256.Sum256(b)
			if seen[id] {
				continue
			}
			seen[id] = true
			got += len(b)
			blobs, ids = append(blobs, b), append(ids, id)
		}
		moved := false
		next := cur
		added, err := judge(blobs, ids, func(at int64, id [32]byte) error {
			if c := (wire.CatalogCursor{Since: at, After: id[:]}); cursorAfter(c, next) {
				next, moved = c, true
			}
			return nil
		})
		n += added
		if err != nil {
			// The cursor stays before this page: it is asked for again.
			return n, cur, false, err
		}
		cur = next
		if !moved {
			return n, cur, false, nil
		}
	}
	return n, cur, true, nil
}

// cursorAfter reports whether a comes after b in (time, id) order.
func cursorAfter(a, b wire.CatalogCursor) bool {
	if a.Since != b.Since {
		return a.Since > b.Since
	}
	return bytes.Compare(a.After, b.After) > 0
}

// maxSyncedPeers bounds the catalog loop's memory of peers.
const maxSyncedPeers = 4096

// maxCatalogPages and maxSyncBytes bound one catalog sync; a peer with
// more is synced again at the next tick, from where this sync stopped, at
// most maxSyncBursts times before the usual pause: what one peer makes
// this daemon decode and verify is bounded in time too.
const (
	maxCatalogPages = 64
	maxSyncBytes    = 64 << 20
	maxSyncBursts   = 4
)

// SyncFrom syncs the catalog from p once, from the start, as SyncLoop
// does for a newly connected peer: page after page until p has no more
// or the bounds of one sync and its bursts are reached, attestations
// first, then the platform's demand within the horizon. It returns the
// records stored. The network simulator calls it when a peer comes back
// online; the daemon's SyncLoop does the same on its ticker.
func (vb *Book) SyncFrom(ctx context.Context, p peer.ID) (int, error) {
	total := 0
	for _, sync := range []func(context.Context, peer.ID, wire.CatalogCursor) (int, wire.CatalogCursor, bool, error){vb.syncCatalogFrom, vb.syncDemandFrom} {
		var cur wire.CatalogCursor
		for range maxSyncBursts + 1 {
			n, next, more, err := sync(ctx, p, cur)
			total += n
			if err != nil {
				return total, err
			}
			if !more {
				break
			}
			cur = next
		}
	}
	return total, nil
}

// The catalog loop's schedule. A peer is synced in full when it first
// connects and again every FullSyncEvery; in between, every ResyncEvery,
// only from where its last sync ended, less ResyncMargin for records
// that reached it a little after their date. Before, every connected
// peer of the platform was paged through from the start every ten
// minutes: the network simulator measured that at 197 MB per peer and
// day at 1,000 peers, growing with the platform (docs/SCALE.md).
const (
	ResyncEvery   = time.Hour
	ResyncMargin  = 15 * time.Minute
	FullSyncEvery = 24 * time.Hour
)

// SyncLoop syncs the catalog from every newly connected peer, and again
// on the schedule above, so a catalog fills even when gossip was missed.
// Each sync pulls the platform's demand records too (syncDemandFrom),
// with a cursor of its own on the same schedule, so a builder that comes
// online learns what was wanted while it was away.
func (vb *Book) SyncLoop(ctx context.Context) {
	type syncState struct {
		next   time.Time          // when to sync this peer again
		cur    wire.CatalogCursor // where the next sync starts
		dcur   wire.CatalogCursor // where the next demand sync starts
		bursts int                // syncs cut short in a row
		full   time.Time          // when the last sync from the start began
	}
	peers := make(map[peer.ID]*syncState)
	t := time.NewTicker(vb.syncTick)
	defer t.Stop()
	for {
		for _, pi := range vb.net.Peers() {
			st, ok := peers[pi.ID]
			if ok && time.Now().Before(st.next) {
				continue
			}
			if !ok {
				if len(peers) >= maxSyncedPeers {
					clear(peers) // everyone is synced once more, from the start
				}
				st = &syncState{}
				peers[pi.ID] = st
			}
			if st.cur.Since == 0 && st.cur.After == nil {
				st.full = time.Now()
			}
			began := time.Now()
			n, next, more, err := vb.syncCatalogFrom(ctx, pi.ID, st.cur)
			if n > 0 {
				vb.log.Info("catalog sync", "peer", pi.ID.String(), "new", n)
			}
			st.cur = next
			dn, dnext, dmore, derr := vb.syncDemandFrom(ctx, pi.ID, st.dcur)
			if dn > 0 {
				vb.log.Info("demand sync", "peer", pi.ID.String(), "new", dn)
			}
			st.dcur = dnext
			if derr == nil && !dmore && dnext.After != nil {
				st.dcur = resumeCursor(dnext, began, vb.resyncMargin)
			}
			if derr != nil {
				// Tried again at this peer's next sync, from dcur.
				vb.log.Debug("demand sync", "peer", pi.ID.String(), "err", derr)
			}
			more = more || dmore
			switch {
			case err != nil:
				// Try this peer again in a minute, from where it stopped.
				vb.log.Debug("catalog sync", "peer", pi.ID.String(), "err", err)
				st.next = time.Now().Add(time.Minute)
			case more && st.bursts < maxSyncBursts:
				// Cut short by the page bound: go on at the next tick.
				st.bursts++
				st.next = time.Now()
			case more:
				// Still more after several syncs in a row: go on from
				// here after the usual pause.
				st.bursts = 0
				st.next = time.Now().Add(vb.resyncEvery)
			default:
				st.bursts = 0
				st.next = time.Now().Add(vb.resyncEvery)
				if next.After != nil {
					// A sync that saw no record keeps the resume
					// point it started from.
					st.cur = resumeCursor(next, began, vb.resyncMargin)
				}
				if time.Since(st.full) >= vb.fullSyncEvery {
					// Records that reached the peer long after their
					// date are taken in once a day.
					st.cur, st.dcur = wire.CatalogCursor{}, wire.CatalogCursor{}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resumeCursor is where the next sync after a completed one starts: margin
// before the newest record seen, so records that reached the peer after
// the last sync but are dated a little earlier are not skipped — and never
// after the time the sync began: records may be dated up to a day ahead
// (checkClaims), and one such record (or a builder's fast clock) must not
// move the resume point past every honest record to come.
func resumeCursor(last wire.CatalogCursor, began time.Time, margin time.Duration) wire.CatalogCursor {
	return wire.CatalogCursor{Since: max(1, min(last.Since, began.Unix())-int64(margin/time.Second))}
}
