package p2p

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/publicdht"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestRendezvousFindsPeersWithoutBootstrap: three nodes with no bootstrap
// peers and no mDNS find each other through a stand-in public DHT on
// loopback (real kad-dht servers speaking /ipfs/kad/1.0.0), then count
// only each other as peers — the public DHT's nodes are neither listed
// nor remembered — and a node restarted with rendezvous off reconnects
// from the peers it remembered.
func TestRendezvousFindsPeersWithoutBootstrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	public, err := publicdht.Start(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := public.Close(); err != nil {
			t.Error(err)
		}
	})
	dir := t.TempDir()
	var nodes []*Node
	var cfgs []Config
	for i := range 3 {
		cfg := testConfig(t)
		cfg.Rendezvous = &Rendezvous{Peers: public.AddrInfos()}
		cfg.KnownPeersFile = dir + "/known-" + string(rune('a'+i)) + ".json"
		cfgs = append(cfgs, cfg)
		nodes = append(nodes, newTestNode(t, cfg, Handlers{}))
	}
	// Peers counts a peer once identify stored its protocols; the node
	// remembers it when the identify event reaches its handler, a moment
	// later: wait for both before closing a node and reading its file.
	waitFor(t, 25*time.Second, "every node to find and remember the two others through the rendezvous", func() bool {
		for _, n := range nodes {
			if len(n.Peers()) != 2 || len(n.KnownPeers()) != 2 {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		for _, p := range n.Peers() {
			if slices.Contains(public.IDs(), p.ID) {
				t.Errorf("%s lists public DHT node %s among its peers", n.ID(), p.ID)
			}
		}
		st := n.RendezvousStatus()
		if !st.Enabled || !st.Advertised || st.PublicDHTPeers == 0 {
			t.Errorf("%s rendezvous status %+v", n.ID(), st)
		}
	}
	// Known peers hold gentoo-p2pd nodes only.
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	known := newKnownPeers(cfgs[0].KnownPeersFile, DefaultKnownPeers)
	if err := known.load(); err != nil {
		t.Fatal(err)
	}
	for _, p := range known.order {
		if slices.Contains(public.IDs(), p) {
			t.Errorf("public DHT node %s remembered as a known peer", p)
		}
	}
	if len(known.order) != 2 {
		t.Errorf("remembered %d peers, want the 2 gentoo-p2pd nodes: %v", len(known.order), known.order)
	}
	// The same identity, rendezvous off: the remembered peers bring it back.
	again := cfgs[0]
	again.Rendezvous = nil
	n := newTestNode(t, again, Handlers{})
	waitFor(t, 15*time.Second, "the restarted node to redial its known peers", func() bool { return len(n.Peers()) == 2 })
	if st := n.RendezvousStatus(); st.Enabled {
		t.Errorf("rendezvous off, status %+v", st)
	}
}

// TestRendezvousPublicDHTUnreachable: with the public DHT out of reach
// (its entry peer refuses connections) the node still starts, works with
// the peers it is given, reports the rendezvous as not joined, and closes
// without leaking the public DHT's goroutines (goleak in TestMain).
func TestRendezvousPublicDHTUnreachable(t *testing.T) {
	gone := newTestNode(t, testConfig(t), Handlers{})
	entry := gone.AddrInfo()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	other := newTestNode(t, testConfig(t), Handlers{})
	cfg := testConfig(t, other.AddrInfo())
	cfg.Rendezvous = &Rendezvous{Peers: []peer.AddrInfo{entry}}
	n := newTestNode(t, cfg, Handlers{})
	waitFor(t, 10*time.Second, "the bootstrap peer", func() bool { return len(n.Peers()) == 1 })
	if st := n.RendezvousStatus(); !st.Enabled || st.Advertised || st.PublicDHTPeers != 0 || st.Found != 0 {
		t.Errorf("rendezvous status with the public DHT unreachable: %+v", st)
	}
}
