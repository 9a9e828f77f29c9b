package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// DHTMode says whether this node answers DHT queries from others. Servers
// hold provider records and route; clients only ask. A node behind NAT that
// cannot be dialled is a useless server, hence the auto mode.
type DHTMode string

const (
	// DHTServer always answers DHT queries. Use it on LANs and in tests:
	// AutoNAT never reports a LAN as public, so auto mode stays a client.
	DHTServer DHTMode = "server"
	// DHTAuto is a server unless AutoNAT reports the node unreachable
	// (libp2p's ModeAutoServer): a LAN without AutoNAT servers still gets a
	// working DHT, a NATed laptop on the internet drops to client.
	DHTAuto DHTMode = "auto"
	// DHTClient never answers DHT queries.
	DHTClient DHTMode = "client"
)

// DefaultPort is the TCP and UDP port gentoo-p2pd listens on by default.
const DefaultPort = 4701

// Defaults for the connection manager: a DHT node needs a routing table's
// worth of peers, not the 160/192 libp2p default which lets every node of a
// small network connect to every other.
const (
	DefaultConnLow  = 32
	DefaultConnHigh = 64
)

// Defaults for the attest/catalog request limits: one peer asks for one
// catalog page and maybe one build key at a time.
const (
	DefaultMaxPeerRequests = 2
	DefaultMaxRequests     = 16
)

// Defaults for the about rate: a peer asks once per search that found
// nothing, so a burst of a few and one a second are plenty.
const (
	DefaultAboutInterval = time.Second
	DefaultAboutBurst    = 5
)

// DefaultReprovideInterval is how often every provided key is announced
// again. Provider records live 48 h on the DHT, so 22 h leaves room for one
// missed cycle (the amino DHT uses the same figures).
const DefaultReprovideInterval = 22 * time.Hour

// ErrConfig is wrapped by every configuration error New returns.
var ErrConfig = errors.New("p2p: invalid config")

// Config describes one node. Build it with DefaultConfig and override fields;
// the zero value of a field never silently means "unlimited".
type Config struct {
	// PrivKey is the node identity (see LoadOrCreateKey). Required.
	PrivKey crypto.PrivKey
	// ListenAddrs are multiaddrs to listen on. QUIC addresses are dropped
	// when QUIC is false. Tests use /ip4/127.0.0.1/tcp/0.
	ListenAddrs []string
	// Bootstrap peers are dialled at start and seed the DHT routing table.
	// There are no built-in bootstrap peers: an empty list, MDNS=false and
	// no Rendezvous mean an isolated node; the private DHT never mixes with
	// the IPFS one (the rendezvous uses a separate, client-mode instance).
	Bootstrap []peer.AddrInfo
	// Rendezvous, when set, finds peers over the internet through the
	// public libp2p DHT (see Rendezvous); nil keeps the node off it.
	Rendezvous *Rendezvous
	// MDNS finds peers on the local link (a lab, a fleet) without bootstrap.
	MDNS bool
	// QUIC enables the QUIC transport besides TCP.
	QUIC bool
	// AutoNAT offers the AutoNAT service to peers and enables AutoNAT v2 so
	// this node learns whether it is publicly reachable.
	AutoNAT bool
	// HolePunching enables DCUtR so two NATed peers can connect directly.
	HolePunching bool
	// RelayClient lets the node dial through and advertise circuit relay v2
	// addresses when it is not reachable. Relays cap data, so bulk transfers
	// must still go direct.
	RelayClient bool
	// NATPortMap asks the home router for a port mapping (UPnP/NAT-PMP).
	NATPortMap bool
	// ConnLow and ConnHigh are the connection manager watermarks: above
	// ConnHigh connections are trimmed down to ConnLow.
	ConnLow, ConnHigh int
	// ConnGrace protects new connections from trimming for this long.
	ConnGrace time.Duration
	// DHTMode selects server, auto or client.
	DHTMode DHTMode
	// ReprovideInterval is the reprovide cycle of the sweeping provider.
	ReprovideInterval time.Duration
	// MaxPeerRequests and MaxRequests bound the attest and catalog requests
	// served at once, per remote peer and in total; more are refused as
	// "busy" before any handler runs, so a few identities opening many
	// streams cannot make this node decode and answer without limit.
	MaxPeerRequests, MaxRequests int
	// AboutInterval and AboutBurst rate-limit the about requests each
	// remote peer may make (one per AboutInterval after a burst of
	// AboutBurst); more are refused as "busy" before the store is read.
	// Zero means DefaultAboutInterval and DefaultAboutBurst.
	AboutInterval time.Duration
	AboutBurst    int
	// Registerer receives this node's metrics; nil disables metrics (also
	// libp2p's own). Several nodes in one process need one registry each.
	Registerer prometheus.Registerer
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// KnownPeersFile keeps the last KnownPeers peers the node was connected
	// to across restarts (JSON, rewritten atomically at most every few
	// seconds and on Close); they are dialled at start like bootstrap
	// peers. Empty keeps them in memory only.
	KnownPeersFile string
	// KnownPeers is how many peers are remembered; 0 means
	// DefaultKnownPeers.
	KnownPeers int
	// PlatformPeers is how many connected peers of its platform
	// FindPlatformPeers seeks through the private DHT; 0 disables it.
	PlatformPeers int

	// connGater is a test hook: it lets tests force a topology (A-B-C
	// without A-C) that DHT peer discovery would otherwise undo.
	connGater connmgr.ConnectionGater
	// dhtOpts is a test hook: extra DHT options (e.g. a request hook that
	// observes reprovides).
	dhtOpts []dht.Option
	// redialMin and redialMax bound the backoff of redials when the node
	// has no peer left; saveEvery is the least time between two writes of
	// KnownPeersFile. Zero means the defaults; tests shorten them.
	redialMin, redialMax, saveEvery time.Duration
}

// DefaultConfig returns the production defaults: listen on port 4701 over TCP
// and QUIC on IPv4 and IPv6, NAT traversal on, DHT in auto mode, no
// bootstrap peers and no key (the caller sets PrivKey).
func DefaultConfig() Config {
	port := fmt.Sprint(DefaultPort)
	return Config{
		ListenAddrs: []string{
			"/ip4/0.0.0.0/tcp/" + port,
			"/ip4/0.0.0.0/udp/" + port + "/quic-v1",
			"/ip6/::/tcp/" + port,
			"/ip6/::/udp/" + port + "/quic-v1",
		},
		MDNS:              true,
		QUIC:              true,
		AutoNAT:           true,
		HolePunching:      true,
		RelayClient:       true,
		ConnLow:           DefaultConnLow,
		ConnHigh:          DefaultConnHigh,
		ConnGrace:         time.Minute,
		DHTMode:           DHTAuto,
		ReprovideInterval: DefaultReprovideInterval,
		PlatformPeers:     DefaultPlatformPeers,
	}
}

// validate fills in defaults that cannot be wrong and rejects the rest.
func (c *Config) validate() error {
	if c.PrivKey == nil {
		return fmt.Errorf("%w: PrivKey is nil", ErrConfig)
	}
	if len(c.ListenAddrs) == 0 {
		return fmt.Errorf("%w: ListenAddrs is empty", ErrConfig)
	}
	if c.ConnLow <= 0 {
		c.ConnLow = DefaultConnLow
	}
	if c.ConnHigh <= 0 {
		c.ConnHigh = DefaultConnHigh
	}
	if c.ConnHigh < c.ConnLow {
		return fmt.Errorf("%w: ConnHigh %d below ConnLow %d", ErrConfig, c.ConnHigh, c.ConnLow)
	}
	if c.ConnGrace <= 0 {
		c.ConnGrace = time.Minute
	}
	switch c.DHTMode {
	case "":
		c.DHTMode = DHTAuto
	case DHTServer, DHTAuto, DHTClient:
	default:
		return fmt.Errorf("%w: DHTMode %q is not server, auto or client", ErrConfig, c.DHTMode)
	}
	if c.AboutInterval <= 0 {
		c.AboutInterval = DefaultAboutInterval
	}
	if c.AboutBurst <= 0 {
		c.AboutBurst = DefaultAboutBurst
	}
	if c.MaxPeerRequests <= 0 {
		c.MaxPeerRequests = DefaultMaxPeerRequests
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.MaxRequests < c.MaxPeerRequests {
		return fmt.Errorf("%w: MaxRequests %d below MaxPeerRequests %d", ErrConfig, c.MaxRequests, c.MaxPeerRequests)
	}
	if c.ReprovideInterval < 0 {
		return fmt.Errorf("%w: ReprovideInterval %s is negative", ErrConfig, c.ReprovideInterval)
	}
	if c.ReprovideInterval == 0 {
		c.ReprovideInterval = DefaultReprovideInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PlatformPeers < 0 {
		return fmt.Errorf("%w: PlatformPeers %d is negative", ErrConfig, c.PlatformPeers)
	}
	if c.KnownPeers <= 0 {
		c.KnownPeers = DefaultKnownPeers
	}
	if c.redialMin <= 0 {
		c.redialMin = defaultRedialMin
	}
	if c.redialMax < c.redialMin {
		c.redialMax = max(defaultRedialMax, c.redialMin)
	}
	if c.saveEvery <= 0 {
		c.saveEvery = defaultSaveEvery
	}
	return nil
}
