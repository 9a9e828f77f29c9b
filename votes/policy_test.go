package votes

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestPolicyFromConfig(t *testing.T) {
	pub1, _ := newSigner(t)
	pub2, _ := newSigner(t)
	_, trusted := mustKey(t)
	_, blocked := mustKey(t)
	two, yes := 2, true
	tc := config.Defaults().Trust
	tc.Threshold, tc.Dispute, tc.DistinctNetworks = 5, 2, true
	tc.Signers = []string{hex.EncodeToString(pub1), base64.StdEncoding.EncodeToString(pub2)}
	tc.TrustedPeers = []string{trusted.String()}
	tc.BlockedPeers = []string{blocked.String()}
	tc.Overrides = []config.TrustOverride{{Glob: "sys-kernel/*", Threshold: &two, RequireSigner: &yes}}
	tc.PGPKeyring = filepath.Join("..", "trust", "testdata", "gpkg", "signed-zstd-multi-instance.pubkey.asc")
	p, err := PolicyFromConfig(tc)
	if err != nil {
		t.Fatal(err)
	}
	if p.Threshold != 5 || p.Dispute != 2 || !p.DistinctNetworks || p.RequireSigner {
		t.Errorf("numbers: %+v", p)
	}
	if len(p.Signers) != 2 || !bytes.Equal(p.Signers[0], pub1) || !bytes.Equal(p.Signers[1], pub2) {
		t.Errorf("signers %x, want the hex one then the base64 one", p.Signers)
	}
	if !slices.Equal(p.TrustedPeers, []peer.ID{trusted}) || !slices.Equal(p.BlockedPeers, []peer.ID{blocked}) {
		t.Errorf("peers: trusted %v blocked %v", p.TrustedPeers, p.BlockedPeers)
	}
	if len(p.PGPKeyring) == 0 {
		t.Error("keyring not loaded")
	}
	if eff := p.For("sys-kernel/gentoo-sources-6.6"); eff.Threshold != 2 || !eff.RequireSigner {
		t.Errorf("override not applied: %+v", eff)
	}
	if eff := p.For("app-misc/hello-1.0"); eff.Threshold != 5 || eff.RequireSigner {
		t.Errorf("override applied to another package: %+v", eff)
	}

	dir := t.TempDir()
	notKeys := filepath.Join(dir, "not-keys.asc")
	if err := os.WriteFile(notKeys, []byte("-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	zero := 0
	for _, tt := range []struct {
		name, field string
		edit        func(*config.TrustConfig)
	}{
		{"hex of the wrong characters", "trust.signers", func(c *config.TrustConfig) { c.Signers = []string{strings.Repeat("zz", 32)} }},
		{"base64 of 31 bytes", "trust.signers", func(c *config.TrustConfig) {
			c.Signers = []string{base64.StdEncoding.EncodeToString(make([]byte, 31))}
		}},
		{"not base64", "trust.signers", func(c *config.TrustConfig) { c.Signers = []string{"not a key!"} }},
		{"missing keyring", "trust.pgp_keyring", func(c *config.TrustConfig) { c.PGPKeyring = filepath.Join(dir, "nope.asc") }},
		{"keyring is a directory", "trust.pgp_keyring", func(c *config.TrustConfig) { c.PGPKeyring = dir }},
		{"keyring of no keys", "trust.pgp_keyring", func(c *config.TrustConfig) { c.PGPKeyring = notKeys }},
		{"bad trusted peer", "trust.trusted_peers", func(c *config.TrustConfig) { c.TrustedPeers = []string{"12D3KooWnot-a-peer"} }},
		{"bad blocked peer", "trust.blocked_peers", func(c *config.TrustConfig) { c.BlockedPeers = []string{"nobody"} }},
		{"trusted and blocked", "trust:", func(c *config.TrustConfig) {
			c.TrustedPeers, c.BlockedPeers = []string{trusted.String()}, []string{trusted.String()}
		}},
		{"signer only without signers", "trust:", func(c *config.TrustConfig) { c.Threshold = 0 }},
		{"bad override glob", "trust:", func(c *config.TrustConfig) { c.Overrides = []config.TrustOverride{{Glob: "["}} }},
		{"override to signer only without signers", "trust:", func(c *config.TrustConfig) {
			c.Overrides = []config.TrustOverride{{Glob: "*/*", Threshold: &zero}}
		}},
	} {
		c := config.Defaults().Trust
		tt.edit(&c)
		_, err := PolicyFromConfig(c)
		if err == nil || !strings.HasPrefix(err.Error(), "config: "+tt.field) {
			t.Errorf("%s: %v; want an error about %s", tt.name, err, tt.field)
		}
	}
}
