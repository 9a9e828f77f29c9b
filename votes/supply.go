package votes

import (
	"context"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// supplyBytes bounds the attestations Supply reads for one variant: a
// variant spans any number of build keys (one per set of linked
// libraries), and a builder asking what is missing must not load them all.
const supplyBytes = 4 << 20

// Supply says what the network already offers of variant v, for a builder
// choosing what to build: trusted reports that some build key of v has an
// Allowed verdict here; reproducers is the number of distinct counted
// attesters of the leading content (the allowed one when there is one,
// else the heaviest in the tally), the highest over v's build keys;
// thisNode reports that this daemon attested a build of v itself. ctx
// ends a long walk over many build keys early.
func (vb *Book) Supply(ctx context.Context, v keys.Variant) (trusted bool, reproducers int, thisNode bool, err error) {
	recs, err := vb.store.AttestationsByVariantUpTo(string(v), supplyBytes)
	if err != nil {
		return false, 0, false, err
	}
	self := vb.self.String()
	for _, r := range recs {
		if r.Attester == self {
			thisNode = true
			break
		}
	}
	for _, bk := range uniqueBuildKeys(recs) {
		if err := ctx.Err(); err != nil {
			return false, 0, false, err
		}
		verdict, _, err := vb.Verdict(bk)
		if err != nil {
			return false, 0, false, err
		}
		allowed := verdict.Decision == trust.Allowed && verdict.Content != nil
		n := leadingCount(verdict, allowed)
		switch {
		case allowed && !trusted:
			// The first allowed build key counts from scratch: an
			// untrusted rival with more voters says nothing of it.
			trusted, reproducers = true, n
		case allowed == trusted:
			reproducers = max(reproducers, n)
		}
	}
	return trusted, reproducers, thisNode, nil
}

// leadingCount is the number of counted attesters of the allowed content,
// or of the heaviest one when none is allowed.
func leadingCount(v trust.Verdict, allowed bool) int {
	for _, t := range v.Tally {
		if !allowed || t.Content == *v.Content {
			return t.Count
		}
	}
	return 0
}
