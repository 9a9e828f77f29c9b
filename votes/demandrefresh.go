package votes

import (
	"context"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// The refresh of this daemon's own demand. A record counts for
// DemandHorizon (30 days) from its signed time, and the bashrc hook signs
// one only when a package is merged: a package installed for months would
// stop counting. So an own record older than DemandRefreshAge whose
// package is still installed is signed again with the current time and
// gossiped; one whose package is gone is dropped here (peers let it
// expire). Records younger than demandSettle are left alone: the hook may
// record demand before portage has written the vdb entry.
const (
	DemandRefreshAge = 20 * 24 * time.Hour
	demandSettle     = 24 * time.Hour
	// DemandRefreshEvery paces the refresh: at most one record signed
	// and gossiped per tick (three a minute), so the records of one
	// `emerge @world`, all due the same day, spread over hours instead
	// of bursting hundreds of gossip messages.
	DemandRefreshEvery = 20 * time.Second
	// demandRefreshRetry is how long a record whose refresh failed (or
	// whose install check failed) waits before it is tried again: at
	// most once a day per record.
	demandRefreshRetry = 24 * time.Hour
	// demandRelistEvery is how often the own records are listed again
	// once every listed one was handled.
	demandRelistEvery = time.Hour
	// demandChecksPerStep bounds the install checks of one tick.
	demandChecksPerStep = 64
)

// InstalledCheck reports whether cpv (category/package-version) is still
// installed on this machine; an error means it could not tell, and the
// record is left as it is. The daemon checks the vdb entry; votes knows
// no portage paths.
type InstalledCheck func(cpv string) (bool, error)

// demandRefresher walks this daemon's own demand records one tick at a
// time.
type demandRefresher struct {
	vb        *Book
	installed InstalledCheck
	queue     []store.DemandRecord
	listed    time.Time            // when queue was last filled
	tried     map[string]time.Time // variant key → when its refresh was last tried
}

// RefreshDemandLoop keeps this daemon's own demand alive while its
// packages stay installed and drops it when they go (see DemandRefreshAge),
// handling at most one gossiped refresh every DemandRefreshEvery, until
// ctx ends. A Book without a key records no demand and has none to
// refresh.
func (vb *Book) RefreshDemandLoop(ctx context.Context, installed InstalledCheck) {
	if vb.key == nil || installed == nil {
		return
	}
	r := vb.newDemandRefresher(installed)
	t := time.NewTicker(DemandRefreshEvery)
	defer t.Stop()
	for {
		r.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (vb *Book) newDemandRefresher(installed InstalledCheck) *demandRefresher {
	return &demandRefresher{vb: vb, installed: installed, tried: map[string]time.Time{}}
}

// step handles own records from the queue until one was refreshed (and
// gossiped) or demandChecksPerStep were checked, listing them again when
// the queue is empty and the last listing is demandRelistEvery old. It
// returns how many it refreshed and dropped.
func (r *demandRefresher) step(ctx context.Context) (refreshed, dropped int) {
	vb := r.vb
	now := vb.standing.now()
	if len(r.queue) == 0 {
		if !r.listed.IsZero() && now.Sub(r.listed) < demandRelistEvery {
			return 0, 0
		}
		r.listed = now
		for v, at := range r.tried {
			if now.Sub(at) >= demandRefreshRetry {
				delete(r.tried, v)
			}
		}
		recs, err := vb.store.DemandOf(vb.self.String(), now.Add(-demandSettle))
		if err != nil {
			vb.log.Warn("list own demand", "err", err)
			return 0, 0
		}
		for _, rec := range recs {
			if _, ok := r.tried[rec.VariantKey]; !ok {
				r.queue = append(r.queue, rec)
			}
		}
	}
	for checks := 0; len(r.queue) > 0 && checks < demandChecksPerStep && refreshed == 0; checks++ {
		rec := r.queue[0]
		r.queue = r.queue[1:]
		ok, err := r.installed(rec.CPV)
		switch {
		case err != nil:
			r.tried[rec.VariantKey] = now
			vb.log.Debug("own demand: install check", "cpv", rec.CPV, "err", err)
		case !ok:
			// A newer record (recorded meanwhile) is not dropped.
			if gone, err := vb.store.DeleteDemand(rec.VariantKey, rec.Attester, rec.Time); err != nil {
				vb.log.Warn("drop own demand", "cpv", rec.CPV, "err", err)
			} else if gone {
				dropped++
				vb.log.Info("own demand dropped: no longer installed", "cpv", rec.CPV, "variant_key", rec.VariantKey)
			}
		case now.Sub(time.Unix(rec.Time, 0)) >= DemandRefreshAge:
			r.tried[rec.VariantKey] = now
			if err := vb.refreshDemand(ctx, rec); err != nil {
				vb.log.Warn("refresh own demand", "cpv", rec.CPV, "err", err)
				continue
			}
			refreshed++
		}
	}
	return refreshed, dropped
}

// refreshDemand signs rec's demand again, dated now, and gossips it.
func (vb *Book) refreshDemand(ctx context.Context, rec store.DemandRecord) error {
	blob, ok, err := vb.store.DemandBlob(rec.VariantKey, rec.Attester)
	if err != nil || !ok {
		return err // gone meanwhile: nothing to refresh
	}
	s, err := trust.DecodeDemand(blob)
	if err != nil {
		return err
	}
	d := s.Demand
	if d.Time.Unix() != rec.Time {
		return nil // replaced meanwhile by a newer record
	}
	d.Time = vb.standing.now()
	_, err = vb.signDemand(ctx, d)
	return err
}
