package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// defaultFindProviders is the provider count FindProviders collects when
// the caller passes max <= 0: a DHT bucket's worth.
const defaultFindProviders = 20

// readyRouter is the sweeping provider's view of the DHT. The provider
// probes connectivity with GetClosestPeers and, when the probe fails, backs
// off exponentially up to a minute; a node started before its first peer
// (the first node of a network, a daemon started before the network is up)
// would then announce nothing for up to a minute after the first connection.
// Waiting for a routing-table entry before asking makes the first probe
// succeed as soon as the node has a peer. The wait ends with ctx, which the
// provider cancels on Close.
type readyRouter struct{ d *dht.IpfsDHT }

// GetClosestPeers waits for a non-empty routing table, then asks the DHT.
func (r readyRouter) GetClosestPeers(ctx context.Context, key string) ([]peer.ID, error) {
	if r.d.RoutingTable().Size() == 0 {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for r.d.RoutingTable().Size() == 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
	}
	return r.d.GetClosestPeers(ctx, key)
}

func keysToMultihashes(keys []cid.Cid) ([]mh.Multihash, error) {
	out := make([]mh.Multihash, 0, len(keys))
	for i, k := range keys {
		if !k.Defined() {
			return nil, fmt.Errorf("%w: key %d is an undefined CID", ErrBadKey, i)
		}
		out = append(out, k.Hash())
	}
	return out, nil
}

// Provide registers keys (build and variant keys of builds this node holds)
// for announcement on the DHT: each is announced soon and then reprovided
// every ReprovideInterval until Withdraw. The announcement itself is
// asynchronous (the sweeping provider batches keys by keyspace region) and
// starts once the node has a DHT peer; keys already registered are not
// announced again. Registrations live in memory: the daemon registers
// everything it holds at each start.
func (n *Node) Provide(keys ...cid.Cid) error {
	mhs, err := keysToMultihashes(keys)
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	for _, h := range mhs {
		n.provided[string(h)] = struct{}{}
	}
	n.mu.Unlock()
	if err := n.prov.StartProviding(false, mhs...); err != nil {
		return fmt.Errorf("p2p: start providing %d keys: %w", len(mhs), err)
	}
	n.metrics.provides.Add(float64(len(mhs)))
	return nil
}

// Withdraw stops providing keys. The DHT has no "unprovide": records
// already stored on other peers stay findable until they expire (48 h after
// the last announcement). Withdrawal therefore means: stop reproviding, and
// stop listing this node in FindProviders. The daemon must also stop
// answering attest queries and transfers for the build, so a peer following
// a stale record gets nothing.
func (n *Node) Withdraw(keys ...cid.Cid) error {
	mhs, err := keysToMultihashes(keys)
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	for _, h := range mhs {
		delete(n.provided, string(h))
	}
	n.mu.Unlock()
	if err := n.prov.StopProviding(mhs...); err != nil {
		return fmt.Errorf("p2p: stop providing %d keys: %w", len(mhs), err)
	}
	n.metrics.withdrawals.Add(float64(len(mhs)))
	return nil
}

// Providing reports whether key is registered by Provide (and not withdrawn).
func (n *Node) Providing(key cid.Cid) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.provided[string(key.Hash())]
	return ok
}

// FindProviders looks key up on the DHT and returns up to max providers
// (max <= 0 means 20), this node first when it provides key itself. It
// returns as soon as max providers are known, so max = 1 costs one
// time-to-first-provider. Finding nobody is not an error; a context that
// ends before anybody is found is.
func (n *Node) FindProviders(ctx context.Context, key cid.Cid, max int) ([]peer.AddrInfo, error) {
	if !key.Defined() {
		return nil, fmt.Errorf("%w: undefined CID", ErrBadKey)
	}
	if max <= 0 {
		max = defaultFindProviders
	}
	start := time.Now()
	self := n.host.ID()
	var out []peer.AddrInfo
	if n.Providing(key) {
		out = append(out, n.AddrInfo())
	}
	if len(out) < max {
		lctx, cancel := context.WithCancel(ctx)
		// One more than wanted: the DHT may report our own stale local
		// record, which we skip.
		for pi := range n.dht.FindProvidersAsync(lctx, key, max+1) {
			if pi.ID == self {
				continue
			}
			out = append(out, pi)
			if len(out) >= max {
				break
			}
		}
		cancel()
	}
	n.metrics.observeLookup(time.Since(start), len(out))
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("p2p: find providers of %s: %w", key, ctx.Err())
	}
	return out, nil
}

// ProvideStats reports what the provider is doing.
func (n *Node) ProvideStats(ctx context.Context) (ProvideStats, error) {
	n.mu.Lock()
	keys := len(n.provided)
	n.mu.Unlock()
	st, err := n.prov.Stats(ctx)
	if err != nil {
		return ProvideStats{}, fmt.Errorf("p2p: provider stats: %w", err)
	}
	out := ProvideStats{
		Keys:                    keys,
		ScheduledKeys:           st.Schedule.Keys,
		Regions:                 st.Schedule.Regions,
		Connectivity:            st.Connectivity.Status,
		PendingKeys:             st.Queues.PendingKeyProvides,
		PendingRegionReprovides: st.Queues.PendingRegionReprovides,
		KeysProvided:            st.Operations.Past.KeysProvided,
		KeysFailed:              st.Operations.Past.KeysFailed,
		ReprovideInterval:       n.cfg.ReprovideInterval,
		NextReprovideAt:         st.Schedule.NextReprovideAt,
	}
	if st.Closed {
		out.Connectivity = "closed"
	}
	if !out.NextReprovideAt.IsZero() {
		out.ReprovideLag = max(0, time.Since(out.NextReprovideAt))
	}
	return out, nil
}
