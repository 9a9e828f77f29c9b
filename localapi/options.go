package localapi

import (
	"cmp"
	"context"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Network is what status and peers read of the peer-to-peer network, and
// how `peers add` dials. *p2p.Node implements it.
type Network interface {
	Addrs() []ma.Multiaddr
	Connect(ctx context.Context, ai peer.AddrInfo) error
	Peers() []wire.PeerInfo
	Reachability() string
	ProvideStats(ctx context.Context) (wire.ProvideStats, error)
	// About asks a peer what it is and holds (find and search say why
	// they found nothing); FindProviders counts a build's holders.
	About(ctx context.Context, p peer.ID, query string) ([]byte, error)
	FindProviders(ctx context.Context, key cid.Cid, max int) ([]peer.AddrInfo, error)
}

// Options are what a Server needs.
type Options struct {
	Store       *store.Store
	Votes       *votes.Book
	Own         *own.Builds
	Materialize *materialize.Materializer
	Net         Network
	Self        peer.ID
	Platform    string
	// PlatformSettings are the values Platform hashes (CHOST, CFLAGS …),
	// shown when find or search has nothing for this platform.
	PlatformSettings map[string]string
	Config           *config.Config
	Version          string
	Started          time.Time
	// Gatherer holds the daemon's metrics (status reads bytes served).
	Gatherer prometheus.Gatherer
	// Discovery describes how peers are found (status); nil shows nothing.
	Discovery func() string
	// Builder is the builder's state (status); nil when build.donate is
	// off.
	Builder func() *api.Builds
	// GatewayListing counts what the gateway lists and says why it lists
	// nothing (status); nil when the gateway is off.
	GatewayListing func(ctx context.Context) (listed int, note string)
	// GatewayURL and MetricsURL are where those listen ("" when off).
	GatewayURL, MetricsURL func() string
	// Gateway describes the gateway for setup-portage; nil when it is off.
	Gateway func() (api.GatewayInfo, error)
	// NotListed says why the gateway's last index left an allowed build
	// out (it does not fit this machine …); nil when the gateway is off.
	NotListed func(keys.Build) (reason string, ok bool)
	// VDB is portage's installed-package database ("" means
	// /var/db/pkg): announce derives the variant an install or a build
	// without a binpkg wants from its entry there.
	VDB string
	// MD5Cache resolves eclass digests of those descriptors (nil: none).
	MD5Cache *identity.MD5Cache
	// ExpandNative resolves -march=native and friends as this machine's
	// gcc does; nil leaves demand with native flags unrecorded.
	ExpandNative func(flag string) (string, error)
	// Files bounds the metadata read from the vdb and from binpkgs
	// (zero: xpak.DefaultLimits).
	Files xpak.Limits
}

// Server answers the local API.
type Server struct {
	store     *store.Store
	votes     *votes.Book
	own       *own.Builds
	mz        *materialize.Materializer
	net       Network
	self      peer.ID
	platform  string
	settings  map[string]string
	cfg       *config.Config
	version   string
	started   time.Time
	reg       prometheus.Gatherer
	urls      [2]func() string
	gateway   func() (api.GatewayInfo, error)
	notListed func(keys.Build) (string, bool)
	discovery func() string
	builder   func() *api.Builds
	listing   func(ctx context.Context) (int, string)
	vdb       string
	md5cache  *identity.MD5Cache
	expand    func(flag string) (string, error)
	files     xpak.Limits
}

// New makes a Server.
func New(o Options) *Server {
	if o.Files == (xpak.Limits{}) {
		o.Files = xpak.DefaultLimits()
	}
	return &Server{
		store: o.Store, votes: o.Votes, own: o.Own, mz: o.Materialize, net: o.Net,
		self: o.Self, platform: o.Platform, settings: o.PlatformSettings, cfg: o.Config, version: o.Version,
		started: o.Started, reg: o.Gatherer, urls: [2]func() string{o.GatewayURL, o.MetricsURL},
		gateway: o.Gateway, notListed: o.NotListed, discovery: o.Discovery,
		listing: o.GatewayListing, vdb: cmp.Or(o.VDB, "/var/db/pkg"), md5cache: o.MD5Cache, expand: o.ExpandNative,
		files: o.Files, builder: o.Builder,
	}
}
