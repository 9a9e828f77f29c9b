package votes

import (
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// DefaultStandingDays is how many days of agreement make full standing.
const DefaultStandingDays = 90

// creditFlushEvery and creditFlushBatch bound how long and how many
// earned credits wait in memory before one write records them.
const (
	creditFlushEvery = time.Minute
	creditFlushBatch = 256
)

// standing is the book's view of who has standing: weights as of the
// current epoch (a day), read once when it starts, and the credits
// earned since, which count from the next epoch. Weights move once a day,
// so everything derived from verdicts is recomputed once a day, not on
// every agreement.
type standing struct {
	days int // trust.standing_days
	now  func() time.Time

	mu      sync.Mutex
	epoch   uint32
	weights map[peer.ID]earned
	// credited are the attesters credited in this epoch (in the ledger or
	// pending), pending those not written yet.
	credited  map[peer.ID]bool
	pending   []peer.ID
	lastFlush time.Time
	// vouch is what the vouch graph gives (vouch.go).
	vouch vouchState
}

// earned is an attester's weight in an epoch and the days it comes from.
type earned struct {
	weight int
	days   uint32
}

// weight is an attester's earned standing in thousandths.
func (st *standing) weight(rec store.Standing, epoch uint32) int {
	return min(trust.FullWeight, int(rec.DaysBefore(epoch))*trust.FullWeight/max(1, st.days))
}

// refreshStanding starts a new epoch when the day changed (or loads the
// first): pending credits are written, the ledger is read again.
func (vb *Book) refreshStanding() error {
	st := &vb.standing
	day := store.DayOf(st.now())
	st.mu.Lock()
	current := st.weights != nil && st.epoch >= day
	st.mu.Unlock()
	if current {
		return vb.refreshVouches(false)
	}
	if err := vb.flushCredits(true); err != nil {
		return err
	}
	epoch, ledger, err := vb.store.StandingEpoch(day)
	if err != nil {
		return fmt.Errorf("standing ledger: %w", err)
	}
	weights := make(map[peer.ID]earned, len(ledger))
	credited := map[peer.ID]bool{}
	for id, rec := range ledger {
		if w := st.weight(rec, epoch); w > 0 {
			weights[peer.ID(id)] = earned{weight: w, days: rec.DaysBefore(epoch)}
		}
		if rec.Last >= epoch {
			credited[peer.ID(id)] = true
		}
	}
	st.mu.Lock()
	st.epoch, st.weights, st.credited = epoch, weights, credited
	st.mu.Unlock()
	// Full standing earned makes new roots of the vouch graph.
	return vb.refreshVouches(true)
}

// standingOf is an attester's weight in this epoch and where it comes
// from: its earned standing or what vouches give it, whichever is more.
func (vb *Book) standingOf(id peer.ID) (int, string) {
	st := &vb.standing
	st.mu.Lock()
	defer st.mu.Unlock()
	e := st.weights[id]
	if v, ok := st.vouch.weights[id]; ok && v.Weight > e.weight {
		return v.Weight, v.From()
	}
	if e.weight == 0 {
		return 0, ""
	}
	return e.weight, fmt.Sprintf("agreed with established builds on %d day(s) of %d", e.days, st.days)
}

// credit records that the corroborated voters of an allowed verdict
// agreed today.
func (vb *Book) credit(v trust.Verdict) {
	if v.Decision != trust.Allowed || v.Content == nil {
		return
	}
	st := &vb.standing
	st.mu.Lock()
	for _, ct := range v.Tally {
		if ct.Content != *v.Content {
			continue
		}
		for _, vi := range ct.Voters {
			if vi.Corroborated && !st.credited[vi.Peer] {
				st.credited[vi.Peer] = true
				st.pending = append(st.pending, vi.Peer)
			}
		}
	}
	flush := len(st.pending) >= creditFlushBatch || len(st.pending) > 0 && st.now().Sub(st.lastFlush) >= creditFlushEvery
	st.mu.Unlock()
	if flush {
		if err := vb.flushCredits(false); err != nil {
			vb.log.Warn("standing ledger: recording agreements", "err", err)
		}
	}
}

// flushCredits writes the pending credits, dated in their epoch. A failed
// write keeps them pending.
func (vb *Book) flushCredits(force bool) error {
	st := &vb.standing
	st.mu.Lock()
	ids, epoch := st.pending, st.epoch
	if len(ids) == 0 || !force && st.now().Sub(st.lastFlush) < creditFlushEvery && len(ids) < creditFlushBatch {
		st.mu.Unlock()
		return nil
	}
	st.pending, st.lastFlush = nil, st.now()
	st.mu.Unlock()
	raw := make([]string, len(ids))
	for i, id := range ids {
		raw[i] = string(id)
	}
	dropped, err := vb.store.CreditAgreements(raw, epoch)
	if err != nil {
		st.mu.Lock()
		st.pending = append(st.pending, ids...)
		st.mu.Unlock()
		return err
	}
	if dropped > 0 {
		vb.log.Warn("standing ledger full: new attesters not recorded", "dropped", dropped, "cap", store.MaxStandingEntries)
	}
	return nil
}

// FlushStanding writes the agreements earned so far; the daemon calls it
// before it stops.
func (vb *Book) FlushStanding() error { return vb.flushCredits(true) }

// StandingCounts says how many attesters have full standing in this
// epoch and how many are still earning it: what `status` shows.
func (vb *Book) StandingCounts() (established, earning int) {
	if err := vb.refreshStanding(); err != nil {
		vb.log.Warn("standing ledger", "err", err)
	}
	st := &vb.standing
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, e := range st.weights {
		if e.weight >= trust.FullWeight {
			established++
		} else {
			earning++
		}
	}
	return established, earning
}

// StandingDays is trust.standing_days as this book applies it.
func (vb *Book) StandingDays() int { return vb.standing.days }
