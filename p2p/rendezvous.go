package p2p

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

// RendezvousNamespace is what every gentoo-p2pd node advertises on the
// public DHT (as a provider record of its SHA-256), and looks up to find
// the others. The version lets a future incompatible network use another.
const RendezvousNamespace = "gentoo-p2pd/rendezvous/1"

// Rendezvous configures zero-configuration discovery over the internet
// without a server run by this project: the node joins the public libp2p
// (IPFS "Amino") DHT as a client, advertises RendezvousNamespace there and
// dials the nodes it finds under it. Those that speak our protocols join
// the private /gentoo-p2p DHT like bootstrap peers would.
type Rendezvous struct {
	// Peers are where the node enters the public DHT; empty means the
	// public IPFS bootstrap peers (dht.GetDefaultBootstrapPeerAddrInfos).
	Peers []peer.AddrInfo
	// Namespace is advertised and looked up; empty means
	// RendezvousNamespace.
	Namespace string
}

// Rendezvous timing. A lookup repeats quickly, backing off, while fewer
// than rendezvousWantPeers gentoo-p2pd peers are connected (another node
// may advertise a moment later) and rarely once they are: by then the
// private DHT finds the rest. An advertisement is renewed before its provider record expires
// (routing discovery says when).
const (
	rendezvousRetryMin  = time.Second
	rendezvousRetryMax  = 2 * time.Minute
	rendezvousFindMin   = 2 * time.Second
	rendezvousFindMax   = 5 * time.Minute
	rendezvousFindIdle  = 15 * time.Minute
	rendezvousWantPeers = 8
	// rendezvousDials bounds how many found nodes are dialled per lookup,
	// so a namespace flooded by fakes costs a bounded number of dials.
	rendezvousDials = 16
	// rendezvousFindLimit bounds the provider records read per lookup.
	rendezvousFindLimit = 64
)

// rendezvousState is what status shows about the rendezvous.
type rendezvousState struct {
	advertised atomic.Bool
	found      atomic.Int64 // gentoo-p2pd nodes connected through it, in all
	publicDHT  atomic.Int64 // public DHT routing table size at the last look
}

// RendezvousStatus says what the rendezvous did, for status.
type RendezvousStatus struct {
	// Enabled is false when the rendezvous is off (network.rendezvous).
	Enabled bool `json:"enabled"`
	// PublicDHTPeers is the size of the public DHT routing table: 0 means
	// the public DHT is not reachable (yet).
	PublicDHTPeers int `json:"public_dht_peers"`
	// Advertised is true once this node's record is on the public DHT.
	Advertised bool `json:"advertised"`
	// Found counts the gentoo-p2pd nodes it connected to since start.
	Found int `json:"found"`
}

// RendezvousStatus reports the rendezvous' progress.
func (n *Node) RendezvousStatus() RendezvousStatus {
	if n.public == nil {
		return RendezvousStatus{}
	}
	return RendezvousStatus{
		Enabled:        true,
		PublicDHTPeers: int(n.rdv.publicDHT.Load()),
		Advertised:     n.rdv.advertised.Load(),
		Found:          int(n.rdv.found.Load()),
	}
}

// startRendezvous joins the public DHT as a client (it answers nobody's
// queries and stores nothing for the public network) and runs the
// advertise-and-find loop until the node closes.
func (n *Node) startRendezvous(r *Rendezvous) error {
	peers := r.Peers
	if len(peers) == 0 {
		peers = dht.GetDefaultBootstrapPeerAddrInfos()
	}
	ns := r.Namespace
	if ns == "" {
		ns = RendezvousNamespace
	}
	public, err := dht.New(n.host, dht.Mode(dht.ModeClient), dht.BootstrapPeers(peers...))
	if err != nil {
		return fmt.Errorf("p2p: join the public DHT for the rendezvous: %w", err)
	}
	n.public = public
	disc := drouting.NewRoutingDiscovery(public)
	n.wg.Go(func() { n.rendezvousLoop(public, disc, ns, len(peers)) })
	return nil
}

// rendezvousLoop advertises ns and looks it up, each with its own backoff.
func (n *Node) rendezvousLoop(public *dht.IpfsDHT, disc *drouting.RoutingDiscovery, ns string, entries int) {
	ctx := n.ctx
	start := time.Now()
	advertiseAt, findAt := start, start
	advertiseRetry, findRetry := rendezvousRetryMin, rendezvousFindMin
	var warned, joined bool
	for {
		size := public.RoutingTable().Size()
		n.rdv.publicDHT.Store(int64(size))
		wait := rendezvousRetryMin
		if size == 0 {
			// The public DHT's own bootstrap connects in the background.
			if !warned && time.Since(start) > 30*time.Second {
				n.log.Warn("rendezvous: public DHT not reachable yet; finding peers over the internet waits for it", "entry_peers", entries)
				warned = true
			}
		} else {
			if !joined {
				n.log.Info("rendezvous: public DHT joined", "routing_table", size)
				joined = true
			}
			if !time.Now().Before(advertiseAt) {
				err := advertiseNext(ctx, disc, ns, &advertiseAt, &advertiseRetry)
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					n.log.Debug("rendezvous: advertise failed", "err", err, "retry_in", time.Until(advertiseAt).Round(time.Second))
				case !n.rdv.advertised.Swap(true):
					n.log.Info("rendezvous: advertised", "namespace", ns)
				}
			}
			if !time.Now().Before(findAt) {
				n.rendezvousFind(ctx, disc, ns)
				if ctx.Err() != nil {
					return
				}
				findAt, findRetry = nextFind(n.peerCount() < rendezvousWantPeers, findRetry)
			}
			wait = max(min(time.Until(advertiseAt), time.Until(findAt)), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// rendezvousFind looks ns up and dials the gentoo-p2pd nodes found.
func (n *Node) rendezvousFind(ctx context.Context, disc *drouting.RoutingDiscovery, ns string) {
	k := n.dialFound(ctx, disc, ns, "rendezvous", func(p peer.ID) {
		n.host.ConnManager().TagPeer(p, "gentoo-p2p-rendezvous", 10)
	})
	n.rdv.found.Add(int64(k))
}

// advertiseNext provides ns through disc and schedules the next
// advertisement in *at: before the record expires, or after *retry,
// doubled up to rendezvousRetryMax, when this one failed. kad-dht's
// Provide sets no deadline of its own; a slow one must not hold up the
// lookups of the loop that advertises.
func advertiseNext(ctx context.Context, disc *drouting.RoutingDiscovery, ns string, at *time.Time, retry *time.Duration) error {
	actx, cancel := context.WithTimeout(ctx, rendezvousAdvertiseTimeout)
	defer cancel()
	ttl, err := disc.Advertise(actx, ns)
	if err != nil {
		*at = time.Now().Add(*retry)
		*retry = min(*retry*2, rendezvousRetryMax)
		return err
	}
	*at = time.Now().Add(ttl * 7 / 8)
	*retry = rendezvousRetryMin
	return nil
}

// dialFound looks ns up through disc, reading at most rendezvousFindLimit
// records, and dials the nodes found that are not connected yet, at most
// rendezvousDials of them, so a namespace flooded by fakes costs a bounded
// number of dials. It returns how many of them turned out to speak a
// gentoo-p2pd protocol, after handing each to kept (if not nil). what
// names the caller in logs.
func (n *Node) dialFound(ctx context.Context, disc *drouting.RoutingDiscovery, ns, what string, kept func(peer.ID)) int {
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	found, err := disc.FindPeers(fctx, ns, discovery.Limit(rendezvousFindLimit))
	if err != nil {
		n.log.Debug(what+": lookup failed", "namespace", ns, "err", err)
		return 0
	}
	var (
		wg              sync.WaitGroup
		dialled, joined atomic.Int64
		seen            int
	)
	for ai := range found {
		seen++
		// A connected peer is not redialled: the connection is there, and
		// a second dial racing the first gains nothing.
		if ai.ID == n.host.ID() || len(ai.Addrs) == 0 || len(n.host.Network().ConnsToPeer(ai.ID)) > 0 {
			continue
		}
		if dialled.Load() >= rendezvousDials {
			continue // drain the channel; the next lookup tries others
		}
		dialled.Add(1)
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
			defer cancel()
			n.clearBackoff(ai.ID)
			if err := n.host.Connect(cctx, ai); err != nil {
				n.log.Debug(what+": found node unreachable", "peer", ai.ID, "err", err)
				return
			}
			if !n.isOurs(ai.ID) {
				return // advertised the namespace but speaks nothing of ours
			}
			if kept != nil {
				kept(ai.ID)
			}
			joined.Add(1)
		})
	}
	wg.Wait()
	k := int(joined.Load())
	if k > 0 {
		n.log.Info(fmt.Sprintf("%s: connected to %d peers found on the DHT", what, k), "namespace", ns, "records", seen, "peers", n.peerCount())
	} else {
		n.log.Debug(what+": lookup done", "namespace", ns, "records", seen, "dialled", dialled.Load(), "peers", n.peerCount())
	}
	return k
}

// nextFind schedules the next lookup of a namespace: backing off from
// rendezvousFindMin to rendezvousFindMax while the lookups have not found
// enough, every rendezvousFindIdle once they have.
func nextFind(short bool, retry time.Duration) (at time.Time, nextRetry time.Duration) {
	if short {
		return time.Now().Add(retry), min(retry*2, rendezvousFindMax)
	}
	return time.Now().Add(rendezvousFindIdle), rendezvousFindMin
}

// rendezvousAdvertiseTimeout bounds one advertisement in the public DHT
// (a provide there takes seconds; Amino's p50 is about 6 s).
const rendezvousAdvertiseTimeout = time.Minute
