package p2p

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// waitConnected blocks until n is connected to p, following n's
// connectedness events.
func waitConnected(t *testing.T, n *Node, p peer.ID, timeout time.Duration) {
	t.Helper()
	sub, err := n.Host().EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if n.Host().Network().Connectedness(p) == network.Connected {
		return
	}
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-sub.Out():
			e := ev.(event.EvtPeerConnectednessChanged)
			if e.Peer == p && e.Connectedness == network.Connected {
				return
			}
		case <-deadline:
			t.Fatalf("%s not connected to %s after %s", n.ID(), p, timeout)
		}
	}
}

func TestConnect(t *testing.T) {
	a := newTestNode(t, testConfig(t), Handlers{})
	b := newTestNode(t, testConfig(t), Handlers{})
	ctx := context.Background()
	if err := a.Connect(ctx, peer.AddrInfo{Addrs: b.Host().Addrs()}); !errors.Is(err, ErrBadAddr) {
		t.Errorf("Connect without an ID: %v, want ErrBadAddr", err)
	}
	if err := a.Connect(ctx, a.AddrInfo()); !errors.Is(err, ErrBadAddr) {
		t.Errorf("Connect to self: %v, want ErrBadAddr", err)
	}
	c := testConfig(t)
	gone := newTestNode(t, c, Handlers{})
	goneInfo := gone.AddrInfo()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, goneInfo); err == nil || errors.Is(err, ErrBadAddr) {
		t.Errorf("Connect to a closed node: %v, want a dial error", err)
	}
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if a.Host().Network().Connectedness(b.ID()) != network.Connected {
		t.Fatal("not connected after Connect")
	}
	known := a.KnownPeers()
	if len(known) == 0 || known[0].ID != b.ID() {
		t.Fatalf("known peers %v, want %s first", known, b.ID())
	}
}

// TestKnownPeersReloaded: a node restarted with its known-peers file dials
// the peers of its previous run, with no bootstrap peer configured.
func TestKnownPeersReloaded(t *testing.T) {
	b := newTestNode(t, testConfig(t), Handlers{})
	file := filepath.Join(t.TempDir(), "known-peers.json")
	cfg := testConfig(t)
	cfg.KnownPeersFile = file
	a, err := New(context.Background(), cfg, Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(context.Background(), b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no known-peers file after Close: %v", err)
	}
	restarted := newTestNode(t, cfg, Handlers{})
	// New waits for the start-up dials.
	if restarted.Host().Network().Connectedness(b.ID()) != network.Connected {
		t.Fatalf("restarted node not connected to its known peer; known: %v", restarted.KnownPeers())
	}
}

// TestKnownPeersCapped keeps only the most recent peers.
func TestKnownPeersCapped(t *testing.T) {
	k := newKnownPeers(filepath.Join(t.TempDir(), "k.json"), 2)
	nodes := newNetwork(t, 3, nil)
	for _, n := range nodes {
		k.touch(n.ID(), n.Host().Addrs())
	}
	got := k.list(nil)
	if len(got) != 2 || got[0].ID != nodes[2].ID() || got[1].ID != nodes[1].ID() {
		t.Fatalf("list %v, want the last two, most recent first", got)
	}
	if err := k.save(nil); err != nil {
		t.Fatal(err)
	}
	k2 := newKnownPeers(k.path, 2)
	if err := k2.load(); err != nil {
		t.Fatal(err)
	}
	if got2 := k2.list(nil); len(got2) != 2 || got2[0].ID != got[0].ID || got2[1].ID != got[1].ID {
		t.Fatalf("reloaded %v, want %v", got2, got)
	}
}

// TestReconnectAfterPeerRestart: a node whose only peer restarts (same key,
// same address) gets it back by itself, with no call from outside: the
// peer either its bootstrap peer or one added at runtime (peers add).
func TestReconnectAfterPeerRestart(t *testing.T) {
	for _, how := range []string{"bootstrap", "connect"} {
		t.Run(how, func(t *testing.T) {
			bcfg := testConfig(t)
			b, err := New(context.Background(), bcfg, Handlers{})
			if err != nil {
				t.Fatal(err)
			}
			var acfg Config
			if how == "bootstrap" {
				acfg = testConfig(t, b.AddrInfo())
			} else {
				acfg = testConfig(t)
			}
			acfg.redialMin = 50 * time.Millisecond
			acfg.redialMax = 200 * time.Millisecond
			logs := newLockedBuffer()
			acfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			a := newTestNode(t, acfg, Handlers{})
			if how == "connect" {
				if err := a.Connect(context.Background(), b.AddrInfo()); err != nil {
					t.Fatal(err)
				}
			}
			waitConnected(t, a, b.ID(), 10*time.Second)
			addr := b.Host().Addrs()[0]
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			// While the peer is down the node has nobody and keeps
			// redialling, saying so: both lines come before the restart,
			// whatever else (the DHT) might have dialled afterwards.
			logs.waitFor(t, "no peers left", 20*time.Second)
			logs.waitFor(t, "no peers: redialling 1 known peers", 20*time.Second)
			bcfg.ListenAddrs = []string{addr.String()}
			b2 := newTestNode(t, bcfg, Handlers{})
			if b2.ID() != b.ID() {
				t.Fatal("restarted peer has another ID")
			}
			waitConnected(t, a, b2.ID(), 20*time.Second)
			logs.waitFor(t, "peers back", 20*time.Second)
		})
	}
}

// lockedBuffer collects log lines and tells waiters about each one.
type lockedBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{wrote: make(chan struct{}, 1)} }

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	defer func() {
		select {
		case l.wrote <- struct{}{}:
		default:
		}
	}()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor blocks until the log holds want.
func (l *lockedBuffer) waitFor(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(l.String(), want) {
		select {
		case <-l.wrote:
		case <-deadline:
			t.Fatalf("log lacks %q after %s:\n%s", want, timeout, l.String())
		}
	}
}

// A peer that speaks our protocols outranks the public DHT's nodes (kad-dht
// tags its routing table at 5) when the connection manager trims,
// however it connected.
func TestOurPeersOutrankPublicDHTNodes(t *testing.T) {
	nodes := newNetwork(t, 2, nil)
	a, b := nodes[0], nodes[1]
	waitFor(t, 10*time.Second, "b tagged as ours at a", func() bool {
		info := a.host.ConnManager().GetTagInfo(b.ID())
		return info != nil && info.Tags[ourPeerTag] > 5
	})
}

// TestUnidentifiedPeerRedialled: when identify fails on the only
// connection to a bootstrap peer, the node is connected yet sees nobody
// speaking our protocols, and redialling a connected peer is a no-op. It
// drops such a connection, so a later dial identifies afresh.
func TestUnidentifiedPeerRedialled(t *testing.T) {
	b := newTestNode(t, testConfig(t), Handlers{})
	b.Host().RemoveStreamHandler(identify.ID) // every identify of b fails
	acfg := testConfig(t, b.AddrInfo())
	acfg.redialMin = 50 * time.Millisecond
	acfg.redialMax = 200 * time.Millisecond
	logs := newLockedBuffer()
	acfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	a := newTestNode(t, acfg, Handlers{})
	logs.waitFor(t, "peer connected but not identified", 20*time.Second)
	logs.waitFor(t, "no peers: redialling 1 known peers", 20*time.Second)
	if a.peerCount() != 0 {
		t.Fatalf("a counts %d peers while b answers no identify", a.peerCount())
	}
	ids, err := identify.NewIDService(b.Host())
	if err != nil {
		t.Fatal(err)
	}
	ids.Start() // b answers identify again
	t.Cleanup(func() { _ = ids.Close() })
	logs.waitFor(t, "peers back", 20*time.Second)
	if !a.isOurs(b.ID()) {
		t.Fatal("b not identified as ours after the redial")
	}
}
