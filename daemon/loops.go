package daemon

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// gcLoop keeps the content cache within its disk budget, least recently
// used first, never evicting a file that is also an own build in PKGDIR.
func (d *Daemon) gcLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		d.collectGarbage()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// partialMaxAge is how long an interrupted download waits for a resume
// before its pieces are dropped.
const partialMaxAge = 7 * 24 * time.Hour

func (d *Daemon) collectGarbage() {
	d.dropStalePartials(time.Now().Add(-partialMaxAge))
	budget := d.cfg.Cache.DiskBudget
	if budget <= 0 {
		return
	}
	freed, err := d.store.Cache().GC(budget, func(sha [32]byte) bool {
		// An error keeps the file: never evict on what could not be read.
		lps, err := d.store.LocalBySHA(sha)
		return err != nil || len(lps) > 0
	})
	if err != nil {
		d.log.Warn("cache gc", "err", err)
	} else if freed > 0 {
		d.log.Info("cache gc", "freed_bytes", freed, "budget", budget)
	}
}

// mirrorLoop (mirror mode) replicates allowed builds of the local platform
// into the cache, most attested first, while the disk budget allows.
func (d *Daemon) mirrorLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		d.mirrorOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Daemon) mirrorOnce(ctx context.Context) {
	builds, err := d.allowed(d.platform)
	if err != nil {
		return
	}
	// Popular first: the builds most peers attested are the ones most
	// peers will ask for, so they earn the disk budget first.
	sort.SliceStable(builds, func(i, j int) bool { return len(builds[i].Atts) > len(builds[j].Atts) })
	for _, b := range builds {
		if ctx.Err() != nil {
			return
		}
		if d.cfg.Cache.DiskBudget > 0 && d.store.Cache().Usage() >= d.cfg.Cache.DiskBudget {
			return
		}
		if _, err := d.materialize(ctx, b.Verdict.BuildKey, nil); err != nil {
			d.log.Debug("mirror", "build_key", b.Verdict.BuildKey, "err", err)
		}
	}
}

// dropStalePartials removes partial downloads not touched since before:
// a fetch that never completes (a provider that stalls at the end, an
// attester that named a file nobody serves) must not hold disk forever.
func (d *Daemon) dropStalePartials(before time.Time) {
	entries, err := os.ReadDir(d.store.PartialDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(before) {
			continue
		}
		if err := os.Remove(filepath.Join(d.store.PartialDir(), e.Name())); err == nil {
			d.log.Info("dropped stale partial download", "file", e.Name(), "age", time.Since(fi.ModTime()).Round(time.Hour))
		}
	}
}
