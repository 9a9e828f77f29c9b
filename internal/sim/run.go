package sim

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Options are a run's settings besides the model.
type Options struct {
	Model Model
	Seed  uint64
	// Dir holds the peers' stores; empty means a fresh directory under
	// /dev/shm when it exists (fsyncs on tmpfs cost nothing, so a run
	// measures the code, not the disk), else the system temp dir. It is
	// removed afterwards.
	Dir string
	// DHTOps is how many provide+lookup pairs the DHT measurement runs.
	DHTOps int
	// SyncPeers is how many online peers of its platform a peer syncs its
	// catalog from when it comes back online.
	SyncPeers int
	// Design is how attestations travel: Flood (the daemon today) or
	// Interest (a candidate the daemon does not implement yet).
	Design Design
	// Adversary is who attacks (the Adversary constants): each attacks
	// every popular build key as soon as an honest builder attests it.
	Adversary Adversary
	// AttackersPerKey is how many of the attacker's identities sign each
	// attacked key (default 10, all of them when fewer). Weight, not
	// numbers, decides: fresh identities weigh 0 and identities without
	// full standing count at most threshold−1 together, so past the
	// threshold more signatures change nothing but the run's time and
	// memory (10 and 30 give the same runs at 250 peers; 30 outgrew 23 GB
	// at 1,000).
	AttackersPerKey int
	// FreshWeight overrides trust.fresh_weight (percent) when set: the
	// closed-network policy, as a control.
	FreshWeight int
	// Established is the share of honest peers with full standing when
	// the run starts (default 0.95): the network has been running, and
	// only peers that joined within trust.standing_days are still
	// earning theirs (uniformly far along).
	Established float64
	// Donors is the share of peers that donate CPU (build.donate): each
	// plans as builder/plan.go does from its own Book's demand
	// (Book.Wanted, Book.Supply) and builds the most wanted variant of
	// its platform without a trusted build, or with fewer reproducers than
	// the threshold (build.rebuild), one at a time, while online. 0: none,
	// and no demand records are made (the runs before donors were
	// modelled, reproduced exactly).
	Donors float64
	// Log gets progress lines; nil discards them.
	Log io.Writer
}

// Adversary is an attacker the run includes.
type Adversary string

const (
	// None: honest peers only.
	None Adversary = "none"
	// Troll: one fresh identity attests a random content of the honest
	// builder's environment for every popular build key.
	Troll Adversary = "troll"
	// Sybil: 1,000 fresh identities from 10 /24 networks back one
	// backdoored content of every popular build key.
	Sybil Adversary = "sybil"
	// Sleeper: 100 identities that agreed with honest builds for 30 days
	// (so every peer's ledger credits them 30 days) back one backdoored
	// content of every popular build key.
	Sleeper Adversary = "sleeper"
)

// Adversaries are the attackers a run can include.
var Adversaries = []Adversary{None, Troll, Sybil, Sleeper}

// attackers is how many identities each adversary has.
var attackers = map[Adversary]int{Troll: 1, Sybil: 1000, Sleeper: 100}

// sleeperDays is the sleepers' honest record.
const sleeperDays = 30

// popular is how many of the most popular packages the Sybil attacks.
const popular = 100

// Design is a way for attestations to reach the peers that need them.
type Design string

const (
	// Flood is the daemon's design: every attestation is published on
	// its platform's topic, catalogs are synced from connected peers.
	Flood Design = "flood"
	// Interest is the candidate docs/SCALE.md measures: nothing is
	// published; a builder provides the build key in the DHT, and a peer
	// that wants a build finds its providers and asks them for their
	// attestations of it (attest/1), on the same Book code.
	Interest Design = "interest"
)

// Result is one run's figures (the JSON `go run ./cmd/p2psim -json`
// prints). Times are simulated unless named wall.
type Result struct {
	Design    Design    `json:"design"`
	Adversary Adversary `json:"adversary"`
	// AdversaryAttestations counts what the attacker signed and sent.
	AdversaryAttestations int `json:"adversary_attestations,omitempty"`
	Nodes                 int `json:"nodes"`
	Days                  int `json:"days"`
	Platforms             int `json:"platforms"`
	Builds                int `json:"builds"`
	Attestations          int `json:"attestations"`
	Requests              int `json:"requests"`
	// Hits are the requests served by a trusted fitting peer build the
	// requester could reach; Ideal those for which threshold honest
	// reproducers of the build existed.
	Hits         int     `json:"hits"`
	Ideal        int     `json:"ideal"`
	HitRate      float64 `json:"hit_rate"`
	IdealHitRate float64 `json:"ideal_hit_rate"`
	FalseAccepts int     `json:"false_accepts"`
	// Of the ideal requests that missed: not allowed at the requester
	// (a dispute, or votes it never received), allowed but no provider
	// online, or providers online but none reachable through NAT.
	LostNotAllowed int `json:"lost_not_allowed"`
	// LostDispute are the not-allowed ones the requester's verdict called
	// a dispute (honest builders that disagree count as one).
	LostDispute int `json:"lost_dispute"`
	// LostStanding are the not-allowed ones below the threshold: their
	// reproducers had too little standing at the requester.
	LostStanding int `json:"lost_standing"`
	LostOffline  int `json:"lost_offline"`
	LostNAT      int `json:"lost_nat"`
	// NATLoss is LostNAT as a share of the ideal requests.
	NATLoss float64 `json:"nat_loss"`
	// TimeToInstallable: from the threshold-th honest attestation of a
	// build to the build being Allowed at a peer of its platform that was
	// online then (gossip delivery: the measured processing plus the
	// modelled GossipSub hops). NeverInstallable counts the builds that
	// reached the threshold but were never Allowed at that peer.
	TimeToInstallableP50S float64 `json:"time_to_installable_p50_s"`
	TimeToInstallableP99S float64 `json:"time_to_installable_p99_s"`
	NeverInstallable      int     `json:"never_installable"`
	Installable           int     `json:"installable"`
	// WeightToInstallable: for the same builds and peers as
	// TimeToInstallable, from the attestation that brought the build to
	// the threshold weight as that peer weighs its voters (standing) to
	// the build being Allowed there: delivery alone, without the wait for
	// a reproducer with enough standing.
	WeightToInstallableP50S float64 `json:"weight_to_installable_p50_s"`
	WeightToInstallableP99S float64 `json:"weight_to_installable_p99_s"`
	WeightInstallable       int     `json:"weight_installable"`
	// Donors is how many peers donate CPU; DonorBuilds the builds they
	// made (DonorRebuilds of them for a variant already trusted at the
	// donor with fewer reproducers than the threshold) and
	// DonorBuildHours the simulated hours they spent. DemandRecords is
	// how many demand records the peers signed and gossiped.
	Donors          int     `json:"donors,omitempty"`
	DonorBuilds     int     `json:"donor_builds,omitempty"`
	DonorRebuilds   int     `json:"donor_rebuilds,omitempty"`
	DonorBuildHours float64 `json:"donor_build_hours,omitempty"`
	DemandRecords   int     `json:"demand_records,omitempty"`
	// ControlBytesPerPeerDay is the sum of the three below, per peer and
	// simulated day. GossipBytesPerPeerDay is what each peer received,
	// measured: gossip, catalog pages and attest answers (in the interest
	// design only the last); DHTBytesPerPeerDay the measured request
	// counts × DHTBytesPerRPC.
	ControlBytesPerPeerDay float64 `json:"control_bytes_per_peer_day"`
	GossipBytesPerPeerDay  float64 `json:"gossip_bytes_per_peer_day"`
	// SyncReturnBytesPerPeerDay is the part of GossipBytesPerPeerDay that
	// the catalog syncs of peers coming back online received: streams,
	// which GossipSub's copies do not multiply (docs/SCALE.md).
	SyncReturnBytesPerPeerDay float64 `json:"sync_return_bytes_per_peer_day"`
	// ControlBytesGossipSub is, in a model, ControlBytesPerPeerDay with
	// the gossip delivered as real GossipSub delivers it
	// (GossipSubFactor); memnet hands each subscriber one copy.
	ControlBytesGossipSub float64 `json:"control_bytes_per_peer_day_gossipsub,omitempty"`
	// ResyncBytesPerPeerDay is what the daemon's catalog SyncLoop adds:
	// from every connected peer of its platform, once a day the ids of
	// the whole catalog and every hour those of what is new there
	// (catalog/3), and the records the peer lacks. Modelled from the
	// catalog sizes measured at the end of the run and that schedule (the
	// run itself syncs only when a peer comes back online).
	ResyncBytesPerPeerDay float64 `json:"resync_bytes_per_peer_day"`
	DHTBytesPerPeerDay    float64 `json:"dht_bytes_per_peer_day"`
	// StoreBytesPerPeer is the mean attestation bytes a peer's store
	// holds (store.TotalUsage); StoreFileBytesPerPeer its database file.
	StoreBytesPerPeer     float64 `json:"store_bytes_per_peer"`
	StoreBytesPerPeerMax  float64 `json:"store_bytes_per_peer_max"`
	StoreFileBytesPerPeer float64 `json:"store_file_bytes_per_peer"`
	// MeanAttestationBytes is the mean signed attestation size.
	MeanAttestationBytes float64 `json:"mean_attestation_bytes"`
	// Lookup and provide latencies of the DHT (wall clock, real
	// go-libp2p-kad-dht on mocknet links with the model's latencies).
	LookupP50MS    float64 `json:"lookup_p50_ms"`
	LookupP99MS    float64 `json:"lookup_p99_ms"`
	ProvideP50MS   float64 `json:"provide_p50_ms"`
	ProvideP99MS   float64 `json:"provide_p99_ms"`
	LookupsFound   float64 `json:"lookups_found"`
	RPCsPerLookup  float64 `json:"rpcs_per_lookup"`
	RPCsPerProvide float64 `json:"rpcs_per_provide"`
	// LargestPlatformShare is the share of peers on the most common
	// platform: what the flooding design's per-peer cost grows with.
	LargestPlatformShare float64 `json:"largest_platform_share"`
	// Established is Options.Established: the share of honest peers
	// with full standing at the start.
	Established float64  `json:"established"`
	WallSeconds float64  `json:"wall_seconds"`
	Modelled    bool     `json:"modelled,omitempty"`
	Assumptions []string `json:"assumptions,omitempty"`
}

// DHTBytesPerRPC is the bytes one DHT request and its answer carry: a
// ~100-byte request and up to k=20 peers of ~60 bytes (id and one
// address) back. An assumption (docs/SCALE.md); the counts are measured.
const DHTBytesPerRPC = 1300

// askProviders is how many providers a peer asks for their attestations
// of a build in the interest design.
const askProviders = 10

// gossipDegree is GossipSub's mesh degree D: a message reaches a topic of
// n peers in about log_D(n) hops.
const gossipDegree = 6

type simPeer struct {
	idx    int
	key    crypto.PrivKey
	id     peer.ID
	st     *store.Store
	book   *votes.Book
	node   *memnet.Node
	online bool
	built  map[int]int // package → newest version this peer built or installed
}

type buildTruth struct {
	platform int
	honest   map[trust.ContentID][]int // content → honest attesters
	fetched  map[trust.ContentID][]int // content → peers that fetched it
	reached  bool                      // some content reached the threshold
}

type pendingCheck struct {
	bk       keys.Build
	observer int
	hour     int
}

// weightWatch follows a pending check's build at its observer until it is
// Allowed there, for WeightToInstallable.
type weightWatch struct {
	observer int
	done     bool
}

// variantBuild is what a variant key names in the simulated tree, for a
// donor handing a wanted variant to its build.
type variantBuild struct{ pkg, version, use int }

// Run runs the population for the model's days and returns the figures.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	m := o.Model
	logf := func(format string, a ...any) {
		if o.Log != nil {
			_, _ = fmt.Fprintf(o.Log, "p2psim: %5.1fs "+format+"\n", append([]any{time.Since(start).Seconds()}, a...)...)
		}
	}
	if o.DHTOps == 0 {
		o.DHTOps = 200
	}
	if o.SyncPeers == 0 {
		o.SyncPeers = 3
	}
	pop, err := NewPopulation(m, o.Seed)
	if err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		base := os.TempDir()
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		}
		if dir, err = os.MkdirTemp(base, "p2psim-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	if o.Design == "" {
		o.Design = Flood
	}
	if o.Design != Flood && o.Design != Interest {
		return nil, fmt.Errorf("sim: design %q: want %q or %q", o.Design, Flood, Interest)
	}
	if o.Adversary == "" {
		o.Adversary = None
	}
	if !slices.Contains(Adversaries, o.Adversary) {
		return nil, fmt.Errorf("sim: adversary %q: want one of %v", o.Adversary, Adversaries)
	}
	if o.AttackersPerKey <= 0 {
		o.AttackersPerKey = 10
	}
	if o.Established == 0 {
		o.Established = 0.95
	}
	res := &Result{Design: o.Design, Adversary: o.Adversary, Nodes: m.Nodes, Days: m.Days}

	// The DHT first: real hosts, real Kademlia, the model's latencies.
	logf("DHT: %d hosts on mocknet", m.Nodes)
	dn, err := startDHT(ctx, pop)
	if err != nil {
		return nil, err
	}
	dres, err := dn.measure(ctx, o.Seed, o.DHTOps)
	dn.Close()
	if err != nil {
		return nil, fmt.Errorf("sim: DHT: %w", err)
	}
	res.LookupP50MS, res.LookupP99MS = quantile(dres.LookupMS, 0.5), quantile(dres.LookupMS, 0.99)
	res.ProvideP50MS, res.ProvideP99MS = quantile(dres.ProvideMS, 0.5), quantile(dres.ProvideMS, 0.99)
	res.LookupsFound = float64(dres.Found) / float64(o.DHTOps)
	res.RPCsPerLookup, res.RPCsPerProvide = dres.RPCsPerLookup, dres.RPCsPerProvide
	logf("DHT: lookup p50 %.0f ms p99 %.0f ms, provide p50 %.0f ms", res.LookupP50MS, res.LookupP99MS, res.ProvideP50MS)

	// Every peer: its own store and votes.Book, as the daemon wires them,
	// on one in-memory network that floods each platform topic.
	cfg := config.Defaults() // an open network: fresh identities weigh 0
	cfg.Trust.Threshold = m.Threshold
	cfg.Trust.FreshWeight = o.FreshWeight
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		return nil, err
	}
	net := memnet.New()
	clock := newBookClock(m.Days)
	peers := make([]*simPeer, m.Nodes)
	byID := map[peer.ID]int{}
	platformPeers := make([][]int, len(pop.Platforms))
	for i, pp := range pop.Peers {
		plat := pop.Platforms[pp.Platform].ID
		sp, err := newPeer(net, filepath.Join(dir, fmt.Sprint(i)), plat, policy, cfg.Limits, clock.now)
		if err != nil {
			return nil, err
		}
		defer sp.st.Close()
		sp.idx, sp.built = i, map[int]int{}
		sp.node.Serve(wire.Handlers{Catalog: sp.book.ServeCatalog, CatalogIDs: sp.book.ServeCatalogIDs, CatalogRecords: sp.book.ServeCatalogRecords, CatalogIDsUntil: sp.book.ServeCatalogIDsUntil, CatalogFingerprints: sp.book.ServeCatalogFingerprints, Attestations: sp.book.ServeAttestations, OnGossip: sp.book.OnGossip})
		if o.Design == Flood {
			if err := sp.node.JoinPlatform(plat); err != nil {
				return nil, err
			}
		}
		for _, pkg := range pp.Installed {
			sp.built[pkg] = 1
		}
		peers[i] = sp
		byID[sp.id] = i
		platformPeers[pp.Platform] = append(platformPeers[pp.Platform], i)
	}
	for _, pp := range platformPeers {
		if len(pp) > 0 {
			res.Platforms++
		}
		res.LargestPlatformShare = max(res.LargestPlatformShare, float64(len(pp))/float64(m.Nodes))
	}
	logf("%d peers on %d platforms (largest %.0f %%)", m.Nodes, res.Platforms, 100*res.LargestPlatformShare)

	// The attacker: one node of the network (its Book only stores and
	// serves what it sends) and its signing keys.
	var (
		attacker *simPeer
		sybils   []crypto.PrivKey
		attacked = map[keys.Build]bool{}
	)
	if o.Adversary != None {
		var err error
		if attacker, err = newPeer(net, filepath.Join(dir, "attacker"), "", policy, cfg.Limits, clock.now); err != nil {
			return nil, err
		}
		defer attacker.st.Close()
		attacker.idx = -1
		attacker.node.Serve(wire.Handlers{Attestations: attacker.book.ServeAttestations, CatalogRecords: attacker.book.ServeCatalogRecords})
		for range attackers[o.Adversary] {
			sk, _, err := crypto.GenerateEd25519Key(nil)
			if err != nil {
				return nil, err
			}
			sybils = append(sybils, sk)
		}
	}
	rng := rand.New(rand.NewPCG(o.Seed, 3))
	// The attacker draws from its own stream, so an attacked run makes
	// the same requests as the honest run of the same seed.
	arng := rand.New(rand.NewPCG(o.Seed, 5))
	// The history before the run, as each peer's standing ledger holds
	// it: established honest peers with full standing, the others part
	// of the way, sleepers with their 30 days.
	if err := seedStanding(peers, sybils, o, cfg.Trust.StandingDays, store.DayOf(clock.now()), rng); err != nil {
		return nil, err
	}
	res.Established = o.Established
	epoch := time.Now().Add(-time.Duration(m.Days*24+2) * time.Hour).UTC().Truncate(time.Hour)
	truth := map[keys.Build]*buildTruth{}
	var (
		lookups           int // interest design: DHT lookups
		pending           []pendingCheck
		installable       []float64
		weightInstallable []float64
		watches           = map[keys.Build]*weightWatch{}
		attBytes          int64
		returnBytes       int64 // received by the syncs on return
	)
	// The donors' stream (who donates, build times) and the weight
	// watches' gossip delays: neither draws from rng, so a run without
	// donors is the run before donors were modelled.
	drng := rand.New(rand.NewPCG(o.Seed, 9))
	wrng := rand.New(rand.NewPCG(o.Seed, 11))
	// variants maps each demanded variant key to what it builds.
	variants := map[keys.Variant]variantBuild{}
	// changes counts, per platform, the records that could change a
	// donor's plan (a demand record, an attestation): an idle donor whose
	// plan found nothing plans again only when its platform changed or it
	// synced on return (the same plan otherwise: standing does not move
	// within a run), which saves the simulator the daemon's per-minute
	// plans.
	changes := make([]int, len(pop.Platforms))
	buildKey := func(pkg, version, use, platform int) (identity.Descriptor, keys.Build) {
		d := descriptor(pop, pkg, version, use, platform)
		return d, d.BuildKey()
	}
	provide := func(j int, bk keys.Build) error {
		c, err := bk.CID()
		if err != nil {
			return err
		}
		return peers[j].node.Provide(c)
	}
	// ask is what peer j does, in the interest design, when it wants
	// build bk: find its providers and take their attestations of it
	// (each through Book.IngestFrom, as the daemon takes an attest/1
	// answer). Attestations are small enough to travel through a relay,
	// so NAT does not stop them. The flood design has them already.
	ask := func(j int, bk keys.Build) error {
		if o.Design != Interest {
			return nil
		}
		lookups++
		c, err := bk.CID()
		if err != nil {
			return err
		}
		provs, err := peers[j].node.FindProviders(ctx, c, 20)
		if err != nil {
			return err
		}
		asked := 0
		for _, ai := range provs {
			if k, known := byID[ai.ID]; ai.ID == peers[j].id || known && !peers[k].online || asked == askProviders {
				continue
			}
			asked++
			blobs, err := peers[j].node.FetchAttestations(ctx, ai.ID, c)
			if err != nil {
				continue // gone offline meanwhile
			}
			for _, b := range blobs {
				// A refused record is the Book's business, as from a peer.
				_, _ = peers[j].book.IngestFrom(ctx, b, ai.ID)
			}
		}
		return nil
	}
	// attack has the Sybils back a backdoored content of the build
	// descriptor d, each with its own identity, as the flood or the
	// interest design carries attestations.
	attack := func(d identity.Descriptor, bk keys.Build, tc Toolchain, at time.Time) error {
		bad := trust.ContentID{Image: sha256.Sum256([]byte("backdoor " + string(bk))), Metadata: sha256.Sum256([]byte("backdoor meta " + string(bk)))}
		signers := sybils
		if len(signers) > o.AttackersPerKey {
			start := arng.IntN(len(signers))
			signers = append(slices.Clone(signers[start:]), signers[:start]...)[:o.AttackersPerKey]
		}
		for _, k := range signers {
			s, err := attest(d, bad, tc, at, k)
			if err != nil {
				return err
			}
			res.AdversaryAttestations++
			if _, err := attacker.book.IngestFrom(ctx, s.Marshal(), attacker.id); err != nil {
				return fmt.Errorf("sim: the attacker keeps its own records: %w", err)
			}
			if o.Design == Flood {
				if err := attacker.book.PublishOwn(ctx, s); err != nil {
					return err
				}
			}
		}
		if o.Design == Interest {
			c, err := bk.CID()
			if err != nil {
				return err
			}
			return attacker.node.Provide(c)
		}
		return nil
	}
	// build has peer i compile pkg at version with USE variant use and
	// share the result; r draws its times (a donor's own stream, so that
	// -donors 0 draws what runs before donors drew). install says the
	// peer installs what it built (a request's compile; a donor's build
	// goes to its builder's PKGDIR).
	build := func(i, pkg, version, use, hour int, r *rand.Rand, install bool) error {
		pp := pop.Peers[i]
		d, bk := buildKey(pkg, version, use, pp.Platform)
		var seed string
		if pop.Packages[pkg].Reproducible {
			// Honest builds agree only with the same compiler.
			seed = string(bk) + pop.Toolchains[pp.Toolchain].GCC
		} else {
			seed = fmt.Sprintf("%s/%d", bk, i)
		}
		content := trust.ContentID{Image: sha256.Sum256([]byte("image " + seed)), Metadata: sha256.Sum256([]byte("meta " + seed))}
		at := epoch.Add(time.Duration(hour)*time.Hour + time.Duration(r.IntN(3600))*time.Second)
		s, err := attest(d, content, pop.Toolchains[pp.Toolchain], at, peers[i].key)
		if err != nil {
			return err
		}
		attBytes += int64(len(s.Marshal()))
		res.Attestations++
		if install {
			peers[i].built[pkg] = version
		}
		bt := truth[bk]
		if bt == nil {
			bt = &buildTruth{platform: pp.Platform, honest: map[trust.ContentID][]int{}, fetched: map[trust.ContentID][]int{}}
			truth[bk] = bt
		}
		bt.honest[content] = append(bt.honest[content], i)
		changes[pp.Platform]++
		wall := time.Now()
		if err := peers[i].book.StoreOwn(s); err != nil {
			return fmt.Errorf("sim: peer %d stores its own attestation: %w", i, err)
		}
		if o.Design == Flood {
			if err := peers[i].book.PublishOwn(ctx, s); err != nil {
				return fmt.Errorf("sim: peer %d publishes: %w", i, err)
			}
		} else if err := provide(i, bk); err != nil {
			return err
		}
		if attacker != nil && pkg < popular && !attacked[bk] {
			attacked[bk] = true
			if err := attack(d, bk, pop.Toolchains[pp.Toolchain], at); err != nil {
				return err
			}
		}
		// A build waiting at its observer for threshold weight: allowed
		// there now, it was this attestation's delivery or an earlier one's.
		if w := watches[bk]; w != nil && !w.done && peers[w.observer].online {
			b, ok, err := peers[w.observer].book.AllowedBuild(bk)
			if err != nil {
				return err
			}
			if ok {
				w.done = true
				since := at.Sub(weightReached(b.Verdict, m.Threshold, at)).Seconds()
				weightInstallable = append(weightInstallable, since+time.Since(wall).Seconds()+gossipDelay(pop, wrng, len(platformPeers[pp.Platform])))
			}
		}
		if !bt.reached && len(bt.honest[content]) >= m.Threshold {
			bt.reached = true
			// Time to installable at a peer of the platform that was
			// online when the threshold was reached and did not vote.
			var cands []int
			for _, j := range platformPeers[pp.Platform] {
				if peers[j].online && !slices.Contains(bt.honest[content], j) {
					cands = append(cands, j)
				}
			}
			if len(cands) > 0 {
				j := cands[r.IntN(len(cands))]
				if err := ask(j, bk); err != nil {
					return err
				}
				_, ok, err := peers[j].book.AllowedBuild(bk)
				if err != nil {
					return err
				}
				if ok {
					delay := gossipDelay(pop, r, len(platformPeers[pp.Platform]))
					if o.Design == Interest {
						// A lookup, then one round trip for attest/1.
						delay = dres.LookupMS[r.IntN(len(dres.LookupMS))]/1000 + 2*pop.Model.oneWay(r).Seconds()
					}
					installable = append(installable, time.Since(wall).Seconds()+delay)
					// This attestation brought it to the threshold weight.
					weightInstallable = append(weightInstallable, time.Since(wall).Seconds()+delay)
				} else {
					pending = append(pending, pendingCheck{bk: bk, observer: j, hour: hour})
					watches[bk] = &weightWatch{observer: j}
				}
			}
		}
		return nil
	}

	var ideal, hits int
	// request is one emerge of pkg by peer i: installed from a trusted
	// peer build it can reach, else compiled here and shared.
	request := func(i, pkg, day, h int) error {
		pp := pop.Peers[i]
		v := pop.Version(pkg, day)
		res.Requests++
		_, bk := buildKey(pkg, v, pp.USE(pkg), pp.Platform)
		bt := truth[bk]
		isIdeal := bt != nil && bt.reached
		if isIdeal {
			ideal++
		}
		if err := ask(i, bk); err != nil {
			return err
		}
		b, ok, err := peers[i].book.AllowedBuild(bk)
		if err != nil {
			return err
		}
		hit := false
		if ok {
			if bt == nil || b.Verdict.Content == nil || len(bt.honest[*b.Verdict.Content]) < m.Threshold {
				res.FalseAccepts++
			}
			// The holders: the counted attesters, and the peers that
			// fetched the build before (share mode, the default, serves
			// fetched copies and provides them in the DHT).
			var holders []int
			for _, s := range b.Atts {
				if j, known := byID[s.Attester]; known {
					holders = append(holders, j)
				}
			}
			if bt != nil && b.Verdict.Content != nil {
				holders = append(holders, bt.fetched[*b.Verdict.Content]...)
			}
			online := false
			for _, j := range holders {
				if j == i || !peers[j].online {
					continue
				}
				online = true
				if pop.Reachable(i, j) {
					hit = true
					break
				}
			}
			if isIdeal && !hit {
				if online {
					res.LostNAT++
				} else {
					res.LostOffline++
				}
			}
		} else if isIdeal {
			res.LostNotAllowed++
			v, _, err := peers[i].book.Verdict(bk)
			if err != nil {
				return err
			}
			switch v.Rule {
			case trust.RuleDispute:
				res.LostDispute++
			case trust.RuleBelowThreshold:
				res.LostStanding++
			}
		}
		if o.Donors > 0 {
			// The daemon records what it installs or compiles from
			// source, signed, and gossips it on the platform topic.
			d, _ := buildKey(pkg, v, pp.USE(pkg), pp.Platform)
			kind := trust.DemandSource
			if hit {
				kind = trust.DemandBinary
			}
			if _, err := peers[i].book.RecordDemand(ctx, d, kind); err != nil {
				return fmt.Errorf("sim: peer %d records its demand: %w", i, err)
			}
			res.DemandRecords++
			changes[pp.Platform]++
			variants[d.VariantKey()] = variantBuild{pkg: pkg, version: v, use: pp.USE(pkg)}
		}
		if hit {
			hits++
			peers[i].built[pkg] = v
			if bt != nil {
				bt.fetched[*b.Verdict.Content] = append(bt.fetched[*b.Verdict.Content], i)
			}
			if o.Design == Interest {
				// It holds the file now, and serves it and its votes.
				return provide(i, bk)
			}
			return nil
		}
		return build(i, pkg, v, pp.USE(pkg), h, rng, true)
	}
	// The donors: a share of the peers, drawn once.
	donors := map[int]*donor{}
	if o.Donors > 0 {
		n := int(math.Round(o.Donors * float64(m.Nodes)))
		for _, i := range drng.Perm(m.Nodes)[:min(n, m.Nodes)] {
			donors[i] = &donor{}
		}
		res.Donors = len(donors)
	}
	donorIdx := slices.Sorted(maps.Keys(donors))
	// donate runs donor i's builder for the online hour h: it plans as
	// builder/plan.go does whenever it is idle (the daemon plans every
	// minute, so the head of a fresh plan is what starts) and builds one
	// variant at a time, each taking a drawn build time; a build that
	// does not end within the hour goes on in the next online hour.
	donate := func(i, h int) error {
		dn := donors[i]
		plat := pop.Peers[i].Platform
		budget := time.Hour
		for budget > 0 {
			if dn.job == nil {
				if dn.idle && dn.seen == changes[plat] {
					return nil
				}
				w, kind, ok, err := planHead(ctx, peers[i].book, pop.Platforms[plat].ID, m.Threshold)
				if err != nil {
					return fmt.Errorf("sim: donor %d plans: %w", i, err)
				}
				dn.idle, dn.seen = !ok, changes[plat]
				if !ok {
					return nil // nothing wanted lacks builds: idle this hour
				}
				vb, known := variants[w.Variant]
				if !known {
					return fmt.Errorf("sim: donor %d: wanted variant %s was never demanded in this run", i, w.Variant)
				}
				dn.job = &donorJob{vb: vb, rebuild: kind == kindRebuild, left: buildTime(drng)}
			}
			if dn.job.left > budget {
				dn.job.left -= budget
				res.DonorBuildHours += budget.Hours()
				return nil
			}
			budget -= dn.job.left
			res.DonorBuildHours += dn.job.left.Hours()
			j := dn.job
			dn.job = nil
			res.DonorBuilds++
			if j.rebuild {
				res.DonorRebuilds++
			}
			if err := build(i, j.vb.pkg, j.vb.version, j.vb.use, h, drng, false); err != nil {
				return err
			}
		}
		return nil
	}
	hours := m.Days * 24
	for h := range hours {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		day := h / 24
		clock.hour(h)
		// Churn: peers leave and come back; a returning peer syncs its
		// catalog from a few online peers of its platform.
		for i, sp := range peers {
			on := pop.Peers[i].OnlineAt(h)
			if on == sp.online {
				continue
			}
			sp.online = on
			sp.node.SetOnline(on)
			if dn := donors[i]; dn != nil {
				dn.idle = false // its catalog sync may bring records
			}
			if !on || o.Design != Flood {
				continue
			}
			var others []int
			for _, j := range platformPeers[pop.Peers[i].Platform] {
				if j != i && peers[j].online {
					others = append(others, j)
				}
			}
			rng.Shuffle(len(others), func(a, b int) { others[a], others[b] = others[b], others[a] })
			before := sp.node.BytesIn()
			for _, j := range others[:min(len(others), o.SyncPeers)] {
				if _, err := sp.book.SyncFrom(ctx, peers[j].id); err != nil {
					return nil, fmt.Errorf("sim: peer %d syncs from %d: %w", i, j, err)
				}
			}
			returnBytes += sp.node.BytesIn() - before
		}
		// Pending installability checks at peers now online.
		kept := pending[:0]
		for _, pc := range pending {
			if !peers[pc.observer].online {
				kept = append(kept, pc)
				continue
			}
			if err := ask(pc.observer, pc.bk); err != nil {
				return nil, err
			}
			b, ok, err := peers[pc.observer].book.AllowedBuild(pc.bk)
			if err != nil {
				return nil, err
			}
			if ok {
				installable = append(installable, float64(h-pc.hour)*3600)
				if w := watches[pc.bk]; w != nil && !w.done {
					// It came with the catalog sync on return.
					w.done = true
					now := epoch.Add(time.Duration(h) * time.Hour)
					weightInstallable = append(weightInstallable, max(0, now.Sub(weightReached(b.Verdict, m.Threshold, now)).Seconds()))
				}
			} else {
				kept = append(kept, pc)
			}
		}
		pending = kept
		// Updates: a user's emerge -uDN @world on its update days, at the
		// start of its online window, asks for every installed package
		// that has a newer version; now and then a user emerges a package
		// it never had. Each is a request.
		for i, pp := range pop.Peers {
			if !peers[i].online {
				continue
			}
			var want []int
			if h%24 == pp.OnlineStart && day%pp.UpdateEvery == pp.UpdateOffset {
				for _, pkg := range pp.Installed {
					if pop.Version(pkg, day) > peers[i].built[pkg] {
						want = append(want, pkg)
					}
				}
			}
			if rng.Float64() < m.RequestsPerDay/float64(pp.OnlineHours) {
				if pkg := pop.request(rng); pop.Version(pkg, day) > peers[i].built[pkg] {
					want = append(want, pkg)
				}
			}
			for _, pkg := range want {
				if err := request(i, pkg, day, h); err != nil {
					return nil, err
				}
			}
		}
		for _, i := range donorIdx {
			if peers[i].online {
				if err := donate(i, h); err != nil {
					return nil, err
				}
			}
		}
		if h%24 == 23 {
			logf("day %d: %d attestations, %d requests, %d hits, %d ideal", day+1, res.Attestations, res.Requests, hits, ideal)
		}
	}
	res.Hits, res.Ideal = hits, ideal
	res.NeverInstallable = len(pending)
	res.Installable = len(installable)
	res.Builds = len(truth)
	if res.Requests > 0 {
		res.HitRate = float64(hits) / float64(res.Requests)
		res.IdealHitRate = float64(ideal) / float64(res.Requests)
	}
	if ideal > 0 {
		res.NATLoss = float64(res.LostNAT) / float64(ideal)
	}
	slices.Sort(installable)
	res.TimeToInstallableP50S, res.TimeToInstallableP99S = quantile(installable, 0.5), quantile(installable, 0.99)
	slices.Sort(weightInstallable)
	res.WeightInstallable = len(weightInstallable)
	res.WeightToInstallableP50S, res.WeightToInstallableP99S = quantile(weightInstallable, 0.5), quantile(weightInstallable, 0.99)
	if res.Attestations > 0 {
		res.MeanAttestationBytes = float64(attBytes) / float64(res.Attestations)
	}
	var gossip, stored, storedMax, file float64
	records := make([]float64, len(peers)) // attestations each store holds
	for i, sp := range peers {
		gossip += float64(sp.node.BytesIn())
		u, err := sp.st.TotalUsage()
		if err != nil {
			return nil, err
		}
		records[i] = float64(u.Records)
		stored += float64(u.Bytes)
		storedMax = max(storedMax, float64(u.Bytes))
		if fi, err := os.Stat(filepath.Join(dir, fmt.Sprint(i), "state.db")); err == nil {
			file += float64(fi.Size())
		}
	}
	n, days := float64(m.Nodes), float64(m.Days)
	res.GossipBytesPerPeerDay = gossip / n / days
	res.SyncReturnBytesPerPeerDay = float64(returnBytes) / n / days
	// Each build is provided once by each attester; each request looks
	// its build key up once.
	res.DHTBytesPerPeerDay = (float64(res.Attestations)*res.RPCsPerProvide + float64(res.Requests)*res.RPCsPerLookup) * DHTBytesPerRPC / n / days
	// The SyncLoop schedule (votes.ResyncEvery, ResyncMargin,
	// FullSyncEvery) over catalog/3 with reconciliation: connections are
	// random with respect to platforms, the connection manager keeps
	// between its low and high water marks; each sync, hourly from the
	// newest record seen less the margin, daily from the start, asks for
	// the fingerprints of 16 time slices of its range and, where the two
	// catalogs agree, asks nothing more. They agree here: every online
	// subscriber got every gossip message and a peer coming back online
	// synced at once (those bytes, reconciliation included, are measured
	// in GossipBytesPerPeerDay). So a sync costs one fingerprints answer
	// for the platform's attestations and one for its demand (which the
	// simulation makes none of: 16 empty slices), framed as p2p frames
	// them, from the platform's records as they stood at each simulated
	// hour (resyncAnswers).
	var resync float64
	conns := float64(p2p.DefaultConnLow+p2p.DefaultConnHigh) / 2
	emptyDemand := float64(wire.CatalogSlicesBytes(make([]wire.CatalogSlice, wire.MaxCatalogSlices)))
	for pi, members := range platformPeers {
		if len(members) < 2 {
			continue
		}
		var times []int64 // the platform's record times, from its fullest store
		best := -1.0
		for _, j := range members {
			if records[j] <= best {
				continue
			}
			best, times = records[j], times[:0]
			err := peers[j].st.WalkPlatformIDs(pop.Platforms[pi].ID, 1, math.MaxInt64, func(e store.CatalogEntry) error {
				times = append(times, e.Time)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		hourly, full := resyncAnswers(times, epoch, m.Days*24)
		for _, j := range members {
			pp := pop.Peers[j]
			others := float64(len(members) - 1)
			connected := min(others, conns*others/float64(m.Nodes-1))
			online := float64(pp.OnlineHours)
			resyncs := online / votes.ResyncEvery.Hours()
			fulls := max(1, online/votes.FullSyncEvery.Hours())
			resync += connected * (resyncs*(hourly+emptyDemand) + fulls*(full+emptyDemand))
		}
	}
	res.ResyncBytesPerPeerDay = resync / n
	if o.Design == Interest {
		res.ResyncBytesPerPeerDay = 0 // no catalogs
		// Requests' lookups are counted above; these are the observers'
		// and the hits' provides.
		res.DHTBytesPerPeerDay += float64(hits)*res.RPCsPerProvide*DHTBytesPerRPC/n/days +
			float64(max(0, lookups-res.Requests))*res.RPCsPerLookup*DHTBytesPerRPC/n/days
	}
	res.ControlBytesPerPeerDay = res.GossipBytesPerPeerDay + res.DHTBytesPerPeerDay + res.ResyncBytesPerPeerDay
	res.StoreBytesPerPeer, res.StoreBytesPerPeerMax = stored/n, storedMax
	res.StoreFileBytesPerPeer = file / n
	res.WallSeconds = time.Since(start).Seconds()
	return res, nil
}

// seedStanding writes each peer's standing ledger as the network's
// history left it: every other honest peer credited with standing_days
// of agreement if established (a share o.Established of them, drawn
// once), else with a uniform part of that; every attacker key with
// sleeperDays if the adversary is Sleeper. Every peer saw the same
// history — for sleepers the worst case.
func seedStanding(peers []*simPeer, attackerKeys []crypto.PrivKey, o Options, standingDays int, today uint32, rng *rand.Rand) error {
	record := func(days int) store.Standing {
		return store.Standing{First: today - uint32(days), Last: today - 1, Days: uint32(days)}
	}
	history := map[string]store.Standing{}
	for _, sp := range peers {
		days := standingDays
		if rng.Float64() >= o.Established {
			days = 1 + rng.IntN(standingDays-1)
		}
		history[string(sp.id)] = record(days)
	}
	if o.Adversary == Sleeper {
		for _, k := range attackerKeys {
			id, err := peer.IDFromPrivateKey(k)
			if err != nil {
				return err
			}
			history[string(id)] = record(sleeperDays)
		}
	}
	for _, sp := range peers {
		own := history[string(sp.id)]
		delete(history, string(sp.id))
		err := sp.st.SetStanding(history)
		history[string(sp.id)] = own
		if err != nil {
			return err
		}
	}
	return nil
}

// bookClock is the Books' clock (votes.Options.Now): it dates demand
// records, and so the order in which donors take equally wanted variants
// (most recently wanted first). On the wall clock that order followed the
// speed of the run — an attacked run, two to three times slower, made
// other donor builds than the honest run of the same seed. It reads the
// simulated hour instead, compressed into one day that ended before the
// run began: the standing epoch (a day) stays the one the ledgers were
// seeded for, as on the wall clock, and every record dated by it is in
// the past. It is set between the hours of the run, never during one.
type bookClock struct {
	base time.Time
	step time.Duration // one simulated hour
	ns   atomic.Int64
}

func newBookClock(days int) *bookClock {
	c := &bookClock{base: time.Now().UTC().Add(-24 * time.Hour).Truncate(24 * time.Hour)}
	// The run's hours fit in 20 of the day's 24.
	c.step = min(100*time.Second, 20*time.Hour/time.Duration(max(1, days*24)))
	c.hour(0)
	return c
}

// hour moves the clock to the start of simulated hour h.
func (c *bookClock) hour(h int) { c.ns.Store(c.base.Add(time.Duration(h) * c.step).UnixNano()) }

func (c *bookClock) now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// simDecodedCacheBytes is each simulated Book's cache of decoded
// attestations (the daemon's is 32 MiB): the cache saves work, never
// changes a verdict.
const simDecodedCacheBytes = 4 << 20

// newPeer makes one member of net: a fresh identity, its own store in dir
// and a Book on platform configured as the daemon configures it. The
// caller closes the store and serves the node's handlers.
func newPeer(net *memnet.Network, dir, platform string, policy trust.Policy, limits config.LimitsConfig, now func() time.Time) (*simPeer, error) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		return nil, err
	}
	node := net.Join(id)
	vb := votes.New(votes.Options{
		Store: st, Policy: policy, Self: id, Key: k, Platform: platform,
		Limits: limits, Files: xpak.DefaultLimits(), Net: node,
		// A thousand Books share the process: 32 MiB of decoded
		// attestations each took the 1,000-peer attacked runs to 23 GB.
		DecodedCacheBytes: simDecodedCacheBytes,
		Now:               now,
	})
	return &simPeer{key: k, id: id, st: st, book: vb, node: node, online: true}, nil
}

// gossipDelay models a GossipSub delivery across a topic of n peers: about
// log_D(n) hops, each one link's one-way latency.
func gossipDelay(pop *Population, rng *rand.Rand, n int) float64 {
	hops := max(1, int(math.Ceil(math.Log(float64(n))/math.Log(gossipDegree))))
	var d time.Duration
	for range hops {
		d += pop.Model.oneWay(rng)
	}
	return d.Seconds()
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// descriptor is the build descriptor of pkg at version with USE variant use
// on platform: what identity derives from a real package's metadata.
func descriptor(pop *Population, pkg, version, use, platform int) identity.Descriptor {
	p := pop.Packages[pkg]
	plat := pop.Platforms[platform]
	pv := fmt.Sprintf("%s-%d.0", p.Name, version)
	useFlags := map[int][]string{0: {}, 1: {"doc"}, 2: {"doc", "static-libs"}}[use]
	return identity.Descriptor{
		CPV: pv, EbuildDigest: fmt.Sprintf("%x", sha256.Sum256([]byte(pv+" ebuild"))),
		Eclasses: map[string]string{}, USE: useFlags,
		CHOST: plat.CHOST, CFLAGS: plat.Flags, CXXFLAGS: plat.Flags, LDFLAGS: "-Wl,-O1 -Wl,--as-needed",
		SlotDeps: []string{}, Requires: map[string][]string{},
	}
}

// attest signs what an honest builder's daemon attests for a build: the
// descriptor, the content, served sizes and the index fields a real
// package carries (about the size of a real attestation).
func attest(d identity.Descriptor, content trust.ContentID, tc Toolchain, at time.Time, key crypto.PrivKey) (*trust.Signed, error) {
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	name := d.CPV[strings.IndexByte(d.CPV, '/')+1:]
	a := trust.Attestation{
		Version: trust.AttestationVersion, BuildKey: d.BuildKey(), VariantKey: d.VariantKey(),
		CPV: d.CPV, Platform: d.Platform(), Descriptor: raw,
		Content:    content,
		FileSHA256: sha256.Sum256(append(content.Image[:], content.Metadata[:]...)),
		Size:       1 << 20, PieceSize: 262144, Format: trust.FormatGPKG,
		PieceRoot: sha256.Sum256(append(content.Metadata[:], content.Image[:]...)),
		Builder:   trust.Builder{GCC: tc.GCC},
		Time:      at.UTC().Truncate(time.Second),
		Served:    trust.ServedSizes{MetadataTar: 20480, ImageTar: 1 << 20},
		Index: map[string]string{
			"DESCRIPTION": "A simulated package standing in for " + name + " of the Gentoo tree",
			"EAPI":        "8",
			"KEYWORDS":    "~alpha amd64 arm arm64 hppa ~loong ~m68k ~mips ppc ppc64 ~riscv ~s390 sparc x86",
			"LICENSE":     "GPL-2+ LGPL-2.1+",
			"SLOT":        "0",
			"RDEPEND":     ">=sys-libs/zlib-1.2.13 >=dev-libs/openssl-3.0 virtual/libintl app-arch/xz-utils >=sys-libs/ncurses-6.4",
			"DEPEND":      ">=sys-libs/zlib-1.2.13 >=dev-libs/openssl-3.0 virtual/libintl app-arch/xz-utils >=sys-libs/ncurses-6.4",
			"BDEPEND":     "virtual/pkgconfig sys-devel/gettext",
			"IUSE":        "doc static-libs test",
		},
	}
	return trust.Sign(a, key)
}
