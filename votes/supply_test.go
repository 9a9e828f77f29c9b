package votes

import (
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// Supply follows a variant's votes: nothing, then two agreeing peers (not
// trusted under the default threshold of three), then this node's own
// attestation (trusted, three reproducers, this node among them). An
// unknown variant has nothing.
func TestSupply(t *testing.T) {
	vb := joinBook(t, memnet.New(), false, nil)
	k0, _ := mustKey(t)
	base := junk(t, k0, 1, 1000)
	v := base.Attestation.VariantKey
	check := func(what string, trusted bool, reproducers int, thisNode bool) {
		t.Helper()
		tr, n, self, err := vb.Supply(t.Context(), v)
		if err != nil || tr != trusted || n != reproducers || self != thisNode {
			t.Fatalf("%s: Supply = trusted %v, %d reproducers, this node %v, %v; want %v, %d, %v",
				what, tr, n, self, err, trusted, reproducers, thisNode)
		}
	}
	check("no votes", false, 0, false)
	for _, s := range agreeing(t, base, 2) {
		ingestAs(t, vb.Book, s, s.Attester)
	}
	check("two agreeing peers", false, 2, false)
	own := resign(t, base, vb.key, func(a *trust.Attestation) { a.Time = time.Now().Add(-time.Minute) })
	if err := vb.StoreOwn(own); err != nil {
		t.Fatal(err)
	}
	check("with this node's build", true, 3, true)

	other := junk(t, k0, 2, 1000)
	if other.Attestation.VariantKey == v {
		t.Fatal("two junk builds share a variant")
	}
	if tr, n, self, err := vb.Supply(t.Context(), other.Attestation.VariantKey); err != nil || tr || n != 0 || self {
		t.Fatalf("a variant nobody attested: %v, %d, %v, %v", tr, n, self, err)
	}
}
