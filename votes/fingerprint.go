package votes

import (
	"crypto/sha256"
	"encoding/json"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// VoteVersions are the store's vote versions of bks (store.VoteVersions):
// persisted counts of the writes of each build key's votes. A result
// derived from a build key's verdict, saved with the version read before
// the verdict was computed, is still right while the version and
// Fingerprint are the same — after a restart too.
func (vb *Book) VoteVersions(bks []keys.Build) ([]uint64, error) {
	ss := make([]string, len(bks))
	for i, bk := range bks {
		ss[i] = string(bk)
	}
	return vb.store.VoteVersions(ss)
}

// Fingerprint identifies what this book's verdicts depend on besides the
// votes: the trust policy and the daemon's own identity. ok is false when
// verdicts also depend on files held here (a PGP keyring is configured):
// then nothing derived from them may be kept across restarts.
func (vb *Book) Fingerprint() (fp [32]byte, ok bool) {
	p := vb.policy
	if len(p.PGPKeyring) > 0 || len(p.VouchKeyring) > 0 {
		return fp, false
	}
	raw, err := json.Marshal(policyPrint{
		Threshold: p.Threshold, Dispute: p.Dispute, Signers: p.Signers, RequireSigner: p.RequireSigner,
		TrustedPeers: p.TrustedPeers, BlockedPeers: p.BlockedPeers, DistinctNetworks: p.DistinctNetworks,
		VouchedPeers: p.VouchedPeers, FreshWeight: p.FreshWeight, VouchDecay: p.VouchDecay, VouchHops: p.VouchHops, StandingDays: vb.standing.days,
		Overrides: p.Overrides, Self: vb.self.String(),
	})
	if err != nil {
		return fp, false
	}
	return sha256.Sum256(raw), true
}

// policyPrint is every field of trust.Policy but the keyring (which
// Fingerprint refuses), and the book's own identity. A field added to
// trust.Policy must be added here (TestFingerprintCoversPolicy).
type policyPrint struct {
	Threshold, Dispute int
	Signers            any
	RequireSigner      bool
	TrustedPeers       any
	BlockedPeers       any
	DistinctNetworks   bool
	VouchedPeers       any
	FreshWeight        int
	VouchDecay         int
	VouchHops          int
	StandingDays       int
	Overrides          []trust.Override
	Self               string
}
