package p2p

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// gossipLog records what one node's OnGossip saw.
type gossipLog struct {
	mu       sync.Mutex
	accepted []string
	rejected []string
}

func (g *gossipLog) has(list *[]string, msg string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range *list {
		if m == msg {
			return true
		}
	}
	return false
}

// hasPrefix reports whether g accepted a message starting with prefix.
func (g *gossipLog) hasPrefix(prefix string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.accepted {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// publishUntil publishes prefix-1, prefix-2, … from n until cond holds,
// giving each message a second to arrive before the next. Gossip drops
// what a busy peer cannot take (its queues hold 32 messages), so a test
// that needs a message delivered sends another now and then; sending one
// every poll floods those queues under load and loses the very messages
// the test waits for.
func publishUntil(t *testing.T, ctx context.Context, n *Node, platform, prefix string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; ; i++ {
		if err := n.Publish(ctx, platform, fmt.Appendf(nil, "%s-%d", prefix, i)); err != nil {
			t.Fatal(err)
		}
		next := time.Now().Add(time.Second)
		for time.Now().Before(next) {
			if cond() {
				return
			}
			time.Sleep(20 * time.Millisecond) // poll
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 20s publishing %s-N until it arrived (%d sent)", prefix, i)
		}
	}
}

// handler rejects messages starting with "bad" when reject is set.
func (g *gossipLog) handler(reject bool) func(peer.ID, peer.ID, string, []byte) error {
	return func(from, _ peer.ID, platform string, msg []byte) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if reject && strings.HasPrefix(string(msg), "bad") {
			g.rejected = append(g.rejected, string(msg))
			return errors.New("signature does not verify")
		}
		g.accepted = append(g.accepted, string(msg))
		return nil
	}
}

// TestGossipRejectedNotForwarded builds A - B - {C, D}: C and D may not
// connect to A, so B is their only path. A publishes a message B's
// validator rejects and then a good one: every subscriber gets the good
// one, C and D never the bad one because B dropped it.
func TestGossipRejectedNotForwarded(t *testing.T) {
	const platform = "x86_64-pc-linux-gnu/abc123"
	logs := make([]*gossipLog, 4)
	gaters := make([]*pairGater, 4)
	nodes := make([]*Node, 4)
	bootFrom := []int{-1, 0, 1, 1} // A alone, B from A, C and D from B
	for i := range nodes {
		logs[i] = &gossipLog{}
		gaters[i] = &pairGater{banned: map[peer.ID]bool{}}
		cfg := testConfig(t)
		cfg.connGater = gaters[i]
		if bootFrom[i] >= 0 {
			cfg.Bootstrap = []peer.AddrInfo{nodes[bootFrom[i]].AddrInfo()}
		}
		if i >= 2 {
			gaters[i].banned[nodes[0].ID()] = true // C and D never talk to A
		}
		nodes[i] = newTestNode(t, cfg, Handlers{OnGossip: logs[i].handler(i == 1)})
		if i >= 2 {
			gaters[0].mu.Lock()
			gaters[0].banned[nodes[i].ID()] = true // nor A to them
			gaters[0].mu.Unlock()
		}
	}
	a, b, c, d := nodes[0], nodes[1], nodes[2], nodes[3]
	for _, n := range nodes {
		if err := n.JoinPlatform(platform); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "topic meshes", func() bool {
		return len(a.TopicPeers(platform)) == 1 && len(b.TopicPeers(platform)) == 3 &&
			len(c.TopicPeers(platform)) >= 1 && len(d.TopicPeers(platform)) >= 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// B relays only to its mesh, which its heartbeat builds within a
	// second or so of joining: publish warm-up messages until C and D see
	// one, so the assertions below are about validation, not mesh timing.
	publishUntil(t, ctx, a, platform, "warmup", func() bool {
		return logs[2].hasPrefix("warmup") && logs[3].hasPrefix("warmup")
	})
	if err := a.Publish(ctx, platform, []byte("bad-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B to reject bad-1", func() bool { return logs[1].has(&logs[1].rejected, "bad-1") })
	// Good messages after the rejected one reach everyone (a busy peer
	// may drop one from a full queue: another follows).
	publishUntil(t, ctx, a, platform, "good", func() bool {
		return logs[1].hasPrefix("good") && logs[2].hasPrefix("good") && logs[3].hasPrefix("good")
	})
	if logs[2].has(&logs[2].accepted, "bad-1") || logs[3].has(&logs[3].accepted, "bad-1") {
		t.Fatal("a message B rejected reached C or D")
	}
	for _, n := range []*Node{c, d} {
		if n.Host().Network().Connectedness(a.ID()) == network.Connected {
			t.Fatal("gater failed: A is connected to C or D")
		}
	}
	if logs[0].hasPrefix("good") {
		t.Fatal("OnGossip was called for the node's own publication")
	}
	if v := counterValue(t, b.metrics.gossipRejected); v != 1 {
		t.Errorf("B gossip_rejected_total = %v, want 1", v)
	}
}

func TestPublishErrors(t *testing.T) {
	n := newTestNode(t, testConfig(t), Handlers{})
	ctx := context.Background()
	if err := n.Publish(ctx, "amd64", []byte("x")); !errors.Is(err, ErrNotJoined) {
		t.Errorf("Publish before join: %v, want ErrNotJoined", err)
	}
	if err := n.JoinPlatform("amd64"); err != nil {
		t.Fatal(err)
	}
	if err := n.JoinPlatform("amd64"); err != nil {
		t.Fatalf("second JoinPlatform: %v", err)
	}
	if err := n.Publish(ctx, "amd64", make([]byte, MaxBlobSize+1)); !errors.Is(err, ErrMessageSize) {
		t.Errorf("oversized Publish: %v, want ErrMessageSize", err)
	}
	if err := n.Publish(ctx, "amd64", nil); !errors.Is(err, ErrMessageSize) {
		t.Errorf("empty Publish: %v, want ErrMessageSize", err)
	}
	for _, bad := range []string{"", strings.Repeat("p", MaxPlatformLen+1), "a\nb", "\xff"} {
		if err := n.JoinPlatform(bad); !errors.Is(err, ErrBadPlatform) {
			t.Errorf("JoinPlatform(%q): %v, want ErrBadPlatform", bad, err)
		}
	}
	if err := n.LeavePlatform("amd64"); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(ctx, "amd64", []byte("x")); !errors.Is(err, ErrNotJoined) {
		t.Errorf("Publish after leave: %v, want ErrNotJoined", err)
	}
}

// TestGossipMaxSizeMessage: a message of exactly MaxBlobSize fits the
// pubsub envelope limit and arrives intact.
func TestGossipMaxSizeMessage(t *testing.T) {
	got := make(chan []byte, 1)
	nodes := newNetwork(t, 2, func(i int) Handlers {
		return Handlers{OnGossip: func(_, _ peer.ID, _ string, msg []byte) error {
			select {
			case got <- msg:
			default:
			}
			return nil
		}}
	})
	for _, n := range nodes {
		if err := n.JoinPlatform("amd64"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "topic peers", func() bool { return len(nodes[0].TopicPeers("amd64")) == 1 })
	msg := make([]byte, MaxBlobSize)
	for i := range msg {
		msg[i] = byte(i)
	}
	if err := nodes[0].Publish(context.Background(), "amd64", msg); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m) != string(msg) {
			t.Fatal("max-size message corrupted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("max-size message not delivered")
	}
}
