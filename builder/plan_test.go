package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// wants is a fixed demand.
type wants []Want

func (w wants) Wanted(_ context.Context, n int) ([]Want, error) {
	return slices.Clone(w[:min(n, len(w))]), nil
}

// supplyOf is what a fake network has of each variant.
type supplyOf map[keys.Variant]struct {
	trusted     bool
	reproducers int
	thisNode    bool
}

func (s supplyOf) Supply(_ context.Context, v keys.Variant) (bool, int, bool, error) {
	x := s[v]
	return x.trusted, x.reproducers, x.thisNode, nil
}

type noAnnounce struct{}

func (noAnnounce) Announce(context.Context, string) (store.LocalPackage, error) {
	return store.LocalPackage{}, errors.New("not in this test")
}

func newTestBuilder(t *testing.T, o Options) *Builder {
	t.Helper()
	if o.Root == "" {
		o.Root = t.TempDir()
	}
	if o.Command == nil {
		o.Command = []string{"/bin/true"}
	}
	if o.Announcer == nil {
		o.Announcer = noAnnounce{}
	}
	if o.Supply == nil {
		o.Supply = supplyOf{}
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Prepare(); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *Builder) queued() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, j := range b.queue {
		out = append(out, j.kind+" "+j.CPV)
	}
	return out
}

// The plan puts the most wanted first, builds what has no trusted build,
// rebuilds (as a rebuilder) what has fewer reproducers than the
// threshold, and leaves what this node built, what has enough
// reproducers, and what lies past the queue's bound.
func TestPlanOrderAndRoles(t *testing.T) {
	demand := wants{
		{Variant: "v-few", CPV: "app-misc/few-1", Wanters: 7},
		{Variant: "v-none", CPV: "app-misc/none-1", Wanters: 3},
		{Variant: "v-top", CPV: "app-misc/top-1", Wanters: 9},
		{Variant: "v-mine", CPV: "app-misc/mine-1", Wanters: 20},
		{Variant: "v-enough", CPV: "app-misc/enough-1", Wanters: 15},
		{Variant: "v-tail", CPV: "app-misc/tail-1", Wanters: 1},
	}
	supply := supplyOf{
		"v-few":    {trusted: true, reproducers: 2},
		"v-mine":   {trusted: true, reproducers: 1, thisNode: true},
		"v-enough": {trusted: true, reproducers: 3},
	}
	for _, tt := range []struct {
		rebuild bool
		want    []string
	}{
		{false, []string{"build app-misc/top-1", "build app-misc/none-1", "build app-misc/tail-1"}},
		{true, []string{"build app-misc/top-1", "rebuild app-misc/few-1", "build app-misc/none-1"}},
	} {
		b := newTestBuilder(t, Options{Demand: demand, Supply: supply, Rebuild: tt.rebuild, Threshold: 3, QueueLen: 3})
		b.plan(t.Context())
		if got := b.queued(); !slices.Equal(got, tt.want) {
			t.Errorf("rebuild %v: queue %q, want %q", tt.rebuild, got, tt.want)
		}
	}
	b := newTestBuilder(t, Options{Demand: demand, Supply: supply, Rebuild: true, Threshold: 3, QueueLen: 2})
	b.plan(t.Context())
	if got := b.queued(); !slices.Equal(got, []string{"build app-misc/top-1", "rebuild app-misc/few-1"}) {
		t.Errorf("queue of 2: %q", got)
	}
}

// No build starts while the machine is busier than build.when_idle allows
// or build.root holds more than build.disk_budget; the note says which.
func TestLimitsHoldBuilds(t *testing.T) {
	demand := wants{{Variant: "v", CPV: "app-misc/v-1", Wanters: 1}}
	load := 0.0
	b := newTestBuilder(t, Options{Demand: demand, WhenIdle: 50, LoadAvg: func() (float64, error) { return load, nil }})
	b.plan(t.Context())
	load = float64(numCPU()) // every core busy
	if _, ok := b.next(); ok || !strings.Contains(b.Status().Note, "idle") {
		t.Fatalf("busy machine: a build started (note %q)", b.Status().Note)
	}
	load = float64(numCPU()) * 0.4
	j, ok := b.next()
	if !ok || j.CPV != "app-misc/v-1" || b.Status().Note != "" || len(b.Status().Running) != 1 {
		t.Fatalf("idle machine: started %v, note %q", ok, b.Status().Note)
	}

	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "old.gpkg.tar"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	b = newTestBuilder(t, Options{Demand: demand, Root: root, DiskBudget: 32 << 10})
	b.plan(t.Context())
	if _, ok := b.next(); ok || !strings.Contains(b.Status().Note, "build.disk_budget") {
		t.Fatalf("over the disk budget: a build started (note %q)", b.Status().Note)
	}
	b.o.DiskBudget = 1 << 30
	if _, ok := b.next(); !ok {
		t.Fatalf("under the disk budget: no build started (note %q)", b.Status().Note)
	}
}

// A failed variant waits Backoff, then twice as long after a second
// failure; a success clears its record.
func TestBackoffDoubles(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	demand := wants{{Variant: "v", CPV: "app-misc/v-1", Wanters: 1}}
	b := newTestBuilder(t, Options{Demand: demand, Backoff: time.Hour, Now: func() time.Time { return now }})
	fail := func() {
		t.Helper()
		b.plan(t.Context())
		j, ok := b.next()
		if !ok {
			t.Fatalf("at %v: nothing to start", now)
		}
		b.finish(t.Context(), j, outcome{err: errors.New("compile error")})
	}
	planned := func() bool { b.plan(t.Context()); return len(b.queued()) == 1 }
	fail()
	if planned() {
		t.Fatal("planned again right after a failure")
	}
	now = now.Add(time.Hour + time.Second)
	fail()
	now = now.Add(time.Hour + time.Second)
	if planned() {
		t.Fatal("planned again one hour after a second failure; want two")
	}
	now = now.Add(time.Hour)
	if !planned() {
		t.Fatal("not planned two hours after a second failure")
	}
	j, _ := b.next()
	b.finish(t.Context(), j, outcome{path: "/x"})
	if len(b.failed) != 0 {
		t.Fatalf("a success leaves %d failure records", len(b.failed))
	}
}

// When the most wanted variants are all built here already, the plan
// reads further down the demand (not just its first 4·QueueLen) and
// queues what lies below them.
func TestPlanReadsPastBuiltVariants(t *testing.T) {
	var ws wants
	sup := supplyOf{}
	for i := range 40 {
		v := keys.Variant(fmt.Sprintf("v-%d", i))
		ws = append(ws, Want{Variant: v, CPV: fmt.Sprintf("app-misc/p%d-1", i), Wanters: 100 - i})
		if i < 30 {
			x := sup[v]
			x.trusted, x.reproducers, x.thisNode = true, 1, true
			sup[v] = x
		}
	}
	b := newTestBuilder(t, Options{Demand: ws, Supply: sup, QueueLen: 2, Threshold: 3, Rebuild: true})
	b.plan(t.Context())
	if got, want := b.queued(), []string{"build app-misc/p30-1", "build app-misc/p31-1"}; !slices.Equal(got, want) {
		t.Fatalf("queued %q, want %q (the first 30 are built here)", got, want)
	}
}
