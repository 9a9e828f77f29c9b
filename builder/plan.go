package builder

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

// Bounds of one plan: how far down the demand it reads, and how many
// variants' votes it reads (a plan runs every Interval).
const (
	maxPlanWindow  = 4096
	maxSupplyReads = 512
)

// plan reads the demand again and replaces the queue: most wanted first,
// at most QueueLen, leaving out what runs, what this node built, what
// waits after a failure, and what the network already has enough of.
func (b *Builder) plan(ctx context.Context) {
	now := b.o.Now()
	var queue []job
	seen := map[keys.Variant]bool{}
	supplies := 0
	// The most wanted variants may all be built, running or backed off:
	// read further down the demand, a window twice as large each time,
	// until the queue is full, the demand ends, or the budgets of
	// variants looked at and of supply reads (each reads votes) are spent.
	for window := 4 * b.o.QueueLen; len(queue) < b.o.QueueLen; window *= 2 {
		wants, err := b.o.Demand.Wanted(ctx, window)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("builder: read demand", "err", err)
				b.setNote("cannot read the demand: " + err.Error())
			}
			return
		}
		// Most wanted first; the order within a count is fixed so two
		// plans of the same demand agree.
		slices.SortStableFunc(wants, func(x, y Want) int {
			if x.Wanters != y.Wanters {
				return y.Wanters - x.Wanters
			}
			return strings.Compare(string(x.Variant), string(y.Variant))
		})
		for _, w := range wants {
			if len(queue) == b.o.QueueLen || supplies == maxSupplyReads {
				break
			}
			if seen[w.Variant] || w.CPV == "" {
				continue
			}
			seen[w.Variant] = true
			b.mu.Lock()
			_, running := b.running[w.Variant]
			f, failing := b.failed[w.Variant]
			b.mu.Unlock()
			if running || failing && now.Before(f.until) {
				continue
			}
			supplies++
			trusted, reproducers, thisNode, err := b.o.Supply.Supply(ctx, w.Variant)
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn("builder: supply of a wanted variant", "variant", w.Variant, "err", err)
				}
				return
			}
			switch {
			case thisNode:
				continue // one attestation per builder: it adds nothing to rebuild
			case !trusted:
				queue = append(queue, job{Want: w, kind: KindBuild})
			case b.o.Rebuild && reproducers < b.o.Threshold:
				queue = append(queue, job{Want: w, kind: KindRebuild})
			}
		}
		if len(wants) < window || window >= maxPlanWindow || supplies == maxSupplyReads {
			break
		}
	}
	b.mu.Lock()
	b.queue = queue
	if len(queue) == 0 {
		b.note = "" // nothing waits for the limits
	}
	b.mu.Unlock()
	b.metrics.queued.Set(float64(len(queue)))
}

// next takes the head of the queue if a build may start now: a slot is
// free, the machine is idle enough and the disk budget has room. When one
// may not, the note says why.
func (b *Builder) next() (*job, bool) {
	b.mu.Lock()
	busy, empty := len(b.running) >= b.o.MaxConcurrent, len(b.queue) == 0
	b.mu.Unlock()
	if busy || empty {
		return nil, false
	}
	if note := b.mayStart(); note != "" {
		b.setNote(note)
		return nil, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.queue[0]
	b.queue = b.queue[1:]
	j.started = b.o.Now()
	b.running[j.Variant] = &j
	b.note = ""
	b.metrics.queued.Set(float64(len(b.queue)))
	b.metrics.running.Set(float64(len(b.running)))
	return &j, true
}

// mayStart says why no build may start now ("" when one may).
func (b *Builder) mayStart() string {
	if b.o.WhenIdle > 0 {
		load, err := b.o.LoadAvg()
		if err != nil {
			return "cannot read the load average (build.when_idle): " + err.Error()
		}
		cores := float64(numCPU())
		if load >= cores*float64(b.o.WhenIdle)/100 {
			return fmt.Sprintf("waiting for an idle machine: load %.2f on %d cores, build.when_idle %d%%", load, numCPU(), b.o.WhenIdle)
		}
	}
	if b.o.DiskBudget > 0 {
		used, err := diskUsage(b.o.Root)
		if err != nil {
			return "cannot measure build.root: " + err.Error()
		}
		if used >= b.o.DiskBudget {
			return fmt.Sprintf("build.root holds %d bytes, build.disk_budget is %d: remove old builds from %s", used, b.o.DiskBudget, b.pkgdir)
		}
	}
	return ""
}

// outcome is what one build did.
type outcome struct {
	cpu   time.Duration
	took  time.Duration
	path  string
	built keys.Variant // the variant indexed, when it is not the one wanted
	err   error
}

// finish records a build's outcome: counters, metrics, the recent list,
// and a backoff for a variant that failed or came out as another variant
// (building it again would give the same).
func (b *Builder) finish(ctx context.Context, j *job, r outcome) {
	st := j.status()
	st.Took, st.CPUSeconds, st.Path, st.Built = r.took, r.cpu.Seconds(), r.path, r.built
	// A build killed because the daemon stops is not the variant's fault:
	// neither counted as failed nor made to wait.
	stopped := r.err != nil && ctx.Err() != nil
	if r.err != nil {
		st.Error = r.err.Error()
	}
	b.mu.Lock()
	delete(b.running, j.Variant)
	switch {
	case stopped:
	case r.err != nil || r.built != "":
		b.penalize(j.Variant)
	default:
		delete(b.failed, j.Variant)
	}
	b.recent = append([]api.BuildJob{st}, b.recent[:min(len(b.recent), maxRecent-1)]...)
	b.metrics.running.Set(float64(len(b.running)))
	b.mu.Unlock()

	b.metrics.cpu.Add(r.cpu.Seconds())
	var name string
	switch {
	case stopped:
		b.log.Info("builder: build stopped with the daemon", "cpv", j.CPV)
	case r.err != nil:
		name = counterFailed
		b.metrics.failed.Inc()
		b.log.Warn("builder: build failed", "cpv", j.CPV, "kind", j.kind, "took", r.took.Round(time.Second), "err", r.err)
	default:
		name = counterDone
		b.metrics.done.Inc()
		b.log.Info("builder: built", "cpv", j.CPV, "kind", j.kind, "path", r.path, "built_variant", string(r.built),
			"took", r.took.Round(time.Second), "cpu", r.cpu.Round(time.Second))
	}
	if b.o.Counters == nil {
		return
	}
	// CPU time first: a reader that sees the build counted sees its time.
	if err := b.o.Counters.IncCounter(counterCPUms, r.cpu.Milliseconds()); err != nil {
		b.log.Warn("builder: count CPU time", "err", err)
	}
	if name != "" {
		if err := b.o.Counters.IncCounter(name, 1); err != nil {
			b.log.Warn("builder: count build", "err", err)
		}
	}
}

// penalize makes v wait before it is tried again, twice as long as the
// last time. Called with mu held.
func (b *Builder) penalize(v keys.Variant) {
	f := b.failed[v]
	f.fails++
	wait := b.o.Backoff
	for i := 1; i < f.fails && wait < b.o.MaxBackoff; i++ {
		wait *= 2
	}
	f.until = b.o.Now().Add(min(wait, b.o.MaxBackoff))
	if _, ok := b.failed[v]; !ok && len(b.failed) >= maxFailed {
		var first keys.Variant
		for k, o := range b.failed {
			if first == "" || o.until.Before(b.failed[first].until) {
				first = k
			}
		}
		delete(b.failed, first)
	}
	b.failed[v] = f
}

func (b *Builder) setNote(s string) {
	b.mu.Lock()
	b.note = s
	b.mu.Unlock()
}
