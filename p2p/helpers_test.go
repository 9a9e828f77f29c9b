package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakIgnores()...)
}

// leakIgnores lists process-wide goroutines libp2p dependencies start once
// and never stop; they are not owned by any Node.
func leakIgnores() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/host/resource-manager.(*resourceManager).background"),
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is a loopback-only, TCP-only, DHT-server node: mDNS, QUIC and
// NAT traversal are off so tests touch nothing beyond 127.0.0.1.
func testConfig(t testing.TB, boot ...peer.AddrInfo) Config {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		PrivKey:           priv,
		ListenAddrs:       []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap:         boot,
		ConnLow:           15,
		ConnHigh:          20,
		DHTMode:           DHTServer,
		ReprovideInterval: time.Hour,
		Logger:            testLogger(t),
	}
}

func newTestNode(t testing.TB, cfg Config, h Handlers) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := New(ctx, cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close %s: %v", n.ID(), err)
		}
	})
	return n
}

// newNetwork starts count nodes; every node after the first bootstraps
// from node 0 (a star that the DHT then fills in).
func newNetwork(t testing.TB, count int, h func(i int) Handlers) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, count)
	for i := range count {
		var boot []peer.AddrInfo
		if i > 0 {
			boot = []peer.AddrInfo{nodes[0].AddrInfo()}
		}
		var hs Handlers
		if h != nil {
			hs = h(i)
		}
		nodes = append(nodes, newTestNode(t, testConfig(t, boot...), hs))
	}
	return nodes
}

// newNetworkWith is newNetwork with each node's config edited by edit.
func newNetworkWith(t testing.TB, count int, edit func(*Config)) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, count)
	for i := range count {
		var boot []peer.AddrInfo
		if i > 0 {
			boot = []peer.AddrInfo{nodes[0].AddrInfo()}
		}
		cfg := testConfig(t, boot...)
		edit(&cfg)
		nodes = append(nodes, newTestNode(t, cfg, Handlers{}))
	}
	return nodes
}

func testKey(t testing.TB, s string) cid.Cid {
	t.Helper()
	sum, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, sum)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findsProvider reports whether from finds want among key's providers.
func findsProvider(from *Node, key cid.Cid, want peer.ID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	provs, err := from.FindProviders(ctx, key, 20)
	if err != nil {
		return false
	}
	for _, p := range provs {
		if p.ID == want {
			return true
		}
	}
	return false
}

// pairGater forbids connections between listed pairs of peers, so a test
// can keep a chain topology that DHT discovery would otherwise complete.
type pairGater struct {
	mu     sync.Mutex
	banned map[peer.ID]bool
}

func (g *pairGater) allowed(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.banned[p]
}

func (g *pairGater) InterceptPeerDial(p peer.ID) bool                 { return g.allowed(p) }
func (g *pairGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }
func (g *pairGater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *pairGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *pairGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// counterValue reads one counter or gauge.
func counterValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", m.Desc())
	return 0
}

// gatheredValue returns the value of the single series named name.
func gatheredValue(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.Metric) == 1 {
			if gauge := f.Metric[0].GetGauge(); gauge != nil {
				return gauge.GetValue()
			}
			return f.Metric[0].GetCounter().GetValue()
		}
	}
	var names []string
	for _, f := range fams {
		names = append(names, fmt.Sprintf("%s(%d)", f.GetName(), len(f.Metric)))
	}
	t.Fatalf("metric %s not gathered; have %v", name, names)
	return 0
}

func blobs(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", prefix, i)
	}
	return out
}
