package config

import "strings"

// kind is how a key's raw value (TOML value, environment string or flag) is
// decoded.
type kind int

const (
	kindString kind = iota
	kindBool
	kindInt
	kindDuration // "22h", "90m"
	kindSize     // "10GiB", "20MB", "0"
	kindRate     // a size with optional "/s"
	kindList     // TOML array of strings; env/flag: comma or space separated
	kindOverrides
)

func (k kind) String() string {
	return [...]string{"string", "bool", "int", "duration", "size", "rate", "list of strings", "list of tables"}[k]
}

// keySpec describes one config key. The table below drives defaults,
// environment lookup, flags, unknown-key detection and REFERENCE.md, so a
// key added here is documented and settable everywhere at once.
type keySpec struct {
	key   string
	kind  kind
	flag  string // "" = no command-line flag
	field func(*Config) any
	// def, when set, is how the default is documented (derived or probed
	// values); otherwise the default is rendered from defaultsFor.
	def string
	doc string
}

// envPrefix prefixes every environment variable that sets a key.
const envPrefix = "GENTOO_P2PD_"

// EnvName is the environment variable that sets key:
// "trust.threshold" → "GENTOO_P2PD_TRUST_THRESHOLD".
func EnvName(key string) string {
	return envPrefix + strings.ToUpper(strings.NewReplacer(".", "_").Replace(key))
}

var keys = []keySpec{
	{key: "mode", kind: kindString, flag: "mode", field: func(c *Config) any { return (*string)(&c.Mode) },
		doc: "`consume` (fetch, attest, serve nothing), `share` (also serve what you hold) or `mirror` (also keep and serve trusted builds you did not need)"},
	{key: "state_dir", kind: kindString, flag: "state-dir", field: func(c *Config) any { return &c.StateDir },
		def: "`$XDG_STATE_HOME/gentoo-p2pd` (`~/.local/state/gentoo-p2pd`)", doc: "peer key, database and everything else the daemon owns; absolute path"},
	{key: "log.level", kind: kindString, flag: "log-level", field: func(c *Config) any { return &c.Log.Level },
		doc: "`debug`, `info`, `warn` or `error`"},
	{key: "log.format", kind: kindString, flag: "log-format", field: func(c *Config) any { return &c.Log.Format },
		doc: "`text` or `json`"},

	{key: "portage.pkgdir", kind: kindString, flag: "pkgdir", field: func(c *Config) any { return &c.Portage.PkgDir },
		def: "probed; else `/var/cache/binpkgs`", doc: "portage's PKGDIR, read (never written) to find local binpkgs"},
	{key: "portage.repo", kind: kindString, flag: "portage-repo", field: func(c *Config) any { return &c.Portage.Repo },
		def: "probed; else `/var/db/repos/gentoo`", doc: "the gentoo repository (its `metadata/md5-cache` identifies ebuilds)"},
	{key: "portage.chost", kind: kindString, field: func(c *Config) any { return &c.Portage.CHOST },
		def: "probed", doc: "CHOST builds are made for"},
	{key: "portage.cflags", kind: kindString, field: func(c *Config) any { return &c.Portage.CFLAGS }, def: "probed", doc: "CFLAGS"},
	{key: "portage.cxxflags", kind: kindString, field: func(c *Config) any { return &c.Portage.CXXFLAGS }, def: "probed", doc: "CXXFLAGS"},
	{key: "portage.fflags", kind: kindString, field: func(c *Config) any { return &c.Portage.FFLAGS }, def: "probed", doc: "FFLAGS"},
	{key: "portage.fcflags", kind: kindString, field: func(c *Config) any { return &c.Portage.FCFLAGS }, def: "probed", doc: "FCFLAGS"},
	{key: "portage.ldflags", kind: kindString, field: func(c *Config) any { return &c.Portage.LDFLAGS }, def: "probed", doc: "LDFLAGS"},
	{key: "portage.arch", kind: kindString, field: func(c *Config) any { return &c.Portage.ARCH }, def: "probed", doc: "portage ARCH (`amd64`, `arm64`, …)"},

	{key: "network.listen", kind: kindList, flag: "listen", field: func(c *Config) any { return &c.Network.Listen },
		doc: "libp2p listen multiaddrs"},
	{key: "network.bootstrap", kind: kindList, flag: "bootstrap", field: func(c *Config) any { return &c.Network.Bootstrap },
		doc: "peers to join the DHT through: multiaddrs ending in `/p2p/<peer id>`"},
	{key: "network.mdns", kind: kindBool, flag: "mdns", field: func(c *Config) any { return &c.Network.MDNS },
		doc: "find peers on the local network without bootstrap servers"},
	{key: "network.quic", kind: kindBool, field: func(c *Config) any { return &c.Network.QUIC },
		doc: "enable the QUIC transport (false drops `quic-v1` listen addresses)"},
	{key: "network.autonat", kind: kindBool, field: func(c *Config) any { return &c.Network.AutoNAT },
		doc: "AutoNAT reachability detection"},
	{key: "network.hole_punching", kind: kindBool, field: func(c *Config) any { return &c.Network.HolePunching },
		doc: "DCUtR hole punching through NATs"},
	{key: "network.relay_client", kind: kindBool, field: func(c *Config) any { return &c.Network.RelayClient },
		doc: "use circuit relay v2 for signalling (bulk data always goes direct)"},
	{key: "network.conn_low", kind: kindInt, field: func(c *Config) any { return &c.Network.ConnLow },
		doc: "connection manager low water mark"},
	{key: "network.conn_high", kind: kindInt, field: func(c *Config) any { return &c.Network.ConnHigh },
		doc: "connection manager high water mark (≥ conn_low)"},
	{key: "network.dht_mode", kind: kindString, flag: "dht-mode", field: func(c *Config) any { return &c.Network.DHTMode },
		doc: "`auto`, `server` or `client` (on a LAN without public peers use `server`)"},
	{key: "network.reprovide_interval", kind: kindDuration, field: func(c *Config) any { return &c.Network.ReprovideInterval },
		doc: "how often provider records are re-announced (Go duration)"},
	{key: "network.platform_peers", kind: kindInt, field: func(c *Config) any { return &c.Network.PlatformPeers },
		doc: "how many connected peers of its own platform the daemon seeks: it advertises `gentoo-p2pd/platform/1/<platform>` on the private DHT and looks it up while fewer are connected (≤ conn_high; 0 turns it off)"},
	{key: "network.rendezvous", kind: kindBool, flag: "rendezvous", field: func(c *Config) any { return &c.Network.Rendezvous },
		doc: "find peers over the internet with no bootstrap list: advertise and look up the namespace gentoo-p2pd/rendezvous/1 on the public libp2p (IPFS) DHT, as a DHT client"},
	{key: "network.rendezvous_peers", kind: kindList, field: func(c *Config) any { return &c.Network.RendezvousPeers },
		def: "the public IPFS bootstrap peers", doc: "where to enter the public DHT for the rendezvous: multiaddrs ending in `/p2p/<peer id>`"},

	{key: "api.socket", kind: kindString, flag: "api-socket", field: func(c *Config) any { return &c.API.Socket },
		def: "`$XDG_RUNTIME_DIR/gentoo-p2pd.sock`, else `<state_dir>/api.sock`", doc: "unix socket of the local API (CLI, bashrc hook); ≤ 107 bytes"},

	{key: "gateway.enabled", kind: kindBool, field: func(c *Config) any { return &c.Gateway.Enabled },
		doc: "serve the loopback binhost portage fetches from"},
	{key: "gateway.listen", kind: kindString, flag: "gateway-listen", field: func(c *Config) any { return &c.Gateway.Listen },
		doc: "`host:port` of the binhost; the host must be a loopback address or `localhost`"},
	{key: "gateway.path", kind: kindString, field: func(c *Config) any { return &c.Gateway.Path },
		doc: "URL path of the binhost (portage caches indexes per host+path); starts with `/`"},
	{key: "gateway.prefetch", kind: kindString, field: func(c *Config) any { return &c.Gateway.Prefetch },
		doc: "which listed builds the gateway fetches before portage asks for them (listing needs no fetch): `none` — on request only; `installed` — builds of packages installed here (`/var/db/pkg`), i.e. upgrades; `all` — every allowed build of the platform"},

	{key: "metrics.listen", kind: kindString, flag: "metrics-listen", field: func(c *Config) any { return &c.Metrics.Listen },
		doc: "`host:port` of the Prometheus `/metrics` endpoint; empty = off"},

	{key: "trust.threshold", kind: kindInt, flag: "threshold", field: func(c *Config) any { return &c.Trust.Threshold },
		doc: "distinct attesters needed before a build is trusted (≥ 1)"},
	{key: "trust.dispute", kind: kindInt, field: func(c *Config) any { return &c.Trust.Dispute },
		doc: "votes for a competing content id that make a real dispute and block trust (≥ 1)"},
	{key: "trust.signers", kind: kindList, field: func(c *Config) any { return &c.Trust.Signers },
		doc: "Ed25519 public keys (32 bytes, hex or base64) whose signature alone makes a build trusted"},
	{key: "trust.pgp_keyring", kind: kindString, field: func(c *Config) any { return &c.Trust.PGPKeyring },
		doc: "OpenPGP keyring file whose keys vouch like signers (e.g. portage's binhost keys); empty = none"},
	{key: "trust.require_signer", kind: kindBool, field: func(c *Config) any { return &c.Trust.RequireSigner },
		doc: "trust only builds a signer vouches for; votes alone are not enough"},
	{key: "trust.trusted_peers", kind: kindList, field: func(c *Config) any { return &c.Trust.TrustedPeers },
		doc: "peer IDs you trust like a signer (your own build hosts): one attestation by such a peer allows its content at any threshold; other peers still count as usual"},
	{key: "trust.blocked_peers", kind: kindList, field: func(c *Config) any { return &c.Trust.BlockedPeers },
		doc: "peer IDs whose attestations never count"},
	{key: "trust.distinct_networks", kind: kindBool, field: func(c *Config) any { return &c.Trust.DistinctNetworks },
		doc: "count at most one attester per network"},
	{key: "trust.vouched_peers", kind: kindList, field: func(c *Config) any { return &c.Trust.VouchedPeers },
		doc: "peer IDs you vouch for (your own machines, friends' build hosts): they count as established reproducers, with full weight, but must reach the threshold like anyone"},
	{key: "trust.fresh_weight", kind: kindInt, field: func(c *Config) any { return &c.Trust.FreshWeight },
		doc: "percent of a full vote an attester without standing counts (0–100); 0 suits an open network (fresh keys cost nothing, so they count nothing), 100 a closed network of your own machines"},
	{key: "trust.standing_days", kind: kindInt, field: func(c *Config) any { return &c.Trust.StandingDays },
		doc: "days over which an attester whose builds keep agreeing with established ones grows to full standing (≥ 1)"},
	{key: "trust.vouch_decay", kind: kindInt, field: func(c *Config) any { return &c.Trust.VouchDecay },
		doc: "percent of weight a signed vouch (`trust vouch`) passes on per hop from an identity you count fully (0–99; 0 ignores vouches): vouched identities weigh less than established ones and never decide alone"},
	{key: "trust.vouch_hops", kind: kindInt, field: func(c *Config) any { return &c.Trust.VouchHops },
		doc: "how many vouches away from an identity you count fully vouched weight reaches (0–4; 0 ignores vouches)"},
	{key: "trust.vouch_keyring", kind: kindString, field: func(c *Config) any { return &c.Trust.VouchKeyring },
		doc: "OpenPGP keyring file whose keys vouch like identities you count fully, e.g. `/usr/share/openpgp-keys/gentoo-developers.asc`: a vouch one of them signed (`trust vouch --pgp-statement`, gpg --detach-sign, `trust vouch --pgp-import`) gives its vouchee `vouch_decay` percent of a vote"},
	{key: "trust.overrides", kind: kindOverrides, field: func(c *Config) any { return &c.Trust.Overrides },
		def: "none", doc: "per-package policy: `[[trust.overrides]]` tables with `glob` (path.Match on `category/PF`) and optional `threshold`, `dispute`, `require_signer`; file only"},

	{key: "transfer.upload_slots", kind: kindInt, field: func(c *Config) any { return &c.Transfer.UploadSlots },
		doc: "peers uploaded to at once, one slot each whatever its number of requests (0 = serve nothing)"},
	{key: "transfer.upload_rate", kind: kindRate, field: func(c *Config) any { return &c.Transfer.UploadRate },
		doc: "total upload cap in bytes/s (`20MB/s`, `1MiB`); 0 = unlimited"},
	{key: "transfer.peer_upload_rate", kind: kindRate, field: func(c *Config) any { return &c.Transfer.PeerUploadRate },
		doc: "upload cap per peer in bytes/s; 0 = unlimited"},
	{key: "transfer.download_rate", kind: kindRate, field: func(c *Config) any { return &c.Transfer.DownloadRate },
		doc: "total download cap in bytes/s; 0 = unlimited"},
	{key: "transfer.max_requests_per_peer", kind: kindInt, field: func(c *Config) any { return &c.Transfer.MaxRequestsPerPeer },
		doc: "requests one peer may have in flight with us, served or waiting for an upload slot (≥ 1)"},
	{key: "transfer.upload_stall_timeout", kind: kindDuration, field: func(c *Config) any { return &c.Transfer.UploadStallTimeout },
		doc: "while other peers wait for an upload slot, a peer that accepts less than 64 KiB in this much time blocked on it loses its slot (time spent on our own rate caps does not count); > 0"},

	{key: "cache.dir", kind: kindString, flag: "cache-dir", field: func(c *Config) any { return &c.Cache.Dir },
		def: "`<state_dir>/cache`", doc: "where packages fetched from peers are kept; absolute path"},
	{key: "cache.disk_budget", kind: kindSize, field: func(c *Config) any { return &c.Cache.DiskBudget },
		doc: "disk space the cache of fetched builds may use (`10GiB`, `500MB`), and separately the gateway's re-packs (oldest removed first); > 0"},

	{key: "build.donate", kind: kindBool, flag: "donate", field: func(c *Config) any { return &c.Build.Donate },
		doc: "donate CPU: build, with real portage in build.root, the most-demanded variants of this platform that lack a trusted build, and share them like your own (README, \"Donating CPU\")"},
	{key: "build.rebuild", kind: kindBool, field: func(c *Config) any { return &c.Build.Rebuild },
		doc: "with `build.donate`, also rebuild trusted builds that have fewer reproducers than `trust.threshold`, to add an independent attestation"},
	{key: "build.command", kind: kindList, field: func(c *Config) any { return &c.Build.Command },
		doc: "the build command's argv, run once per build with the job in `GENTOO_P2PD_BUILD_*` variables (the shipped `gentoo-p2pd-build` runs emerge in a root of its own); prefix it with `systemd-run --scope -p CPUQuota=50%` to cap CPU"},
	{key: "build.root", kind: kindString, field: func(c *Config) any { return &c.Build.Root },
		def: "`<state_dir>/build`", doc: "the builder's own directory (its PKGDIR, scratch and logs); builds write nowhere else; absolute path, not below a directory builds overlay (`/var/tmp`, `/var/db`, …: the script refuses it)"},
	{key: "build.max_concurrent", kind: kindInt, field: func(c *Config) any { return &c.Build.MaxConcurrent },
		doc: "builds run at once (≥ 1)"},
	{key: "build.jobs", kind: kindInt, field: func(c *Config) any { return &c.Build.Jobs },
		doc: "make jobs per build (MAKEOPTS=-jN); 0 = the cores shared among `max_concurrent` builds"},
	{key: "build.nice", kind: kindInt, field: func(c *Config) any { return &c.Build.Nice },
		doc: "niceness of the builds, 0 (normal) to 19 (only idle CPU)"},
	{key: "build.timeout", kind: kindDuration, field: func(c *Config) any { return &c.Build.Timeout },
		doc: "a build running longer is killed and counted failed; 0 = none"},
	{key: "build.disk_budget", kind: kindSize, field: func(c *Config) any { return &c.Build.DiskBudget },
		doc: "no build starts while `build.root` holds more (`20GiB`); 0 = no limit"},
	{key: "build.when_idle", kind: kindInt, field: func(c *Config) any { return &c.Build.WhenIdle },
		doc: "no build starts while the 1-minute load average is at or above this percentage of the cores; 0 = whatever the load"},

	{key: "limits.max_image_bytes", kind: kindSize, field: func(c *Config) any { return &c.Limits.MaxImageBytes },
		doc: "largest uncompressed image accepted from a peer; > 0"},
	{key: "limits.max_metadata_value", kind: kindSize, field: func(c *Config) any { return &c.Limits.MaxMetadataValue },
		doc: "largest single metadata value (environment.bz2, …) accepted; > 0"},
	{key: "limits.peer_attestations", kind: kindInt, field: func(c *Config) any { return &c.Limits.PeerAttestations },
		doc: "attestations one attester (peer key) may have stored here; past it, its records no other attester backs go first (≥ 1)"},
	{key: "limits.peer_attestation_bytes", kind: kindSize, field: func(c *Config) any { return &c.Limits.PeerAttestationBytes },
		doc: "bytes of attestations one attester may have stored here, evicted like `peer_attestations`; ≥ 64KiB"},
	{key: "limits.attestation_bytes", kind: kindSize, field: func(c *Config) any { return &c.Limits.AttestationBytes },
		doc: "bytes of attestations all attesters together may have stored here; past it, unbacked records of the largest holders go first (≥ `peer_attestation_bytes`)"},
	{key: "limits.peer_requests", kind: kindInt, field: func(c *Config) any { return &c.Limits.PeerRequests },
		doc: "attest and catalog requests one peer may have open with us at once; more are refused as busy (≥ 1)"},
	{key: "limits.requests", kind: kindInt, field: func(c *Config) any { return &c.Limits.Requests },
		doc: "attest and catalog requests served at once over all peers (≥ `peer_requests`)"},
	{key: "limits.peer_gossip_rate", kind: kindInt, field: func(c *Config) any { return &c.Limits.PeerGossipRate },
		doc: "gossip messages (an announcement: the records it makes us fetch) per second one relaying peer may make us verify, in bursts of ten seconds' worth; more are ignored unread (≥ 1)"},
	{key: "limits.peer_demands", kind: kindInt, field: func(c *Config) any { return &c.Limits.PeerDemands },
		doc: "demand records (usage votes: variants a peer wants) one identity may have stored here; past it, its oldest goes (≥ 1)"},
	{key: "limits.demands", kind: kindInt, field: func(c *Config) any { return &c.Limits.Demands },
		doc: "demand records all identities together may have stored here; past it, the oldest goes (≥ `peer_demands`)"},
	{key: "limits.peer_vouches", kind: kindInt, field: func(c *Config) any { return &c.Limits.PeerVouches },
		doc: "signed vouches one identity may have stored here; past it, its vouches for new identities are refused (≥ 1)"},
	{key: "limits.vouches", kind: kindInt, field: func(c *Config) any { return &c.Limits.Vouches },
		doc: "signed vouches all identities together may have stored here; past it, new ones are refused (≥ `peer_vouches`)"},
}

// keyIndex maps key → spec.
var keyIndex = func() map[string]*keySpec {
	m := make(map[string]*keySpec, len(keys))
	for i := range keys {
		m[keys[i].key] = &keys[i]
	}
	return m
}()

// Keys lists every config key in reference order, for `gentoo-p2pd config`
// style tooling and completion.
func Keys() []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.key
	}
	return out
}
