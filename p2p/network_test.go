package p2p

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// TestThirtyNodesEveryoneFindsEveryone: each of 30 nodes provides one
// unique key; every node must find every key's provider. Lookup times are
// logged, never asserted.
func TestThirtyNodesEveryoneFindsEveryone(t *testing.T) {
	if testing.Short() {
		t.Skip("30 real libp2p hosts; skipped with -short")
	}
	const count = 30
	nodes := newNetwork(t, count, nil)
	keys := make([]cid.Cid, count)
	for i, n := range nodes {
		keys[i] = testKey(t, fmt.Sprintf("unique build key %d", i))
		if err := n.Provide(keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	var times []time.Duration
	for i, from := range nodes {
		for j, key := range keys {
			if i == j {
				continue
			}
			// Per pair: the announcement may still be in flight for the
			// first pairs; under -race on a busy machine a lookup is slow.
			deadline := time.Now().Add(30 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				start := time.Now()
				provs, err := from.FindProviders(ctx, key, 1)
				took := time.Since(start)
				cancel()
				if err == nil && len(provs) == 1 && provs[0].ID == nodes[j].ID() {
					times = append(times, took)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("node %d never found node %d's key (last: %v, %v)", i, j, provs, err)
				}
				time.Sleep(50 * time.Millisecond) // the announcement is still in flight
			}
		}
	}
	slices.Sort(times)
	t.Logf("%d lookups: p50 %s p90 %s max %s", len(times),
		times[len(times)/2], times[len(times)*9/10], times[len(times)-1])
}
