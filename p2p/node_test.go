package p2p

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// TestFiveNodesProvideFindAttest is the acceptance path: A provides a build
// key and a variant key, E (two hops away in the star) finds A for both and
// fetches A's attestations, and Withdraw stops A providing.
func TestFiveNodesProvideFindAttest(t *testing.T) {
	build := testKey(t, "build key of app-misc/hello-1")
	variant := testKey(t, "variant key of app-misc/hello-1")
	canned := blobs("attestation", 3)
	var gotKeys = make(chan cid.Cid, 16)
	regs := make([]*prometheus.Registry, 5)
	nodes := make([]*Node, 0, 5)
	for i := range 5 {
		cfg := testConfig(t)
		if i > 0 {
			cfg.Bootstrap = []peer.AddrInfo{nodes[0].AddrInfo()}
		}
		regs[i] = prometheus.NewRegistry()
		cfg.Registerer = regs[i]
		var h Handlers
		if i == 1 {
			h.Attestations = func(ctx context.Context, key cid.Cid) ([][]byte, error) {
				gotKeys <- key
				if key.Equals(build) {
					return canned, nil
				}
				return nil, nil
			}
		}
		nodes = append(nodes, newTestNode(t, cfg, h))
	}
	a, e := nodes[1], nodes[4]

	if err := a.Provide(build, variant); err != nil {
		t.Fatal(err)
	}
	for _, k := range []cid.Cid{build, variant} {
		waitFor(t, 30*time.Second, "E finds A for "+k.String(), func() bool { return findsProvider(e, k, a.ID()) })
	}
	// The sweeping provider stored A's records on other peers: finding A
	// does not depend on the lookup reaching A itself.
	waitFor(t, 10*time.Second, "another node to hold A's provider record", func() bool {
		for _, n := range nodes {
			if n == a {
				continue
			}
			recs, err := n.dht.ProviderStore().GetProviders(context.Background(), build.Hash())
			if err == nil && slices.ContainsFunc(recs, func(p peer.AddrInfo) bool { return p.ID == a.ID() }) {
				return true
			}
		}
		return false
	})
	// A lists itself first while it provides.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	self, err := a.FindProviders(ctx, build, 1)
	if err != nil || len(self) != 1 || self[0].ID != a.ID() {
		t.Fatalf("A.FindProviders(build, 1) = %v, %v; want A itself", self, err)
	}

	got, err := e.FetchAttestations(ctx, a.ID(), build)
	if err != nil {
		t.Fatalf("FetchAttestations: %v", err)
	}
	if !slices.EqualFunc(got, canned, func(x, y []byte) bool { return string(x) == string(y) }) {
		t.Fatalf("FetchAttestations = %q, want %q", got, canned)
	}
	if k := <-gotKeys; !k.Equals(build) {
		t.Fatalf("handler saw key %s, want %s", k, build)
	}
	none, err := e.FetchAttestations(ctx, a.ID(), variant)
	if err != nil || len(none) != 0 {
		t.Fatalf("FetchAttestations(variant) = %q, %v; want empty", none, err)
	}
	// A node without an Attestations handler refuses.
	if _, err := a.FetchAttestations(ctx, e.ID(), build); !errors.Is(err, ErrRefused) {
		t.Fatalf("FetchAttestations from handler-less node: err = %v, want ErrRefused", err)
	}
	if v := counterValue(t, a.metrics.served.WithLabelValues(string(AttestProtocol), "ok")); v != 2 {
		t.Errorf("A served %v attest requests, want 2", v)
	}

	st, err := a.ProvideStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Keys != 2 || st.Connectivity != "online" {
		t.Errorf("ProvideStats before withdraw = %+v, want 2 keys online", st)
	}
	waitFor(t, 10*time.Second, "A's provider to report 2 keys provided", func() bool {
		st, err := a.ProvideStats(ctx)
		return err == nil && st.KeysProvided >= 2
	})

	if err := a.Withdraw(build); err != nil {
		t.Fatal(err)
	}
	if a.Providing(build) || !a.Providing(variant) {
		t.Fatalf("after Withdraw(build): Providing(build)=%v Providing(variant)=%v", a.Providing(build), a.Providing(variant))
	}
	if st, _ := a.ProvideStats(ctx); st.Keys != 1 {
		t.Errorf("ProvideStats after withdraw: %d keys, want 1", st.Keys)
	}
	// A no longer offers itself; the records on other peers expire by
	// themselves (the DHT has no unprovide).
	mine, err := a.FindProviders(ctx, build, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range mine {
		if p.ID == a.ID() {
			t.Fatalf("A lists itself for a withdrawn key: %v", mine)
		}
	}
	if v := counterValue(t, e.metrics.lookups.WithLabelValues("found")); v < 2 {
		t.Errorf("E counted %v successful lookups, want >= 2", v)
	}
	if v := gatheredValue(t, regs[1], "gentoo_p2pd_peers"); v < 1 {
		t.Errorf("peers gauge on A's registry = %v, want >= 1", v)
	}
}

// TestPrivateDHTProtocol makes sure a node can never join the IPFS DHT.
func TestPrivateDHTProtocol(t *testing.T) {
	n := newTestNode(t, testConfig(t), Handlers{})
	protos := n.Host().Mux().Protocols()
	if !slices.Contains(protos, protocol.ID("/gentoo-p2p/kad/1.0.0")) {
		t.Errorf("host does not speak /gentoo-p2p/kad/1.0.0: %v", protos)
	}
	for _, p := range protos {
		if p == "/ipfs/kad/1.0.0" || p == "/ipfs/lan/kad/1.0.0" {
			t.Errorf("host speaks the IPFS DHT protocol %s", p)
		}
	}
	for _, want := range []protocol.ID{AttestProtocol, CatalogProtocol} {
		if !slices.Contains(protos, want) {
			t.Errorf("host does not serve %s", want)
		}
	}
	if len(n.Peers()) != 0 {
		t.Errorf("a node without bootstrap peers connected to %v", n.Peers())
	}
	if got := n.Reachability(); got != "unknown" {
		t.Errorf("Reachability() = %q, want unknown with AutoNAT off", got)
	}
	for _, a := range n.Addrs() {
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			t.Errorf("Addrs() entry %s lacks /p2p/: %v", a, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	base := testConfig(t)
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no key", func(c *Config) { c.PrivKey = nil }},
		{"no listen addrs", func(c *Config) { c.ListenAddrs = nil }},
		{"high below low", func(c *Config) { c.ConnLow, c.ConnHigh = 30, 10 }},
		{"bad mode", func(c *Config) { c.DHTMode = "both" }},
		{"negative reprovide", func(c *Config) { c.ReprovideInterval = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			n, err := New(context.Background(), cfg, Handlers{})
			if !errors.Is(err, ErrConfig) {
				if n != nil {
					n.Close()
				}
				t.Fatalf("New: err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.DHTMode != DHTAuto || c.ConnHigh != DefaultConnHigh || !c.QUIC || c.NATPortMap {
		t.Errorf("DefaultConfig = %+v", c)
	}
	if len(c.Bootstrap) != 0 {
		t.Errorf("DefaultConfig has built-in bootstrap peers %v", c.Bootstrap)
	}
}

// TestPeersAndCloseTwice covers Peers and idempotent Close.
func TestPeersAndCloseTwice(t *testing.T) {
	nodes := newNetwork(t, 2, nil)
	waitFor(t, 10*time.Second, "peers to see each other", func() bool {
		return len(nodes[0].Peers()) == 1 && len(nodes[1].Peers()) == 1
	})
	p := nodes[1].Peers()[0]
	if p.ID != nodes[0].ID() || p.Direction != "outbound" || len(p.Addrs) == 0 {
		t.Errorf("node 1 Peers() = %+v", p)
	}
	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := nodes[1].Provide(testKey(t, "x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Provide after Close: %v, want ErrClosed", err)
	}
}

// addProviderCounter counts ADD_PROVIDER messages a node receives per key,
// through a DHT request hook: it observes (re)provides from the outside.
type addProviderCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *addProviderCounter) hook(_ context.Context, _ network.Stream, req *pb.Message) {
	if req.GetType() != pb.Message_ADD_PROVIDER {
		return
	}
	c.mu.Lock()
	c.counts[string(req.GetKey())]++
	c.mu.Unlock()
}

func (c *addProviderCounter) get(k cid.Cid) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[string(k.Hash())]
}

// TestWithdrawStopsReproviding runs a short reprovide cycle: both keys are
// reprovided, then after Withdraw(k1) a full cycle reprovides k2 but not k1.
func TestWithdrawStopsReproviding(t *testing.T) {
	const interval = 2 * time.Second
	counters := make([]*addProviderCounter, 3)
	nodes := make([]*Node, 3)
	for i := range nodes {
		counters[i] = &addProviderCounter{counts: map[string]int{}}
		cfg := testConfig(t)
		cfg.ReprovideInterval = interval
		cfg.dhtOpts = []dht.Option{dht.OnRequestHook(counters[i].hook)}
		if i > 0 {
			cfg.Bootstrap = []peer.AddrInfo{nodes[0].AddrInfo()}
		}
		nodes[i] = newTestNode(t, cfg, Handlers{})
	}
	a, watch := nodes[1], counters[2] // node 2 receives A's records
	k1, k2 := testKey(t, "withdrawn build"), testKey(t, "kept build")
	if err := a.Provide(k1, k2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "k1 and k2 reprovided at least once", func() bool {
		return watch.get(k1) >= 2 && watch.get(k2) >= 2
	})
	if err := a.Withdraw(k1); err != nil {
		t.Fatal(err)
	}
	st, err := a.ProvideStats(context.Background())
	if err != nil || st.ScheduledKeys != 1 || st.Keys != 1 {
		t.Fatalf("after Withdraw: %+v, %v; want 1 scheduled key", st, err)
	}
	// A reprovide of k1 may have been in flight: let one cycle of k2 pass,
	// then k1 must stay put for another full cycle of k2.
	base := watch.get(k2)
	waitFor(t, 5*interval, "a reprovide cycle after Withdraw", func() bool { return watch.get(k2) > base })
	k1Count, base := watch.get(k1), watch.get(k2)
	waitFor(t, 5*interval, "another reprovide cycle", func() bool { return watch.get(k2) > base })
	if got := watch.get(k1); got != k1Count {
		t.Fatalf("withdrawn key announced again: %d -> %d ADD_PROVIDER", k1Count, got)
	}
}

// TestNewFailsCleanly: a start-up failure after the host exists releases
// everything (TestMain's leak check covers the goroutines).
func TestNewFailsCleanly(t *testing.T) {
	cfg := testConfig(t)
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"} // QUIC is off
	n, err := New(context.Background(), cfg, Handlers{})
	if err == nil {
		n.Close()
		t.Fatal("New with only QUIC addresses and QUIC off succeeded")
	}
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/99999"}
	if n, err := New(context.Background(), cfg, Handlers{}); err == nil {
		n.Close()
		t.Fatal("New with an invalid port succeeded")
	}
}

// TestRegistryReuse: a closed node unregisters its collectors, so a
// restarted node can use the same registry; a registry in use is refused.
func TestRegistryReuse(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t)
	cfg.Registerer = reg
	first := newTestNode(t, cfg, Handlers{})
	if _, err := New(context.Background(), cfg, Handlers{}); err == nil {
		t.Fatal("second node on a registry in use was accepted")
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := newTestNode(t, cfg, Handlers{})
	if v := gatheredValue(t, reg, "gentoo_p2pd_peers"); v != 0 {
		t.Errorf("peers gauge of a lone node = %v", v)
	}
	_ = second
}

// TestAllTransportsAndNATFeatures starts two nodes with QUIC, AutoNAT,
// hole punching and the relay client on (loopback only, mDNS still off),
// connects them over QUIC alone, and closes them without leaks.
func TestAllTransportsAndNATFeatures(t *testing.T) {
	mk := func(boot ...peer.AddrInfo) *Node {
		cfg := testConfig(t, boot...)
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
		cfg.QUIC, cfg.AutoNAT, cfg.HolePunching, cfg.RelayClient = true, true, true, true
		return newTestNode(t, cfg, Handlers{Attestations: func(context.Context, cid.Cid) ([][]byte, error) {
			return [][]byte{[]byte("over quic")}, nil
		}})
	}
	a := mk()
	var quic []ma.Multiaddr
	for _, addr := range a.Host().Addrs() {
		if _, err := addr.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			quic = append(quic, addr)
		}
	}
	if len(quic) == 0 {
		t.Fatalf("no QUIC listen address among %v", a.Host().Addrs())
	}
	b := mk(peer.AddrInfo{ID: a.ID(), Addrs: quic})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := b.FetchAttestations(ctx, a.ID(), testKey(t, "k"))
	if err != nil || len(got) != 1 {
		t.Fatalf("attest over QUIC: %q, %v", got, err)
	}
	conns := b.Host().Network().ConnsToPeer(a.ID())
	if len(conns) == 0 || conns[0].ConnState().Transport != "quic-v1" {
		t.Fatalf("connection to A is not QUIC: %v", conns)
	}
	if r := b.Reachability(); r != "unknown" && r != "private" && r != "public" {
		t.Fatalf("Reachability() = %q", r)
	}
}

// TestTwoNodeProvide: the sweeping provider also works in the smallest
// network (one region covering the keyspace), and a key provided before
// the first peer appears is announced once it does.
func TestTwoNodeProvide(t *testing.T) {
	first := newTestNode(t, testConfig(t), Handlers{})
	early := testKey(t, "provided while alone")
	if err := first.Provide(early); err != nil {
		t.Fatal(err)
	}
	second := newTestNode(t, testConfig(t, first.AddrInfo()), Handlers{})
	waitFor(t, 20*time.Second, "second node to hold the early record", func() bool {
		recs, err := second.dht.ProviderStore().GetProviders(context.Background(), early.Hash())
		return err == nil && slices.ContainsFunc(recs, func(p peer.AddrInfo) bool { return p.ID == first.ID() })
	})
	late := testKey(t, "provided with a peer")
	if err := second.Provide(late); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "first node to find the second for the late key", func() bool {
		return findsProvider(first, late, second.ID())
	})
}

// TestFindProvidersNobody: an unknown key is an empty answer, not an
// error; a context that ends first is an error.
func TestFindProvidersNobody(t *testing.T) {
	nodes := newNetwork(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	provs, err := nodes[2].FindProviders(ctx, testKey(t, "nobody has this"), 1)
	if err != nil || len(provs) != 0 {
		t.Fatalf("FindProviders(unknown) = %v, %v; want empty, nil", provs, err)
	}
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := nodes[2].FindProviders(done, testKey(t, "nobody has this"), 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("FindProviders with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := nodes[2].FindProviders(ctx, cid.Undef, 1); !errors.Is(err, ErrBadKey) {
		t.Fatalf("FindProviders(undefined): %v, want ErrBadKey", err)
	}
}

// TestSecondNodeOnTakenPort: libp2p binds with SO_REUSEPORT, so without
// a check a second node on the same port would start and share it with
// the first; it must fail, naming the address, for TCP and for QUIC.
func TestSecondNodeOnTakenPort(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			first := testConfig(t)
			first.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
			if proto == "udp" {
				first.QUIC = true
				first.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
			}
			n := newTestNode(t, first, Handlers{})
			taken := n.Host().Addrs()[0].String()
			second := testConfig(t)
			second.QUIC = first.QUIC
			second.ListenAddrs = []string{taken}
			n2, err := New(t.Context(), second, Handlers{})
			if err == nil {
				n2.Close()
				t.Fatalf("a second node started on %s, already taken", taken)
			}
			var inUse *AddrInUseError
			if !errors.Is(err, ErrAddrInUse) || !errors.As(err, &inUse) || inUse.Addr != taken {
				t.Errorf("second node on %s: %v, want ErrAddrInUse naming it", taken, err)
			}
		})
	}
}
