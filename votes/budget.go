package votes

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// arrival is how a record reached this daemon: the peer that delivered it
// and, when that connection is direct (not a circuit relay), its address.
type arrival struct {
	from peer.ID
	addr string
}

// arrivalFrom records the delivering peer's direct address now, at
// arrival: a later connection (or none) must not change which network a
// vote counts for.
func (vb *Book) arrivalFrom(p peer.ID) arrival {
	a := arrival{from: p}
	if vb.net != nil && p != "" && p != vb.self {
		if ip, ok := vb.net.DirectAddr(p); ok {
			a.addr = ip.String()
		}
	}
	return a
}

// addrOf is the arrival address as evidence of where attester sits: only
// when the attester delivered its own attestation.
func (a arrival) addrOf(attester peer.ID) string {
	if a.from == attester {
		return a.addr
	}
	return ""
}

// errBudget means an attester's storage budget is full of records that
// must not be evicted (backed by other attesters).
var errBudget = errors.New("attester's storage budget is full")

// admit makes room in attester's storage budget (limits.peer_attestations
// and limits.peer_attestation_bytes) for one more record of n bytes, on top
// of pending records of the same batch not stored yet. Over budget, the
// attester's own records are evicted, least useful first: those no other
// attester backs and nobody here is interested in, then those of local
// interest, oldest first; records another attester backs are never
// evicted, so a full budget of them refuses the new record. One identity
// therefore costs this daemon at most its budget, whatever it sends, and
// can never push out anyone else's records. Eviction goes down to 7/8 of
// the budget so a flood does not rescan the attester's records per record.
// Callers hold vb.ingestMu.
func (vb *Book) admit(attester peer.ID, n int, pending store.Usage) error {
	if attester == vb.self || vb.isTrustedPeer(attester) {
		return nil
	}
	limR, limB := int64(vb.limits.PeerAttestations), vb.limits.PeerAttestationBytes
	u, err := vb.store.AttesterUsage(attester.String())
	if err != nil {
		return err
	}
	needR, needB := pending.Records+1, pending.Bytes+int64(n)
	if u.Records+needR <= limR && u.Bytes+needB <= limB {
		return nil
	}
	if needR > limR || needB > limB {
		return fmt.Errorf("%w: %d bytes exceed limits.peer_attestation_bytes %d", errBudget, needB, limB)
	}
	cands, err := vb.evictable(attester, vb.installed(), false)
	if err != nil {
		return err
	}
	targetR, targetB := limR-limR/8-needR, limB-limB/8-needB
	r, b := u.Records, u.Bytes
	var victims []store.AttestationInfo
	for _, c := range cands {
		if r <= targetR && b <= targetB {
			break
		}
		victims = append(victims, c)
		r--
		b -= int64(c.Size)
	}
	if r+needR > limR || b+needB > limB {
		return fmt.Errorf("%w: %s holds %d records (%d bytes) that other attesters back", errBudget, attester, r, b)
	}
	gone, err := vb.evict(victims)
	if err != nil {
		return err
	}
	vb.flooders.mark(attester)
	vb.log.Debug("evicted attestations over an attester's budget", "attester", attester.String(), "evicted", gone)
	return nil
}

// evict deletes victims in one transaction and then what was kept only
// for them: the foreign endorsements of build keys left with no
// attestation, and evidence against attesters left with none there.
func (vb *Book) evict(victims []store.AttestationInfo) (int, error) {
	if len(victims) == 0 {
		return 0, nil
	}
	ids := make([][32]byte, len(victims))
	keys := make([]string, 0, len(victims))
	seen := map[string]bool{}
	for i, v := range victims {
		ids[i] = v.ID
		if !seen[v.BuildKey] {
			seen[v.BuildKey] = true
			keys = append(keys, v.BuildKey)
		}
	}
	gone, err := vb.store.DeleteAttestations(ids)
	if err != nil {
		return gone, err
	}
	vb.metrics.evicted.Add(float64(gone))
	return gone, vb.store.DropOrphans(keys, vb.foreignEndorsement)
}

// foreignEndorsement reports whether an endorsement blob is by a signer
// this daemon does not trust: those are relayed for others and may go
// with their build key's last attestation; ours stay.
func (vb *Book) foreignEndorsement(blob []byte) bool {
	e, err := DecodeEndorsement(blob)
	if err != nil {
		return true
	}
	return !vb.configuredSigner(e.Endorsement.SignerKey)
}

// evictable lists attester's records that may be evicted, least useful
// first: unbacked before backed (backed ones only with withBacked); of no
// local interest before those of local interest; oldest first.
func (vb *Book) evictable(attester peer.ID, installed map[string]bool, withBacked bool) ([]store.AttestationInfo, error) {
	infos, err := vb.store.AttesterRecords(attester.String())
	if err != nil {
		return nil, err
	}
	type candidate struct {
		info     store.AttestationInfo
		interest bool
	}
	var cands []candidate
	for _, in := range infos {
		if in.Backed && !withBacked {
			continue
		}
		interest, err := vb.localInterest(in, installed)
		if err != nil {
			return nil, err
		}
		cands = append(cands, candidate{in, interest})
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.info.Backed != b.info.Backed {
			if a.info.Backed {
				return 1
			}
			return -1
		}
		if a.interest != b.interest {
			if a.interest {
				return 1
			}
			return -1
		}
		return cmp.Or(a.info.ReceivedAt.Compare(b.info.ReceivedAt), strings.Compare(a.info.BuildKey, b.info.BuildKey))
	})
	out := make([]store.AttestationInfo, len(cands))
	for i, c := range cands {
		out[i] = c.info
	}
	return out, nil
}

// admitTotal keeps the store-wide bound (limits.attestation_bytes): keys
// are free, so one peer can deliver records signed by any number of fresh
// attesters, each within its own budget. Past the bound, records are
// evicted from the attesters holding the most, down to 7/8 of it: their
// unbacked records first, and if that is not enough, their backed ones
// (pairs of free keys can back each other's junk, and the store must not
// lock everyone out). This daemon's own records and trusted peers' are
// never evicted, and theirs are never refused. pending is what this batch
// adds before it. Callers hold vb.ingestMu.
func (vb *Book) admitTotal(attester peer.ID, n int, pending int64) error {
	if attester == vb.self || vb.isTrustedPeer(attester) {
		return nil
	}
	limit := vb.limits.AttestationBytes
	total, err := vb.store.TotalUsage()
	if err != nil {
		return err
	}
	need := pending + int64(n)
	if total.Bytes+need <= limit {
		return nil
	}
	// A refusal that found nothing to evict stays valid while the total
	// has not shrunk: no rescan per refused record.
	if f := vb.totalFull.Load(); f != nil && total.Bytes >= *f {
		return fmt.Errorf("%w: the store holds %d bytes of attestations (limits.attestation_bytes %d) by this daemon and trusted peers", errBudget, total.Bytes, limit)
	}
	target := limit - limit/8 - need
	have := total.Bytes
	holders, err := vb.store.LargestAttesters(64)
	if err != nil {
		return err
	}
	installed := vb.installed()
	var victims []store.AttestationInfo
	for _, withBacked := range []bool{false, true} {
		for _, h := range holders {
			if have <= target {
				break
			}
			id, err := peer.Decode(h)
			if err != nil || id == vb.self || vb.isTrustedPeer(id) {
				continue
			}
			cands, err := vb.evictable(id, installed, withBacked)
			if err != nil {
				return err
			}
			for _, c := range cands {
				if have <= target {
					break
				}
				if withBacked && !c.Backed {
					continue // taken in the first round
				}
				victims = append(victims, c)
				have -= int64(c.Size)
			}
		}
	}
	if _, err := vb.evict(victims); err != nil {
		return err
	}
	if have+need > limit {
		full := have
		vb.totalFull.Store(&full)
		return fmt.Errorf("%w: the store holds %d bytes of attestations (limits.attestation_bytes %d) by this daemon and trusted peers", errBudget, have, limit)
	}
	vb.totalFull.Store(nil)
	return nil
}

// localInterest reports whether this machine cares about a record's build:
// it built it, or has its package installed.
func (vb *Book) localInterest(in store.AttestationInfo, installed map[string]bool) (bool, error) {
	lps, err := vb.store.LocalByBuildKey(in.BuildKey)
	if err != nil {
		return false, err
	}
	if len(lps) > 0 {
		return true, nil
	}
	cat, pf, _ := strings.Cut(in.CPV, "/")
	pn, ok := portagehook.SplitPN(pf)
	return ok && installed[cat+"/"+pn], nil
}

// isTrustedPeer reports whether p is one of trust.trusted_peers: the
// user's own build hosts are not bounded like strangers.
func (vb *Book) isTrustedPeer(p peer.ID) bool {
	return slices.Contains(vb.policy.TrustedPeers, p)
}

// errFlooding marks a record that was stored but is not to be relayed: its
// attester filled its storage budget recently, so what it sends now is
// kept at its own expense here and not spread to every other peer.
var errFlooding = errors.New("attester over its storage budget: stored, not relayed")

// floodWindow is how long an attester that overflowed its budget has its
// new records kept but not relayed.
const floodWindow = time.Hour

// flooders remembers the attesters whose records were evicted for budget
// recently. Bounded: when full it starts over.
type flooders struct {
	mu sync.Mutex
	m  map[peer.ID]time.Time
}

func (f *flooders) mark(p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[peer.ID]time.Time)
	}
	if len(f.m) >= wire.MaxRatedPeers {
		// Forget those whose window is over first.
		for q, at := range f.m {
			if time.Since(at) >= floodWindow {
				delete(f.m, q)
			}
		}
		if len(f.m) >= wire.MaxRatedPeers {
			f.m = make(map[peer.ID]time.Time)
		}
	}
	f.m[p] = time.Now()
}

func (f *flooders) recent(p peer.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.m[p]
	return ok && time.Since(at) < floodWindow
}
