package sim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// GossipVariant is a change to the daemon's GossipSub options that the
// measurement can try; GossipDaemon is the daemon's own.
type GossipVariant string

const (
	GossipDaemon GossipVariant = "daemon"
	// GossipNoIDontWant raises the IDONTWANT threshold above any message,
	// as GossipSub v1.1 peers behave.
	GossipNoIDontWant GossipVariant = "no-idontwant"
	// GossipNoFlood publishes to the mesh only, not to every topic peer.
	GossipNoFlood GossipVariant = "no-flood"
	// GossipD4 shrinks the mesh: D = 4 (Dlo 3, Dhi 8, Dout 1) instead of 6
	// (5, 12, 2).
	GossipD4 GossipVariant = "d4"
	// GossipSigned signs every message with its origin's key and names it
	// by origin and sequence number (StrictSign), as daemons did before
	// topic version 2.
	GossipSigned GossipVariant = "signed"
)

// GossipVariants lists the variants MeasureGossipSub knows.
var GossipVariants = []GossipVariant{GossipDaemon, GossipNoIDontWant, GossipNoFlood, GossipD4, GossipSigned}

// GossipOptions configures MeasureGossipSub.
type GossipOptions struct {
	Peers    int // hosts, all subscribed to one platform topic
	Messages int // attestations published, each by a random peer
	Seed     uint64
	Variant  GossipVariant // "" is GossipDaemon
	// Paced publishes one message per heartbeat (attestations are rare:
	// each one is gossiped on its own), lets the gossip about the last one
	// end (mcache history: 5 heartbeats), then measures Quiet with no
	// message at all. Unpaced publishes each message once the previous one
	// reached every peer, and stops when the last one has: a fast check of
	// behaviour, not a figure of the control traffic.
	Paced bool
	Quiet time.Duration
	// TopicShare is the share of a peer's connections that are on its
	// platform's topic (0 means 1: every connection). Connections are
	// random with respect to platform, so a platform with share s of the
	// network gives its peers about 48·s topic peers each.
	TopicShare float64
	// Announce gossips each attestation as the daemon does: an
	// announcement of its id (votes.Announcement), whose receiver fetches
	// the record from the peer that relayed it, over a stream framed as
	// catalog/3's records request, before GossipSub forwards the message.
	// Without it, the whole attestation is gossiped (the daemon before
	// announcements).
	Announce bool
	Log      io.Writer
}

// GossipResult is what MeasureGossipSub measured. Bytes are what the peers
// read from their GossipSub streams (length prefixes, RPC envelopes,
// messages, control), counted on the stream; transport framing (yamux
// and TLS, ~35 bytes per frame on TCP) is not included.
type GossipResult struct {
	Peers    int           `json:"peers"`
	Messages int           `json:"messages"`
	Variant  GossipVariant `json:"variant"`
	// TopicShare is GossipOptions.TopicShare (1: all connections on topic).
	TopicShare float64 `json:"topic_share"`
	// MessageBytes is the published attestation blob's size: what memnet
	// counts once per subscriber.
	MessageBytes int `json:"message_bytes"`
	// Announce is GossipOptions.Announce; AnnouncementBytes the gossiped
	// announcement's size then, and FetchBytes what a peer read per
	// message on the streams that fetch records (the record, the request
	// it served, the framing and the protocol negotiation). Amplification
	// counts them with GossipSub's bytes, over MessageBytes.
	Announce          bool    `json:"announce"`
	AnnouncementBytes int     `json:"announcement_bytes,omitempty"`
	FetchBytes        float64 `json:"fetch_bytes,omitempty"`
	// Connections per peer (min, mean, max) and the mean mesh size at
	// the end.
	ConnMin      int     `json:"conn_min"`
	ConnMean     float64 `json:"conn_mean"`
	ConnMax      int     `json:"conn_max"`
	MeshMean     float64 `json:"mesh_mean"`
	FormedAfterS float64 `json:"mesh_formed_after_s"`
	// Delivered counts the messages peers received and validated, of
	// Deliveries (every message at every peer but its publisher).
	Delivered    int  `json:"delivered"`
	Deliveries   int  `json:"deliveries"`
	DeliveredAll bool `json:"delivered_all"`
	// Amplification is the bytes received per receiving peer and
	// published message over MessageBytes: the factor on memnet's gossip
	// bytes. AmplificationP50 and Max are across peers.
	Amplification    float64 `json:"amplification"`
	AmplificationP50 float64 `json:"amplification_p50"`
	AmplificationMax float64 `json:"amplification_max"`
	// CopiesPerMessage is the full copies of a message a peer received
	// (the first and its duplicates, IWANT answers included).
	CopiesPerMessage float64 `json:"copies_per_message"`
	// Per receiving peer and message, in bytes: the copies, IHAVE, IWANT,
	// IDONTWANT, GRAFT and PRUNE, and the rest (length prefixes, RPC and
	// control envelopes, subscriptions).
	PayloadBytes    float64 `json:"payload_bytes"`
	IHaveBytes      float64 `json:"ihave_bytes"`
	IWantBytes      float64 `json:"iwant_bytes"`
	IDontWantBytes  float64 `json:"idontwant_bytes"`
	GraftPruneBytes float64 `json:"graft_prune_bytes"`
	OtherBytes      float64 `json:"other_bytes"`
	// RPCsPerMessage is the RPCs a peer received per message: on TCP each
	// costs a yamux frame header (12 bytes) and a TLS record (22 bytes)
	// that the figures above leave out.
	RPCsPerMessage float64 `json:"rpcs_per_message"`
	// WireMatchesRPCs says whether the bytes counted on the streams equal
	// the sum of the received RPCs' encoded sizes (the breakdown above).
	WireMatchesRPCs bool `json:"wire_matches_rpcs"`
	// QuietS and QuietBytesPerPeerHour: the window with no message and
	// the bytes a peer received in it, per hour (heartbeat traffic).
	QuietS                float64 `json:"quiet_s"`
	QuietBytesPerPeerHour float64 `json:"quiet_bytes_per_peer_hour"`
	WallS                 float64 `json:"wall_s"`
}

// gossipTopic is the one platform topic all peers join: the topic of a
// real platform name (CHOST and a digest of the flags, 36 bytes for
// x86_64), since every copy of every message carries it.
func gossipTopic(pop *Population) string { return p2p.TopicName(pop.Platforms[0].ID) }

// MeasureGossipSub runs o.Peers real libp2p hosts on mocknet, links with
// the population model's latencies, connected at random as the daemon's
// connection manager keeps them (32–64 connections each), each running
// go-libp2p-pubsub's GossipSub with the daemon's options
// (p2p.GossipSubOptions, changed by o.Variant), and publishes o.Messages
// real signed attestations on one topic from random peers, counting what
// every peer reads from its GossipSub streams.
func MeasureGossipSub(ctx context.Context, o GossipOptions) (*GossipResult, error) {
	start := time.Now()
	if o.Variant == "" {
		o.Variant = GossipDaemon
	}
	opts, params, err := gossipOptions(o.Variant)
	if err != nil {
		return nil, err
	}
	if o.Peers < 2 || o.Messages < 1 {
		return nil, fmt.Errorf("sim: gossipsub needs at least 2 peers and 1 message, got %d and %d", o.Peers, o.Messages)
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			_, _ = fmt.Fprintf(o.Log, "gossipsub: "+format+"\n", a...)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := o.Peers
	rng := rand.New(rand.NewPCG(o.Seed, 11))
	var keySeed [32]byte
	binary.LittleEndian.PutUint64(keySeed[:], o.Seed)
	keyRand := rand.NewChaCha8(keySeed)
	pop, err := NewPopulation(DefaultModel(max(n, 100)), rng.Uint64())
	if err != nil {
		return nil, err
	}
	topic := gossipTopic(pop)
	mn := mocknet.New()
	defer func() { _ = mn.Close() }()
	meters := make([]*gossipMeter, n)
	hosts := make([]host.Host, n)
	topics := make([]*pubsub.Topic, n)
	for i := range n {
		// Ed25519, as the daemon's node key: it signs the attestations too.
		k, _, err := crypto.GenerateEd25519Key(keyRand)
		if err != nil {
			return nil, err
		}
		h, err := mn.AddPeer(k, ma.StringCast(fmt.Sprintf("/ip4/10.0.%d.%d/tcp/4001", i/250, i%250+1)))
		if err != nil {
			return nil, err
		}
		m := &gossipMeter{self: h.ID(), mesh: map[peer.ID]bool{}}
		meters[i], hosts[i] = m, h
		ps, err := pubsub.NewGossipSub(ctx, countingHost{Host: h, in: &m.wire},
			append(opts, pubsub.WithRawTracer(m))...)
		if err != nil {
			return nil, fmt.Errorf("sim: start gossipsub: %w", err)
		}
		// An honest network: every attestation passes the daemon's checks.
		accept := func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult {
			return pubsub.ValidationAccept
		}
		if o.Announce {
			h.SetStreamHandler(p2p.CatalogIDsProtocol, m.serveRecord)
			accept = func(ctx context.Context, relay peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
				return m.fetchAnnounced(ctx, h, relay, msg)
			}
		}
		if err := ps.RegisterTopicValidator(topic, accept); err != nil {
			return nil, err
		}
		t, err := ps.Join(topic)
		if err != nil {
			return nil, err
		}
		sub, err := t.Subscribe()
		if err != nil {
			return nil, err
		}
		topics[i] = t
		go func() { // drained, as the daemon drains it
			for {
				if _, err := sub.Next(ctx); err != nil {
					return
				}
			}
		}()
	}
	model := DefaultModel(n)
	share := o.TopicShare
	if share <= 0 || share > 1 {
		share = 1
	}
	conns := config.Defaults().Network
	lo := max(1, int(math.Round(float64(conns.ConnLow)*share)))
	hi := max(lo, int(math.Round(float64(conns.ConnHigh)*share)))
	adj := connGraph(n, lo, hi, rng)
	res := &GossipResult{Peers: n, Messages: o.Messages, Variant: o.Variant, TopicShare: share, ConnMin: n, Announce: o.Announce}
	for i, nb := range adj {
		res.ConnMin, res.ConnMax = min(res.ConnMin, len(nb)), max(res.ConnMax, len(nb))
		res.ConnMean += float64(len(nb)) / float64(n)
		for _, j := range nb {
			if j < i {
				continue
			}
			l, err := mn.LinkPeers(hosts[i].ID(), hosts[j].ID())
			if err != nil {
				return nil, err
			}
			l.SetOptions(mocknet.LinkOptions{Latency: model.oneWay(rng)})
		}
	}
	formStart := time.Now()
	err = parallel(ctx, n, 8, func(i int) error {
		for _, j := range adj[i] {
			if j > i {
				if _, err := mn.ConnectPeers(hosts[i].ID(), hosts[j].ID()); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return nil, err
	}
	// The mesh has formed when every peer sees all its connections in the
	// topic and has grafted at least Dlo of them (or all it has).
	var waiting string
	formed, stopForming := context.WithTimeout(ctx, 2*time.Minute)
	err = poll(formed, func() bool {
		for i, m := range meters {
			if known := len(topics[i].ListPeers()); known < len(adj[i]) || m.meshSize() < min(params.Dlo, len(adj[i])) {
				waiting = fmt.Sprintf("peer %d knows %d of its %d connections in the topic, has %d in its mesh", i, known, len(adj[i]), m.meshSize())
				return false
			}
		}
		return true
	})
	stopForming()
	if err != nil {
		return nil, fmt.Errorf("sim: the GossipSub mesh did not form: %s: %w", waiting, err)
	}
	res.FormedAfterS = time.Since(formStart).Seconds()
	logf("%d peers, %.0f connections each, mesh formed after %.1f s", n, res.ConnMean, res.FormedAfterS)

	blobs, publishers, err := gossipMessages(hosts, pop, o.Messages, rng)
	if err != nil {
		return nil, err
	}
	res.MessageBytes = len(blobs[0])
	if o.Announce {
		for k, blob := range blobs {
			record := blob[1:] // the attestation, without the gossip tag
			id := sha256.Sum256(record)
			meters[publishers[k]].keep(id, record)
			blobs[k] = votes.Announcement(wire.CatalogID{Kind: wire.RecordAttestation, ID: id})
		}
		res.MessageBytes--
		res.AnnouncementBytes = len(blobs[0])
	}
	before := snapshot(meters)
	tick := time.NewTicker(params.HeartbeatInterval)
	defer tick.Stop()
	heartbeats := func(k int) error {
		for range k {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	published := make([]int, n)
	for k, blob := range blobs {
		if o.Paced && k > 0 {
			if err := heartbeats(1); err != nil {
				return nil, err
			}
		}
		p := publishers[k]
		if err := topics[p].Publish(ctx, blob); err != nil {
			return nil, fmt.Errorf("sim: publish: %w", err)
		}
		published[p]++
		want := (k + 1) * (n - 1)
		if err := poll(ctx, func() bool { return delivered(meters) >= want }); err != nil {
			return nil, err
		}
	}
	res.Deliveries = o.Messages * (n - 1)
	if o.Paced {
		// IHAVE gossip about a message goes on for HistoryGossip heartbeats,
		// and the mcache keeps it for HistoryLength.
		if err := heartbeats(params.HistoryLength + 1); err != nil {
			return nil, err
		}
	}
	// What was read is processed: the event loop has seen every RPC.
	settle, stop := context.WithTimeout(ctx, 10*time.Second)
	res.WireMatchesRPCs = poll(settle, func() bool {
		for _, m := range meters {
			if m.wire.Load() != m.counts().total {
				return false
			}
		}
		return true
	}) == nil
	stop()
	after := snapshot(meters)
	res.Delivered = delivered(meters)
	res.DeliveredAll = res.Delivered == res.Deliveries
	var sum gossipCounts
	var factors []float64 // of the peers that received a message
	for i := range n {
		d := after[i].sub(before[i])
		sum = sum.add(d)
		if got := o.Messages - published[i]; got > 0 {
			factors = append(factors, float64(d.wire+d.fetch)/float64(got*res.MessageBytes))
		}
		res.MeshMean += float64(meters[i].meshSize()) / float64(n)
	}
	slices.Sort(factors)
	per := float64(res.Deliveries)
	res.Amplification = float64(sum.wire+sum.fetch) / per / float64(res.MessageBytes)
	res.FetchBytes = float64(sum.fetch) / per
	res.AmplificationP50, res.AmplificationMax = factors[len(factors)/2], factors[len(factors)-1]
	res.CopiesPerMessage = float64(sum.copies) / per
	res.RPCsPerMessage = float64(sum.rpcs) / per
	res.PayloadBytes = float64(sum.payload) / per
	res.IHaveBytes = float64(sum.ihave) / per
	res.IWantBytes = float64(sum.iwant) / per
	res.IDontWantBytes = float64(sum.idontwant) / per
	res.GraftPruneBytes = float64(sum.graftPrune) / per
	res.OtherBytes = float64(sum.total-sum.payload-sum.ihave-sum.iwant-sum.idontwant-sum.graftPrune) / per
	logf("%d messages of %d bytes: amplification %.2f, %.2f copies per peer", o.Messages, res.MessageBytes, res.Amplification, res.CopiesPerMessage)

	if o.Paced && o.Quiet > 0 {
		q0, t0 := snapshot(meters), time.Now()
		select {
		case <-time.After(o.Quiet): // the measurement window itself
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		q1 := snapshot(meters)
		res.QuietS = time.Since(t0).Seconds()
		var quiet int64
		for i := range n {
			quiet += q1[i].wire - q0[i].wire
		}
		res.QuietBytesPerPeerHour = float64(quiet) / float64(n) / res.QuietS * 3600
		logf("quiet %.0f s: %.0f bytes per peer and hour", res.QuietS, res.QuietBytesPerPeerHour)
	}
	res.WallS = time.Since(start).Seconds()
	return res, nil
}

// gossipOptions are the daemon's GossipSub options changed by v, and the
// parameters they leave in force.
func gossipOptions(v GossipVariant) ([]pubsub.Option, pubsub.GossipSubParams, error) {
	opts := p2p.GossipSubOptions()
	params := pubsub.DefaultGossipSubParams()
	switch v {
	case GossipDaemon:
		return opts, params, nil
	case GossipNoIDontWant:
		params.IDontWantMessageThreshold = math.MaxInt
	case GossipNoFlood:
		return append(opts, pubsub.WithFloodPublish(false)), params, nil
	case GossipSigned:
		return append(opts, pubsub.WithMessageSignaturePolicy(pubsub.StrictSign), pubsub.WithMessageAuthor(""),
			pubsub.WithMessageIdFn(pubsub.DefaultMsgIdFn)), params, nil
	case GossipD4:
		params.D, params.Dlo, params.Dhi, params.Dout = 4, 3, 8, 1 // pubsub wants Dout < D/2
	default:
		return nil, params, fmt.Errorf("sim: unknown gossipsub variant %q (want one of %v)", v, GossipVariants)
	}
	return append(opts, pubsub.WithGossipSubParams(params)), params, nil
}

// connGraph connects n peers at random as the daemon's connection manager
// leaves them: each wants between the low and high marks (drawn per peer)
// and none exceeds the high mark.
func connGraph(n, lo, hi int, rng *rand.Rand) [][]int {
	lo, hi = min(lo, n-1), min(hi, n-1)
	adj := make([][]int, n)
	linked := make([]map[int]bool, n)
	for i := range linked {
		linked[i] = map[int]bool{}
	}
	for _, i := range rng.Perm(n) {
		want := lo + rng.IntN(hi-lo+1)
		for len(adj[i]) < want {
			var free []int
			for j := range n {
				if j != i && !linked[i][j] && len(adj[j]) < hi {
					free = append(free, j)
				}
			}
			if len(free) == 0 {
				break
			}
			j := free[rng.IntN(len(free))]
			linked[i][j], linked[j][i] = true, true
			adj[i], adj[j] = append(adj[i], j), append(adj[j], i)
		}
	}
	return adj
}

// gossipMessages signs k attestations of random builds of a drawn
// population, each by a random peer's host key, as its daemon gossips it.
func gossipMessages(hosts []host.Host, pop *Population, k int, rng *rand.Rand) (blobs [][]byte, publishers []int, err error) {
	for i := range k {
		p := rng.IntN(len(hosts))
		pp := pop.Peers[p%len(pop.Peers)]
		pkg := rng.IntN(len(pop.Packages))
		d := descriptor(pop, pkg, 1, pp.USE(pkg), pp.Platform)
		seed := fmt.Sprint(i, pkg)
		content := trust.ContentID{Image: sha256.Sum256([]byte("image " + seed)), Metadata: sha256.Sum256([]byte("meta " + seed))}
		key := hosts[p].Peerstore().PrivKey(hosts[p].ID())
		s, err := attest(d, content, pop.Toolchains[pp.Toolchain], time.Unix(1_800_000_000, 0), key)
		if err != nil {
			return nil, nil, err
		}
		// votes' gossip framing: one tag byte, then the signed attestation.
		blobs = append(blobs, append([]byte{'a'}, s.Marshal()...))
		publishers = append(publishers, p)
	}
	return blobs, publishers, nil
}

// poll checks done until it holds or ctx ends.
func poll(ctx context.Context, done func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !done() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// countingHost counts the bytes its GossipSub reads from the streams
// other peers open to it (GossipSub receives only on those).
type countingHost struct {
	host.Host
	in *atomic.Int64
}

func (h countingHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) { handler(&countingStream{Stream: s, in: h.in}) })
}

type countingStream struct {
	network.Stream
	in *atomic.Int64
}

func (s *countingStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	s.in.Add(int64(n))
	return n, err
}

// gossipCounts are bytes a peer received, by kind, and message copies.
type gossipCounts struct {
	wire, total, fetch                           int64
	payload, ihave, iwant, idontwant, graftPrune int64
	copies, delivered, rpcs                      int64
}

func (c gossipCounts) add(d gossipCounts) gossipCounts {
	return gossipCounts{c.wire + d.wire, c.total + d.total, c.fetch + d.fetch, c.payload + d.payload, c.ihave + d.ihave,
		c.iwant + d.iwant, c.idontwant + d.idontwant, c.graftPrune + d.graftPrune, c.copies + d.copies, c.delivered + d.delivered, c.rpcs + d.rpcs}
}

func (c gossipCounts) sub(d gossipCounts) gossipCounts {
	return gossipCounts{c.wire - d.wire, c.total - d.total, c.fetch - d.fetch, c.payload - d.payload, c.ihave - d.ihave,
		c.iwant - d.iwant, c.idontwant - d.idontwant, c.graftPrune - d.graftPrune, c.copies - d.copies, c.delivered - d.delivered, c.rpcs - d.rpcs}
}

// gossipMeter is one peer's pubsub.RawTracer: it sizes every RPC the peer
// receives by kind and follows its mesh. Pubsub calls it from its event
// loop, so it only adds.
type gossipMeter struct {
	self  peer.ID
	wire  atomic.Int64
	fetch atomic.Int64 // read on record streams (GossipOptions.Announce)
	held  sync.Map     // [32]byte → record, with GossipOptions.Announce
	mu    sync.Mutex
	c     gossipCounts
	// mesh is a set: GossipSub traces a PRUNE from a peer that was not
	// in the mesh too.
	mesh map[peer.ID]bool
}

func (m *gossipMeter) counts() gossipCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.c
	c.wire, c.fetch = m.wire.Load(), m.fetch.Load()
	return c
}

func (m *gossipMeter) meshSize() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mesh)
}

func snapshot(ms []*gossipMeter) []gossipCounts {
	out := make([]gossipCounts, len(ms))
	for i, m := range ms {
		out[i] = m.counts()
	}
	return out
}

func delivered(ms []*gossipMeter) int {
	var n int
	for _, m := range ms {
		n += int(m.counts().delivered)
	}
	return n
}

// field is the encoded size of a length-delimited field of size n.
func field(num protowire.Number, n int) int64 {
	return int64(protowire.SizeTag(num) + protowire.SizeBytes(n))
}

func (m *gossipMeter) RecvRPC(rpc *pubsub.RPC) {
	c := gossipCounts{rpcs: 1}
	c.total = int64(protowire.SizeBytes(proto.Size(&rpc.RPC))) // with its length prefix
	for _, msg := range rpc.Publish {
		c.payload += field(2, proto.Size(msg))
		c.copies++
	}
	if ctl := rpc.Control; ctl != nil {
		for _, x := range ctl.Ihave {
			c.ihave += field(1, proto.Size(x))
		}
		for _, x := range ctl.Iwant {
			c.iwant += field(2, proto.Size(x))
		}
		for _, x := range ctl.Graft {
			c.graftPrune += field(3, proto.Size(x))
		}
		for _, x := range ctl.Prune {
			c.graftPrune += field(4, proto.Size(x))
		}
		for _, x := range ctl.Idontwant {
			c.idontwant += field(5, proto.Size(x))
		}
	}
	m.mu.Lock()
	m.c = m.c.add(c)
	m.mu.Unlock()
}

func (m *gossipMeter) DeliverMessage(msg *pubsub.Message) {
	if msg.ReceivedFrom == m.self {
		return // our own publication
	}
	m.mu.Lock()
	m.c.delivered++
	m.mu.Unlock()
}

func (m *gossipMeter) Graft(p peer.ID, _ string) {
	m.mu.Lock()
	m.mesh[p] = true
	m.mu.Unlock()
}

func (m *gossipMeter) Prune(p peer.ID, _ string) {
	m.mu.Lock()
	delete(m.mesh, p)
	m.mu.Unlock()
}

func (m *gossipMeter) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (m *gossipMeter) OnClosedOutboundStream(peer.ID)           {}
func (m *gossipMeter) Join(string)                              {}
func (m *gossipMeter) Leave(string)                             {}
func (m *gossipMeter) ValidateMessage(*pubsub.Message)          {}
func (m *gossipMeter) RejectMessage(*pubsub.Message, string)    {}
func (m *gossipMeter) DuplicateMessage(*pubsub.Message)         {}
func (m *gossipMeter) ThrottlePeer(peer.ID)                     {}
func (m *gossipMeter) SendRPC(*pubsub.RPC, peer.ID)             {}
func (m *gossipMeter) DropRPC(*pubsub.RPC, peer.ID)             {}
func (m *gossipMeter) UndeliverableMessage(*pubsub.Message)     {}

// negotiated is what one side of a new stream reads while multistream-select
// agrees on catalog/3: the multistream header and the protocol id, each a
// uvarint-framed line.
var negotiated = int64(2 + len("/multistream/1.0.0\n") + len(p2p.CatalogIDsProtocol) + 1)

func (m *gossipMeter) keep(id [32]byte, record []byte) { m.held.Store(id, record) }

// serveRecord answers a records request for one attestation as catalog/3
// frames it: request op, count, kind and id; answer status, count, then
// the record framed by its length.
func (m *gossipMeter) serveRecord(s network.Stream) {
	defer func() { _ = s.Close() }()
	var req [3 + 32]byte
	if _, err := io.ReadFull(s, req[:]); err != nil {
		_ = s.Reset()
		return
	}
	m.fetch.Add(int64(len(req)) + negotiated)
	out := []byte{0, 0}
	if r, ok := m.held.Load([32]byte(req[3:])); ok {
		record := r.([]byte)
		out = append(binary.AppendUvarint([]byte{0, 1}, uint64(len(record))), record...)
	}
	_, _ = s.Write(out)
}

// fetchAnnounced validates an announcement as the daemon does: each record
// not held is fetched from the peer that relayed the message and kept, so
// this peer can serve it once GossipSub forwards the announcement.
func (m *gossipMeter) fetchAnnounced(ctx context.Context, h host.Host, relay peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	ids, err := votes.ParseAnnouncement(msg.Data)
	if err != nil {
		return pubsub.ValidationReject
	}
	for _, id := range ids {
		if _, ok := m.held.Load(id.ID); ok {
			continue
		}
		record, err := fetchRecord(ctx, h, relay, id.ID, &m.fetch)
		if err != nil {
			return pubsub.ValidationIgnore
		}
		m.keep(id.ID, record)
	}
	return pubsub.ValidationAccept
}

func fetchRecord(ctx context.Context, h host.Host, from peer.ID, id [32]byte, read *atomic.Int64) ([]byte, error) {
	s, err := h.NewStream(ctx, from, p2p.CatalogIDsProtocol)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.Close() }()
	if _, err := s.Write(append([]byte{0x02, 1, wire.RecordAttestation}, id[:]...)); err != nil {
		return nil, err
	}
	_ = s.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(s, wire.MaxBlobSize+16))
	read.Add(int64(len(b)) + negotiated)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != 0 || b[1] != 1 {
		return nil, fmt.Errorf("sim: %s does not hold %x", from, id[:8])
	}
	n, k := binary.Uvarint(b[2:])
	if k <= 0 || uint64(len(b)-2-k) != n || sha256.Sum256(b[2+k:]) != id {
		return nil, fmt.Errorf("sim: %s answered %x with something else", from, id[:8])
	}
	return b[2+k:], nil
}
