package materialize

import (
	"context"
	"os"
	"path/filepath"
	"time"
)

// gcLoop keeps the content cache within its disk budget, least recently
// used first, never evicting a file that is also an own build in PKGDIR.
func (mz *Materializer) gcLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		mz.collectGarbage()
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

func (mz *Materializer) collectGarbage() {
	mz.dropStalePartials(time.Now().Add(-partialMaxAge))
	budget := mz.diskBudget
	if budget <= 0 {
		return
	}
	if _, err := mz.CollectGarbage(budget); err != nil {
		mz.log.Warn("cache gc", "err", err)
	}
}

// CollectGarbage evicts least recently used cached copies until the cache
// holds at most target bytes, never a file that is also an own build in
// PKGDIR (or whose PKGDIR entry could not be read). It returns the bytes
// freed; when the kept files alone exceed target it frees what it can.
// The GC loop calls it with the disk budget; `cache gc` with any target.
func (mz *Materializer) CollectGarbage(target int64) (freed int64, err error) {
	return mz.evictTo(target, nil)
}

// evictTo is CollectGarbage that also keeps the file fresh (when not nil).
func (mz *Materializer) evictTo(target int64, fresh *[32]byte) (int64, error) {
	freed, err := mz.store.Cache().GC(target, func(sha [32]byte) bool {
		if fresh != nil && sha == *fresh {
			return true
		}
		// An error keeps the file: never evict on what could not be read.
		lps, err := mz.store.LocalBySHA(sha)
		return err != nil || len(lps) > 0
	})
	if err == nil && freed > 0 {
		mz.log.Info("cache gc", "freed_bytes", freed, "target", target)
	}
	return freed, err
}

// mirrorLoop (mirror mode) replicates allowed builds of the local platform
// into the cache, most wanted first, while the disk budget allows.
func (mz *Materializer) mirrorLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		mz.mirrorOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (mz *Materializer) mirrorOnce(ctx context.Context) {
	builds, err := mz.votes.AllowedBuilds(mz.platform)
	if err != nil {
		return
	}
	// Popular first: the variants most peers said they use (their demand
	// records), then the most attested, earn the disk budget first.
	mz.votes.SortByDemand(builds)
	for _, b := range builds {
		if ctx.Err() != nil {
			return
		}
		if mz.diskBudget > 0 && mz.store.Cache().Usage() >= mz.diskBudget {
			return
		}
		if _, err := mz.Materialize(ctx, b.Verdict.BuildKey, nil); err != nil {
			mz.log.Debug("mirror", "build_key", b.Verdict.BuildKey, "err", err)
		}
	}
}

// dropStalePartials removes partial downloads not touched since before:
// a fetch that never completes (a provider that stalls at the end, an
// attester that named a file nobody serves) must not hold disk forever.
func (mz *Materializer) dropStalePartials(before time.Time) {
	entries, err := os.ReadDir(mz.store.PartialDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(before) {
			continue
		}
		if err := os.Remove(filepath.Join(mz.store.PartialDir(), e.Name())); err == nil {
			mz.log.Info("dropped stale partial download", "file", e.Name(), "age", time.Since(fi.ModTime()).Round(time.Hour))
		}
	}
}
