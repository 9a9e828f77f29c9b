package p2p

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestEveryoneFindsEveryone: each node provides one unique key; every node
// must find every key's provider. The network is three DHT buckets large
// (12 nodes, bucket size 4), as a real network is many buckets large: a
// provider record sits on only a third of the nodes and routing tables
// miss peers, so lookups must route through other nodes. (The test once
// ran 30 nodes with the production bucket of 20: the same question at
// seven times the cost; BenchmarkEveryoneFindsEveryone30 still does that.)
// Lookup times are logged, never asserted.
func TestEveryoneFindsEveryone(t *testing.T) {
	const count, bucket = 12, 4
	nodes := newNetworkWith(t, count, func(cfg *Config) {
		cfg.dhtOpts = append(cfg.dhtOpts, dht.BucketSize(bucket))
	})
	times := everyoneFindsEveryone(t, nodes)
	// The scenario guard: were every node in every routing table, a
	// lookup would be one hop and the test would prove less.
	full := 0
	for _, n := range nodes {
		if n.dht.RoutingTable().Size() >= count-1 {
			full++
		}
	}
	if full == count {
		t.Fatalf("every routing table holds all %d peers: lookups never routed", count-1)
	}
	slices.Sort(times)
	t.Logf("%d lookups: p50 %s p90 %s max %s", len(times),
		times[len(times)/2], times[len(times)*9/10], times[len(times)-1])
}

// BenchmarkEveryoneFindsEveryone30 is the former 30-node test at
// production bucket size: every node looks up every other node's key (870
// lookups). Run: go test -run '^$' -bench EveryoneFindsEveryone30 -benchtime 1x ./p2p/
func BenchmarkEveryoneFindsEveryone30(b *testing.B) {
	var times []time.Duration
	for b.Loop() {
		b.StopTimer()
		nodes := newNetwork(b, 30, nil)
		b.StartTimer()
		times = append(times, everyoneFindsEveryone(b, nodes)...)
		b.StopTimer()
		for _, n := range nodes {
			if err := n.Close(); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(percentile(times, 0.5), "lookup-p50-ms")
	b.ReportMetric(percentile(times, 0.9), "lookup-p90-ms")
}

// everyoneFindsEveryone has each node provide a unique key, waits until
// each provider reports its key sent, then has every node look up every
// other node's key, and returns the lookup times.
func everyoneFindsEveryone(t testing.TB, nodes []*Node) []time.Duration {
	t.Helper()
	keys := make([]cid.Cid, len(nodes))
	for i, n := range nodes {
		keys[i] = testKey(t, fmt.Sprintf("unique build key %d", i))
		if err := n.Provide(keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range nodes {
		waitFor(t, 60*time.Second, fmt.Sprintf("node %d to announce its key", i), func() bool {
			st, err := n.ProvideStats(context.Background())
			return err == nil && st.KeysProvided >= 1 && st.PendingKeys == 0
		})
	}
	// Each node runs its lookups in turn, all nodes at once: a lookup
	// waits on round trips far more than on CPU.
	var (
		mu    sync.Mutex
		times []time.Duration
		wg    sync.WaitGroup
	)
	for i, from := range nodes {
		wg.Go(func() {
			for j, key := range keys {
				if i == j {
					continue
				}
				took, err := findEventually(from, key, nodes[j].ID())
				if err != nil {
					t.Errorf("node %d never found node %d's key: %v", i, j, err)
					return
				}
				mu.Lock()
				times = append(times, took)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return times
}

// findEventually looks key up from until want is its provider, and returns
// how long the successful lookup took. ADD_PROVIDER is one-way, so a
// record may still be in flight to the closest peers for a while after its
// provider reported it sent.
func findEventually(from *Node, key cid.Cid, want peer.ID) (time.Duration, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		provs, err := from.FindProviders(ctx, key, 1)
		took := time.Since(start)
		cancel()
		if err == nil && len(provs) == 1 && provs[0].ID == want {
			return took, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("after 30s, last answer %v: %w", provs, err)
		}
		time.Sleep(50 * time.Millisecond) // poll: the record is still in flight
	}
}
