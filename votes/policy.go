package votes

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PolicyFromConfig turns the config's strings into trust's typed policy.
func PolicyFromConfig(tc config.TrustConfig) (trust.Policy, error) {
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
	for _, s := range tc.VouchedPeers {
		id, err := peer.Decode(s)
		if err != nil {
			return p, fmt.Errorf("config: trust.vouched_peers: %q: %w", s, err)
		}
		p.VouchedPeers = append(p.VouchedPeers, id)
	}
	p.FreshWeight = tc.FreshWeight * trust.FullWeight / 100
	p.VouchDecay, p.VouchHops = tc.VouchDecay, tc.VouchHops
	if tc.VouchKeyring != "" {
		kr, err := trust.LoadKeyring(tc.VouchKeyring)
		if err != nil {
			return p, fmt.Errorf("config: trust.vouch_keyring: %w", err)
		}
		p.VouchKeyring = kr
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
