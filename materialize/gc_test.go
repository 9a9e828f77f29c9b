package materialize

import (
	"context"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// collectGarbage evicts least recently used copies down to the budget,
// never one that is also an own build in PKGDIR; budget 0 is unbounded.
func TestCollectGarbage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{})
	s.local(w.layout1)
	s.cache(w.layout1) // oldest, but an own build
	s.cache(w.layout2)
	s.cache(w.hello2) // newest
	size := w.hello2.Local.Size
	withBudget := func(b int64) *Materializer {
		return New(Options{Store: s.Store, Votes: s.Book, Net: s.Node, Self: s.ID, DiskBudget: b, Files: xpak.DefaultLimits()})
	}

	withBudget(0).collectGarbage()
	if s.Store.Cache().Usage() != 3*size {
		t.Fatalf("unbounded cache shrank to %d", s.Store.Cache().Usage())
	}
	withBudget(2 * size).collectGarbage()
	if !s.cached(w.layout1) || s.cached(w.layout2) || !s.cached(w.hello2) || s.Store.Cache().Usage() != 2*size {
		t.Fatalf("budget of two files: layout1 %v layout2 %v hello2 %v, usage %d; want the least recently used (layout2) gone",
			s.cached(w.layout1), s.cached(w.layout2), s.cached(w.hello2), s.Store.Cache().Usage())
	}
	withBudget(1).collectGarbage()
	if !s.cached(w.layout1) || s.cached(w.hello2) {
		t.Fatalf("budget below one file: layout1 %v hello2 %v; want only the own build kept", s.cached(w.layout1), s.cached(w.hello2))
	}
}

// A fetch keeps the cache within its budget at once: older copies go,
// the file just fetched and own builds stay.
func TestFetchHoldsBudget(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	a.builds(w.hello1, at(0))
	b.builds(w.hello2, at(1))
	s := w.self(selfOpts{budget: w.hello1.Local.Size})
	s.local(w.layout1)
	s.cache(w.layout1)
	s.cache(w.layout2)
	m, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.cached(w.hello1) || !s.cached(w.layout1) || s.cached(w.layout2) {
		t.Fatalf("fetched %v, own build %v, other copy %v; want the other copy evicted", s.cached(w.hello1), s.cached(w.layout1), s.cached(w.layout2))
	}
	if e, ok, _ := s.Store.Cache().Get(w.hello1.Local.FileSHA256); !ok || e.Path != m.Path {
		t.Fatal("the fetched file is not where Materialize said")
	}
}

// Run keeps the cache within budget (share mode: no mirroring).
func TestRunCollectsGarbage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{budget: w.hello2.Local.Size})
	s.cache(w.layout2)
	s.cache(w.hello2)
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan struct{})
	go func() { s.mz.Run(ctx); close(ran) }()
	waitFor(t, "the cache to fit its budget", func() bool { return s.Store.Cache().Usage() <= w.hello2.Local.Size })
	cancel()
	<-ran
	if s.cached(w.layout2) || !s.cached(w.hello2) {
		t.Error("Run's GC evicted the most recently used copy")
	}
	if w.fetch.Calls() != 0 {
		t.Error("share mode mirrored")
	}
}

// Mirror mode replicates every allowed build of its platform and provides
// the copies.
func TestMirrorLoop(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	s := w.self(selfOpts{mode: config.ModeMirror})
	s.learn(a.builds(w.hello1, at(0)), b.builds(w.hello2, at(1)), a.builds(w.layout1, at(0)), b.builds(w.layout2, at(1)))
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan struct{})
	go func() { s.mz.Run(ctx); close(ran) }()
	builds := func() map[string]bool {
		got := map[string]bool{}
		es, _ := s.Store.Cache().List()
		for _, e := range es {
			got[e.Meta.BuildKey] = true
		}
		return got
	}
	waitFor(t, "the mirror to fetch both builds", func() bool { return len(builds()) == 2 })
	cancel()
	<-ran
	if got := builds(); !got[w.hello1.Local.BuildKey] || !got[w.layout1.Local.BuildKey] {
		t.Fatalf("mirrored %v", got)
	}
	for _, p := range []jobtest.Binpkg{w.hello1, w.layout1} {
		if bp, vp := s.providing(p); !bp || !vp {
			t.Errorf("mirror does not provide %s (build %v, variant %v)", p.Local.CPV, bp, vp)
		}
	}
	if n := w.fetch.Calls(); n != 2 {
		t.Errorf("%d transfers for two builds", n)
	}
}

// The mirror stops at a full budget, at a cancelled context, and skips
// builds of other platforms.
func TestMirrorOnceStops(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	full := w.self(selfOpts{mode: config.ModeMirror, budget: w.layout2.Local.Size})
	full.learn(a.builds(w.hello1, at(0)), b.builds(w.hello2, at(1)))
	full.cache(w.layout2)
	full.mz.mirrorOnce(t.Context())
	if w.fetch.Calls() != 0 || full.cached(w.hello1) {
		t.Fatal("the mirror fetched past its disk budget")
	}

	idle := w.self(selfOpts{mode: config.ModeMirror})
	idle.learn(a.builds(w.layout1, at(0)), b.builds(w.layout2, at(1)))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	idle.mz.mirrorOnce(ctx)
	if w.fetch.Calls() != 0 {
		t.Fatal("the mirror fetched with its context cancelled")
	}

	other := w.self(selfOpts{mode: config.ModeMirror, platform: "riscv64-unknown-linux-gnu"})
	other.learn(a.builds(w.layout1, at(0)), b.builds(w.layout2, at(1)))
	other.mz.mirrorOnce(t.Context())
	if w.fetch.Calls() != 0 {
		t.Fatal("the mirror fetched a build of another platform")
	}
}

// CollectGarbage shrinks the cache to any target, budget or not, keeping
// own builds, and reports the bytes freed.
func TestCollectGarbageTarget(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{})
	s.local(w.layout1)
	s.cache(w.layout1)
	s.cache(w.layout2)
	s.cache(w.hello2)
	size := w.hello2.Local.Size
	freed, err := s.mz.CollectGarbage(0)
	if err != nil || freed != 2*size {
		t.Fatalf("freed %d, %v; want %d", freed, err, 2*size)
	}
	if !s.cached(w.layout1) || s.cached(w.layout2) || s.cached(w.hello2) {
		t.Fatal("CollectGarbage(0) must evict every copy but the own build")
	}
	if freed, err := s.mz.CollectGarbage(0); err != nil || freed != 0 {
		t.Fatalf("second run freed %d, %v", freed, err)
	}
}
