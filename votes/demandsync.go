package votes

import (
	"context"
	"errors"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// DemandNamespace prefixes the platform of a catalog request (catalog/2
// pages, catalog/3 ids pages) for the platform's demand records instead
// of its attestations:
// "demand/<platform>" pages them in (time, id) order, id being the SHA-256
// of the signed record, from the cursor on — never from before
// DemandHorizon. A platform never contains a slash (identity: CHOST, a
// dash and hex), so no attestation platform is mistaken for it, and a
// daemon that predates demand sync answers it with an empty page (it
// holds no attestations of such a platform).
const DemandNamespace = "demand/"

// serveDemand answers a catalog request in DemandNamespace: platform's
// demand records after cur, no older than the horizon, at most MaxBlobs/2
// records and about catalogPageBytes of them, at least one when any.
func (vb *Book) serveDemand(platform string, cur wire.CatalogCursor) ([][]byte, error) {
	if floor := vb.demandFloor(); cur.Since < floor {
		cur = wire.CatalogCursor{Since: floor}
	}
	recs, err := vb.store.DemandPage(platform, cur.Since, cur.After, wire.MaxBlobs/2, vb.pageBytes)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(recs))
	size := 0
	for _, r := range recs {
		if size += len(r.Blob); len(out) > 0 && size > vb.pageBytes {
			break
		}
		out = append(out, r.Blob)
	}
	return out, nil
}

// isDemandRequest splits a catalog request's platform: the platform whose
// demand is asked for, and whether it was.
func isDemandRequest(platform string) (string, bool) {
	return strings.CutPrefix(platform, DemandNamespace)
}

// syncDemandFrom pulls a peer's demand records for our platform from cur
// on (never from before the horizon), bounded like syncCatalogFrom: at
// most maxCatalogPages pages and maxSyncBytes per sync. Every record goes
// through the checks gossip gets (vetDemand, admitDemand: signature,
// binding, platform, date, own echo, blocked peer, horizon, identity
// rate) and the store's per-identity and total bounds; one that fails is
// counted and skipped, the rest of the page stands. A record already held
// is known by its id before its signature is checked. n, next and more
// are syncCatalogFrom's.
func (vb *Book) syncDemandFrom(ctx context.Context, p peer.ID, cur wire.CatalogCursor) (n int, next wire.CatalogCursor, more bool, err error) {
	if floor := vb.demandFloor(); cur.Since < floor {
		cur = wire.CatalogCursor{Since: floor}
	}
	return vb.syncPages(ctx, p, DemandNamespace+vb.platform, cur, func(blobs [][]byte, ids [][32]byte, step func(at int64, id [32]byte) error) (int, error) {
		var fresh []*trust.SignedDemand
		for i, b := range blobs {
			at, known, err := vb.store.DemandByID(ids[i])
			if err != nil {
				return 0, err
			}
			if known {
				if err := step(at, ids[i]); err != nil {
					return 0, err
				}
				continue
			}
			s, err := vb.vetDemand(b, p, "synced for platform", vb.platform)
			if err != nil {
				continue // counted; the page's other records stand
			}
			// Before anything is stored: a record dated otherwise than
			// catalog/3 listed it refuses the page.
			if err := step(s.Demand.Time.Unix(), ids[i]); err != nil {
				return 0, err
			}
			if err := vb.admitDemand(s); err != nil {
				vb.log.Debug("demand sync: record not kept", "peer", p.String(), "err", err)
				continue
			}
			fresh = append(fresh, s)
		}
		return vb.storeDemands(fresh)
	})
}

// storeDemands keeps vetted demand records from a sync page in one store
// transaction, each within its identity's share and the total; it
// returns how many were new.
func (vb *Book) storeDemands(ss []*trust.SignedDemand) (int, error) {
	if len(ss) == 0 {
		return 0, nil
	}
	vb.pruneDemand()
	recs := make([]store.DemandRecord, len(ss))
	for i, s := range ss {
		recs[i] = demandRecord(s)
	}
	added, refused, err := vb.store.PutDemands(recs, func(attester string) store.DemandLimits {
		id, err := peer.Decode(attester)
		if err != nil {
			return vb.demandLimits("")
		}
		return vb.demandLimits(id)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for i, ok := range added {
		if ok {
			n++
		}
		if refused[i] != nil && !errors.Is(refused[i], store.ErrDemandFull) {
			vb.log.Debug("demand sync: record not stored", "attester", recs[i].Attester, "err", refused[i])
		}
	}
	return n, nil
}
