package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/scan"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Version is reported by status; cmd sets it from its link-time version.
var Version = "dev"

// Files in the state dir besides the store's own.
const (
	IdentityKeyFile = "identity.key"
	SigningKeyFile  = "signing-key.asc"
)

// Options are what a Daemon needs beyond its Config.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// Registerer receives the daemon's metrics; nil gives it a registry of
	// its own, so several daemons fit in one process (tests, the demo).
	Registry *prometheus.Registry
	// VDB is portage's installed-package database, read for
	// gateway.prefetch = installed; empty means /var/db/pkg.
	VDB string
}

// Daemon is one running gentoo-p2pd.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *metrics
	store    *store.Store
	key      crypto.PrivKey
	self     peer.ID
	policy   trust.Policy
	platform string
	vdb      string
	limits   xpak.Limits
	md5cache *identity.MD5Cache
	started  time.Time

	node    *p2p.Node
	xfer    *transfer.Server
	xferM   *transfer.Metrics
	scanner *scan.Scanner
	gateway *gatewayState

	ready     chan struct{}
	apiAddr   atomic.Value // string: socket path
	gwAddr    atomic.Value // string: gateway base URL
	metAddr   atomic.Value // string: metrics URL
	pkgdirMsg atomic.Value // string: note on PKGDIR

	running  atomic.Pointer[context.Context] // Run's context, for work not tied to one request
	pgp      pgpCache
	listed   sync.Map // gateway listing (content/build id) → build key
	decoded  decodedCache
	ingestMu sync.Mutex // held from a record's caps check to its write
	// gossipRates bounds the gossip messages each relay makes us verify.
	gossipRates peerRates
	// flooders are attesters that recently overflowed their storage
	// budget: their new records are stored but not relayed.
	flooders flooders
	// totalFull is the store-wide usage at which admitTotal last found
	// nothing to evict; nil when it did.
	totalFull atomic.Pointer[int64]
	mu        sync.Mutex
	fetching  map[string]*fetchCall // singleflight per build key
	counters  counters
	// lastFetchFailure is why the latest failed fetch failed, for status.
	lastFetchFailure atomic.Pointer[fetchFailure]
}

// counters are the in-memory figures status reports; the persistent ones
// live in the store.
type counters struct {
	rejected atomic.Int64 // input from peers that failed verification, since start
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
	policy, err := policyFromConfig(cfg.Trust)
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
		vdb:      cmpOr(opts.VDB, "/var/db/pkg"),
		limits:   lim,
		started:  time.Now(),
		ready:    make(chan struct{}),
		fetching: make(map[string]*fetchCall),
	}
	d.gossipRates.rate, d.gossipRates.burst = rate.Limit(cfg.Limits.PeerGossipRate), max(1, cfg.Limits.PeerGossipRate*10)
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
		st.Close()
		return nil, fmt.Errorf("index attestation times: %w", err)
	} else if n > 0 {
		log.Info("indexed stored attestations by time", "records", n)
	}
	d.metrics = newMetrics(reg)
	d.xferM, err = transfer.NewMetrics(reg)
	if err != nil {
		st.Close()
		return nil, err
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

// Platform is the catalog this daemon lists for portage.
func (d *Daemon) Platform() string { return d.platform }

// GatewayURL is the base URL of the binhost gateway ("" when off).
func (d *Daemon) GatewayURL() string { s, _ := d.gwAddr.Load().(string); return s }

// MetricsURL is the metrics endpoint ("" when off).
func (d *Daemon) MetricsURL() string { s, _ := d.metAddr.Load().(string); return s }

// Socket is the API socket path.
func (d *Daemon) Socket() string { return d.cfg.API.Socket }

// Run starts everything, blocks until ctx ends or a service fails, and then
// shuts everything down in reverse order. The store is closed when Run
// returns: a Daemon runs once.
func (d *Daemon) Run(ctx context.Context) (err error) {
	defer func() {
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
	pcfg.QUIC = d.cfg.Network.QUIC
	pcfg.AutoNAT = d.cfg.Network.AutoNAT
	pcfg.HolePunching = d.cfg.Network.HolePunching
	pcfg.RelayClient = d.cfg.Network.RelayClient
	pcfg.ConnLow, pcfg.ConnHigh = d.cfg.Network.ConnLow, d.cfg.Network.ConnHigh
	pcfg.DHTMode = p2p.DHTMode(d.cfg.Network.DHTMode)
	if d.cfg.Network.ReprovideInterval > 0 {
		pcfg.ReprovideInterval = d.cfg.Network.ReprovideInterval
	}
	pcfg.MaxPeerRequests, pcfg.MaxRequests = d.cfg.Limits.PeerRequests, d.cfg.Limits.Requests
	pcfg.Registerer = d.reg
	pcfg.Logger = d.log.With("component", "p2p")

	node, err := p2p.New(ctx, pcfg, p2p.Handlers{
		Attestations: d.serveAttestations,
		Catalog:      d.serveCatalog,
		OnGossip:     d.onGossip,
	})
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	d.node = node
	defer node.Close()

	d.xfer = transfer.NewServer(node.Host(), contentSource{d}, transfer.ServerOptions{
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
	defer d.xfer.Close()

	if err := node.JoinPlatform(d.platform); err != nil {
		return fmt.Errorf("p2p: join catalog %s: %w", d.platform, err)
	}

	// Everything a request handler touches exists before any listener
	// serves, and every listener is open before anything runs, so a failure
	// here leaves nothing behind.
	d.scanner = scan.New(d.cfg.Portage.PkgDir, d.store, indexer{d}, d.log.With("component", "scan"))
	apiL, err := api.Listen(d.cfg.API.Socket)
	if err != nil {
		return err
	}
	defer apiL.Close()
	var gwL, metL net.Listener
	var gwHandler http.Handler
	if d.cfg.Gateway.Enabled {
		if gwL, err = net.Listen("tcp", d.cfg.Gateway.Listen); err != nil {
			return fmt.Errorf("gateway: listen %s: %w", d.cfg.Gateway.Listen, err)
		}
		defer gwL.Close()
		if gwHandler, err = d.newGateway(); err != nil {
			return err
		}
		// Background re-packs stop before the node and the store close.
		defer d.gateway.handler.Close()
	}
	if d.cfg.Metrics.Listen != "" {
		if metL, err = net.Listen("tcp", d.cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics: listen %s: %w", d.cfg.Metrics.Listen, err)
		}
		defer metL.Close()
	}

	runCtx, cancel := context.WithCancel(ctx)
	d.running.Store(&runCtx)
	g, gctx := errgroup.WithContext(runCtx)
	// Whatever path Run leaves by, its goroutines end first.
	defer func() {
		cancel()
		if werr := g.Wait(); err == nil {
			err = werr
		}
	}()

	// The local API comes up first so `status` works while PKGDIR is read.
	serve(g, gctx, &http.Server{Handler: d.apiHandler(), ReadHeaderTimeout: 10 * time.Second}, apiL)
	d.apiAddr.Store(d.cfg.API.Socket)
	if gwL != nil {
		serve(g, gctx, &http.Server{Handler: gwHandler, ReadHeaderTimeout: 10 * time.Second}, gwL)
		d.gwAddr.Store("http://" + gwL.Addr().String() + strings.TrimSuffix(d.cfg.Gateway.Path, "/"))
	}
	if metL != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
		serve(g, gctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, metL)
		d.metAddr.Store("http://" + metL.Addr().String() + "/metrics")
	}

	// Own builds: index PKGDIR, attest, announce; then keep watching.
	if err := d.syncPKGDIR(gctx); err != nil {
		return err
	}
	// Re-sign and re-announce what the store already knew (a restart).
	if err := d.announceAll(gctx); err != nil {
		d.log.Warn("announce stored packages", "err", err)
	}
	g.Go(func() error {
		err := d.scanner.Watch(gctx, func(ch scan.Changes) { d.applyChanges(gctx, ch) })
		if err != nil && gctx.Err() == nil {
			return fmt.Errorf("watch PKGDIR: %w", err)
		}
		return nil
	})
	g.Go(func() error { d.catalogLoop(gctx); return nil })
	if d.cfg.Mode == config.ModeMirror {
		g.Go(func() error { d.mirrorLoop(gctx); return nil })
	}
	g.Go(func() error { d.gcLoop(gctx); return nil })

	close(d.ready)
	d.log.Info("gentoo-p2pd running",
		"peer", d.self.String(), "mode", string(d.cfg.Mode), "platform", d.platform,
		"pkgdir", d.cfg.Portage.PkgDir, "socket", d.cfg.API.Socket, "gateway", d.GatewayURL())
	<-gctx.Done()
	d.log.Info("gentoo-p2pd stopping")
	return nil
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
			srv.Close()
		}
		return nil
	})
}

func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("config: network.bootstrap: %q: %w", s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			return nil, fmt.Errorf("config: network.bootstrap: %q: needs a /p2p/<peer id> part: %w", s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// policyFromConfig turns the config's strings into trust's typed policy.
func policyFromConfig(tc config.TrustConfig) (trust.Policy, error) {
	p := trust.DefaultPolicy()
	p.Threshold = tc.Threshold
	p.Dispute = tc.Dispute
	p.RequireSigner = tc.RequireSigner
	p.DistinctNetworks = tc.DistinctNetworks
	for _, s := range tc.Signers {
		k, err := decodeEd25519(s)
		if err != nil {
			return p, fmt.Errorf("config: trust.signers: %q: %w", s, err)
		}
		p.Signers = append(p.Signers, k)
	}
	if tc.PGPKeyring != "" {
		kr, err := trust.LoadKeyring(tc.PGPKeyring)
		if err != nil {
			return p, fmt.Errorf("config: trust.pgp_keyring: %w", err)
		}
		p.PGPKeyring = kr
	}
	for _, s := range tc.TrustedPeers {
		id, err := peer.Decode(s)
		if err != nil {
			return p, fmt.Errorf("config: trust.trusted_peers: %q: %w", s, err)
		}
		p.TrustedPeers = append(p.TrustedPeers, id)
	}
	for _, s := range tc.BlockedPeers {
		id, err := peer.Decode(s)
		if err != nil {
			return p, fmt.Errorf("config: trust.blocked_peers: %q: %w", s, err)
		}
		p.BlockedPeers = append(p.BlockedPeers, id)
	}
	for _, o := range tc.Overrides {
		p.Overrides = append(p.Overrides, trust.Override{Glob: o.Glob, Threshold: o.Threshold, Dispute: o.Dispute, RequireSigner: o.RequireSigner})
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("config: trust: %w", err)
	}
	return p, nil
}

func decodeEd25519(s string) (ed25519.PublicKey, error) {
	var b []byte
	var err error
	if len(s) == 2*ed25519.PublicKeySize {
		b, err = hex.DecodeString(s)
	} else {
		b, err = base64.StdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, err
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("ed25519 public key must be %d bytes, got %d", ed25519.PublicKeySize, len(b))
	}
	return ed25519.PublicKey(b), nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// runCtx is the context Run serves under (canceled when the daemon stops);
// before Run it is a context that never ends.
func (d *Daemon) runCtx() context.Context {
	if p := d.running.Load(); p != nil {
		return *p
	}
	return context.Background()
}
