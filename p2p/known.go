package p2p

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// DefaultKnownPeers is how many recently connected peers a node remembers.
const DefaultKnownPeers = 64

// Redial backoff when the node has no peer left: the first attempt waits
// redialMin, each failed one doubles the wait up to redialMax.
const (
	defaultRedialMin = 5 * time.Second
	defaultRedialMax = 2 * time.Minute
	// defaultSaveEvery bounds how often the known-peers file is rewritten.
	defaultSaveEvery = 3 * time.Second
)

// ErrBadAddr is returned by Connect for an address without a peer ID or
// naming this node itself.
var ErrBadAddr = errors.New("p2p: bad peer address")

// knownPeers are the last peers the node was connected to, most recent
// last, with the addresses they were reached at.
type knownPeers struct {
	path string
	max  int

	mu    sync.Mutex
	order []peer.ID
	addrs map[peer.ID][]ma.Multiaddr

	fileMu sync.Mutex // serialises writes of path
	dirty  chan struct{}
}

// knownFile is the on-disk form, JSON.
type knownFile struct {
	Peers []knownEntry `json:"peers"`
}

type knownEntry struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

func newKnownPeers(path string, limit int) *knownPeers {
	return &knownPeers{path: path, max: limit, addrs: map[peer.ID][]ma.Multiaddr{}, dirty: make(chan struct{}, 1)}
}

// load reads the file; a missing file is an empty list.
func (k *knownPeers) load() error {
	if k.path == "" {
		return nil
	}
	b, err := os.ReadFile(k.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("p2p: read known peers: %w", err)
	}
	var f knownFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("p2p: known peers file %s: %w", k.path, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range slices.Backward(f.Peers) { // the file is most recent first
		id, err := peer.Decode(e.ID)
		if err != nil {
			continue
		}
		var addrs []ma.Multiaddr
		for _, s := range e.Addrs {
			if a, err := ma.NewMultiaddr(s); err == nil {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) > 0 {
			k.touchLocked(id, addrs)
		}
	}
	return nil
}

// touch records p as connected now, at addrs (kept when addrs is empty).
func (k *knownPeers) touch(p peer.ID, addrs []ma.Multiaddr) {
	k.mu.Lock()
	k.touchLocked(p, addrs)
	k.mu.Unlock()
	select {
	case k.dirty <- struct{}{}:
	default:
	}
}

func (k *knownPeers) touchLocked(p peer.ID, addrs []ma.Multiaddr) {
	k.order = slices.DeleteFunc(k.order, func(q peer.ID) bool { return q == p })
	k.order = append(k.order, p)
	if len(addrs) > 0 {
		k.addrs[p] = slices.Clone(addrs)
	}
	for len(k.order) > k.max {
		delete(k.addrs, k.order[0])
		k.order = k.order[1:]
	}
}

// list returns the known peers, most recent first, their stored addresses
// merged with what ps knows now.
func (k *knownPeers) list(ps peerstore.Peerstore) []peer.AddrInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]peer.AddrInfo, 0, len(k.order))
	for i := len(k.order) - 1; i >= 0; i-- {
		p := k.order[i]
		addrs := slices.Clone(k.addrs[p])
		if ps != nil {
			addrs = ma.Unique(append(addrs, ps.Addrs(p)...))
		}
		if len(addrs) > 0 {
			out = append(out, peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
	return out
}

// save writes the list atomically (temporary file, then rename).
func (k *knownPeers) save(ps peerstore.Peerstore) error {
	if k.path == "" {
		return nil
	}
	var f knownFile
	for _, ai := range k.list(ps) {
		e := knownEntry{ID: ai.ID.String()}
		for _, a := range ai.Addrs {
			e.Addrs = append(e.Addrs, a.String())
		}
		f.Peers = append(f.Peers, e)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	k.fileMu.Lock()
	defer k.fileMu.Unlock()
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".known-peers-*")
	if err != nil {
		return fmt.Errorf("p2p: save known peers: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return errors.Join(fmt.Errorf("p2p: save known peers: %w", err), tmp.Close(), os.Remove(tmp.Name()))
	}
	if err := tmp.Close(); err != nil {
		return errors.Join(fmt.Errorf("p2p: save known peers: %w", err), os.Remove(tmp.Name()))
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return errors.Join(fmt.Errorf("p2p: save known peers: %w", err), os.Remove(tmp.Name()))
	}
	return nil
}

// KnownPeers lists the peers the node remembers, most recently connected
// first: those it redials after a restart or when it has lost every peer.
func (n *Node) KnownPeers() []peer.AddrInfo { return n.known.list(n.host.Peerstore()) }

// Connect dials ai now (with a 10 s timeout unless ctx is shorter), tags
// it like a bootstrap peer and remembers it as a known peer.
func (n *Node) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if ai.ID == "" {
		return fmt.Errorf("%w: no peer ID (the address needs a /p2p/ID suffix)", ErrBadAddr)
	}
	if ai.ID == n.host.ID() {
		return fmt.Errorf("%w: %s is this node", ErrBadAddr, ai.ID)
	}
	if n.isClosed() {
		return ErrClosed
	}
	cctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()
	n.clearBackoff(ai.ID)
	if err := n.host.Connect(cctx, ai); err != nil {
		return fmt.Errorf("p2p: connect %s: %w", ai.ID, err)
	}
	n.host.ConnManager().TagPeer(ai.ID, "gentoo-p2p-known", 10)
	n.known.touch(ai.ID, ai.Addrs)
	n.log.Info("connected to peer", "peer", ai.ID, "addrs", ai.Addrs)
	return nil
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// clearBackoff forgets failed dials to p, so a redial is really tried.
func (n *Node) clearBackoff(p peer.ID) {
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}

// dialTargets are the bootstrap and known peers, without duplicates and
// without this node.
func (n *Node) dialTargets() []peer.AddrInfo {
	seen := map[peer.ID]bool{n.host.ID(): true}
	var out []peer.AddrInfo
	for _, ai := range append(slices.Clone(n.cfg.Bootstrap), n.known.list(n.host.Peerstore())...) {
		if seen[ai.ID] {
			continue
		}
		seen[ai.ID] = true
		out = append(out, ai)
	}
	return out
}

// watchPeers follows connections: a new peer becomes a known peer, and
// losing the last peer wakes the redial loop.
func (n *Node) watchPeers(wake chan<- struct{}) error {
	// A peer is known once identify says it speaks one of our protocols: the
	// public DHT of the rendezvous connects to many nodes that do not.
	err := onEvent(n, func(e event.EvtPeerIdentificationCompleted) {
		if !slices.ContainsFunc(e.Protocols, func(p protocol.ID) bool { return slices.Contains(ourProtocols, p) }) {
			return
		}
		var addrs []ma.Multiaddr
		for _, c := range n.host.Network().ConnsToPeer(e.Peer) {
			if c.Stat().Direction == network.DirOutbound {
				addrs = append(addrs, c.RemoteMultiaddr())
			}
		}
		n.known.touch(e.Peer, addrs)
		// Outrank the public DHT's nodes (kad-dht tags its routing
		// table at 5) when the connection manager trims: a peer of
		// ours, however it connected, is what this node is for.
		n.host.ConnManager().TagPeer(e.Peer, ourPeerTag, 20)
	})
	if err != nil {
		return fmt.Errorf("p2p: watch peers: %w", err)
	}
	err = onEvent(n, func(e event.EvtPeerConnectednessChanged) {
		if e.Connectedness == network.NotConnected && n.isOurs(e.Peer) && n.peerCount() == 0 {
			n.log.Info("no peers left", "last", e.Peer)
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return fmt.Errorf("p2p: watch peers: %w", err)
	}
	return nil
}

// ourProtocols are the protocols only gentoo-p2pd nodes speak.
var ourProtocols = []protocol.ID{AttestProtocol, CatalogProtocol, CatalogIDsProtocol, AboutProtocol, DHTProtocolPrefix + "/kad/1.0.0", "/gentoo-p2p/fetch/1"}

// isOurs reports whether identify said p speaks one of our protocols: a
// gentoo-p2pd node, not a public DHT node met through the rendezvous.
func (n *Node) isOurs(p peer.ID) bool {
	ok, err := (*n.liveHost.Load()).Peerstore().SupportsProtocols(p, ourProtocols...)
	return err == nil && len(ok) > 0
}

// unidentified reports whether identify has told nothing about p: every
// libp2p node speaks at least identify itself, so an empty protocol list
// means identify failed on every connection to p.
func (n *Node) unidentified(p peer.ID) bool {
	protos, err := n.host.Peerstore().GetProtocols(p)
	return err == nil && len(protos) == 0
}

// peerCount is how many gentoo-p2pd nodes are connected.
func (n *Node) peerCount() int {
	k := 0
	for _, p := range (*n.liveHost.Load()).Network().Peers() {
		if n.isOurs(p) {
			k++
		}
	}
	return k
}

// saveKnown rewrites the known-peers file when it changed, at most every
// cfg.saveEvery.
func (n *Node) saveKnown() {
	n.wg.Go(func() {
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-n.known.dirty:
			}
			if err := n.known.save(n.host.Peerstore()); err != nil {
				n.log.Warn("cannot save known peers", "err", err)
			}
			t := time.NewTimer(n.cfg.saveEvery)
			select {
			case <-n.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	})
}

// redialLoop runs while the node lives: each time it is woken with no
// peer left, it redials the bootstrap and known peers with backoff until
// one connection is back.
func (n *Node) redialLoop(wake <-chan struct{}) {
	n.wg.Go(func() {
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-wake:
			}
			n.redial()
		}
	})
}

func (n *Node) redial() {
	start := time.Now()
	delay := n.cfg.redialMin
	attempts := 0
	recovered := func() bool {
		k := n.peerCount()
		if k > 0 {
			n.log.Info("peers back", "peers", k, "after", time.Since(start).Round(time.Millisecond), "attempts", attempts)
		}
		return k > 0
	}
	for !recovered() {
		targets := n.dialTargets()
		if len(targets) == 0 {
			return // nothing to dial: an isolated node (or mDNS only)
		}
		t := time.NewTimer(delay)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n.peerCount() > 0 {
			continue // someone dialled us meanwhile
		}
		attempts++
		n.log.Info(fmt.Sprintf("no peers: redialling %d known peers", len(targets)), "attempt", attempts, "waited", delay)
		n.dialAll(n.ctx, targets, false)
		delay = min(delay*2, n.cfg.redialMax)
	}
}

// dialAll dials every target at once and waits for the dials. Failures
// are logged at warn for bootstrap peers at start, at debug otherwise.
func (n *Node) dialAll(ctx context.Context, targets []peer.AddrInfo, atStart bool) {
	boot := map[peer.ID]bool{}
	for _, ai := range n.cfg.Bootstrap {
		boot[ai.ID] = true
	}
	var wg sync.WaitGroup
	for _, ai := range targets {
		if ai.ID == n.host.ID() {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
			defer cancel()
			n.clearBackoff(ai.ID)
			if err := n.host.Connect(cctx, ai); err != nil {
				if atStart && boot[ai.ID] {
					n.log.Warn("bootstrap peer unreachable", "peer", ai.ID, "addrs", ai.Addrs, "err", err)
				} else {
					n.log.Debug("known peer unreachable", "peer", ai.ID, "err", err)
				}
				return
			}
			if n.unidentified(ai.ID) {
				// Connect waited for identify, which failed (a reset or a
				// timeout on a loaded machine): the peer is connected but
				// not known to speak our protocols, and this connection
				// will never say so. Drop it, so the next dial starts a
				// fresh one and identifies again.
				n.log.Info("peer connected but not identified: dropping the connection to dial it afresh", "peer", ai.ID)
				_ = n.host.Network().ClosePeer(ai.ID)
				return
			}
			tag := "gentoo-p2p-known"
			if boot[ai.ID] {
				tag = "gentoo-p2p-bootstrap"
			}
			n.host.ConnManager().TagPeer(ai.ID, tag, 10)
		})
	}
	wg.Wait()
}

// ourPeerTag is the connection manager tag of peers that speak one of our
// protocols.
const ourPeerTag = "gentoo-p2p-peer"
