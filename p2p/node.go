package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/ipfs/go-cid"
	"golang.org/x/time/rate"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/provider"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	mh "github.com/multiformats/go-multihash"
)

// MDNSServiceName is the mDNS service gentoo-p2pd nodes announce, distinct
// from IPFS's so a LAN's IPFS nodes are not dialled.
const MDNSServiceName = "_gentoo-p2p._udp"

// UserAgent is announced through identify.
const UserAgent = "gentoo-p2pd"

// bootstrapTimeout bounds each dial to a configured bootstrap peer.
const bootstrapTimeout = 10 * time.Second

// ErrClosed is returned by methods of a closed Node.
var ErrClosed = errors.New("p2p: node closed")

// Node is one gentoo-p2pd network presence: libp2p host, DHT, provider,
// gossip and stream protocols. Close releases everything it started.
type Node struct {
	cfg      Config
	handlers atomic.Pointer[Handlers] // nil until New or Serve set them
	requests *requestLimiter
	about    *wire.PeerRates // about requests per remote peer
	log      *slog.Logger
	metrics  *metrics

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	host host.Host
	dht  *dht.IpfsDHT
	prov *provider.SweepingProvider
	ps   *pubsub.PubSub
	mdns mdns.Service

	public *dht.IpfsDHT // the public DHT of the rendezvous; nil when off
	rdv    rendezvousState

	known *knownPeers // recently connected peers, redialled

	reachability atomic.Int32 // network.Reachability
	// liveHost holds the host once libp2p.New returned: autorelay's peer
	// source and the metrics gauge may run before n.host is assigned.
	liveHost atomic.Pointer[host.Host]

	mu       sync.Mutex
	closed   bool
	provided map[string]struct{} // multihash bytes of keys being provided
	topics   map[string]*platformTopic

	closeOnce sync.Once
	closeErr  error
}

// New starts a node: it listens, joins the DHT through cfg.Bootstrap (each
// dialled with a 10 s timeout; failures are logged, not fatal, so a daemon
// can start offline), and serves the attest and catalog protocols. ctx only
// bounds the start-up; the node runs until Close.
func New(ctx context.Context, cfg Config, h Handlers) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n := &Node{
		cfg:      cfg,
		requests: newRequestLimiter(cfg.MaxPeerRequests, cfg.MaxRequests),
		about:    wire.NewPeerRates(rate.Every(cfg.AboutInterval), cfg.AboutBurst),
		log:      cfg.Logger,
		ctx:      nctx,
		cancel:   cancel,
		provided: make(map[string]struct{}),
		topics:   make(map[string]*platformTopic),
		known:    newKnownPeers(cfg.KnownPeersFile, cfg.KnownPeers),
	}
	var err error
	if n.metrics, err = newMetrics(cfg.Registerer, n); err != nil {
		cancel()
		return nil, fmt.Errorf("p2p: register metrics: %w", err)
	}
	if h.Attestations != nil || h.Catalog != nil || h.CatalogIDs != nil || h.CatalogRecords != nil || h.CatalogIDsUntil != nil || h.CatalogFingerprints != nil || h.OnGossip != nil || h.About != nil {
		n.Serve(h)
	}
	if err := n.start(ctx); err != nil {
		_ = n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	cfg := n.cfg
	opts, release, err := n.hostOptions()
	if err != nil {
		return err
	}
	if err := checkListenFree(cfg.ListenAddrs, cfg.QUIC); err != nil {
		release()
		return err
	}
	if n.host, err = libp2p.New(opts...); err != nil {
		release() // libp2p does not close managers it did not create
		return fmt.Errorf("p2p: start libp2p host: %w", err)
	}
	n.liveHost.Store(&n.host)
	n.watchReachability()
	if err := n.known.load(); err != nil {
		n.log.Warn("known peers not reloaded", "err", err)
	}
	wake := make(chan struct{}, 1)
	if err := n.watchPeers(wake); err != nil {
		return err
	}

	mode := map[DHTMode]dht.ModeOpt{DHTServer: dht.ModeServer, DHTAuto: dht.ModeAutoServer, DHTClient: dht.ModeClient}[cfg.DHTMode]
	dhtOpts := append([]dht.Option{
		dht.ProtocolPrefix(DHTProtocolPrefix),
		dht.Mode(mode),
		dht.DisableValues(), // we only need provider records
		dht.BootstrapPeers(cfg.Bootstrap...),
	}, cfg.dhtOpts...)
	n.dht, err = dht.New(n.host, dhtOpts...)
	if err != nil {
		return fmt.Errorf("p2p: start DHT: %w", err)
	}
	n.prov, err = provider.New(
		provider.WithHost(n.host),
		provider.WithRouter(readyRouter{d: n.dht}),
		provider.WithMessageSender(n.dht.MessageSender()),
		provider.WithReplicationFactor(n.dht.BucketSize()),
		provider.WithSelfAddrs(n.dht.FilteredAddrs),
		provider.WithAddLocalRecord(func(ctx context.Context, h mh.Multihash) error {
			return n.dht.Provide(ctx, cid.NewCidV1(cid.Raw, h), false)
		}),
		provider.WithReprovideInterval(cfg.ReprovideInterval),
		provider.WithLoggerName("gentoo-p2p/provider"),
	)
	if err != nil {
		return fmt.Errorf("p2p: start sweeping provider: %w", err)
	}
	n.ps, err = pubsub.NewGossipSub(n.ctx, n.host, GossipSubOptions()...)
	if err != nil {
		return fmt.Errorf("p2p: start gossipsub: %w", err)
	}
	n.host.SetStreamHandler(AttestProtocol, n.handleAttest)
	n.host.SetStreamHandler(CatalogProtocol, n.handleCatalog)
	n.host.SetStreamHandler(CatalogIDsProtocol, n.handleCatalogIDs)
	n.host.SetStreamHandler(AboutProtocol, n.handleAbout)

	n.connectBootstrap(ctx)
	n.saveKnown()
	n.redialLoop(wake)
	if n.peerCount() == 0 {
		select { // nobody answered: keep trying with backoff
		case wake <- struct{}{}:
		default:
		}
	}
	if err := n.dht.Bootstrap(ctx); err != nil {
		return fmt.Errorf("p2p: bootstrap DHT: %w", err)
	}
	if cfg.MDNS {
		n.mdns = mdns.NewMdnsService(n.host, MDNSServiceName, mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			return fmt.Errorf("p2p: start mDNS: %w", err)
		}
	}
	if cfg.Rendezvous != nil {
		if err := n.startRendezvous(cfg.Rendezvous); err != nil {
			return err
		}
	}
	n.log.Info("p2p node started", "peer", n.host.ID(), "addrs", n.host.Addrs(), "dht_mode", cfg.DHTMode)
	return nil
}

// hostOptions builds the libp2p options. release closes the resource and
// connection managers, for when the host cannot be built.
func (n *Node) hostOptions() (opts []libp2p.Option, release func(), err error) {
	cfg := n.cfg
	listen := make([]string, 0, len(cfg.ListenAddrs))
	for _, a := range cfg.ListenAddrs {
		if !cfg.QUIC && strings.Contains(a, "/quic") {
			continue
		}
		listen = append(listen, a)
	}
	if len(listen) == 0 {
		return nil, nil, fmt.Errorf("%w: no listen address left once QUIC ones are dropped (QUIC is off): %v", ErrConfig, cfg.ListenAddrs)
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	for _, proto := range []protocol.ID{AttestProtocol, CatalogProtocol, CatalogIDsProtocol, AboutProtocol} {
		limits.AddProtocolLimit(proto,
			rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 64 << 20},
			rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 16 << 20})
		// Per peer: enough for a daemon checking many keys at once against
		// one peer, and memory for yamux windows of a 32 MiB response.
		limits.AddProtocolPeerLimit(proto,
			rcmgr.BaseLimit{StreamsInbound: 32, StreamsOutbound: 32, Streams: 64, Memory: 48 << 20},
			rcmgr.BaseLimitIncrease{})
	}
	var rcOpts []rcmgr.Option
	if cfg.Registerer == nil {
		rcOpts = append(rcOpts, rcmgr.WithMetricsDisabled())
	} else {
		rcmgr.MustRegisterWith(cfg.Registerer)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()), rcOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh, connmgr.WithGracePeriod(cfg.ConnGrace))
	if err != nil {
		_ = rm.Close() // nothing was started with it yet
		return nil, nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	release = func() { _ = cm.Close(); _ = rm.Close() } // shutdown: nothing left to act on an error
	opts = []libp2p.Option{
		libp2p.Identity(cfg.PrivKey),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		// TLS first: ~850 MB/s against Noise's ~600 on this hardware.
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent(UserAgent),
	}
	if cfg.QUIC {
		opts = append(opts, libp2p.Transport(libp2pquic.NewTransport))
	}
	if cfg.Registerer == nil {
		opts = append(opts, libp2p.DisableMetrics())
	} else {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	}
	if cfg.AutoNAT {
		opts = append(opts, libp2p.EnableNATService(), libp2p.EnableAutoNATv2())
	}
	if cfg.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if cfg.RelayClient {
		opts = append(opts, libp2p.EnableRelay(), libp2p.EnableAutoRelayWithPeerSource(n.relayCandidates,
			autorelay.WithMinInterval(time.Minute)))
	} else {
		opts = append(opts, libp2p.DisableRelay())
	}
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.connGater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.connGater))
	}
	return opts, release, nil
}

// ErrAddrInUse means a listen address is taken by another process. libp2p
// binds with SO_REUSEPORT (TCP hole punching needs it), so a second
// daemon on the same port would start and share it silently: its
// connections would land in either process.
var ErrAddrInUse = errors.New("p2p: listen address in use")

// AddrInUseError names the listen address another process holds.
type AddrInUseError struct {
	Addr string // the multiaddr, as configured
	Err  error
}

func (e *AddrInUseError) Error() string {
	return fmt.Sprintf("%s: %v", e.Addr, e.Err)
}

// Is makes errors.Is(err, ErrAddrInUse) hold.
func (e *AddrInUseError) Is(target error) bool { return target == ErrAddrInUse }

// Unwrap gives the bind error.
func (e *AddrInUseError) Unwrap() error { return e.Err }

// checkListenFree binds each fixed-port listen address once without
// SO_REUSEPORT: that fails while any other socket holds the port,
// reuseport or not.
func checkListenFree(addrs []string, quic bool) error {
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("%w: listen address %q: %w", ErrConfig, a, err)
		}
		if !quic && strings.Contains(a, "/quic") {
			continue
		}
		ipStr, err := m.ValueForProtocol(ma.P_IP4)
		if err != nil {
			if ipStr, err = m.ValueForProtocol(ma.P_IP6); err != nil {
				continue // a DNS name or no IP: libp2p reports it
			}
		}
		network, portStr := "tcp", ""
		if portStr, err = m.ValueForProtocol(ma.P_TCP); err != nil {
			network = "udp"
			if portStr, err = m.ValueForProtocol(ma.P_UDP); err != nil {
				continue
			}
		}
		if portStr == "0" {
			continue
		}
		hostPort := net.JoinHostPort(ipStr, portStr)
		var probe io.Closer
		if network == "tcp" {
			probe, err = net.Listen("tcp", hostPort)
		} else {
			probe, err = net.ListenPacket("udp", hostPort)
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return &AddrInUseError{Addr: a, Err: syscall.EADDRINUSE}
		}
		if err == nil {
			_ = probe.Close() // only a probe
		}
		// Other bind errors are libp2p's to report.
	}
	return nil
}

// relayCandidates offers connected peers as relay candidates to autorelay;
// autorelay keeps those that actually run a relay service.
func (n *Node) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	defer close(out)
	hp := n.liveHost.Load()
	if hp == nil {
		return out
	}
	h := *hp
	for _, p := range h.Network().Peers() {
		if len(out) == num {
			break
		}
		out <- h.Peerstore().PeerInfo(p)
	}
	return out
}

// connectBootstrap dials the bootstrap peers and the known peers of the
// previous run at once, and waits for the dials.
func (n *Node) connectBootstrap(ctx context.Context) {
	targets := n.dialTargets()
	if known := len(targets) - len(n.cfg.Bootstrap); known > 0 {
		n.log.Info(fmt.Sprintf("dialling %d known peers", known), "file", n.cfg.KnownPeersFile)
	}
	n.dialAll(ctx, targets, true)
}

// watchReachability follows AutoNAT's verdict for Reachability.
func (n *Node) watchReachability() {
	err := onEvent(n, func(e event.EvtLocalReachabilityChanged) {
		n.reachability.Store(int32(e.Reachability))
		n.log.Info("reachability changed", "reachability", e.Reachability.String())
	})
	if err != nil {
		n.log.Warn("cannot watch reachability", "err", err)
	}
}

// onEvent calls handle for every event of type E on the host's bus, in
// order, until the node closes.
func onEvent[E any](n *Node, handle func(E)) error {
	sub, err := n.host.EventBus().Subscribe(new(E))
	if err != nil {
		return err
	}
	n.wg.Go(func() {
		defer sub.Close()
		for {
			select {
			case <-n.ctx.Done():
				return
			case ev, ok := <-sub.Out():
				if !ok {
					return
				}
				handle(ev.(E))
			}
		}
	})
	return nil
}

type mdnsNotifee struct{ n *Node }

// HandlePeerFound dials a peer announced on the local link.
func (m mdnsNotifee) HandlePeerFound(pi peer.AddrInfo) {
	n := m.n
	if pi.ID == n.host.ID() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.wg.Go(func() {
		ctx, cancel := context.WithTimeout(n.ctx, bootstrapTimeout)
		defer cancel()
		if err := n.host.Connect(ctx, pi); err != nil {
			n.log.Debug("mDNS peer unreachable", "peer", pi.ID, "err", err)
		}
	})
}

// Close stops everything New started, in reverse order, and waits for the
// node's goroutines. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		topics := n.topics
		n.topics = nil
		n.mu.Unlock()
		var errs []error
		if n.host != nil {
			// Before the host goes: the addresses come from its peerstore.
			if err := n.known.save(n.host.Peerstore()); err != nil {
				n.log.Warn("cannot save known peers", "err", err)
			}
		}
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		for _, t := range topics {
			t.close()
		}
		if n.prov != nil {
			errs = append(errs, n.prov.Close())
		}
		n.cancel() // stops gossipsub and the node's own goroutines
		if n.public != nil {
			errs = append(errs, n.public.Close())
		}
		if n.dht != nil {
			errs = append(errs, n.dht.Close())
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		n.wg.Wait()
		n.metrics.unregister()
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("p2p: close node: %w", err)
		}
	})
	return n.closeErr
}

// Serve replaces the node's handlers: a daemon whose handlers need the
// node itself starts it with empty ones and serves once they exist.
// Until then requests are refused ("not served") and gossip is ignored.
func (n *Node) Serve(h Handlers) { n.handlers.Store(&h) }

// ID is this node's peer ID, derived from its identity key.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host exposes the libp2p host so other engines (the transfer engine's
// /gentoo-p2p/fetch/1) register their protocols on the same identity and
// connections.
func (n *Node) Host() host.Host { return n.host }

// Addrs returns the node's dialable addresses with the /p2p/<id> suffix,
// ready to paste into another node's bootstrap list.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// AddrInfo returns the node's ID and addresses, the form Config.Bootstrap
// takes.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
}

// RememberAddrs keeps where a peer can be reached (a provider record's
// addresses) for an hour, so a transfer can dial it.
func (n *Node) RememberAddrs(ai peer.AddrInfo) {
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
}

// KnownAddrs are the addresses the node knows for p; none when it never
// heard of it.
func (n *Node) KnownAddrs(p peer.ID) []ma.Multiaddr { return n.host.Peerstore().Addrs(p) }

// Peers lists the connected gentoo-p2pd peers (identified as speaking one
// of our protocols), sorted by ID.
func (n *Node) Peers() []PeerInfo {
	byID := map[peer.ID]*PeerInfo{}
	var order []peer.ID
	for _, c := range n.host.Network().Conns() {
		p := c.RemotePeer()
		if !n.isOurs(p) {
			continue // a public DHT node of the rendezvous, or not identified yet
		}
		pi, ok := byID[p]
		if !ok {
			dir := "outbound"
			if c.Stat().Direction == network.DirInbound {
				dir = "inbound"
			}
			pi = &PeerInfo{ID: p, Latency: n.host.Peerstore().LatencyEWMA(p), Direction: dir}
			byID[p] = pi
			order = append(order, p)
		}
		pi.Addrs = append(pi.Addrs, c.RemoteMultiaddr())
	}
	slices.Sort(order)
	out := make([]PeerInfo, 0, len(order))
	for _, p := range order {
		out = append(out, *byID[p])
	}
	return out
}

// Reachability summarises whether others can dial us: "relayed" when we
// advertise circuit-relay addresses, else AutoNAT's "public", "private" or
// "unknown".
func (n *Node) Reachability() string {
	for _, a := range n.host.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			return "relayed"
		}
	}
	switch network.Reachability(n.reachability.Load()) {
	case network.ReachabilityPublic:
		return "public"
	case network.ReachabilityPrivate:
		return "private"
	default:
		return "unknown"
	}
}

// DirectAddr is the IP address of a direct (not relayed) connection to p,
// if there is one: the network a message p delivered itself came from.
func (n *Node) DirectAddr(p peer.ID) (netip.Addr, bool) {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if c.Stat().Limited {
			continue // a circuit relay: the address is the relay's
		}
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		ip, err := manet.ToIP(c.RemoteMultiaddr())
		if err != nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// The vocabulary shared with the daemon's jobs lives in package wire.
type (
	Handlers      = wire.Handlers
	PeerInfo      = wire.PeerInfo
	CatalogCursor = wire.CatalogCursor
	ProvideStats  = wire.ProvideStats
)
