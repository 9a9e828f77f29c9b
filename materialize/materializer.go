package materialize

import (
	"context"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Network is what materializing needs of the peer-to-peer network: who
// provides a build key, their attestations, announcing a copy, and peer
// addresses for the transfer. *p2p.Node implements it; tests use an
// in-memory fake.
type Network interface {
	FindProviders(ctx context.Context, key cid.Cid, max int) ([]peer.AddrInfo, error)
	FetchAttestations(ctx context.Context, p peer.ID, key cid.Cid) ([][]byte, error)
	Provide(keys ...cid.Cid) error
	RememberAddrs(ai peer.AddrInfo)
	KnownAddrs(p peer.ID) []ma.Multiaddr
}

// FetchFunc downloads one file from peers (transfer.Fetch over the
// daemon's libp2p host; tests pass a fake).
type FetchFunc func(ctx context.Context, want transfer.Want, peers []peer.AddrInfo, opts transfer.FetchOptions) (transfer.Result, error)

// Options are what a Materializer needs.
type Options struct {
	Store *store.Store
	Votes *votes.Book
	Net   Network
	Fetch FetchFunc
	Self  peer.ID
	// Platform is what mirror mode replicates.
	Platform string
	Mode     config.Mode
	// DiskBudget bounds the cache (cache.disk_budget); 0 is unbounded.
	DiskBudget int64
	// DownloadRate caps all fetches together in bytes per second
	// (transfer.download_rate); 0 is unlimited.
	DownloadRate int64
	Files        xpak.Limits
	Transfer     *transfer.Metrics
	Logger       *slog.Logger
	Registry     prometheus.Registerer
}

// Materializer turns allowed builds into verified local files: from
// PKGDIR, from the cache, or fetched from peers; it keeps the cache within
// its budget, mirrors in mirror mode, and serves files to peers.
type Materializer struct {
	store      *store.Store
	votes      *votes.Book
	net        Network
	fetch      FetchFunc
	self       peer.ID
	platform   string
	mode       config.Mode
	diskBudget int64
	limits     xpak.Limits
	xferM      *transfer.Metrics
	download   *transfer.Limit // shared by every fetch; nil when unlimited
	log        *slog.Logger
	metrics    metrics

	running atomic.Pointer[context.Context] // Run's context, for fetches not tied to one request
	mu      sync.Mutex
	// fetching holds one transfer per build key (singleflight).
	fetching map[keys.Build]*fetchCall
	verified map[[32]byte]*xpak.Package // under mu: see VerifiedPackage
	// lastFetchFailure is why the latest failed fetch failed, for status.
	lastFetchFailure atomic.Pointer[fetchFailure]
	// disagree is the disagreement loop's memory (disagree.go).
	disagree disagreements
}

type metrics struct {
	lookups prometheus.Counter
}

// New makes a Materializer; nothing runs until Run.
func New(o Options) *Materializer {
	mz := &Materializer{
		store: o.Store, votes: o.Votes, net: o.Net, fetch: o.Fetch, self: o.Self,
		platform: o.Platform, mode: o.Mode, diskBudget: o.DiskBudget, limits: o.Files,
		xferM: o.Transfer, download: transfer.NewLimit(o.DownloadRate), log: o.Logger,
		fetching: make(map[keys.Build]*fetchCall), verified: map[[32]byte]*xpak.Package{},
	}
	if mz.log == nil {
		mz.log = slog.New(slog.DiscardHandler)
	}
	mz.metrics.lookups = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gentoo_p2pd", Name: "lookups_total",
		Help: "DHT provider lookups started by this daemon.",
	})
	if o.Registry != nil {
		o.Registry.MustRegister(mz.metrics.lookups)
	}
	return mz
}

// Run keeps the cache within its budget, reports rebuilds that disagree
// with this node's builds (CheckDisagreements, whenever votes change)
// and, in mirror mode, replicates the allowed builds of this platform,
// until ctx ends. Fetches started meanwhile by any caller end with it too.
func (mz *Materializer) Run(ctx context.Context) {
	mz.running.Store(&ctx)
	var wg sync.WaitGroup
	wg.Go(func() { mz.disagreementLoop(ctx) })
	if mz.mode == config.ModeMirror {
		wg.Go(func() { mz.mirrorLoop(ctx) })
	}
	mz.gcLoop(ctx)
	wg.Wait()
}

// base is the context Run serves under; before Run, one that never ends.
func (mz *Materializer) base() context.Context {
	if p := mz.running.Load(); p != nil {
		return *p
	}
	return context.Background()
}

// LastFailure is why the latest fetch failed and when; zero when none did.
func (mz *Materializer) LastFailure() (string, time.Time) {
	if f := mz.lastFetchFailure.Load(); f != nil {
		return f.err, f.at
	}
	return "", time.Time{}
}

// AnnounceCache provides the cached builds that may still be served (after
// a restart); consume mode serves nothing and provides nothing.
func (mz *Materializer) AnnounceCache() error {
	if mz.mode == config.ModeConsume {
		return nil
	}
	entries, err := mz.store.Cache().List()
	if err != nil {
		return err
	}
	for _, e := range entries {
		recs, err := mz.store.AttestationsFor(e.Meta.BuildKey)
		if err != nil {
			return err
		}
		for _, r := range recs {
			s, err := mz.votes.Decode(r.Blob)
			if err != nil || s.Attestation.FileSHA256 != e.SHA256 {
				continue
			}
			if mz.Servable(keys.Build(e.Meta.BuildKey)) {
				if err := mz.provideCopy(s.Attestation); err != nil {
					mz.log.Warn("re-announce copy", "cpv", e.Meta.CPV, "sha256", hex.EncodeToString(e.SHA256[:]), "err", err)
				}
			}
			break
		}
	}
	return nil
}
