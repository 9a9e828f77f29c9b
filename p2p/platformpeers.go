package p2p

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

// PlatformNamespacePrefix precedes the platform in the namespace a node
// advertises on the private DHT for each platform it seeks peers of.
const PlatformNamespacePrefix = "gentoo-p2pd/platform/1/"

// DefaultPlatformPeers is how many connected peers of its own platform a
// daemon seeks by default (network.platform_peers).
const DefaultPlatformPeers = 8

// platformTagValue ranks platform peers above ordinary ones (and above
// rendezvous finds) when the connection manager trims: they are what the
// platform's gossip and catalog sync need.
const platformTagValue = 20

// PlatformNamespace is what the nodes seeking peers of platform advertise
// and look up on the private DHT.
func PlatformNamespace(platform string) string { return PlatformNamespacePrefix + platform }

// platformSeeker is the discovery loop of one platform.
type platformSeeker struct {
	cancel     context.CancelFunc
	done       chan struct{}
	advertised atomic.Bool
	connected  atomic.Int64 // topic peers connected at the last look
	found      atomic.Int64 // platform nodes connected through the DHT, in all
}

// stop ends the loop and waits for it.
func (s *platformSeeker) stop() {
	s.cancel()
	<-s.done
}

// PlatformPeersStatus says what the platform peer discovery did, for
// status.
type PlatformPeersStatus struct {
	// Enabled is false when the discovery does not run for this platform.
	Enabled bool `json:"enabled"`
	// Want is network.platform_peers.
	Want int `json:"want"`
	// Advertised is true once this node's record is on the private DHT.
	Advertised bool `json:"advertised"`
	// Connected counts the peers subscribed to the platform's topic.
	Connected int `json:"connected"`
	// Found counts the platform's nodes connected through the DHT since
	// the platform was joined.
	Found int `json:"found"`
}

// PlatformPeersStatus reports the discovery of platform's peers.
func (n *Node) PlatformPeersStatus(platform string) PlatformPeersStatus {
	n.mu.Lock()
	t := n.topics[platform]
	n.mu.Unlock()
	if t == nil || t.seek == nil {
		return PlatformPeersStatus{}
	}
	return PlatformPeersStatus{
		Enabled:    true,
		Want:       n.cfg.PlatformPeers,
		Advertised: t.seek.advertised.Load(),
		Connected:  int(t.seek.connected.Load()),
		Found:      int(t.seek.found.Load()),
	}
}

// FindPlatformPeers makes sure the node is connected to peers of platform,
// which must be joined: random connections leave the topic of a small
// platform disconnected. The node advertises PlatformNamespace(platform)
// on the private DHT and, while fewer than Config.PlatformPeers peers
// subscribed to the topic are connected, looks it up and dials the nodes
// found. Connected topic peers (up to that many) are tagged so the
// connection manager keeps them. The discovery stops when the platform is
// left or the node closes; with Config.PlatformPeers 0 nothing runs.
// Calling it again is a no-op.
func (n *Node) FindPlatformPeers(platform string) error {
	if n.cfg.PlatformPeers <= 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	t, ok := n.topics[platform]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotJoined, platform)
	}
	if t.seek != nil {
		return nil
	}
	evh, err := t.topic.EventHandler()
	if err != nil {
		return fmt.Errorf("p2p: watch the peers of %s: %w", t.name, err)
	}
	ctx, cancel := context.WithCancel(n.ctx)
	s := &platformSeeker{cancel: cancel, done: make(chan struct{})}
	t.seek = s
	n.wg.Go(func() {
		defer close(s.done)
		n.seekPlatformPeers(ctx, platform, t.topic, evh, s)
	})
	return nil
}

// seekPlatformPeers advertises the platform's namespace and looks it up,
// each with its own backoff like the rendezvous; a topic peer joining or
// leaving wakes it, to tag the newcomer or look up again sooner.
func (n *Node) seekPlatformPeers(ctx context.Context, platform string, topic *pubsub.Topic, evh *pubsub.TopicEventHandler, s *platformSeeker) {
	want := n.cfg.PlatformPeers
	ns := PlatformNamespace(platform)
	disc := drouting.NewRoutingDiscovery(n.dht)
	tag := "gentoo-p2p-platform/" + platform

	wake := make(chan struct{}, 1)
	var events sync.WaitGroup
	events.Go(func() {
		for {
			if _, err := evh.NextPeerEvent(ctx); err != nil {
				return // ctx done
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	})
	tagged := map[peer.ID]bool{}
	defer func() {
		events.Wait()
		evh.Cancel() // before the topic closes, which refuses while handlers remain
		cm := n.host.ConnManager()
		for p := range tagged {
			cm.UntagPeer(p, tag)
		}
	}()

	now := time.Now()
	advertiseAt, findAt := now, now
	advertiseRetry, findRetry := rendezvousRetryMin, rendezvousFindMin
	for {
		peers := topic.ListPeers()
		s.connected.Store(int64(len(peers)))
		n.tagPlatformPeers(tag, peers, tagged, want)
		wait := rendezvousRetryMin
		if n.dht.RoutingTable().Size() > 0 {
			if !time.Now().Before(advertiseAt) {
				err := advertiseNext(ctx, disc, ns, &advertiseAt, &advertiseRetry)
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					n.log.Debug("platform peers: advertise failed", "platform", platform, "err", err, "retry_in", time.Until(advertiseAt).Round(time.Second))
				case !s.advertised.Swap(true):
					n.log.Info("platform peers: advertised", "namespace", ns)
				}
			}
			if len(peers) < want && time.Until(findAt) > findRetry {
				findAt = time.Now().Add(findRetry) // a platform peer left
			}
			if !time.Now().Before(findAt) {
				short := len(peers) < want
				if short {
					k := n.dialFound(ctx, disc, ns, "platform peers", nil)
					if ctx.Err() != nil {
						return
					}
					s.found.Add(int64(k))
				}
				findAt, findRetry = nextFind(short, findRetry)
			}
			wait = max(min(time.Until(advertiseAt), time.Until(findAt)), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-wake:
			t.Stop()
		}
	}
}

// tagPlatformPeers keeps up to want of the connected topic peers tagged:
// those tagged before stay tagged while connected, and others fill the
// places of those that left.
func (n *Node) tagPlatformPeers(tag string, peers []peer.ID, tagged map[peer.ID]bool, want int) {
	cm := n.host.ConnManager()
	current := make(map[peer.ID]bool, len(peers))
	for _, p := range peers {
		current[p] = true
	}
	for p := range tagged {
		if !current[p] {
			cm.UntagPeer(p, tag)
			delete(tagged, p)
		}
	}
	for _, p := range peers {
		if len(tagged) >= want {
			break
		}
		if !tagged[p] {
			cm.TagPeer(p, tag, platformTagValue)
			tagged[p] = true
		}
	}
}
