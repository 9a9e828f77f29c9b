package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/binhost"
	"github.com/gentoo-p2p/gentoo-p2pd/builder"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/localapi"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Version is reported by status; cmd sets it from its link-time version.
var Version = "dev"

// Files in the state dir besides the store's own.
const (
	IdentityKeyFile = "identity.key"
	SigningKeyFile  = "signing-key.asc"
	// KnownPeersFile keeps the peers the node was last connected to, so a
	// restarted daemon (or one whose bootstrap peer restarted) finds them.
	KnownPeersFile = "known-peers.json"
)

// Options are what a Daemon needs beyond its Config.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// Registerer receives the daemon's metrics; nil gives it a registry of
	// its own, so several daemons fit in one process (tests, the demo).
	Registry *prometheus.Registry
	// VDB is portage's installed-package database: what fits this
	// machine (sonames, slots) and gateway.prefetch = installed; empty
	// means /var/db/pkg.
	VDB string
	// Demand, when set, is what the builder (build.donate) is asked to
	// build instead of the network's demand: tests name their package.
	Demand builder.Demand
}

// Daemon is one running gentoo-p2pd.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	store    *store.Store
	key      crypto.PrivKey
	self     peer.ID
	policy   trust.Policy
	platform string
	vdb      string
	limits   xpak.Limits
	md5cache *identity.MD5Cache
	// expand resolves native compiler flags with this machine's gcc.
	expand   func(flag string) (string, error)
	machines machineCache
	// listings are what the gateway lists (nil when it is off).
	listings *binhost.Listings
	started  time.Time
	gwKey    *openpgp.Entity // the gateway's signing key; nil when it is off
	xferM    *transfer.Metrics

	// The jobs, made by Run once the node exists: votes from the network,
	// own builds, materialized files, the gateway's listings, the API.
	node  *p2p.Node
	votes *votes.Book
	own   *own.Builds
	mz    *materialize.Materializer
	api   *localapi.Server
	// builder donates builds (build.donate); nil when off. demand
	// replaces the network's demand (Options.Demand).
	builder *builder.Builder
	demand  builder.Demand

	ready   chan struct{}
	gwAddr  atomic.Value // string: gateway base URL
	metAddr atomic.Value // string: metrics URL
}

// New opens the state dir (failing clearly if another daemon holds it),
// loads or creates the identity key, and checks the configuration. Nothing
// touches the network until Run.
func New(opts Options) (*Daemon, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("daemon: no configuration")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	key, err := p2p.LoadOrCreateKey(filepath.Join(cfg.StateDir, IdentityKeyFile))
	if err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.StateDir, store.Options{CacheDir: cfg.Cache.Dir, Logger: log})
	if err != nil {
		return nil, err
	}
	lim := xpak.DefaultLimits()
	if cfg.Limits.MaxImageBytes > 0 {
		lim.MaxImageBytes = cfg.Limits.MaxImageBytes
	}
	if cfg.Limits.MaxMetadataValue > 0 {
		lim.MaxMetadataValue = cfg.Limits.MaxMetadataValue
	}
	d := &Daemon{
		cfg:      cfg,
		log:      log,
		reg:      reg,
		store:    st,
		key:      key,
		self:     self,
		policy:   policy,
		platform: localPlatform(cfg.Portage),
		expand:   identity.GCCNative(context.Background(), identity.GCCFor(cfg.Portage.CHOST)),
		vdb:      cmp.Or(opts.VDB, "/var/db/pkg"),
		demand:   opts.Demand,
		limits:   lim,
		started:  time.Now(),
		ready:    make(chan struct{}),
	}
	if cfg.Portage.Repo != "" {
		d.md5cache = identity.LoadMD5Cache(cfg.Portage.Repo)
	}
	// Records stored before the catalog was paged from the store's time
	// index get their attestation time once.
	if n, err := st.BackfillAttestationTimes(func(blob []byte) (int64, error) {
		s, err := trust.Decode(blob)
		if err != nil {
			return 0, err
		}
		return s.Attestation.Time.Unix(), nil
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("index attestation times: %w", err), st.Close())
	} else if n > 0 {
		log.Info("indexed stored attestations by time", "records", n)
	}
	if cfg.Gateway.Enabled {
		if d.gwKey, err = SigningKey(cfg.StateDir); err != nil {
			return nil, errors.Join(fmt.Errorf("gateway signing key: %w", err), st.Close())
		}
	}
	d.xferM, err = transfer.NewMetrics(reg)
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	return d, nil
}

// ID is the daemon's peer id.
func (d *Daemon) ID() peer.ID { return d.self }

// Ready is closed once Run has started every service.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Node is the libp2p node (nil before Run).
func (d *Daemon) Node() *p2p.Node { return d.node }

// Store is the daemon's database.
func (d *Daemon) Store() *store.Store { return d.store }

// Platform is the platform whose builds this daemon lists for portage.
func (d *Daemon) Platform() string { return d.platform }

// gatewayListing counts what the gateway lists for portage and says why
// it lists nothing (no build of this platform known, none allowed yet)
// or leaves allowed builds out (trust explain says why for each: most
// often they do not fit this machine).
func (d *Daemon) gatewayListing(ctx context.Context) (int, string) {
	entries, err := d.listings.Entries(ctx)
	if err != nil {
		return 0, "the index cannot be made: " + err.Error()
	}
	listed := len(entries)
	bks, err := d.votes.Candidates(d.platform)
	if err != nil {
		return listed, "the catalog cannot be read: " + err.Error()
	}
	leftOut := 0
	for _, bk := range bks {
		if _, ok := d.listings.Why(bk); ok {
			leftOut++
		}
	}
	prefix := ""
	if listed == 0 {
		prefix = "nothing listed: "
	}
	if leftOut > 0 {
		return listed, fmt.Sprintf("%s%d allowed build%s left out: gentoo-p2pd trust explain CPV says why "+
			"(most often it does not fit this machine)", prefix, leftOut, plural(leftOut))
	}
	if listed > 0 {
		return listed, ""
	}
	known, err := d.store.BuildKeyVoters(d.platform)
	if err != nil {
		return 0, "the catalog cannot be read: " + err.Error()
	}
	if len(known) == 0 {
		return 0, fmt.Sprintf("nothing listed: no peer has attested a build of this machine's platform %s "+
			"(a hash of CHOST and *FLAGS); gentoo-p2pd search TERM shows which platforms peers have", d.platform)
	}
	return 0, fmt.Sprintf("nothing listed: %d build%s of this platform known, none allowed yet "+
		"(gentoo-p2pd search TERM shows the votes, trust explain CPV why)", len(known), plural(len(known)))
}

// discovery is status' line on how peers are found.
func (d *Daemon) discovery() string {
	var parts []string
	if d.cfg.Network.MDNS {
		parts = append(parts, "mDNS")
	}
	if n := len(d.cfg.Network.Bootstrap); n > 0 {
		parts = append(parts, fmt.Sprintf("%d bootstrap peer%s", n, plural(n)))
	}
	rs := d.node.RendezvousStatus()
	switch {
	case !rs.Enabled:
	case rs.PublicDHTPeers == 0:
		parts = append(parts, "public DHT rendezvous (public DHT not reached yet)")
	case !rs.Advertised:
		parts = append(parts, fmt.Sprintf("public DHT rendezvous (%d DHT nodes known, not advertised yet)", rs.PublicDHTPeers))
	default:
		parts = append(parts, fmt.Sprintf("public DHT rendezvous (advertised; %d peer%s found through it)", rs.Found, plural(rs.Found)))
	}
	if len(parts) == 0 {
		// The platform peers are found through peers met these ways.
		return "none: no mDNS, no bootstrap peers, no rendezvous (only known peers and peers add)"
	}
	if ps := d.node.PlatformPeersStatus(d.platform); ps.Enabled {
		parts = append(parts, fmt.Sprintf("platform peers on the DHT (%d of %d wanted connected, %d found)", ps.Connected, ps.Want, ps.Found))
	}
	return strings.Join(parts, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// GatewayURL is the base URL of the binhost gateway ("" when off).
func (d *Daemon) GatewayURL() string { s, _ := d.gwAddr.Load().(string); return s }

// MetricsURL is the metrics endpoint ("" when off).
func (d *Daemon) MetricsURL() string { s, _ := d.metAddr.Load().(string); return s }

// API is the local API's server (nil before Ready).
func (d *Daemon) API() *localapi.Server { return d.api }

// Socket is the API socket path.
func (d *Daemon) Socket() string { return d.cfg.API.Socket }

// Run starts everything, blocks until ctx ends or a service fails, and then
// shuts everything down in reverse order. The store is closed when Run
// returns: a Daemon runs once.
func (d *Daemon) Run(ctx context.Context) (err error) {
	defer func() {
		if d.votes != nil {
			if ferr := d.votes.FlushStanding(); ferr != nil {
				d.log.Warn("standing ledger: agreements of the last minute not recorded", "err", ferr)
			}
		}
		if cerr := d.store.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for _, w := range d.cfg.Warnings {
		d.log.Warn("config", "note", w)
	}

	bootstrap, err := parseBootstrap(d.cfg.Network.Bootstrap)
	if err != nil {
		return err
	}
	pcfg := p2p.DefaultConfig()
	pcfg.PrivKey = d.key
	pcfg.ListenAddrs = d.cfg.Network.Listen
	pcfg.Bootstrap = bootstrap
	pcfg.MDNS = d.cfg.Network.MDNS
	if d.cfg.Network.Rendezvous {
		peers, err := parseMultiaddrs("network.rendezvous_peers", d.cfg.Network.RendezvousPeers)
		if err != nil {
			return err
		}
		pcfg.Rendezvous = &p2p.Rendezvous{Peers: peers}
	}
	pcfg.QUIC = d.cfg.Network.QUIC
	pcfg.AutoNAT = d.cfg.Network.AutoNAT
	pcfg.HolePunching = d.cfg.Network.HolePunching
	pcfg.RelayClient = d.cfg.Network.RelayClient
	pcfg.ConnLow, pcfg.ConnHigh = d.cfg.Network.ConnLow, d.cfg.Network.ConnHigh
	pcfg.DHTMode = p2p.DHTMode(d.cfg.Network.DHTMode)
	pcfg.PlatformPeers = d.cfg.Network.PlatformPeers
	if d.cfg.Network.ReprovideInterval > 0 {
		pcfg.ReprovideInterval = d.cfg.Network.ReprovideInterval
	}
	pcfg.MaxPeerRequests, pcfg.MaxRequests = d.cfg.Limits.PeerRequests, d.cfg.Limits.Requests
	pcfg.Registerer = d.reg
	pcfg.Logger = d.log.With("component", "p2p")
	pcfg.KnownPeersFile = filepath.Join(d.cfg.StateDir, KnownPeersFile)

	// The node starts serving nothing: its handlers are the jobs below,
	// which need the node themselves.
	node, err := p2p.New(ctx, pcfg, p2p.Handlers{})
	var inUse *p2p.AddrInUseError
	if errors.As(err, &inUse) {
		return fmt.Errorf("network.listen %s: address already in use (another daemon, perhaps another user's, holds it: set network.listen to another port)", inUse.Addr)
	}
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	d.node = node
	defer node.Close()
	if err := d.wire(node); err != nil {
		return err
	}
	node.Serve(p2p.Handlers{
		Attestations:        d.votes.ServeAttestations,
		Catalog:             d.votes.ServeCatalog,
		CatalogIDs:          d.votes.ServeCatalogIDs,
		CatalogRecords:      d.votes.ServeCatalogRecords,
		CatalogIDsUntil:     d.votes.ServeCatalogIDsUntil,
		CatalogFingerprints: d.votes.ServeCatalogFingerprints,
		OnGossip:            d.votes.OnGossip,
		About:               d.api.About,
	})

	xfer := transfer.NewServer(node.Host(), d.mz, transfer.ServerOptions{
		// transfer.upload_slots = 0 means serve nothing (to the server,
		// 0 slots means its default).
		Enabled:            d.cfg.Mode != config.ModeConsume && d.cfg.Transfer.UploadSlots > 0,
		UploadSlots:        d.cfg.Transfer.UploadSlots,
		MaxRequestsPerPeer: d.cfg.Transfer.MaxRequestsPerPeer,
		GlobalRate:         d.cfg.Transfer.UploadRate,
		PerPeerRate:        d.cfg.Transfer.PeerUploadRate,
		ProgressTimeout:    d.cfg.Transfer.UploadStallTimeout,
		Metrics:            d.xferM,
		Logger:             d.log.With("component", "transfer"),
	})
	defer xfer.Close()

	if err := node.JoinPlatform(d.platform); err != nil {
		return fmt.Errorf("p2p: join platform topic %s: %w", d.platform, err)
	}
	// Random connections leave a small platform's topic disconnected.
	if err := node.FindPlatformPeers(d.platform); err != nil {
		return fmt.Errorf("p2p: seek peers of platform %s: %w", d.platform, err)
	}

	// Every listener is open before anything runs, so a failure here
	// leaves nothing behind.
	apiL, err := api.Listen(d.cfg.API.Socket)
	if err != nil {
		return err
	}
	defer apiL.Close()
	var gwL, metL net.Listener
	var gw *portagehook.Gateway
	if d.cfg.Gateway.Enabled {
		if gwL, err = listenTCP("gateway.listen", d.cfg.Gateway.Listen); err != nil {
			return err
		}
		defer gwL.Close()
		gw = d.newGateway()
		// Background re-packs stop before the node and the store close.
		defer gw.Close()
	}
	if d.cfg.Metrics.Listen != "" {
		if metL, err = listenTCP("metrics.listen", d.cfg.Metrics.Listen); err != nil {
			return err
		}
		defer metL.Close()
	}

	runCtx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(runCtx)
	// Whatever path Run leaves by, its goroutines end first.
	defer func() {
		cancel()
		if werr := g.Wait(); err == nil {
			err = werr
		}
	}()

	// The local API comes up first so `status` works while PKGDIR is read.
	serve(g, gctx, &http.Server{Handler: d.api.Handler(), ReadHeaderTimeout: 10 * time.Second}, apiL)
	if gwL != nil {
		serve(g, gctx, &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}, gwL)
		d.gwAddr.Store("http://" + gwL.Addr().String() + strings.TrimSuffix(d.cfg.Gateway.Path, "/"))
	}
	if metL != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
		serve(g, gctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, metL)
		d.metAddr.Store("http://" + metL.Addr().String() + "/metrics")
	}

	// Own builds: index PKGDIR (and the builder's), attest, announce;
	// then keep watching.
	if d.builder != nil {
		if err := d.builder.Prepare(); err != nil {
			return err
		}
	}
	if err := d.own.Start(gctx); err != nil {
		return err
	}
	if err := d.mz.AnnounceCache(); err != nil {
		d.log.Warn("announce cached copies", "err", err)
	}
	g.Go(func() error { return d.own.Watch(gctx) })
	g.Go(func() error { d.votes.SyncLoop(gctx); return nil })
	g.Go(func() error { d.votes.RefreshDemandLoop(gctx, d.stillInstalled); return nil })
	g.Go(func() error { d.votes.VouchLoop(gctx); return nil })
	g.Go(func() error { d.mz.Run(gctx); return nil })
	if d.builder != nil {
		g.Go(func() error { return d.builder.Run(gctx) })
	}

	close(d.ready)
	d.log.Info("gentoo-p2pd running",
		"peer", d.self.String(), "mode", string(d.cfg.Mode), "platform", d.platform,
		"pkgdir", d.cfg.Portage.PkgDir, "socket", d.cfg.API.Socket, "gateway", d.GatewayURL())
	<-gctx.Done()
	d.log.Info("gentoo-p2pd stopping")
	return nil
}

// wire makes the daemon's jobs around node. Data flows one way: votes
// checks and keeps what peers send; own attests this machine's builds into
// it; materialize turns allowed builds into verified files; the gateway's
// listings and the local API read from all three.
func (d *Daemon) wire(node *p2p.Node) error {
	d.votes = votes.New(votes.Options{
		Store: d.store, Policy: d.policy, Self: d.self, Key: d.key, Platform: d.platform,
		Limits: d.cfg.Limits, Files: d.limits, Installed: d.installed, Net: node,
		StandingDays: d.cfg.Trust.StandingDays, Logger: d.log, Registry: d.reg,
	})
	var downloaded openpgp.EntityList
	if d.gwKey != nil {
		downloaded = append(downloaded, d.gwKey)
	}
	var buildDirs []string
	if d.cfg.Build.Donate {
		buildDirs = []string{builder.PKGDIRIn(d.cfg.Build.Root)}
	}
	d.own = own.New(own.Options{
		Store: d.store, Votes: d.votes, Net: node, Key: d.key, Self: d.self,
		PkgDir: d.cfg.Portage.PkgDir, BuildDirs: buildDirs, Mode: d.cfg.Mode, MD5Cache: d.md5cache, ExpandNative: d.expand, Files: d.limits,
		Downloaded: append(downloaded, d.policy.PGPKeyring...), VDB: d.vdb, Logger: d.log, Registry: d.reg,
	})
	d.mz = materialize.New(materialize.Options{
		Store: d.store, Votes: d.votes, Net: node, Self: d.self, Platform: d.platform,
		Fetch: func(ctx context.Context, want transfer.Want, peers []peer.AddrInfo, o transfer.FetchOptions) (transfer.Result, error) {
			return transfer.Fetch(ctx, node.Host(), want, peers, o)
		},
		Mode: d.cfg.Mode, DiskBudget: d.cfg.Cache.DiskBudget, Files: d.limits, Transfer: d.xferM,
		Logger: d.log, Registry: d.reg, DownloadRate: d.cfg.Transfer.DownloadRate,
	})
	o := localapi.Options{
		Store: d.store, Votes: d.votes, Own: d.own, Materialize: d.mz, Net: node,
		Self: d.self, Platform: d.platform, PlatformSettings: platformSettings(d.cfg.Portage, d.expand),
		Config: d.cfg, Version: Version, Started: d.started,
		Gatherer: d.reg, GatewayURL: d.GatewayURL, MetricsURL: d.MetricsURL, Discovery: d.discovery,
		VDB: d.vdb, MD5Cache: d.md5cache, ExpandNative: d.expand, Files: d.limits,
	}
	if d.cfg.Build.Donate {
		b, err := d.newBuilder()
		if err != nil {
			return err
		}
		d.builder = b
		o.Builder = b.Status
	}
	if d.gwKey != nil {
		d.listings = binhost.New(binhost.Options{
			Store: d.store, Votes: d.votes, Materialize: d.mz, Platform: d.platform,
			Prefetch:  d.cfg.Gateway.Prefetch,
			Installed: d.installed,
			Machine:   d.machine,
			Logger:    d.log.With("component", "gateway"), Registry: d.reg,
		})
		o.Gateway = d.gatewayInfo
		o.NotListed = d.listings.Why
		o.GatewayListing = d.gatewayListing
	}
	d.api = localapi.New(o)
	return nil
}

// installed lists the packages installed here (category/name), from the vdb.
func (d *Daemon) installed() map[string]bool { return portagehook.InstalledPackages(d.vdb) }

// stillInstalled reports whether the vdb still has an entry for cpv, the
// category/package-version of one of this daemon's own demand records
// (votes.InstalledCheck): a stat, not a read of the entry.
func (d *Daemon) stillInstalled(cpv string) (bool, error) {
	cat, pf, ok := strings.Cut(cpv, "/")
	if !ok || !vdbName(cat) || !vdbName(pf) {
		return false, fmt.Errorf("vdb: %q is not category/package-version", cpv)
	}
	fi, err := os.Stat(filepath.Join(d.vdb, cat, pf))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.IsDir(), nil
}

// vdbName is one path component portage could have written.
func vdbName(s string) bool {
	return s != "" && !strings.HasPrefix(s, ".") && !strings.ContainsAny(s, "/\x00")
}

// newGateway is the binhost portage reads: the Allowed builds of this
// platform, re-packed and signed with the gateway's key.
func (d *Daemon) newGateway() *portagehook.Gateway {
	var header portagehook.Fields
	if d.cfg.Portage.ARCH != "" {
		header.Set("ARCH", d.cfg.Portage.ARCH)
	}
	if d.cfg.Portage.CHOST != "" {
		header.Set("CHOST", d.cfg.Portage.CHOST)
	}
	return portagehook.NewGateway(d.listings, portagehook.GatewayOptions{
		Path:           d.cfg.Gateway.Path,
		CacheDir:       filepath.Join(d.cfg.StateDir, "gateway"),
		Signer:         portagehook.NewSigner(d.gwKey, d.started),
		Covered:        identity.IsCovered,
		Canonical:      identity.ServedValue,
		DigestMetadata: identity.MetadataDigest,
		Header:         header,
		Limits:         d.limits,
		Logger:         d.log.With("component", "gateway"),
		Registerer:     d.reg,
		// portage 3.0.82 needs SIZE for every entry, so a build is listed
		// once it is fetched and re-packed; an index request starts that
		// for every allowed build and waits a while for it.
		PrepareOnIndex: true,
		// Re-packs are bounded like the content cache, separately.
		CacheBudget: d.cfg.Cache.DiskBudget,
		IndexWait:   30 * time.Second,
	})
}

// SigningKey loads (or creates) the OpenPGP key the gateway signs served
// GPKGs with; setup-portage imports its public half into portage's keyring.
func SigningKey(stateDir string) (*openpgp.Entity, error) {
	return portagehook.LoadOrCreateSigningKey(filepath.Join(stateDir, SigningKeyFile), "gentoo-p2pd gateway")
}

// gatewayInfo reports the gateway URL and its signing key.
func (d *Daemon) gatewayInfo() (api.GatewayInfo, error) {
	pub, err := portagehook.ExportPublic(d.gwKey)
	if err != nil {
		return api.GatewayInfo{}, err
	}
	return api.GatewayInfo{URL: d.GatewayURL(), Fingerprint: portagehook.Fingerprint(d.gwKey), PublicKey: string(pub)}, nil
}

// serve runs srv on l inside g and shuts it down when ctx ends. Requests
// get ctx as their base context, so a long fetch or index wait ends with
// the daemon; what is still running after the grace period is closed hard.
// Shutting down is not an error.
func serve(g *errgroup.Group, ctx context.Context, srv *http.Server, l net.Listener) {
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	g.Go(func() error {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close() // past the grace period: connections are cut, whatever Close says
		}
		return nil
	})
}

func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	return parseMultiaddrs("network.bootstrap", addrs)
}

// parseMultiaddrs reads the value of key, a list of multiaddrs with /p2p/.
func parseMultiaddrs(key string, addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("config: %s: %q: %w", key, s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			return nil, fmt.Errorf("config: %s: %q: needs a /p2p/<peer id> part: %w", key, s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// listenTCP listens on addr, the value of the config key key. Its error
// names the key, so the user knows what to change: a port already taken is
// most often another gentoo-p2pd, perhaps another user's on the same host.
func listenTCP(key, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	cause := err
	var se *os.SyscallError
	if errors.As(err, &se) {
		cause = se.Err
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%s %s: %w (another daemon, perhaps another user's, holds it: set %s to another port)", key, addr, cause, key)
	}
	return nil, fmt.Errorf("%s %s: %w", key, addr, cause)
}
