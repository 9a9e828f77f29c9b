package votes

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Network is what the book needs of the peer-to-peer network: gossip on
// platform topics, catalog pages from a peer, and who is connected from
// where. *p2p.Node implements it; tests use an in-memory fake.
type Network interface {
	JoinPlatform(platform string) error
	Publish(ctx context.Context, platform string, msg []byte) error
	SyncCatalog(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor) ([][]byte, error)
	// CatalogIDs and CatalogRecords are catalog/3; a peer that does not
	// speak it fails with wire.ErrNotSupported.
	CatalogIDs(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor) ([]wire.CatalogID, error)
	CatalogRecords(ctx context.Context, p peer.ID, want []wire.CatalogID) ([][]byte, error)
	// CatalogFingerprints and CatalogIDsUntil are catalog/3's
	// reconciliation; a peer that predates it fails with
	// wire.ErrNotSupported.
	CatalogFingerprints(ctx context.Context, p peer.ID, platform string, from, until int64, slices int) ([]wire.CatalogSlice, error)
	CatalogIDsUntil(ctx context.Context, p peer.ID, platform string, cur wire.CatalogCursor, until int64) ([]wire.CatalogID, error)
	Peers() []wire.PeerInfo
	DirectAddr(p peer.ID) (netip.Addr, bool)
}

// Options are what a Book needs.
type Options struct {
	Store  *store.Store
	Policy trust.Policy
	// Self is this daemon's peer id: its own records are exempt from the
	// budgets and never taken back from the network.
	Self peer.ID
	// Key is this daemon's peer key: it signs the daemon's own demand
	// records (RecordDemand). Nil refuses to record demand.
	Key crypto.PrivKey
	// Platform is the catalog this daemon syncs from its peers.
	Platform string
	Limits   config.LimitsConfig
	// Files bounds the binpkgs read to check an OpenPGP signature, and
	// the container size an attestation may claim.
	Files xpak.Limits
	// Installed lists the installed packages (category/name): records of
	// those are evicted last.
	Installed func() map[string]bool
	Net       Network
	// StandingDays is trust.standing_days: days of agreement that make
	// full standing (DefaultStandingDays when 0).
	StandingDays int
	// Now is the clock standing is dated by (time.Now when nil).
	Now func() time.Time
	// DecodedCacheBytes bounds the cache of decoded, verified
	// attestations (32 MiB when 0). The network simulator runs a
	// thousand Books in one process and gives each less.
	DecodedCacheBytes int
	Logger            *slog.Logger
	Registry          prometheus.Registerer
}

// Book holds the network's votes: it checks every attestation, endorsement
// and equivocation proof a peer sends, bounds what each identity may store,
// keeps what passes, serves it to peers, and computes verdicts from it.
type Book struct {
	store     *store.Store
	policy    trust.Policy
	self      peer.ID
	key       crypto.PrivKey
	platform  string
	limits    config.LimitsConfig
	files     xpak.Limits
	installed func() map[string]bool
	net       Network
	log       *slog.Logger
	metrics   *metrics

	pgp      pgpCache
	decoded  decodedCache
	cands    candidates
	ingestMu sync.Mutex // held from a record's caps check to its write
	// gossipRates bounds how many gossip messages per second each relaying
	// peer makes this daemon decode and verify: a flood beyond the rate is
	// ignored before any signature check, so one identity's share of the
	// CPU is bounded whatever it sends.
	gossipRates *wire.PeerRates
	// fetching bounds the records fetches each relay's announcements make
	// at once (announce.go).
	fetching relayFetches
	// wantDescs keeps the demand descriptors Wanted read (demand.go).
	wantDescs wantDescriptors
	// demandRates bounds the demand records per second each identity
	// makes this daemon store (demandRate); demandPruned is when demand
	// past the horizon was last pruned (Unix seconds).
	demandRates  *wire.PeerRates
	demandPruned atomic.Int64
	// vouchRates bounds the vouches per second each voucher makes this
	// daemon store; vouchGen counts the vouches stored, so the graph's
	// weights are computed again only when it moved.
	vouchRates *wire.PeerRates
	vouchGen   atomic.Uint64
	// flooders are attesters that recently overflowed their storage
	// budget: their new records are stored but not relayed.
	flooders flooders
	// totalFull is the store-wide usage at which admitTotal last found
	// nothing to evict; nil when it did.
	totalFull atomic.Pointer[int64]
	rejected  atomic.Int64 // input from peers that failed verification, since start
	// answerBytes and pageBytes bound an attest/1 answer and a catalog
	// page (attestAnswerBytes, catalogPageBytes; tests lower them).
	answerBytes, pageBytes int
	// pageIDs bounds the attestations of a catalog/3 ids page
	// (MaxCatalogIDs/2; tests lower it).
	pageIDs int
	// syncTime bounds one catalog sync as a whole (maxSyncTime) and
	// fetchBytes the records fetched for one ids page
	// (wire.MaxResponseBytes); tests lower them.
	syncTime   time.Duration
	fetchBytes int
	// decodeDemand is trust.DecodeDemand, which checks the signature: a
	// test counts the checks through it.
	decodeDemand func([]byte) (*trust.SignedDemand, error)
	// syncTick is how often SyncLoop looks for peers to sync;
	// resyncEvery, resyncMargin and fullSyncEvery its schedule (tests
	// shorten them).
	syncTick, resyncEvery, resyncMargin, fullSyncEvery time.Duration
	// standing weighs attesters by their record (standing.go).
	standing standing
}

// New makes a Book; it touches neither the store nor the network.
func New(o Options) *Book {
	vb := &Book{
		store: o.Store, policy: o.Policy, self: o.Self, key: o.Key, platform: o.Platform,
		limits: o.Limits, files: o.Files, installed: o.Installed, net: o.Net,
		log: o.Logger, metrics: newMetrics(o.Registry),
		answerBytes: attestAnswerBytes, pageBytes: catalogPageBytes, pageIDs: wire.MaxCatalogIDs / 2, syncTick: 2 * time.Second,
		syncTime: maxSyncTime, fetchBytes: wire.MaxResponseBytes, decodeDemand: trust.DecodeDemand,
		resyncEvery: ResyncEvery, resyncMargin: ResyncMargin, fullSyncEvery: FullSyncEvery,
	}
	if vb.log == nil {
		vb.log = slog.New(slog.DiscardHandler)
	}
	vb.standing.days, vb.standing.now = o.StandingDays, o.Now
	if vb.standing.days <= 0 {
		vb.standing.days = DefaultStandingDays
	}
	if vb.standing.now == nil {
		vb.standing.now = time.Now
	}
	if vb.installed == nil {
		vb.installed = func() map[string]bool { return nil }
	}
	vb.decoded.max = cmp.Or(o.DecodedCacheBytes, maxDecodedBytes)
	vb.gossipRates = wire.NewPeerRates(rate.Limit(o.Limits.PeerGossipRate), max(1, o.Limits.PeerGossipRate*10))
	vb.demandRates = wire.NewPeerRates(demandRate, demandBurst)
	vb.vouchRates = wire.NewPeerRates(vouchRate, vouchBurst)
	return vb
}

// Policy is the trust policy verdicts are computed with.
func (vb *Book) Policy() trust.Policy { return vb.policy }

// Rejected counts the records from peers that failed a check since start.
func (vb *Book) Rejected() int64 { return vb.rejected.Load() }

type metrics struct {
	attestations prometheus.Counter
	attestServed prometheus.Counter
	rejected     *prometheus.CounterVec
	verdicts     *prometheus.CounterVec
	evicted      prometheus.Counter
	announced    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attestations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "attestations_received_total",
			Help: "New valid attestations stored from peers.",
		}),
		attestServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "attest_requests_served_total",
			Help: "Attestation requests answered.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "rejected_total",
			Help: "Input from peers that failed verification, by kind.",
		}, []string{"kind"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "verdicts_total",
			Help: "Trust verdicts computed, by decision.",
		}, []string{"decision"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "attestations_evicted_total",
			Help: "Attestations evicted because their attester's storage budget was full.",
		}),
		announced: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "announced_records_fetched_total",
			Help: "Records named by gossip announcements that were not held, and were asked of the relay.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.attestations, m.attestServed, m.rejected, m.verdicts, m.evicted, m.announced)
	}
	return m
}

// IngestFrom checks attestations p delivered directly (an attest/1
// answer) and stores what passes, as gossip and catalog syncs are.
func (vb *Book) IngestFrom(ctx context.Context, blob []byte, p peer.ID) (bool, error) {
	return vb.ingestAttestation(ctx, blob, vb.arrivalFrom(p), false)
}

// StoreOwn keeps one of this daemon's own attestations.
func (vb *Book) StoreOwn(s *trust.Signed) error {
	_, err := vb.store.PutAttestation(vb.attestationRecord(s, arrival{from: vb.self}))
	return err
}

// StoreOwnAll is StoreOwn of several attestations in one store
// transaction.
func (vb *Book) StoreOwnAll(ss []*trust.Signed) error {
	if len(ss) == 0 {
		return nil
	}
	recs := make([]store.AttestationRecord, len(ss))
	for i, s := range ss {
		recs[i] = vb.attestationRecord(s, arrival{from: vb.self})
	}
	_, err := vb.store.PutAttestations(recs)
	return err
}

// PublishOwn announces one of this daemon's stored attestations on its
// platform's topic, joining the topic first: the message carries its id,
// and peers fetch the record from whoever relays it (announce.go).
func (vb *Book) PublishOwn(ctx context.Context, s *trust.Signed) error {
	return vb.announce(ctx, s.Attestation.Platform, wire.RecordAttestation, s.Marshal())
}

// IsEndorsement reports whether a blob from a peer is an endorsement (and
// not an attestation).
func IsEndorsement(blob []byte) bool { return bytes.HasPrefix(blob, endorsementMagic) }
