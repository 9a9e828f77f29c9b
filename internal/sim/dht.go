package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/routing"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	mh "github.com/multiformats/go-multihash"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
)

// DHTResult is what the DHT measurement found: latencies of real
// go-libp2p-kad-dht operations between real libp2p hosts on an in-memory
// network whose links have the latencies of the population model.
type DHTResult struct {
	Nodes, Servers int
	// ProvideMS and LookupMS are the sorted latencies, in milliseconds,
	// of Provide (a build key announced by a builder) and of
	// FindProviders (a requester finding one provider of it).
	ProvideMS, LookupMS []float64
	// Found counts the lookups that found a provider.
	Found int
	// RPCsPerProvide and RPCsPerLookup are the mean DHT requests one
	// operation sent (counted from the DHT's own query events).
	RPCsPerProvide, RPCsPerLookup float64
}

// dhtNet is n hosts on one mocknet, each running the DHT as the daemon
// configures it: the /gentoo-p2p protocol prefix, provider records only.
// NATed peers are DHT clients (AutoNAT reports them unreachable; the
// daemon's default "auto" mode then makes them clients), the others servers.
type dhtNet struct {
	mn      mocknet.Mocknet
	hosts   []host.Host
	dhts    []*dht.IpfsDHT
	servers []int
}

// oneWay is a link's one-way latency: half a round trip drawn from the
// model's RTT distribution.
func startDHT(ctx context.Context, pop *Population) (*dhtNet, error) {
	n := len(pop.Peers)
	d := &dhtNet{mn: mocknet.New()}
	for range n {
		h, err := d.mn.GenPeer()
		if err != nil {
			return nil, err
		}
		d.hosts = append(d.hosts, h)
	}
	for i, p := range pop.Peers {
		if !p.NAT {
			d.servers = append(d.servers, i)
		}
	}
	if len(d.servers) == 0 {
		return nil, fmt.Errorf("sim: no publicly reachable peer to run DHT servers")
	}
	// Links are the ability to connect: a NATed peer can dial out to a
	// public one, and public peers reach each other. NAT-to-NAT links
	// exist only where hole punching succeeds; the DHT never needs them
	// (clients are not in routing tables).
	rng := rand.New(rand.NewPCG(pop.Seed, 7))
	link := func(a, b int) error {
		l, err := d.mn.LinkPeers(d.hosts[a].ID(), d.hosts[b].ID())
		if err != nil {
			return err
		}
		l.SetOptions(mocknet.LinkOptions{Latency: pop.Model.oneWay(rng)})
		return nil
	}
	for ai, a := range d.servers {
		for _, b := range d.servers[ai+1:] {
			if err := link(a, b); err != nil {
				return nil, err
			}
		}
	}
	for i, p := range pop.Peers {
		if !p.NAT {
			continue
		}
		for _, s := range d.servers {
			if err := link(i, s); err != nil {
				return nil, err
			}
		}
	}
	for i, h := range d.hosts {
		mode := dht.ModeServer
		if pop.Peers[i].NAT {
			mode = dht.ModeClient
		}
		kd, err := dht.New(h,
			dht.ProtocolPrefix(p2p.DHTProtocolPrefix), dht.Mode(mode), dht.DisableValues(),
			dht.DisableAutoRefresh())
		if err != nil {
			return nil, err
		}
		d.dhts = append(d.dhts, kd)
	}
	// A long-running network's routing tables: every peer offers every
	// server to its table and the table keeps what Kademlia keeps (k per
	// bucket). Filling them by refresh queries would be the same result
	// after minutes of wall time per hundred nodes.
	for i, kd := range d.dhts {
		ps := d.hosts[i].Peerstore()
		for _, s := range d.servers {
			if s == i {
				continue
			}
			// A full bucket refuses with an error: Kademlia keeps the
			// peers it has.
			if ok, _ := kd.RoutingTable().TryAddPeer(d.hosts[s].ID(), true, false); ok {
				ps.AddAddrs(d.hosts[s].ID(), d.hosts[s].Addrs(), time.Hour)
			}
		}
	}
	return d, nil
}

func (d *dhtNet) Close() {
	for _, kd := range d.dhts {
		_ = kd.Close()
	}
	_ = d.mn.Close()
}

// parallel runs f(0..n-1) on at most width goroutines and returns the
// first error.
func parallel(ctx context.Context, n, width int, f func(int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		first atomic.Pointer[error]
	)
	for range min(width, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return *e
	}
	return ctx.Err()
}

// rpcCounter counts the requests a DHT operation sends.
func rpcCounter(ctx context.Context) (context.Context, *atomic.Int64, func()) {
	var n atomic.Int64
	qctx, cancel := context.WithCancel(ctx)
	qctx, events := routing.RegisterForQueryEvents(qctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			if ev.Type == routing.SendingQuery {
				n.Add(1)
			}
		}
	}()
	return qctx, &n, func() { cancel(); <-done }
}

// measureDHT provides ops build keys, each from a random builder, and has
// a random other peer find a provider of each.
func (d *dhtNet) measure(ctx context.Context, seed uint64, ops int) (DHTResult, error) {
	rng := rand.New(rand.NewPCG(seed, 11))
	res := DHTResult{Nodes: len(d.hosts), Servers: len(d.servers)}
	type op struct {
		key            cid.Cid
		from, asker    int
		provide, found time.Duration
		ok             bool
		rpcP, rpcL     int64
	}
	list := make([]op, ops)
	for i := range list {
		h, err := mh.Sum(fmt.Appendf(nil, "sim build key %d %d", seed, i), mh.SHA2_256, -1)
		if err != nil {
			return res, err
		}
		from := rng.IntN(len(d.hosts))
		asker := rng.IntN(len(d.hosts))
		for asker == from {
			asker = rng.IntN(len(d.hosts))
		}
		list[i] = op{key: cid.NewCidV1(cid.Raw, h), from: from, asker: asker}
	}
	// Few operations at a time: a thousand hosts share the machine's
	// cores, and a crowd of lookups measures the scheduler, not Kademlia.
	err := parallel(ctx, ops, 4, func(i int) error {
		o := &list[i]
		qctx, n, stop := rpcCounter(ctx)
		start := time.Now()
		err := d.dhts[o.from].Provide(qctx, o.key, true)
		o.provide = time.Since(start)
		stop()
		o.rpcP = n.Load()
		if err != nil {
			return fmt.Errorf("provide: %w", err)
		}
		qctx, n, stop = rpcCounter(ctx)
		start = time.Now()
		// Asked for one provider, the channel closes after it.
		for ai := range d.dhts[o.asker].FindProvidersAsync(qctx, o.key, 1) {
			o.ok = o.ok || ai.ID == d.hosts[o.from].ID()
		}
		o.found = time.Since(start)
		stop()
		o.rpcL = n.Load()
		return nil
	})
	if err != nil {
		return res, err
	}
	var rp, rl int64
	for _, o := range list {
		res.ProvideMS = append(res.ProvideMS, ms(o.provide))
		res.LookupMS = append(res.LookupMS, ms(o.found))
		if o.ok {
			res.Found++
		}
		rp += o.rpcP
		rl += o.rpcL
	}
	slices.Sort(res.ProvideMS)
	slices.Sort(res.LookupMS)
	res.RPCsPerProvide = float64(rp) / float64(ops)
	res.RPCsPerLookup = float64(rl) / float64(ops)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
