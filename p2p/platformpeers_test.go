package p2p

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	mh "github.com/multiformats/go-multihash"
)

// platformCid is the key routing discovery provides for ns.
func platformCid(t *testing.T, ns string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(ns), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// TestFindPlatformPeers: six nodes on loopback. H, S1 and S2 are DHT
// servers of platform "other"; A and B (platform_peers 8) and G
// (platform_peers 0) are DHT clients of platform "p1" that bootstrap
// through H only. Clients are in nobody's routing table, so no DHT lookup
// ever connects two of them: A and B meet only through the platform
// namespace. They become connected, see each other as topic peers, tag
// each other in the connection manager, and a message A publishes on p1
// reaches B; G advertises nothing and nobody dials it. Leaving the
// platform stops the discovery (goleak in TestMain checks its goroutines
// end with the nodes).
func TestFindPlatformPeers(t *testing.T) {
	const plat, other = "p1", "other"
	hub := newTestNode(t, testConfig(t), Handlers{})
	servers := []*Node{hub}
	for range 2 {
		servers = append(servers, newTestNode(t, testConfig(t, hub.AddrInfo()), Handlers{}))
	}
	for _, s := range servers {
		if err := s.JoinPlatform(other); err != nil {
			t.Fatal(err)
		}
	}
	logB := &gossipLog{}
	client := func(want int, h Handlers) *Node {
		cfg := testConfig(t, hub.AddrInfo())
		cfg.DHTMode = DHTClient
		cfg.PlatformPeers = want
		n := newTestNode(t, cfg, h)
		if err := n.JoinPlatform(plat); err != nil {
			t.Fatal(err)
		}
		if err := n.FindPlatformPeers(plat); err != nil {
			t.Fatal(err)
		}
		return n
	}
	g := client(0, Handlers{})
	a := client(8, Handlers{})
	b := client(8, Handlers{OnGossip: logB.handler(false)})

	key := platformCid(t, PlatformNamespace(plat))
	waitFor(t, 30*time.Second, "A and B to advertise p1 on the private DHT", func() bool {
		return findsProvider(hub, key, a.ID()) && findsProvider(hub, key, b.ID())
	})
	waitFor(t, 30*time.Second, "A and B to become topic peers of p1", func() bool {
		return slices.Contains(a.TopicPeers(plat), b.ID()) && slices.Contains(b.TopicPeers(plat), a.ID())
	})
	tag := "gentoo-p2p-platform/" + plat
	waitFor(t, 10*time.Second, "A and B to tag each other", func() bool {
		ta := a.Host().ConnManager().GetTagInfo(b.ID())
		tb := b.Host().ConnManager().GetTagInfo(a.ID())
		return ta != nil && ta.Tags[tag] == platformTagValue && tb != nil && tb.Tags[tag] == platformTagValue
	})
	sa, sb := a.PlatformPeersStatus(plat), b.PlatformPeersStatus(plat)
	if !sa.Enabled || !sa.Advertised || sa.Want != 8 || !sb.Enabled || !sb.Advertised {
		t.Errorf("status A %+v, B %+v", sa, sb)
	}
	if sa.Found+sb.Found < 1 {
		t.Errorf("neither A (%+v) nor B (%+v) counts the other as found", sa, sb)
	}
	waitFor(t, 10*time.Second, "the status to count the connected topic peer", func() bool {
		return a.PlatformPeersStatus(plat).Connected == 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publishUntil(t, ctx, a, plat, "from-a", func() bool { return logB.hasPrefix("from-a") })

	// G, with the discovery off, is neither advertised nor dialled.
	if st := g.PlatformPeersStatus(plat); st.Enabled {
		t.Errorf("platform_peers 0, status %+v", st)
	}
	if findsProvider(hub, key, g.ID()) {
		t.Error("G advertised p1 with platform_peers 0")
	}
	for _, n := range []*Node{a, b} {
		if n.Host().Network().Connectedness(g.ID()) == network.Connected {
			t.Errorf("%s connected to G, which neither sought nor advertised p1", n.ID())
		}
	}
	for _, s := range servers {
		if s.PlatformPeersStatus(other).Enabled {
			t.Error("the discovery runs on a node that never asked for it")
		}
	}

	if err := a.LeavePlatform(plat); err != nil {
		t.Fatal(err)
	}
	if st := a.PlatformPeersStatus(plat); st.Enabled {
		t.Errorf("after leaving, status %+v", st)
	}
	if err := a.FindPlatformPeers(plat); err == nil {
		t.Error("FindPlatformPeers on a platform not joined succeeded")
	}
}

// TestFindPlatformPeersErrors: the config refuses a negative count, and
// asking twice starts one discovery.
func TestFindPlatformPeersErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.PlatformPeers = -1
	if _, err := New(context.Background(), cfg, Handlers{}); err == nil {
		t.Fatal("New accepted PlatformPeers -1")
	}
	cfg = testConfig(t)
	cfg.PlatformPeers = 2
	n := newTestNode(t, cfg, Handlers{})
	if err := n.FindPlatformPeers("p1"); err == nil {
		t.Error("FindPlatformPeers before JoinPlatform succeeded")
	}
	if err := n.JoinPlatform("p1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := n.FindPlatformPeers("p1"); err != nil {
			t.Fatal(err)
		}
	}
	if st := n.PlatformPeersStatus("p1"); !st.Enabled || st.Want != 2 || st.Connected != 0 {
		t.Errorf("status %+v", st)
	}
}
