package api

import (
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// Paths of the local API. Everything lives under /api/v0 so a future
// incompatible API can sit beside it.
const (
	PathStatus       = "/api/v0/status"
	PathPeers        = "/api/v0/peers"
	PathFind         = "/api/v0/find"
	PathAnnounce     = "/api/v0/announce"
	PathFetch        = "/api/v0/fetch"
	PathTrustExplain = "/api/v0/trust/explain"
	PathTrustPolicy  = "/api/v0/trust/policy"
	PathGateway      = "/api/v0/gateway"
	PathEndorse      = "/api/v0/endorse"
	PathTrustVouch   = "/api/v0/trust/vouch"
)

// Status is the daemon's one-screen account of itself (`gentoo-p2pd status`).
type Status struct {
	Version      string   `json:"version"`
	Mode         string   `json:"mode"`
	PeerID       string   `json:"peer_id"`
	Addrs        []string `json:"addrs"`
	Reachability string   `json:"reachability"`
	Peers        int      `json:"peers"`
	// Discovery says how the daemon finds peers beyond those it knows
	// (mDNS, the public DHT's rendezvous) and how that is going.
	Discovery  string    `json:"discovery,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	Platform   string    `json:"platform"`
	PKGDIR     string    `json:"pkgdir"`
	PKGDIRNote string    `json:"pkgdir_note,omitempty"`

	PackagesShared int       `json:"packages_shared"`
	KeysProvided   int       `json:"keys_provided"`
	LastReprovide  time.Time `json:"last_reprovide,omitzero"`
	// ReprovideLag is how far the next reprovide is overdue (0 when on time).
	ReprovideLag time.Duration `json:"reprovide_lag_ns"`

	CatalogAttestations  int   `json:"catalog_attestations"`
	CatalogBuilds        int   `json:"catalog_builds"`
	RejectedAttestations int64 `json:"rejected_attestations"`

	BuildsFetched int   `json:"builds_fetched"`
	BytesFetched  int64 `json:"bytes_fetched"`
	BytesServed   int64 `json:"bytes_served"`
	// BytesSaved counts the container bytes portage got from the gateway
	// instead of compiling.
	BytesSaved int64 `json:"bytes_saved"`
	// Installs counts the binary installs the bashrc hook reported
	// (announce --installed): this machine's own count, seen by no peer.
	Installs int64 `json:"installs"`
	// Demands counts the demand records (usage votes: variants peers
	// want) held here, this daemon's own included.
	Demands int `json:"demands"`
	// LastFetchError says why the most recent failed fetch failed (disk
	// full, no provider, every provider bad …), and when.
	LastFetchError   string    `json:"last_fetch_error,omitempty"`
	LastFetchErrorAt time.Time `json:"last_fetch_error_at,omitzero"`
	CacheBytes       int64     `json:"cache_bytes"`
	CacheLimit       int64     `json:"cache_limit"`

	Disputes      int `json:"disputes"`
	Equivocations int `json:"equivocations"`
	// RebuildDisagreements counts the reports of rebuilds that disagree
	// with this node's own builds (`trust explain` shows each).
	RebuildDisagreements int `json:"rebuild_disagreements"`
	Threshold            int `json:"threshold"`
	// Established and Earning count the attesters with full standing
	// and those still earning it (docs/SECURITY.md, "Standing");
	// Vouched the trust.vouched_peers, VouchWeighted the identities
	// signed vouches give weight to, FreshWeight trust.fresh_weight in
	// percent.
	Established   int `json:"established"`
	Earning       int `json:"earning"`
	Vouched       int `json:"vouched"`
	VouchWeighted int `json:"vouch_weighted"`
	FreshWeight   int `json:"fresh_weight"`

	GatewayURL string `json:"gateway_url,omitempty"`
	// GatewayListed counts the builds the gateway's index lists for
	// portage; GatewayNote says why it lists none (nothing of this
	// platform, nothing allowed yet, nothing that fits this machine).
	GatewayListed int    `json:"gateway_listed"`
	GatewayNote   string `json:"gateway_note,omitempty"`
	MetricsURL    string `json:"metrics_url,omitempty"`
	Socket        string `json:"socket"`
	// Builder is the builder's state; nil when build.donate is off.
	Builder *Builds `json:"builder,omitempty"`
}

// Peer is one connected peer.
type Peer struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs"`
	Direction string   `json:"direction,omitempty"`
}

// PeersResponse lists connected peers.
type PeersResponse struct {
	Peers []Peer `json:"peers"`
}

// FindResult answers `find CPV|BUILDKEY`: who provides which build, and the
// attestations they hold for it.
type FindResult struct {
	Query  string        `json:"query"`
	Builds []FoundBuild  `json:"builds"`
	Errors []string      `json:"errors,omitempty"`
	Took   time.Duration `json:"took_ns"`
	// Why is set when nothing was found: this machine's platform and what
	// the connected peers of other platforms hold.
	Why *NothingFound `json:"why,omitempty"`
}

// FoundBuild is one build key with its providers and attestations.
type FoundBuild struct {
	BuildKey     keys.Build        `json:"build_key"`
	VariantKey   keys.Variant      `json:"variant_key,omitempty"`
	CPV          string            `json:"cpv"`
	Providers    []string          `json:"providers"`
	Attestations []AttestationInfo `json:"attestations"`
	Verdict      string            `json:"verdict,omitempty"`
	// Wanted counts the distinct peers whose demand (usage vote, signed
	// within the last 30 days) names this build's variant.
	Wanted int `json:"wanted"`
}

// AttestationInfo is the readable part of a verified attestation.
type AttestationInfo struct {
	Attester    string       `json:"attester"`
	BuildKey    keys.Build   `json:"build_key"`
	VariantKey  keys.Variant `json:"variant_key"`
	CPV         string       `json:"cpv"`
	Content     string       `json:"content"`
	FileSHA256  string       `json:"file_sha256"`
	Size        int64        `json:"size"`
	Format      string       `json:"format"`
	Time        time.Time    `json:"time"`
	ReceivedVia string       `json:"received_via,omitempty"`
}

// AnnounceRequest asks the daemon to index a binpkg now (the bashrc hook's
// call) instead of waiting for the PKGDIR watcher.
type AnnounceRequest struct {
	Path string `json:"path,omitempty"`
	// Installed reports a binary install of CPV, not a build: it
	// increments the store's installs counter and records demand for the
	// installed variant (read from the vdb).
	Installed string `json:"installed,omitempty"`
}

// AnnounceResult says what the daemon did with an announce.
type AnnounceResult struct {
	Path       string       `json:"path,omitempty"`
	CPV        string       `json:"cpv,omitempty"`
	BuildKey   keys.Build   `json:"build_key,omitempty"`
	VariantKey keys.Variant `json:"variant_key,omitempty"`
	Content    string       `json:"content,omitempty"`
	Provided   bool         `json:"provided"`
	// DemandRecorded says this daemon's demand (usage vote) for the
	// variant was signed, stored and gossiped.
	DemandRecorded bool   `json:"demand_recorded,omitempty"`
	Note           string `json:"note,omitempty"`
}

// FetchRequest asks the daemon to fetch the Allowed build for a build key
// or CPV and copy it to Dir.
type FetchRequest struct {
	Query string `json:"query"`
	Dir   string `json:"dir,omitempty"`
	// Progress asks for a stream of FetchEvent lines instead of one result.
	Progress bool `json:"progress,omitempty"`
}

// FetchEvent is one line of a progress stream: progress, then a result or
// an error. A failure before the first line is answered as an ordinary
// error (status and body), not as a stream.
type FetchEvent struct {
	Progress *FetchProgress `json:"progress,omitempty"`
	Result   *FetchResult   `json:"result,omitempty"`
	Error    string         `json:"error,omitempty"`
	// Code is Error's code (see Code).
	Code Code `json:"code,omitempty"`
}

// Err is the event's error as an *Error, nil when it carries none.
func (ev FetchEvent) Err() error {
	if ev.Error == "" {
		return nil
	}
	code := ev.Code
	if code == "" {
		code = CodeInternal
	}
	return &Error{Code: code, Message: ev.Error}
}

// FetchProgress counts verified bytes.
type FetchProgress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	Peers int   `json:"peers"`
}

// FetchResult reports a finished fetch.
type FetchResult struct {
	BuildKey     keys.Build    `json:"build_key"`
	CPV          string        `json:"cpv"`
	Content      string        `json:"content"`
	FileSHA256   string        `json:"file_sha256"`
	Size         int64         `json:"size"`
	Path         string        `json:"path"`
	Providers    int           `json:"providers"`
	BadPeers     []string      `json:"bad_peers,omitempty"`
	PiecesReused int           `json:"pieces_reused"`
	Took         time.Duration `json:"took_ns"`
}

// GatewayInfo is what setup-portage needs from the daemon: where portage
// should fetch from and the key it must trust.
type GatewayInfo struct {
	URL         string `json:"url"`
	Fingerprint string `json:"fingerprint"`
	PublicKey   string `json:"public_key"` // armored OpenPGP public key
}

// EndorseRequest hands the daemon a build server's endorsement to store and
// gossip.
type EndorseRequest struct {
	Blob []byte `json:"blob"`
}

// EndorseResult says whether the endorsement was new.
type EndorseResult struct {
	Stored bool `json:"stored"`
}

// Explanation answers `trust explain`: the verdict of every build key the
// query names.
type Explanation struct {
	Query    string          `json:"query"`
	Verdicts []trust.Verdict `json:"verdicts"`
	// NotListed says, per build key, why the gateway's last index left
	// the build out although it may be allowed: it does not fit this
	// machine (a soname, a slot, glibc, the CPU), or its voters disagree
	// on what portage would be told.
	NotListed map[keys.Build]string `json:"not_listed,omitempty"`
	// Disagreements are this node's reports of rebuilds that disagree
	// with its own build of a build key the query names: the other
	// content, its attesters, and what differs in the image and the
	// metadata.
	Disagreements []trust.Disagreement `json:"disagreements,omitempty"`
	Text          string               `json:"text"`
}

// PolicyView is the effective trust policy, printable.
type PolicyView struct {
	Threshold        int      `json:"threshold"`
	Dispute          int      `json:"dispute"`
	RequireSigner    bool     `json:"require_signer"`
	DistinctNetworks bool     `json:"distinct_networks"`
	Signers          []string `json:"signers"`
	PGPKeys          []string `json:"pgp_keys"`
	TrustedPeers     []string `json:"trusted_peers"`
	BlockedPeers     []string `json:"blocked_peers"`
	VouchedPeers     []string `json:"vouched_peers"`
	// FreshWeight is trust.fresh_weight in percent; StandingDays
	// trust.standing_days.
	FreshWeight  int `json:"fresh_weight"`
	StandingDays int `json:"standing_days"`
	// VouchDecay (percent) and VouchHops are trust.vouch_decay and
	// trust.vouch_hops; Vouches this node's own signed vouches.
	VouchDecay int         `json:"vouch_decay"`
	VouchHops  int         `json:"vouch_hops"`
	Vouches    []VouchView `json:"vouches"`
	Overrides  []string    `json:"overrides"`
	Self       string      `json:"self"`
}

// VouchRequest asks the daemon to sign and gossip a vouch for Peer
// (POST PathTrustVouch): lasting Expires (a Go duration, at most a year;
// empty for 365 days), or a revocation with Undo. With PGPVouch set
// instead, the daemon checks that vouch, signed by a key of its
// trust.vouch_keyring (trust.PGPVouchFromStatement's envelope), keeps and
// gossips it.
type VouchRequest struct {
	Peer     string `json:"peer,omitempty"`
	Expires  string `json:"expires,omitempty"`
	Undo     bool   `json:"undo,omitempty"`
	PGPVouch []byte `json:"pgp_vouch,omitempty"`
}

// VouchView is one signed vouch: Voucher vouches that Vouchee is a real,
// independent builder until Expires. Active is false once it expired or
// for a revocation (Expires equal to Issued).
type VouchView struct {
	Voucher string    `json:"voucher"`
	Vouchee string    `json:"vouchee"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
	Active  bool      `json:"active"`
}

// Paths of the cache commands.
const (
	PathCache   = "/api/v0/cache"
	PathCacheGC = "/api/v0/cache/gc"
)

// CachedBuild is one fetched build in the content cache (`cache ls`).
type CachedBuild struct {
	CPV        string     `json:"cpv"`
	BuildKey   keys.Build `json:"build_key"`
	FileSHA256 string     `json:"file_sha256"`
	Size       int64      `json:"size"`
	Added      time.Time  `json:"added"`
	LastUsed   time.Time  `json:"last_used"`
	// Verdict is the trust decision for BuildKey now (allowed, unknown,
	// refused, disputed).
	Verdict string `json:"verdict"`
	// Servable: the copy may still be served (Allowed; in mirror mode also
	// Unknown).
	Servable bool `json:"servable"`
	// OwnBuild: the same file is an own build in PKGDIR, so GC keeps it.
	OwnBuild bool `json:"own_build,omitempty"`
}

// CacheList answers GET PathCache: every cached build, least recently
// used first, with totals and the disk budget.
type CacheList struct {
	Builds []CachedBuild `json:"builds"`
	Files  int           `json:"files"`
	Bytes  int64         `json:"bytes"`
	// ServableBytes counts the bytes of the builds that are still servable.
	ServableBytes int64 `json:"servable_bytes"`
	// DiskBudget is cache.disk_budget (0: unbounded).
	DiskBudget int64 `json:"disk_budget"`
}

// CacheGCRequest asks for a cache GC now. To is the size to shrink the
// cache to; without it the disk budget is the target.
type CacheGCRequest struct {
	To *int64 `json:"to,omitempty"`
}

// CacheGCResult says what a cache GC did.
type CacheGCResult struct {
	Target int64 `json:"target"`
	Before int64 `json:"before"`
	After  int64 `json:"after"`
	Freed  int64 `json:"freed"`
	// Note explains a GC that did nothing or could not reach its target.
	Note string `json:"note,omitempty"`
}

// PathPeersAdd connects the daemon to a peer now and keeps it as a known
// peer (`peers add MULTIADDR`).
const PathPeersAdd = "/api/v0/peers/add"

// PeersAddRequest names the peer to connect to: a multiaddr ending in
// /p2p/ID.
type PeersAddRequest struct {
	Addr string `json:"addr"`
}

// PeersAddResult is the peer the daemon connected to.
type PeersAddResult struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// Builds is what the builder (build.donate) did and is doing: status
// shows it, `--json` prints it.
type Builds struct {
	// Rebuild reports the rebuilder role (build.rebuild).
	Rebuild bool `json:"rebuild"`
	// Queued counts the builds planned and not started; Running lists
	// the ones under way.
	Queued  int        `json:"queued"`
	Running []BuildJob `json:"running,omitempty"`
	// Done and Failed count the builds finished since the builder was
	// first started, and CPUSeconds the CPU time (user + system) they
	// took: what this machine donated.
	Done       int64   `json:"done"`
	Failed     int64   `json:"failed"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// Note says why no build starts now (the machine is busy, the disk
	// budget is spent, a failing demand source); empty when none.
	Note string `json:"note,omitempty"`
	// Recent are the last builds finished since start, newest first.
	Recent []BuildJob `json:"recent,omitempty"`
}

// BuildJob is one build of the builder.
type BuildJob struct {
	CPV     string       `json:"cpv"`
	USE     []string     `json:"use,omitempty"`
	Variant keys.Variant `json:"variant"`
	// Kind is "build" (no trusted build exists) or "rebuild" (one does,
	// with fewer reproducers than the threshold).
	Kind    string    `json:"kind"`
	Wanters int       `json:"wanters"`
	Started time.Time `json:"started,omitzero"`
	// Took is the wall time, CPUSeconds the CPU time of a finished build.
	Took       time.Duration `json:"took_ns,omitempty"`
	CPUSeconds float64       `json:"cpu_seconds,omitempty"`
	// Path is the binpkg it wrote; Built its variant key when it is not
	// the one wanted (this machine's flags or profile differ).
	Path  string       `json:"path,omitempty"`
	Built keys.Variant `json:"built,omitempty"`
	// Error says why it failed.
	Error string `json:"error,omitempty"`
}
