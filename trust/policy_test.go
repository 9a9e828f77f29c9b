package trust

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/libp2p/go-libp2p/core/peer"
)

func intp(i int) *int    { return &i }
func boolp(b bool) *bool { return &b }

func TestPolicyValidate(t *testing.T) {
	signer := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	cases := []struct {
		name    string
		mod     func(p *Policy)
		wantErr string // "" means valid
	}{
		{"default", func(p *Policy) {}, ""},
		{"zero value", func(p *Policy) { *p = Policy{} }, "threshold 0 means signer only"},
		{"negative threshold", func(p *Policy) { p.Threshold = -1 }, "threshold -1"},
		{"threshold 0 with signer", func(p *Policy) { p.Threshold, p.Signers = 0, []ed25519.PublicKey{signer} }, ""},
		{"threshold 0 with trusted peer", func(p *Policy) { p.Threshold, p.TrustedPeers = 0, []peer.ID{testPeer(t, 1)} }, ""},
		{"threshold 0 with keyring", func(p *Policy) { p.Threshold, p.PGPKeyring = 0, openpgp.EntityList{&openpgp.Entity{}} }, ""},
		{"dispute 0", func(p *Policy) { p.Dispute = 0 }, "dispute 0"},
		{"short signer", func(p *Policy) { p.Signers = []ed25519.PublicKey{signer[:5]} }, "signers[0]"},
		{"require signer without signers", func(p *Policy) { p.RequireSigner = true }, "require_signer needs"},
		{"trusted and blocked", func(p *Policy) {
			p.TrustedPeers, p.BlockedPeers = []peer.ID{testPeer(t, 1)}, []peer.ID{testPeer(t, 1)}
		}, "also blocked"},
		{"invalid peer", func(p *Policy) { p.BlockedPeers = []peer.ID{peer.ID("nope")} }, "blocked_peers[0]"},
		{"bad glob", func(p *Policy) { p.Overrides = []Override{{Glob: "sys-libs/[", Threshold: intp(5)}} }, "overrides[0].glob"},
		{"empty glob", func(p *Policy) { p.Overrides = []Override{{Threshold: intp(5)}} }, "overrides[0].glob: missing"},
		{"override threshold 0 without signers", func(p *Policy) {
			p.Overrides = []Override{{Glob: "sys-libs/*", Threshold: intp(0)}}
		}, "overrides[0] (sys-libs/*): threshold 0"},
		{"override require signer without signers", func(p *Policy) {
			p.Overrides = []Override{{Glob: "*/*", RequireSigner: boolp(true)}}
		}, "require_signer needs"},
		{"override dispute 0", func(p *Policy) { p.Overrides = []Override{{Glob: "*/*", Dispute: intp(0)}} }, "dispute 0"},
		{"override fine", func(p *Policy) {
			p.Signers = []ed25519.PublicKey{signer}
			p.Overrides = []Override{{Glob: "sys-libs/*", RequireSigner: boolp(true)}, {Glob: "app-misc/*", Threshold: intp(1)}}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := labPolicy()
			tc.mod(&p)
			err := p.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestPolicyFor(t *testing.T) {
	p := labPolicy()
	p.Signers = []ed25519.PublicKey{ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)}
	p.Overrides = []Override{
		{Glob: "sys-*/*", Threshold: intp(5)},
		{Glob: "sys-libs/glibc-*", RequireSigner: boolp(true)},
		{Glob: "app-misc/*", Threshold: intp(1), Dispute: intp(2)},
		{Glob: "sys-kernel/*", Threshold: intp(7)},
	}
	cases := []struct {
		cpv     string
		thr     int
		dispute int
		req     bool
	}{
		{"dev-libs/libfoo-2.1", 3, 1, false},
		{"sys-libs/glibc-2.40-r5", 5, 1, true},
		{"sys-libs/zlib-1.3", 5, 1, false},
		{"sys-kernel/gentoo-sources-6.12", 7, 1, false}, // later override wins
		{"app-misc/hello-1.0", 1, 2, false},
		{"app-misc", 3, 1, false}, // "*" does not match across or without "/"
	}
	for _, tc := range cases {
		eff := p.For(tc.cpv)
		if eff.Threshold != tc.thr || eff.Dispute != tc.dispute || eff.RequireSigner != tc.req || eff.Overrides != nil {
			t.Errorf("For(%s) = threshold %d dispute %d require %v, want %d %d %v", tc.cpv, eff.Threshold, eff.Dispute, eff.RequireSigner, tc.thr, tc.dispute, tc.req)
		}
	}
	if p.Threshold != 3 || len(p.Overrides) != 4 {
		t.Fatal("For modified the base policy")
	}
}

func TestStricter(t *testing.T) {
	a := Policy{Threshold: 3, Dispute: 2}
	cases := []struct {
		b       Policy
		thr     int
		dispute int
		req     bool
	}{
		{Policy{Threshold: 5, Dispute: 3}, 5, 2, false},
		{Policy{Threshold: 1, Dispute: 1, RequireSigner: true}, 3, 1, true},
		{Policy{Threshold: 0, Dispute: 2}, 0, 2, false},
	}
	for _, tc := range cases {
		got := stricter(a, tc.b)
		if got.Threshold != tc.thr || got.Dispute != tc.dispute || got.RequireSigner != tc.req {
			t.Errorf("stricter(%+v) = %+v", tc.b, got)
		}
	}
	if got := stricter(Policy{Threshold: 0, Dispute: 1}, Policy{Threshold: 9, Dispute: 1}); got.Threshold != 0 {
		t.Errorf("signer-only lost to a number: %+v", got)
	}
}
