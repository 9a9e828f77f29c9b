// Package memnet is an in-memory stand-in for the peer-to-peer network,
// for unit tests of the daemon's jobs (votes, own, materialize, localapi)
// and for the network simulator (internal/sim), which reads BytesIn:
// providers, platform gossip and the attest and catalog protocols (catalog/2
// and catalog/3) between nodes of one process, with no libp2p host. Gossip
// is delivered to every other node on the topic synchronously and through
// its validator, as GossipSub would deliver it from a direct neighbour; a
// node can be taken offline. The real network is tested with real hosts
// in package p2p and in the integration tests.
package memnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
)

// ErrOffline is what a request to or from an offline node returns.
var ErrOffline = errors.New("memnet: peer offline")

// Network is one in-memory network.
type Network struct {
	mu        sync.Mutex
	nodes     map[peer.ID]*Node
	order     []peer.ID
	providers map[string][]peer.ID // key → providing nodes, in order
}

// New makes an empty network.
func New() *Network {
	return &Network{nodes: map[peer.ID]*Node{}, providers: map[string][]peer.ID{}}
}

// Node is one member. Its methods match *p2p.Node's.
type Node struct {
	net  *Network
	id   peer.ID
	addr netip.Addr

	mu       sync.Mutex
	handlers wire.Handlers
	topics   map[string]bool
	offline  bool
	known    map[peer.ID][]ma.Multiaddr
	// Published counts this node's own gossip publications.
	published int
	// bytesIn counts the payload bytes this node received: gossip
	// delivered to its validator, catalog pages and attest answers.
	bytesIn int64
}

// BytesIn is the payload this node received from the network (gossip
// messages, catalog pages, attest answers), without transport overhead.
func (nd *Node) BytesIn() int64 {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.bytesIn
}

func (nd *Node) received(blobs ...[]byte) {
	var n int64
	for _, b := range blobs {
		n += int64(len(b))
	}
	nd.mu.Lock()
	nd.bytesIn += n
	nd.mu.Unlock()
}

// Join adds a node with id; its address is 127.0.0.N, N its rank.
func (n *Network) Join(id peer.ID) *Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd, ok := n.nodes[id]; ok {
		return nd
	}
	addr := netip.AddrFrom4([4]byte{127, 0, byte(len(n.order) / 250), byte(len(n.order)%250 + 1)})
	nd := &Node{net: n, id: id, addr: addr, topics: map[string]bool{}, known: map[peer.ID][]ma.Multiaddr{}}
	n.nodes[id] = nd
	n.order = append(n.order, id)
	return nd
}

// Serve sets the node's handlers, as p2p.Node.Serve does.
func (nd *Node) Serve(h wire.Handlers) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.handlers = h
}

// SetOnline takes the node off the network (false) or back (true): an
// offline node sends and answers nothing and is nobody's peer.
func (nd *Node) SetOnline(on bool) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.offline = !on
}

// ID is the node's peer id; Addr its address.
func (nd *Node) ID() peer.ID      { return nd.id }
func (nd *Node) Addr() netip.Addr { return nd.addr }

// Published is how many messages the node published.
func (nd *Node) Published() int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.published
}

func (nd *Node) multiaddr() ma.Multiaddr {
	m, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/tcp/4001", nd.addr))
	if err != nil {
		panic(err) // a well-formed address always parses
	}
	return m
}

func (nd *Node) online() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return !nd.offline
}

func (nd *Node) state() (wire.Handlers, bool) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.handlers, !nd.offline
}

// peer finds another online node.
func (nd *Node) peer(p peer.ID) (*Node, error) {
	if !nd.online() {
		return nil, ErrOffline
	}
	nd.net.mu.Lock()
	other, ok := nd.net.nodes[p]
	nd.net.mu.Unlock()
	if !ok || !other.online() {
		return nil, fmt.Errorf("%w: %s", ErrOffline, p)
	}
	return other, nil
}

// JoinPlatform subscribes to a platform topic.
func (nd *Node) JoinPlatform(platform string) error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.topics[platform] = true
	return nil
}

// Publish delivers msg to the validator of every other online node on the
// topic, in join order; a validator's error stops nothing else.
func (nd *Node) Publish(ctx context.Context, platform string, msg []byte) error {
	nd.mu.Lock()
	joined := nd.topics[platform]
	nd.published++
	nd.mu.Unlock()
	if !joined {
		return wire.ErrNotJoined
	}
	if !nd.online() {
		return ErrOffline
	}
	for _, other := range nd.net.members() {
		if other == nd {
			continue
		}
		h, on := other.state()
		other.mu.Lock()
		sub := other.topics[platform]
		other.mu.Unlock()
		if on && sub && h.OnGossip != nil {
			other.received(msg)
			_ = h.OnGossip(nd.id, nd.id, platform, msg) // a validator's verdict is the receiver's business
		}
	}
	return nil
}

func (n *Network) members() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Node, 0, len(n.order))
	for _, id := range n.order {
		out = append(out, n.nodes[id])
	}
	return out
}

// SyncCatalog asks p for a catalog page.
func (nd *Node) SyncCatalog(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor) ([][]byte, error) {
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.Catalog == nil {
		return nil, fmt.Errorf("%w: not served", wire.ErrProtocol)
	}
	blobs, err := h.Catalog(ctx, platform, cur)
	nd.received(blobs...)
	return blobs, err
}

// maxSince bounds an id's time on the wire, as p2p bounds it.
const maxSince = wire.MaxCatalogTime

// validKind reports a record kind catalog/3 carries.
func validKind(k byte) bool {
	return k == wire.RecordAttestation || k == wire.RecordEndorsement || k == wire.RecordDemand
}

// CatalogIDs asks p for an ids page of catalog/3 (wire.Handlers.CatalogIDs);
// a node without that handler is an older daemon (wire.ErrNotSupported).
// The bytes counted are the ids as p2p frames them. The wire's limits on
// ids (their number, kind and time) are enforced as p2p enforces them.
func (nd *Node) CatalogIDs(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error) {
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.CatalogIDs == nil {
		return nil, fmt.Errorf("memnet: catalog/3 to %s: %w", p, wire.ErrNotSupported)
	}
	ids, err := h.CatalogIDs(ctx, platform, cur)
	if err != nil {
		return nil, err
	}
	return nd.receivedIDs(ids)
}

// receivedIDs checks an ids answer as p2p does and counts its bytes.
func (nd *Node) receivedIDs(ids []wire.CatalogID) ([]wire.CatalogID, error) {
	if len(ids) > wire.MaxCatalogIDs {
		return nil, fmt.Errorf("%w: %d ids exceed %d", wire.ErrProtocol, len(ids), wire.MaxCatalogIDs)
	}
	for i, id := range ids {
		if !validKind(id.Kind) {
			return nil, fmt.Errorf("%w: id %d has unknown kind 0x%02x", wire.ErrProtocol, i, id.Kind)
		}
		// A uvarint on the wire: a negative time arrives as one over 2^62.
		if id.Time < 0 || id.Time > maxSince {
			return nil, fmt.Errorf("%w: id %d time %d exceeds 2^62", wire.ErrProtocol, i, uint64(id.Time))
		}
	}
	var n int64 = 2 // status and count
	for _, id := range ids {
		n += int64(1 + len(binary.AppendUvarint(nil, uint64(id.Time))) + len(id.ID))
	}
	nd.mu.Lock()
	nd.bytesIn += n
	nd.mu.Unlock()
	return ids, nil
}

// CatalogIDsUntil asks p for a bounded ids page of catalog/3
// (wire.Handlers.CatalogIDsUntil), counted and checked as CatalogIDs.
func (nd *Node) CatalogIDsUntil(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor, until int64) ([]wire.CatalogID, error) {
	if cur.Since < 0 || until <= cur.Since || until > maxSince {
		return nil, fmt.Errorf("memnet: catalog ids page [%d, %d) out of range", cur.Since, until)
	}
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.CatalogIDsUntil == nil {
		return nil, fmt.Errorf("memnet: catalog/3 bounded ids to %s: %w", p, wire.ErrNotSupported)
	}
	ids, err := h.CatalogIDsUntil(ctx, platform, cur, until)
	if err != nil {
		return nil, err
	}
	return nd.receivedIDs(ids)
}

// CatalogFingerprints asks p for the fingerprints of a range of its
// catalog (wire.Handlers.CatalogFingerprints); a node without that
// handler predates it (wire.ErrNotSupported). The request and answer are
// checked as p2p checks them, and the answer's bytes counted as p2p
// frames it.
func (nd *Node) CatalogFingerprints(ctx context.Context, p peer.ID, platform string, from, until int64, slices int) ([]wire.CatalogSlice, error) {
	if from < 0 || from >= until || until > maxSince || slices < wire.MinCatalogSlices || slices > wire.MaxCatalogSlices || int64(slices) > until-from {
		return nil, fmt.Errorf("memnet: %d fingerprint slices of [%d, %d) out of range", slices, from, until)
	}
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.CatalogFingerprints == nil {
		return nil, fmt.Errorf("memnet: catalog/3 fingerprints to %s: %w", p, wire.ErrNotSupported)
	}
	out, err := h.CatalogFingerprints(ctx, platform, from, until, slices)
	if err != nil {
		return nil, err
	}
	out = out[:min(len(out), slices)] // p2p's server sends no more
	var empty wire.Fingerprint
	for i := range out {
		out[i].Count = min(out[i].Count, maxSince)
		if out[i].Count == 0 {
			out[i] = empty.Slice() // not sent: the client knows it
		}
	}
	nd.mu.Lock()
	nd.bytesIn += int64(wire.CatalogSlicesBytes(out))
	nd.mu.Unlock()
	return out, nil
}

// CatalogRecords asks p for the records named by want (catalog/3); a
// request of an unknown kind, and an answer of more blobs than asked, are
// refused as p2p refuses them.
func (nd *Node) CatalogRecords(ctx context.Context, p peer.ID, want []wire.CatalogID) ([][]byte, error) {
	if len(want) == 0 || len(want) > wire.MaxRecordsAsked {
		return nil, fmt.Errorf("memnet: %d records asked, want 1..%d", len(want), wire.MaxRecordsAsked)
	}
	for i, id := range want {
		if !validKind(id.Kind) {
			return nil, fmt.Errorf("memnet: record %d has unknown kind 0x%02x", i, id.Kind)
		}
	}
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.CatalogRecords == nil {
		return nil, fmt.Errorf("memnet: catalog/3 to %s: %w", p, wire.ErrNotSupported)
	}
	blobs, err := h.CatalogRecords(ctx, want)
	if err != nil {
		return nil, err
	}
	if len(blobs) > len(want) {
		return nil, fmt.Errorf("%w: %d blobs exceed %d", wire.ErrProtocol, len(blobs), len(want))
	}
	nd.received(blobs...)
	return blobs, nil
}

// FetchAttestations asks p for its attestations of key.
func (nd *Node) FetchAttestations(ctx context.Context, p peer.ID, key cid.Cid) ([][]byte, error) {
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.Attestations == nil {
		return nil, fmt.Errorf("%w: not served", wire.ErrProtocol)
	}
	blobs, err := h.Attestations(ctx, key)
	nd.received(blobs...)
	return blobs, err
}

// About asks p what it is and what it holds for query.
func (nd *Node) About(ctx context.Context, p peer.ID, query string) ([]byte, error) {
	other, err := nd.peer(p)
	if err != nil {
		return nil, err
	}
	h, _ := other.state()
	if h.About == nil {
		return nil, fmt.Errorf("%w: not served", wire.ErrProtocol)
	}
	return h.About(ctx, query)
}

// Peers are the other online nodes, sorted by id.
func (nd *Node) Peers() []wire.PeerInfo {
	if !nd.online() {
		return nil
	}
	var out []wire.PeerInfo
	for _, other := range nd.net.members() {
		if other != nd && other.online() {
			out = append(out, wire.PeerInfo{ID: other.id, Addrs: []ma.Multiaddr{other.multiaddr()}, Direction: "outbound"})
		}
	}
	slices.SortFunc(out, func(a, b wire.PeerInfo) int { return cmpID(a.ID, b.ID) })
	return out
}

func cmpID(a, b peer.ID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// DirectAddr is p's address while it is an online member.
func (nd *Node) DirectAddr(p peer.ID) (netip.Addr, bool) {
	other, err := nd.peer(p)
	if err != nil {
		return netip.Addr{}, false
	}
	return other.addr, true
}

// Provide announces keys.
func (nd *Node) Provide(keys ...cid.Cid) error {
	if !nd.online() {
		return ErrOffline
	}
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	for _, k := range keys {
		ks := k.KeyString()
		if !slices.Contains(nd.net.providers[ks], nd.id) {
			nd.net.providers[ks] = append(nd.net.providers[ks], nd.id)
		}
	}
	return nil
}

// Withdraw stops announcing keys.
func (nd *Node) Withdraw(keys ...cid.Cid) error {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	for _, k := range keys {
		ks := k.KeyString()
		nd.net.providers[ks] = slices.DeleteFunc(nd.net.providers[ks], func(p peer.ID) bool { return p == nd.id })
	}
	return nil
}

// Providing reports whether the node announces key.
func (nd *Node) Providing(key cid.Cid) bool {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	return slices.Contains(nd.net.providers[key.KeyString()], nd.id)
}

// FindProviders lists up to max online providers of key, this node
// included when it provides key (as the DHT's local provider store does).
func (nd *Node) FindProviders(ctx context.Context, key cid.Cid, max int) ([]peer.AddrInfo, error) {
	if !nd.online() {
		return nil, ErrOffline
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nd.net.mu.Lock()
	ids := slices.Clone(nd.net.providers[key.KeyString()])
	nodes := nd.net.nodes
	var out []peer.AddrInfo
	for _, id := range ids {
		if len(out) >= max {
			break
		}
		if other := nodes[id]; other != nil {
			out = append(out, peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{other.multiaddr()}})
		}
	}
	nd.net.mu.Unlock()
	out = slices.DeleteFunc(out, func(ai peer.AddrInfo) bool {
		other, err := nd.peer(ai.ID)
		return ai.ID != nd.id && (err != nil || other == nil)
	})
	return out, nil
}

// RememberAddrs keeps a peer's addresses.
func (nd *Node) RememberAddrs(ai peer.AddrInfo) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.known[ai.ID] = slices.Clone(ai.Addrs)
}

// KnownAddrs are the addresses remembered for p, or those of an online
// member.
func (nd *Node) KnownAddrs(p peer.ID) []ma.Multiaddr {
	nd.mu.Lock()
	a := nd.known[p]
	nd.mu.Unlock()
	if len(a) > 0 {
		return slices.Clone(a)
	}
	if other, err := nd.peer(p); err == nil {
		return []ma.Multiaddr{other.multiaddr()}
	}
	return nil
}

// Addrs are the node's own addresses.
func (nd *Node) Addrs() []ma.Multiaddr { return []ma.Multiaddr{nd.multiaddr()} }

// Reachability is "public": every member accepts connections.
func (nd *Node) Reachability() string { return "public" }

// ProvideStats counts the keys the node provides.
func (nd *Node) ProvideStats(ctx context.Context) (wire.ProvideStats, error) {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	n := 0
	for _, ids := range nd.net.providers {
		if slices.Contains(ids, nd.id) {
			n++
		}
	}
	return wire.ProvideStats{Keys: n, ScheduledKeys: int64(n)}, nil
}

// Connect reaches p as p2p.Node.Connect does: an online member is
// connected (every member is every other's peer) and its addresses are
// remembered; anyone else is ErrOffline.
func (nd *Node) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if ai.ID == nd.id {
		return fmt.Errorf("memnet: %s is this node", ai.ID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := nd.peer(ai.ID); err != nil {
		return err
	}
	if len(ai.Addrs) > 0 {
		nd.RememberAddrs(ai)
	}
	return nil
}
