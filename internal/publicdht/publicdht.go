// Package publicdht starts a stand-in for the public libp2p (IPFS "Amino")
// DHT on 127.0.0.1: real libp2p hosts running go-libp2p-kad-dht in server
// mode with the public protocol (/ipfs/kad/1.0.0) and its default record
// rules. Tests point a daemon's network.rendezvous_peers at it instead of
// the internet's bootstrap peers; everything else about the rendezvous is
// what runs in production.
package publicdht

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Network is a running stand-in public DHT.
type Network struct {
	hosts []host.Host
	dhts  []*dht.IpfsDHT
}

// Start runs n DHT server nodes on 127.0.0.1, each connected to the
// first, and returns once every routing table holds the other nodes.
func Start(ctx context.Context, n int) (*Network, error) {
	if n < 1 {
		return nil, fmt.Errorf("publicdht: %d nodes", n)
	}
	net := &Network{}
	for range n {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
		if err != nil {
			return nil, errors.Join(fmt.Errorf("publicdht: host: %w", err), net.Close())
		}
		net.hosts = append(net.hosts, h)
		d, err := dht.New(h, dht.Mode(dht.ModeServer))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("publicdht: dht: %w", err), net.Close())
		}
		net.dhts = append(net.dhts, d)
	}
	for _, h := range net.hosts[1:] {
		if err := h.Connect(ctx, peer.AddrInfo{ID: net.hosts[0].ID(), Addrs: net.hosts[0].Addrs()}); err != nil {
			return nil, errors.Join(fmt.Errorf("publicdht: connect: %w", err), net.Close())
		}
	}
	for _, d := range net.dhts {
		if err := d.Bootstrap(ctx); err != nil {
			return nil, errors.Join(fmt.Errorf("publicdht: bootstrap: %w", err), net.Close())
		}
	}
	// Identify adds peers to routing tables in the background.
	for _, d := range net.dhts {
		for d.RoutingTable().Size() < min(n-1, 1) {
			select {
			case <-ctx.Done():
				return nil, errors.Join(ctx.Err(), net.Close())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return net, nil
}

// AddrInfos are the nodes' addresses, the form p2p.Rendezvous.Peers takes.
func (n *Network) AddrInfos() []peer.AddrInfo {
	out := make([]peer.AddrInfo, 0, len(n.hosts))
	for _, h := range n.hosts {
		out = append(out, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	return out
}

// Addrs are the nodes' multiaddrs with /p2p/, the form
// network.rendezvous_peers takes.
func (n *Network) Addrs() []string {
	var out []string
	for _, ai := range n.AddrInfos() {
		addrs, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil || len(addrs) == 0 {
			continue
		}
		out = append(out, addrs[0].String())
	}
	return out
}

// IDs are the nodes' peer IDs.
func (n *Network) IDs() []peer.ID {
	out := make([]peer.ID, 0, len(n.hosts))
	for _, h := range n.hosts {
		out = append(out, h.ID())
	}
	return out
}

// Close stops every node.
func (n *Network) Close() error {
	var errs []error
	for _, d := range n.dhts {
		errs = append(errs, d.Close())
	}
	for _, h := range n.hosts {
		errs = append(errs, h.Close())
	}
	n.dhts, n.hosts = nil, nil
	return errors.Join(errs...)
}
