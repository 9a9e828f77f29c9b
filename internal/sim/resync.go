package sim

import (
	"slices"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// resyncAnswers is what the fingerprints answer of one sync of a
// platform's attestations costs, framed, when both catalogs agree: on
// average over the hours of the run, for an hourly resync (from the
// newest record of an hour before, less votes.ResyncMargin) and for a
// full one (from the first second). times are the platform's record
// times in order; at hour h of the run only those dated before
// epoch+h exist. A sync asks for wire.MaxCatalogSlices slices of its
// range up to votes.ReconcileAhead past its time, as votes does.
func resyncAnswers(times []int64, epoch time.Time, hours int) (hourly, full float64) {
	if hours <= 0 {
		return 0, 0
	}
	answer := func(from, now int64, times []int64) float64 {
		until := now + int64(votes.ReconcileAhead/time.Second)
		bounds := wire.SliceBounds(from, until, int(min(wire.MaxCatalogSlices, until-from)))
		sl := make([]wire.CatalogSlice, len(bounds)-1)
		for i := range sl {
			lo, _ := slices.BinarySearch(times, bounds[i])
			hi, _ := slices.BinarySearch(times, bounds[i+1])
			sl[i].Count = uint64(hi - lo)
		}
		return float64(wire.CatalogSlicesBytes(sl))
	}
	margin := int64(votes.ResyncMargin / time.Second)
	for h := 1; h <= hours; h++ {
		now := epoch.Add(time.Duration(h) * time.Hour).Unix()
		n, _ := slices.BinarySearch(times, now)
		exist := times[:n]
		full += answer(1, now, exist)
		from := int64(1)
		prev := now - int64(votes.ResyncEvery/time.Second)
		if k, _ := slices.BinarySearch(times, prev); k > 0 {
			from = max(1, min(times[k-1], prev)-margin+1)
		}
		hourly += answer(from, now, exist)
	}
	return hourly / float64(hours), full / float64(hours)
}
