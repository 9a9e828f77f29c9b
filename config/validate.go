package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Validate checks every value and returns all problems at once, each as
// "config: <key>: <problem>", so a user fixes a config file in one pass.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &invalidError{msg: "config: " + key + ": " + fmt.Sprintf(format, args...)})
	}
	oneOf := func(key, got string, allowed ...string) {
		if !slices.Contains(allowed, got) {
			bad(key, "must be one of %s, got %q", strings.Join(allowed, ", "), got)
		}
	}
	absPath := func(key, p string, required bool) {
		switch {
		case p == "" && required:
			bad(key, "must be set (an absolute path)")
		case p != "" && !filepath.IsAbs(p):
			bad(key, "must be an absolute path, got %q", p)
		}
	}

	oneOf("mode", string(c.Mode), string(ModeConsume), string(ModeShare), string(ModeMirror))
	absPath("state_dir", c.StateDir, true)
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "text", "json")

	absPath("portage.pkgdir", c.Portage.PkgDir, false)
	absPath("portage.repo", c.Portage.Repo, false)

	for i, a := range c.Network.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			bad(fmt.Sprintf("network.listen[%d]", i), "not a multiaddr %q: %v", a, err)
		}
	}
	for i, a := range c.Network.Bootstrap {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			bad(fmt.Sprintf("network.bootstrap[%d]", i), "want a multiaddr ending in /p2p/<peer id>, got %q: %v", a, err)
		}
	}
	for i, a := range c.Network.RendezvousPeers {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			bad(fmt.Sprintf("network.rendezvous_peers[%d]", i), "want a multiaddr ending in /p2p/<peer id>, got %q: %v", a, err)
		}
	}
	if c.Network.ConnLow < 0 {
		bad("network.conn_low", "must be ≥ 0, got %d", c.Network.ConnLow)
	}
	if c.Network.ConnHigh < 1 || c.Network.ConnHigh < c.Network.ConnLow {
		bad("network.conn_high", "must be ≥ 1 and ≥ network.conn_low (%d), got %d", c.Network.ConnLow, c.Network.ConnHigh)
	}
	if c.Network.PlatformPeers < 0 || c.Network.PlatformPeers > c.Network.ConnHigh {
		bad("network.platform_peers", "must be ≥ 0 and ≤ network.conn_high (%d), got %d", c.Network.ConnHigh, c.Network.PlatformPeers)
	}
	oneOf("network.dht_mode", c.Network.DHTMode, "auto", "server", "client")
	if c.Network.ReprovideInterval <= 0 {
		bad("network.reprovide_interval", "must be > 0, got %s", c.Network.ReprovideInterval)
	}

	absPath("api.socket", c.API.Socket, true)
	if n := len(c.API.Socket); n > maxSocketPath {
		bad("api.socket", "path is %d bytes, longer than the %d a unix socket allows: %q", n, maxSocketPath, c.API.Socket)
	}

	if err := checkLoopback(c.Gateway.Listen); err != nil {
		bad("gateway.listen", "%v", err)
	}
	oneOf("gateway.prefetch", c.Gateway.Prefetch, PrefetchInstalled, PrefetchAll, PrefetchNone)
	if p := c.Gateway.Path; !strings.HasPrefix(p, "/") {
		bad("gateway.path", "must start with /, got %q", p)
	} else if path.Clean(p) != p || strings.ContainsAny(p, "?# \t\n%") {
		bad("gateway.path", "must be a clean URL path without ?, #, %% or spaces (like %q), got %q", path.Clean(p), p)
	}
	if c.Metrics.Listen != "" {
		if _, err := checkHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%v", err)
		}
	}

	// Threshold 0 means "signer only": valid only when something can back
	// a build on its own (a signer, a keyring or a trusted peer).
	backed := len(c.Trust.Signers) > 0 || c.Trust.PGPKeyring != "" || len(c.Trust.TrustedPeers) > 0
	if c.Trust.Threshold < 0 || c.Trust.Threshold == 0 && !backed {
		bad("trust.threshold", "must be ≥ 1 (0 means signer only and needs trust.signers, trust.pgp_keyring or trust.trusted_peers), got %d", c.Trust.Threshold)
	}
	if c.Trust.Dispute < 1 {
		bad("trust.dispute", "must be ≥ 1, got %d", c.Trust.Dispute)
	}
	for i, s := range c.Trust.Signers {
		if _, err := DecodeSignerKey(s); err != nil {
			bad(fmt.Sprintf("trust.signers[%d]", i), "%v", err)
		}
	}
	absPath("trust.pgp_keyring", c.Trust.PGPKeyring, false)
	trusted := map[peer.ID]bool{}
	for i, s := range c.Trust.TrustedPeers {
		id, err := peer.Decode(s)
		if err != nil {
			bad(fmt.Sprintf("trust.trusted_peers[%d]", i), "not a peer ID %q: %v", s, err)
			continue
		}
		trusted[id] = true
	}
	for i, s := range c.Trust.BlockedPeers {
		id, err := peer.Decode(s)
		if err != nil {
			bad(fmt.Sprintf("trust.blocked_peers[%d]", i), "not a peer ID %q: %v", s, err)
			continue
		}
		if trusted[id] {
			bad(fmt.Sprintf("trust.blocked_peers[%d]", i), "peer %s is also in trust.trusted_peers", s)
		}
	}
	for i, s := range c.Trust.VouchedPeers {
		id, err := peer.Decode(s)
		if err != nil {
			bad(fmt.Sprintf("trust.vouched_peers[%d]", i), "not a peer ID %q: %v", s, err)
			continue
		}
		if slices.Contains(c.Trust.BlockedPeers, s) {
			bad(fmt.Sprintf("trust.vouched_peers[%d]", i), "peer %s is also in trust.blocked_peers", id)
		}
	}
	if c.Trust.FreshWeight < 0 || c.Trust.FreshWeight > 100 {
		bad("trust.fresh_weight", "must be a percent between 0 and 100, got %d", c.Trust.FreshWeight)
	}
	if c.Trust.VouchDecay < 0 || c.Trust.VouchDecay > 99 {
		bad("trust.vouch_decay", "must be a percent between 0 and 99, got %d", c.Trust.VouchDecay)
	}
	if c.Trust.VouchHops < 0 || c.Trust.VouchHops > 4 {
		bad("trust.vouch_hops", "must be between 0 and 4, got %d", c.Trust.VouchHops)
	}
	if c.Trust.StandingDays < 1 {
		bad("trust.standing_days", "must be ≥ 1, got %d", c.Trust.StandingDays)
	}
	for i, o := range c.Trust.Overrides {
		key := fmt.Sprintf("trust.overrides[%d]", i)
		if o.Glob == "" {
			bad(key+".glob", "must be set (e.g. \"sys-kernel/*\")")
		} else if _, err := path.Match(o.Glob, ""); err != nil {
			bad(key+".glob", "bad pattern %q: %v", o.Glob, err)
		}
		if o.Threshold != nil && (*o.Threshold < 0 || *o.Threshold == 0 && !backed) {
			bad(key+".threshold", "must be ≥ 1 (0 needs a signer, keyring or trusted peer), got %d", *o.Threshold)
		}
		if o.Dispute != nil && *o.Dispute < 1 {
			bad(key+".dispute", "must be ≥ 1, got %d", *o.Dispute)
		}
	}

	if c.Transfer.UploadSlots < 0 {
		bad("transfer.upload_slots", "must be ≥ 0, got %d", c.Transfer.UploadSlots)
	}
	for _, r := range []struct {
		key string
		v   int64
	}{{"transfer.upload_rate", c.Transfer.UploadRate}, {"transfer.peer_upload_rate", c.Transfer.PeerUploadRate}, {"transfer.download_rate", c.Transfer.DownloadRate}} {
		if r.v < 0 {
			bad(r.key, "must be ≥ 0 (0 = unlimited), got %d", r.v)
		}
	}
	if c.Transfer.MaxRequestsPerPeer < 1 {
		bad("transfer.max_requests_per_peer", "must be ≥ 1, got %d", c.Transfer.MaxRequestsPerPeer)
	}
	if c.Transfer.UploadStallTimeout <= 0 {
		bad("transfer.upload_stall_timeout", "must be > 0, got %s", c.Transfer.UploadStallTimeout)
	}

	if c.Limits.PeerAttestations < 1 {
		bad("limits.peer_attestations", "must be ≥ 1, got %d", c.Limits.PeerAttestations)
	}
	if c.Limits.PeerAttestationBytes < 64<<10 {
		bad("limits.peer_attestation_bytes", "must be ≥ 64KiB (one attestation), got %d", c.Limits.PeerAttestationBytes)
	}
	if c.Limits.AttestationBytes < c.Limits.PeerAttestationBytes {
		bad("limits.attestation_bytes", "must be ≥ limits.peer_attestation_bytes (%d), got %d", c.Limits.PeerAttestationBytes, c.Limits.AttestationBytes)
	}
	if c.Limits.PeerRequests < 1 {
		bad("limits.peer_requests", "must be ≥ 1, got %d", c.Limits.PeerRequests)
	}
	if c.Limits.PeerGossipRate < 1 {
		bad("limits.peer_gossip_rate", "must be ≥ 1, got %d", c.Limits.PeerGossipRate)
	}
	if c.Limits.PeerDemands < 1 {
		bad("limits.peer_demands", "must be ≥ 1, got %d", c.Limits.PeerDemands)
	}
	if c.Limits.Demands < c.Limits.PeerDemands {
		bad("limits.demands", "must be ≥ limits.peer_demands (%d), got %d", c.Limits.PeerDemands, c.Limits.Demands)
	}
	if c.Limits.PeerVouches < 1 {
		bad("limits.peer_vouches", "must be ≥ 1, got %d", c.Limits.PeerVouches)
	}
	if c.Limits.Vouches < c.Limits.PeerVouches {
		bad("limits.vouches", "must be ≥ limits.peer_vouches (%d), got %d", c.Limits.PeerVouches, c.Limits.Vouches)
	}
	if c.Limits.Requests < c.Limits.PeerRequests {
		bad("limits.requests", "must be ≥ limits.peer_requests (%d), got %d", c.Limits.PeerRequests, c.Limits.Requests)
	}

	absPath("cache.dir", c.Cache.Dir, true)
	absPath("build.root", c.Build.Root, c.Build.Donate)
	if c.Build.Donate && (len(c.Build.Command) == 0 || c.Build.Command[0] == "") {
		bad("build.command", "must name a command when build.donate is on")
	}
	if c.Build.MaxConcurrent < 1 {
		bad("build.max_concurrent", "must be ≥ 1, got %d", c.Build.MaxConcurrent)
	}
	if c.Build.Jobs < 0 {
		bad("build.jobs", "must be ≥ 0, got %d", c.Build.Jobs)
	}
	if c.Build.Nice < 0 || c.Build.Nice > 19 {
		bad("build.nice", "must be 0 to 19 (a donated build never runs above normal priority), got %d", c.Build.Nice)
	}
	if c.Build.Timeout < 0 {
		bad("build.timeout", "must be ≥ 0, got %v", c.Build.Timeout)
	}
	if c.Build.DiskBudget < 0 {
		bad("build.disk_budget", "must be ≥ 0, got %d", c.Build.DiskBudget)
	}
	if c.Build.WhenIdle < 0 || c.Build.WhenIdle > 100 {
		bad("build.when_idle", "must be 0 to 100 (percent of the cores), got %d", c.Build.WhenIdle)
	}
	for _, s := range []struct {
		key string
		v   int64
	}{{"cache.disk_budget", c.Cache.DiskBudget}, {"limits.max_image_bytes", c.Limits.MaxImageBytes}, {"limits.max_metadata_value", c.Limits.MaxMetadataValue}} {
		if s.v <= 0 {
			bad(s.key, "must be > 0, got %d", s.v)
		}
	}
	return errors.Join(errs...)
}

func checkHostPort(addr string) (host string, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("want host:port, got %q: %w", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", fmt.Errorf("bad port %q in %q", port, addr)
	}
	return host, nil
}

// checkLoopback accepts host:port whose host is a loopback IP or
// "localhost": the gateway serves portage on this machine only.
func checkLoopback(addr string) error {
	host, err := checkHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("must be a loopback address (127.0.0.1, ::1 or localhost), got %q", addr)
	}
	return nil
}

// DecodeSignerKey decodes an Ed25519 public key written as 64 hex digits or
// as standard/URL base64 (padded or not), so the trust package and the CLI
// accept exactly what the config accepts.
func DecodeSignerKey(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if b, err := hex.DecodeString(t); err == nil && len(t) == 64 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(t); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("Ed25519 public key %q decodes to %d bytes, want 32", s, len(b))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("Ed25519 public key %q is neither 64 hex digits nor base64 of 32 bytes", s)
}
