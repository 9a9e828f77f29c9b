package p2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

var ErrGossipIgnore = wire.ErrGossipIgnore

var ErrNotJoined = wire.ErrNotJoined

// ErrMessageSize is returned by Publish for an empty or oversized message.
var ErrMessageSize = errors.New("p2p: gossip message size out of range")

type platformTopic struct {
	name  string
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	seek  *platformSeeker // nil unless FindPlatformPeers runs; set under Node.mu
}

// close is called once the topic is out of Node.topics.
func (t *platformTopic) close() {
	if t.seek != nil {
		t.seek.stop() // its event handler must go before the topic
	}
	t.sub.Cancel()
	_ = t.topic.Close()
}

// GossipSubOptions are the options the daemon starts GossipSub with: the
// library's default parameters (D = 6, a 1 s heartbeat, IDONTWANT for
// messages of 1 KiB and more), no peer scoring. The simulator measures
// GossipSub's traffic with the same options (docs/SCALE.md).
//
// Messages are unsigned and carry no origin or sequence number: each
// payload is a record that carries its own signature, or an announcement
// whose records are fetched and checked before it is forwarded, so a
// message signature proved nothing the daemon uses, and its ~116 bytes
// rode on every copy of every announcement (most of their cost: SCALE.md).
// A message is named by a digest of its content, so the same payload from
// two publishers is one message.
func GossipSubOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		// The origin sends to every subscribed peer it knows, not only to
		// its mesh: catalog messages are rare, and without it a message
		// published before the first heartbeat builds the mesh is lost.
		pubsub.WithFloodPublish(true),
		pubsub.WithMaxMessageSize(MaxBlobSize + 4096), // payload plus envelope
	}
}

// messageID names a message by the SHA-256 of its payload, cut to 20
// bytes (a collision would drop a message, not forge one).
func messageID(m *pb.Message) string {
	d := sha256.Sum256(m.Data)
	return string(d[:20])
}

// TopicName is the GossipSub topic carrying the catalog of platform.
func TopicName(platform string) string { return TopicPrefix + platform }

// JoinPlatform subscribes to the catalog topic of platform (an opaque short
// name chosen by the daemon, e.g. a digest of CHOST and flags) and installs
// Handlers.OnGossip as its validator, so only messages the daemon accepts
// are forwarded. Joining twice is a no-op.
func (n *Node) JoinPlatform(platform string) error {
	if err := checkPlatform(platform); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if _, ok := n.topics[platform]; ok {
		return nil
	}
	name := TopicName(platform)
	if err := n.ps.RegisterTopicValidator(name, n.gossipValidator(platform)); err != nil {
		return fmt.Errorf("p2p: register validator for %s: %w", name, err)
	}
	topic, err := n.ps.Join(name)
	if err != nil {
		_ = n.ps.UnregisterTopicValidator(name)
		return fmt.Errorf("p2p: join %s: %w", name, err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		_ = topic.Close()
		_ = n.ps.UnregisterTopicValidator(name)
		return fmt.Errorf("p2p: subscribe %s: %w", name, err)
	}
	n.topics[platform] = &platformTopic{name: name, topic: topic, sub: sub}
	// The validator already handed each message to the daemon; the
	// subscription only has to be drained so pubsub keeps delivering.
	n.wg.Go(func() {
		for {
			msg, err := sub.Next(n.ctx)
			if err != nil {
				return
			}
			if msg.ReceivedFrom != n.host.ID() {
				n.metrics.gossipDelivered.Inc()
			}
		}
	})
	return nil
}

// LeavePlatform unsubscribes from the catalog topic of platform.
func (n *Node) LeavePlatform(platform string) error {
	n.mu.Lock()
	t, ok := n.topics[platform]
	delete(n.topics, platform)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	t.close()
	if err := n.ps.UnregisterTopicValidator(t.name); err != nil {
		return fmt.Errorf("p2p: unregister validator for %s: %w", t.name, err)
	}
	return nil
}

// Publish broadcasts msg (an announcement or a self-signed record, at most
// MaxBlobSize bytes) on the topic of platform, which must be joined. The
// message is unsigned (GossipSubOptions); the local validator is skipped
// for our own messages.
func (n *Node) Publish(ctx context.Context, platform string, msg []byte) error {
	if len(msg) == 0 || len(msg) > MaxBlobSize {
		return fmt.Errorf("%w: %d bytes (want 1..%d)", ErrMessageSize, len(msg), MaxBlobSize)
	}
	n.mu.Lock()
	t, ok := n.topics[platform]
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotJoined, platform)
	}
	if err := t.topic.Publish(ctx, msg); err != nil {
		return fmt.Errorf("p2p: publish on %s: %w", t.name, err)
	}
	n.metrics.gossipPublished.Inc()
	return nil
}

// TopicPeers lists the peers known to be subscribed to platform's topic.
func (n *Node) TopicPeers(platform string) []peer.ID {
	n.mu.Lock()
	t, ok := n.topics[platform]
	n.mu.Unlock()
	if !ok {
		return nil
	}
	return t.topic.ListPeers()
}

func (n *Node) gossipValidator(platform string) pubsub.ValidatorEx {
	return func(ctx context.Context, relay peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		if msg.Local || relay == n.host.ID() {
			return pubsub.ValidationAccept // our own publication
		}
		origin := msg.GetFrom() // empty: messages carry no origin
		n.metrics.gossipReceived.Inc()
		if len(msg.Data) == 0 || len(msg.Data) > MaxBlobSize {
			n.metrics.gossipRejected.Inc()
			return pubsub.ValidationReject
		}
		h := n.handlers.Load()
		if h == nil {
			n.metrics.gossipIgnored.Inc()
			return pubsub.ValidationIgnore // not serving yet
		}
		if h.OnGossip == nil {
			return pubsub.ValidationAccept
		}
		err := h.OnGossip(origin, relay, platform, msg.Data)
		switch {
		case err == nil:
			return pubsub.ValidationAccept
		case errors.Is(err, ErrGossipIgnore):
			n.metrics.gossipIgnored.Inc()
			return pubsub.ValidationIgnore
		default:
			n.metrics.gossipRejected.Inc()
			n.log.Debug("gossip message rejected", "platform", platform, "origin", origin, "relay", relay, "err", err)
			return pubsub.ValidationReject
		}
	}
}
