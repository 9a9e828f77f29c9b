package portagehook

import (
	"context"
	"errors"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
	"time"
)

// blockingListings is a Listings whose Materialize runs until its context
// ends, reporting when it started and when it was cancelled.
type blockingListings struct {
	started, ended chan struct{}
}

func (b *blockingListings) Entries(context.Context) ([]Listing, error) { return nil, nil }

func (b *blockingListings) Materialize(ctx context.Context, _ Listing) (string, *xpak.Package, error) {
	close(b.started)
	<-ctx.Done()
	close(b.ended)
	return "", nil, ctx.Err()
}

// A fetch portage gave up on stops once the last request waiting for it is
// gone, not before: a second waiter keeps it going.
func TestRepackStopsWhenEveryWaiterLeaves(t *testing.T) {
	bl := &blockingListings{started: make(chan struct{}), ended: make(chan struct{})}
	g := NewGateway(bl, GatewayOptions{CacheDir: t.TempDir()})
	t.Cleanup(func() { _ = g.Close() })
	e := entry{key: "k", path: "app-misc/hello/hello-1.0-1.gpkg.tar"}

	first, cancelFirst := context.WithCancel(context.Background())
	second, cancelSecond := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err := g.repacked(first, e); errs <- err }()
	<-bl.started
	go func() { _, err := g.repacked(second, e); errs <- err }()
	// The second caller is registered once the flight counts two waiters.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		n := 0
		if f := g.flights[e.key]; f != nil {
			n = f.waiters
		}
		g.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second waiter never joined (%d waiters)", n)
		}
		time.Sleep(time.Millisecond)
	}

	cancelFirst()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v, want context.Canceled", err)
	}
	select {
	case <-bl.ended:
		t.Fatal("the fetch stopped while a second request still waited for it")
	default:
	}
	cancelSecond()
	<-bl.ended // the last waiter left: the fetch's context ends
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("second caller: %v, want context.Canceled", err)
	}
	g.mu.Lock()
	left := len(g.flights)
	g.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d flights left after every caller left", left)
	}
}
