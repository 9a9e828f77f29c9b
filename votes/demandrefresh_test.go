package votes

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// The daemon's own demand: records 20 days old whose package is still
// installed are signed again, dated now, and gossiped — one per step;
// the record of a package gone is dropped; younger records stay as they
// are; and a record whose install check fails is tried again only a day
// later.
func TestRefreshOwnDemand(t *testing.T) {
	net := memnet.New()
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	layout := fixtureDescriptor(t, "app-misc/layout-1.0-r1.gpkg.tar")
	platform := hello.Platform()
	a := onPlatform(t, joinBook(t, net, true, nil), platform)
	b := onPlatform(t, joinBook(t, net, true, nil), platform)
	clk := &clock{}
	a.standing.now = clk.now
	start := time.Now().UTC().Truncate(time.Second)
	helloX, helloY, young := hello, hello, hello
	helloX.USE, helloY.USE, young.USE = []string{"x"}, []string{"y"}, []string{"young"}
	ctx := t.Context()
	record := func(at time.Time, descs ...identity.Descriptor) {
		t.Helper()
		clk.set(at)
		for _, d := range descs {
			if _, err := a.RecordDemand(ctx, d, trust.DemandSource); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(start.Add(-21*24*time.Hour), hello, helloX, layout)
	record(start.Add(-22*24*time.Hour), helloY)
	record(start.Add(-2*24*time.Hour), young)
	if b.WantCount(helloY.VariantKey()) != 1 {
		t.Fatal("a's demand did not reach b")
	}
	clk.set(start)
	var mu sync.Mutex
	checked := map[string]int{}
	broken := errors.New("vdb unreadable")
	installed := func(cpv string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		checked[cpv]++
		return cpv == hello.CPV, nil
	}
	r := a.newDemandRefresher(installed)
	published := a.node.Published()
	refreshed, dropped, steps := 0, 0, 0
	for {
		n, d := r.step(ctx)
		if n > 1 {
			t.Fatalf("step refreshed %d records; want at most one", n)
		}
		if n == 0 && d == 0 && len(r.queue) == 0 {
			break
		}
		refreshed, dropped, steps = refreshed+n, dropped+d, steps+1
	}
	if refreshed != 3 || dropped != 1 || steps < 3 {
		t.Fatalf("%d refreshed, %d dropped in %d steps; want 3 and 1 in at least 3", refreshed, dropped, steps)
	}
	if got := a.node.Published() - published; got != 3 {
		t.Fatalf("%d gossip messages, want one per refreshed record", got)
	}
	for _, d := range []identity.Descriptor{hello, helloX, helloY} {
		for name, m := range map[string]member{"a": a, "b": b} {
			c, err := m.store.DemandFor(string(d.VariantKey()), time.Time{})
			if err != nil || c.Wanters != 1 || !c.LastSeen.Equal(start) {
				t.Fatalf("%s: %s wanted by %d, last %s (%v); want re-signed at %s", name, d.USE, c.Wanters, c.LastSeen, err, start)
			}
		}
	}
	if a.WantCount(layout.VariantKey()) != 0 {
		t.Fatal("the uninstalled package's own record was kept")
	}
	if b.WantCount(layout.VariantKey()) != 1 {
		t.Fatal("b lost layout's record (it expires there)")
	}
	if c, _ := a.store.DemandFor(string(young.VariantKey()), time.Time{}); !c.LastSeen.Equal(start.Add(-2 * 24 * time.Hour)) {
		t.Fatalf("a young record was re-signed: last seen %s", c.LastSeen)
	}
	if b.Rejected() != 0 {
		t.Fatalf("b rejected %d refreshed records", b.Rejected())
	}

	// Within the hour nothing is listed again; after it, nothing is due.
	if n, d := r.step(ctx); n+d != 0 {
		t.Fatalf("a second pass refreshed %d, dropped %d", n, d)
	}
	clk.set(start.Add(2 * time.Hour))
	if n, d := r.step(ctx); n+d != 0 {
		t.Fatalf("the next listing refreshed %d, dropped %d", n, d)
	}

	// An install check that fails leaves the record alone for a day.
	r = a.newDemandRefresher(func(cpv string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		checked["failing"]++
		return false, broken
	})
	clk.set(start.Add(21 * 24 * time.Hour)) // every record due
	r.step(ctx)
	clk.set(start.Add(21*24*time.Hour + 2*time.Hour))
	r.step(ctx)
	mu.Lock()
	first := checked["failing"]
	mu.Unlock()
	if first != 4 {
		t.Fatalf("%d install checks over two listings within a day; want each of the 4 records once", first)
	}
	if n, _ := a.store.DemandsBy(a.self.String()); n != 4 {
		t.Fatalf("a holds %d own records after failed checks, want 4", n)
	}
	clk.set(start.Add(22*24*time.Hour + 3*time.Hour))
	r.step(ctx)
	mu.Lock()
	defer mu.Unlock()
	if checked["failing"] != 8 {
		t.Fatalf("%d install checks a day later; want each record tried again", checked["failing"])
	}
}

// RefreshDemandLoop returns when its context ends, and at once for a Book
// that cannot sign.
func TestRefreshDemandLoopStops(t *testing.T) {
	a := joinBook(t, memnet.New(), false, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RefreshDemandLoop(ctx, func(string) (bool, error) { return true, nil })
	}()
	cancel()
	<-done
	a.Book.key = nil
	a.RefreshDemandLoop(t.Context(), func(string) (bool, error) { return true, nil })
}
