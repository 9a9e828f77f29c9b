package votes

import (
	"crypto/ed25519"
	"reflect"
	"slices"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestFingerprintCoversPolicy: changing any field of the policy (found by
// reflection, so a field added later fails here until Fingerprint covers
// it) or the book's identity changes the fingerprint; a PGP keyring makes
// verdicts depend on files, and then there is none.
func TestFingerprintCoversPolicy(t *testing.T) {
	_, self := mustKey(t)
	_, other := mustKey(t)
	three := 3
	yes := true
	base := func() trust.Policy {
		p := trust.DefaultPolicy()
		p.Overrides = []trust.Override{{Glob: "sys-libs/*", Threshold: &three}}
		return p
	}
	fp := func(p trust.Policy, id peer.ID) ([32]byte, bool) {
		return (&Book{policy: p, self: id}).Fingerprint()
	}
	want, ok := fp(base(), self)
	if !ok {
		t.Fatal("no fingerprint for the default policy")
	}
	if again, _ := fp(base(), self); again != want {
		t.Fatal("fingerprint differs for the same policy")
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	changes := map[string]func(p *trust.Policy){
		"Threshold":        func(p *trust.Policy) { p.Threshold = 2 },
		"Dispute":          func(p *trust.Policy) { p.Dispute = 2 },
		"Signers":          func(p *trust.Policy) { p.Signers = append(p.Signers, pub) },
		"RequireSigner":    func(p *trust.Policy) { p.RequireSigner = true },
		"TrustedPeers":     func(p *trust.Policy) { p.TrustedPeers = append(p.TrustedPeers, other) },
		"VouchedPeers":     func(p *trust.Policy) { p.VouchedPeers = append(p.VouchedPeers, other) },
		"FreshWeight":      func(p *trust.Policy) { p.FreshWeight = trust.FullWeight },
		"VouchDecay":       func(p *trust.Policy) { p.VouchDecay = 20 },
		"VouchHops":        func(p *trust.Policy) { p.VouchHops = 3 },
		"BlockedPeers":     func(p *trust.Policy) { p.BlockedPeers = append(p.BlockedPeers, other) },
		"DistinctNetworks": func(p *trust.Policy) { p.DistinctNetworks = true },
		"Overrides":        func(p *trust.Policy) { p.Overrides[0].RequireSigner = &yes },
		"PGPKeyring":       func(p *trust.Policy) { p.PGPKeyring = openpgp.EntityList{&openpgp.Entity{}} },
		"VouchKeyring":     func(p *trust.Policy) { p.VouchKeyring = openpgp.EntityList{&openpgp.Entity{}} },
	}
	var fields []string
	for f := range reflect.TypeFor[trust.Policy]().Fields() {
		fields = append(fields, f.Name)
	}
	for name := range changes {
		if !slices.Contains(fields, name) {
			t.Errorf("trust.Policy has no field %s any more", name)
		}
	}
	for _, name := range fields {
		change, ok := changes[name]
		if !ok {
			t.Errorf("trust.Policy.%s: not covered by Fingerprint (add it to policyPrint and here)", name)
			continue
		}
		p := base()
		change(&p)
		got, ok := fp(p, self)
		if name == "PGPKeyring" || name == "VouchKeyring" {
			if ok {
				t.Errorf("a PGP keyring: fingerprint given")
			}
			continue
		}
		if !ok || got == want {
			t.Errorf("%s changed: fingerprint unchanged (%v)", name, ok)
		}
	}
	if got, _ := fp(base(), other); got == want {
		t.Error("another identity: fingerprint unchanged")
	}
}
