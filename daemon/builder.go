package daemon

import (
	"context"

	"github.com/gentoo-p2p/gentoo-p2pd/builder"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// newBuilder makes the builder (build.donate): it builds what the
// network's demand asks of this platform, attests through own and counts
// in the store.
func (d *Daemon) newBuilder() (*builder.Builder, error) {
	c := d.cfg.Build
	var demand builder.Demand = platformDemand{d.votes, d.platform}
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

// platformDemand is the network's demand for builds of this platform,
// most wanted first: what the builder may build (it builds with this
// machine's CHOST and flags, so another platform's wants are not its to
// serve).
type platformDemand struct {
	votes    *votes.Book
	platform string
}

func (p platformDemand) Wanted(_ context.Context, n int) ([]builder.Want, error) {
	ws, err := p.votes.Wanted(p.platform, n)
	if err != nil {
		return nil, err
	}
	out := make([]builder.Want, 0, len(ws))
	for _, w := range ws {
		// votes refuses such records on arrival; this keeps any other
		// way in from reaching the build command.
		if w.Descriptor.CheckBuildable() != nil {
			continue
		}
		out = append(out, builder.Want{Variant: w.Variant, CPV: w.CPV, USE: w.USE, Wanters: w.Wanters})
	}
	return out, nil
}
