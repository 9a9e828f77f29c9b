package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Mode says how much of itself a node offers to the network.
type Mode string

// The modes a node can run in.
const (
	// ModeConsume fetches and attests but serves nothing to others.
	ModeConsume Mode = "consume"
	// ModeShare serves the packages it built or fetched (the default).
	ModeShare Mode = "share"
	// ModeMirror also keeps and serves trusted builds it did not need itself.
	ModeMirror Mode = "mirror"
)

// Config is everything the daemon and the CLI need to know, as plain Go
// values: no viper types leak out of this package. Durations are
// time.Duration and sizes are int64 bytes, already parsed and validated.
// Each field's key (its toml tag path), default, environment variable and
// meaning are listed in REFERENCE.md, generated from the same key table
// Load uses.
type Config struct {
	Mode     Mode           `toml:"mode" mapstructure:"mode"`
	StateDir string         `toml:"state_dir" mapstructure:"state_dir"`
	Log      LogConfig      `toml:"log" mapstructure:"log"`
	Portage  PortageConfig  `toml:"portage" mapstructure:"portage"`
	Network  NetworkConfig  `toml:"network" mapstructure:"network"`
	API      APIConfig      `toml:"api" mapstructure:"api"`
	Gateway  GatewayConfig  `toml:"gateway" mapstructure:"gateway"`
	Metrics  MetricsConfig  `toml:"metrics" mapstructure:"metrics"`
	Trust    TrustConfig    `toml:"trust" mapstructure:"trust"`
	Transfer TransferConfig `toml:"transfer" mapstructure:"transfer"`
	Cache    CacheConfig    `toml:"cache" mapstructure:"cache"`
	Limits   LimitsConfig   `toml:"limits" mapstructure:"limits"`
	Build    BuildConfig    `toml:"build" mapstructure:"build"`

	// File is the config file that was read, "" when none was found.
	File string `toml:"-" mapstructure:"-"`
	// Warnings are non-fatal surprises met while loading (portageq failing
	// before the make.conf fallback, an unknown GENTOO_P2PD_* variable),
	// for the daemon to log once at startup.
	Warnings []string `toml:"-" mapstructure:"-"`
	// Sources maps every key ("mode", "portage.pkgdir", …) to where Load
	// found its effective value; nil for a Config Load did not return.
	// Settings lists them with the values.
	Sources map[string]Source `toml:"-" mapstructure:"-"`
}

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `toml:"level" mapstructure:"level"`   // debug, info, warn, error
	Format string `toml:"format" mapstructure:"format"` // text, json
}

// SlogLevel is Level as a slog.Level (validated values only; anything
// else is info).
func (l LogConfig) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// PortageConfig holds the portage settings a build's identity depends on.
// Empty keys in the daemon's config are filled from portage (see
// ProbePortage); Sources says where each final value came from.
type PortageConfig struct {
	PkgDir   string `toml:"pkgdir" mapstructure:"pkgdir"`
	Repo     string `toml:"repo" mapstructure:"repo"`
	CHOST    string `toml:"chost" mapstructure:"chost"`
	CFLAGS   string `toml:"cflags" mapstructure:"cflags"`
	CXXFLAGS string `toml:"cxxflags" mapstructure:"cxxflags"`
	FFLAGS   string `toml:"fflags" mapstructure:"fflags"`
	FCFLAGS  string `toml:"fcflags" mapstructure:"fcflags"`
	LDFLAGS  string `toml:"ldflags" mapstructure:"ldflags"`
	ARCH     string `toml:"arch" mapstructure:"arch"`

	// Sources maps each key above ("pkgdir", "chost", …) to where its value
	// came from: SourceConfig, SourcePortageq, SourceMakeConf,
	// SourceProfile, SourceReposConf, SourceDefault or SourceUnset, so that
	// `gentoo-p2pd status` can explain it.
	Sources map[string]string `toml:"-" mapstructure:"-"`
}

// Where a portage setting came from (values of PortageConfig.Sources).
const (
	SourceConfig    = "config"     // the daemon's flags, environment or config file
	SourcePortageq  = "portageq"   // `portageq envvar` / `portageq get_repo_path`
	SourceMakeConf  = "make.conf"  // /etc/portage/make.conf (or /etc/make.conf)
	SourceProfile   = "profile"    // make.defaults of /etc/portage/make.profile and its parents
	SourceReposConf = "repos.conf" // /etc/portage/repos.conf
	SourceDefault   = "default"    // portage's built-in default (PKGDIR, repo location)
	SourceUnset     = "unset"      // nobody set it; the value is ""
)

// NetworkConfig configures the libp2p host and the DHT.
type NetworkConfig struct {
	Listen            []string      `toml:"listen" mapstructure:"listen"`
	Bootstrap         []string      `toml:"bootstrap" mapstructure:"bootstrap"`
	MDNS              bool          `toml:"mdns" mapstructure:"mdns"`
	QUIC              bool          `toml:"quic" mapstructure:"quic"`
	AutoNAT           bool          `toml:"autonat" mapstructure:"autonat"`
	HolePunching      bool          `toml:"hole_punching" mapstructure:"hole_punching"`
	RelayClient       bool          `toml:"relay_client" mapstructure:"relay_client"`
	ConnLow           int           `toml:"conn_low" mapstructure:"conn_low"`
	ConnHigh          int           `toml:"conn_high" mapstructure:"conn_high"`
	DHTMode           string        `toml:"dht_mode" mapstructure:"dht_mode"` // auto, server, client
	ReprovideInterval time.Duration `toml:"reprovide_interval" mapstructure:"reprovide_interval"`
	// PlatformPeers is how many connected peers of its own platform the
	// daemon seeks through the private DHT (0: none).
	PlatformPeers int `toml:"platform_peers" mapstructure:"platform_peers"`
	// Rendezvous finds peers with no bootstrap list: the daemon advertises
	// and looks up one well-known namespace on the public libp2p DHT.
	Rendezvous      bool     `toml:"rendezvous" mapstructure:"rendezvous"`
	RendezvousPeers []string `toml:"rendezvous_peers" mapstructure:"rendezvous_peers"`
}

// APIConfig locates the unix socket the CLI and the bashrc hook talk to.
type APIConfig struct {
	Socket string `toml:"socket" mapstructure:"socket"`
}

// GatewayConfig configures the loopback binhost portage fetches from.
type GatewayConfig struct {
	Enabled bool   `toml:"enabled" mapstructure:"enabled"`
	Listen  string `toml:"listen" mapstructure:"listen"` // loopback host:port
	Path    string `toml:"path" mapstructure:"path"`     // URL path prefix, starts with "/"
	// Prefetch selects which listed builds are fetched before portage asks
	// for them: PrefetchNone (the default: on request), PrefetchInstalled
	// or PrefetchAll. Listing never needs a fetch.
	Prefetch string `toml:"prefetch" mapstructure:"prefetch"`
}

// Values of gateway.prefetch.
const (
	PrefetchInstalled = "installed"
	PrefetchAll       = "all"
	PrefetchNone      = "none"
)

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	Listen string `toml:"listen" mapstructure:"listen"` // host:port, "" = off
}

// TrustConfig is the user's trust policy.
type TrustConfig struct {
	Threshold        int             `toml:"threshold" mapstructure:"threshold"`
	Dispute          int             `toml:"dispute" mapstructure:"dispute"`
	Signers          []string        `toml:"signers" mapstructure:"signers"` // Ed25519 public keys, hex or base64
	PGPKeyring       string          `toml:"pgp_keyring" mapstructure:"pgp_keyring"`
	RequireSigner    bool            `toml:"require_signer" mapstructure:"require_signer"`
	TrustedPeers     []string        `toml:"trusted_peers" mapstructure:"trusted_peers"`
	BlockedPeers     []string        `toml:"blocked_peers" mapstructure:"blocked_peers"`
	DistinctNetworks bool            `toml:"distinct_networks" mapstructure:"distinct_networks"`
	VouchedPeers     []string        `toml:"vouched_peers" mapstructure:"vouched_peers"`
	FreshWeight      int             `toml:"fresh_weight" mapstructure:"fresh_weight"`
	StandingDays     int             `toml:"standing_days" mapstructure:"standing_days"`
	VouchDecay       int             `toml:"vouch_decay" mapstructure:"vouch_decay"`
	VouchHops        int             `toml:"vouch_hops" mapstructure:"vouch_hops"`
	VouchKeyring     string          `toml:"vouch_keyring" mapstructure:"vouch_keyring"`
	Overrides        []TrustOverride `toml:"overrides" mapstructure:"overrides"`
}

// TrustOverride changes the trust policy for packages whose "category/PF"
// matches Glob (path.Match syntax, e.g. "sys-kernel/*"). Nil fields keep
// the global value.
type TrustOverride struct {
	Glob          string `toml:"glob" mapstructure:"glob"`
	Threshold     *int   `toml:"threshold,omitempty" mapstructure:"threshold"`
	Dispute       *int   `toml:"dispute,omitempty" mapstructure:"dispute"`
	RequireSigner *bool  `toml:"require_signer,omitempty" mapstructure:"require_signer"`
}

// TransferConfig bounds what the fetch protocol may use. Rates are bytes
// per second; 0 means unlimited.
type TransferConfig struct {
	UploadSlots        int   `toml:"upload_slots" mapstructure:"upload_slots"`
	UploadRate         int64 `toml:"upload_rate" mapstructure:"upload_rate"`
	PeerUploadRate     int64 `toml:"peer_upload_rate" mapstructure:"peer_upload_rate"`
	DownloadRate       int64 `toml:"download_rate" mapstructure:"download_rate"`
	MaxRequestsPerPeer int   `toml:"max_requests_per_peer" mapstructure:"max_requests_per_peer"`
	// UploadStallTimeout: a peer we upload to that accepts less than 64
	// KiB in this much time blocked on it loses its slot to a waiting peer.
	UploadStallTimeout time.Duration `toml:"upload_stall_timeout" mapstructure:"upload_stall_timeout"`
}

// CacheConfig configures where fetched packages are kept.
type CacheConfig struct {
	Dir        string `toml:"dir" mapstructure:"dir"`
	DiskBudget int64  `toml:"disk_budget" mapstructure:"disk_budget"`
}

// BuildConfig is the builder (donated CPU): what it builds, with which
// command, where, and within which limits.
type BuildConfig struct {
	Donate        bool          `toml:"donate" mapstructure:"donate"`
	Rebuild       bool          `toml:"rebuild" mapstructure:"rebuild"`
	Command       []string      `toml:"command" mapstructure:"command"`
	Root          string        `toml:"root" mapstructure:"root"`
	MaxConcurrent int           `toml:"max_concurrent" mapstructure:"max_concurrent"`
	Jobs          int           `toml:"jobs" mapstructure:"jobs"`
	Nice          int           `toml:"nice" mapstructure:"nice"`
	Timeout       time.Duration `toml:"timeout" mapstructure:"timeout"`
	DiskBudget    int64         `toml:"disk_budget" mapstructure:"disk_budget"`
	WhenIdle      int           `toml:"when_idle" mapstructure:"when_idle"`
}

// LimitsConfig bounds what the daemon will parse from an untrusted peer.
type LimitsConfig struct {
	MaxImageBytes    int64 `toml:"max_image_bytes" mapstructure:"max_image_bytes"`
	MaxMetadataValue int64 `toml:"max_metadata_value" mapstructure:"max_metadata_value"`
	// PeerAttestations and PeerAttestationBytes bound what one attester
	// (one peer key) can make this daemon store; past them its least
	// useful records are evicted.
	PeerAttestations     int   `toml:"peer_attestations" mapstructure:"peer_attestations"`
	PeerAttestationBytes int64 `toml:"peer_attestation_bytes" mapstructure:"peer_attestation_bytes"`
	// PeerRequests and Requests bound the attest/catalog requests served
	// at once, per peer and in total.
	PeerRequests int `toml:"peer_requests" mapstructure:"peer_requests"`
	Requests     int `toml:"requests" mapstructure:"requests"`
	// AttestationBytes bounds the attestations of all attesters together:
	// keys are free, so per-key budgets alone bound nothing in total.
	AttestationBytes int64 `toml:"attestation_bytes" mapstructure:"attestation_bytes"`
	// PeerGossipRate is how many gossip messages per second one relaying
	// peer may make this daemon verify (bursts of ten seconds' worth).
	PeerGossipRate int `toml:"peer_gossip_rate" mapstructure:"peer_gossip_rate"`
	// PeerDemands and Demands bound the demand records (usage votes) kept,
	// per identity and in total; past them the oldest go.
	PeerDemands int `toml:"peer_demands" mapstructure:"peer_demands"`
	Demands     int `toml:"demands" mapstructure:"demands"`
	// PeerVouches and Vouches bound the signed vouches kept, per voucher
	// and in total; past them new ones are refused.
	PeerVouches int `toml:"peer_vouches" mapstructure:"peer_vouches"`
	Vouches     int `toml:"vouches" mapstructure:"vouches"`
}

// Built-in defaults that do not depend on the environment.
const (
	DefaultPort        = 4701
	DefaultPKGDIR      = "/var/cache/binpkgs"   // portage's make.globals
	DefaultRepo        = "/var/db/repos/gentoo" // portage's default gentoo repo location
	DefaultGatewayAddr = "127.0.0.1:7854"
	DefaultGatewayPath = "/gentoo-p2pd"
)

// dirs are the per-user base directories defaults are derived from.
type dirs struct {
	home, configHome, stateHome, runtimeDir string
}

// Defaults returns the built-in configuration for the current user's
// environment ($HOME, $XDG_STATE_HOME, $XDG_RUNTIME_DIR), as used when there
// is no config file at all. Portage keys are left empty: Load fills them
// from portage.
func Defaults() *Config {
	return defaultsFor(resolveDirs(LoadOptions{}, envMap(os.Environ())))
}

func defaultsFor(d dirs) *Config {
	c := baseDefaults(d)
	c.fillDerived(d)
	return c
}

// baseDefaults are the defaults before keys derived from state_dir are
// filled in: Load fills those only after state_dir itself is final.
func baseDefaults(d dirs) *Config {
	state := ""
	if d.stateHome != "" {
		state = filepath.Join(d.stateHome, "gentoo-p2pd")
	}
	c := &Config{
		Mode:     ModeShare,
		StateDir: state,
		Log:      LogConfig{Level: "info", Format: "text"},
		Network: NetworkConfig{
			Listen: []string{
				"/ip4/0.0.0.0/tcp/4701",
				"/ip4/0.0.0.0/udp/4701/quic-v1",
				"/ip6/::/tcp/4701",
				"/ip6/::/udp/4701/quic-v1",
			},
			Bootstrap:         []string{},
			MDNS:              true,
			QUIC:              true,
			AutoNAT:           true,
			HolePunching:      true,
			RelayClient:       true,
			ConnLow:           32,
			ConnHigh:          64,
			DHTMode:           "auto",
			ReprovideInterval: 22 * time.Hour,
			PlatformPeers:     8,
			Rendezvous:        true,
			RendezvousPeers:   []string{},
		},
		Gateway:  GatewayConfig{Enabled: true, Listen: DefaultGatewayAddr, Path: DefaultGatewayPath, Prefetch: PrefetchNone},
		Trust:    TrustConfig{Threshold: 3, Dispute: 1, Signers: []string{}, TrustedPeers: []string{}, BlockedPeers: []string{}, VouchedPeers: []string{}, StandingDays: 90, VouchDecay: 50, VouchHops: 2},
		Transfer: TransferConfig{UploadSlots: 8, MaxRequestsPerPeer: 16, UploadStallTimeout: 5 * time.Second},
		Cache:    CacheConfig{DiskBudget: 10 << 30},
		Build: BuildConfig{Rebuild: true, Command: []string{"gentoo-p2pd-build"}, MaxConcurrent: 1, Nice: 19,
			Timeout: 12 * time.Hour, DiskBudget: 20 << 30, WhenIdle: 50},
		Limits: LimitsConfig{MaxImageBytes: 16 << 30, MaxMetadataValue: 8 << 20,
			PeerAttestations: 4096, PeerAttestationBytes: 12 << 20, PeerRequests: 2, Requests: 16, PeerGossipRate: 50, AttestationBytes: 1 << 30,
			PeerDemands: 1024, Demands: 65536, PeerVouches: 256, Vouches: 65536},
	}
	return c
}

// fillDerived sets the defaults that depend on other keys (state_dir).
func (c *Config) fillDerived(d dirs) {
	if c.API.Socket == "" {
		if d.runtimeDir != "" {
			c.API.Socket = filepath.Join(d.runtimeDir, "gentoo-p2pd.sock")
		} else if c.StateDir != "" {
			c.API.Socket = filepath.Join(c.StateDir, "api.sock")
		}
	}
	if c.Cache.Dir == "" && c.StateDir != "" {
		c.Cache.Dir = filepath.Join(c.StateDir, "cache")
	}
	if c.Build.Root == "" && c.StateDir != "" {
		c.Build.Root = filepath.Join(c.StateDir, "build")
	}
}
