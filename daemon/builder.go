package daemon

import (
	"context"

	"github.com/gentoo-p2p/gentoo-p2pd/builder"
)

// newBuilder makes the builder (build.donate): it builds what the
// network's demand asks of this platform, attests through own and counts
// in the store.
func (d *Daemon) newBuilder() (*builder.Builder, error) {
	c := d.cfg.Build
	var demand builder.Demand = noDemand{}
	if d.demand != nil {
		demand = d.demand
	}
	return builder.New(builder.Options{
		Demand: demand, Supply: d.votes, Announcer: d.own, Counters: d.store,
		Command: c.Command, Root: c.Root, Rebuild: c.Rebuild, Threshold: d.policy.Threshold,
		MaxConcurrent: c.MaxConcurrent, Jobs: c.Jobs, Nice: c.Nice, Timeout: c.Timeout,
		DiskBudget: c.DiskBudget, WhenIdle: c.WhenIdle,
		Logger: d.log.With("component", "builder"), Registry: d.reg,
	})
}

// noDemand stands in for the network's demand until votes records it:
// the builder plans nothing. TEMPORARY: replaced by the adapter over
// votes.Book.Wanted, filtered to this platform.
type noDemand struct{}

func (noDemand) Wanted(context.Context, int) ([]builder.Want, error) { return nil, nil }
