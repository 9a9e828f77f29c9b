package jobtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// NewKey makes a fresh peer identity: its signing key and peer id.
func NewKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, err := hostile.Identity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// Attest signs, as a builder of b, an attestation of b's file and content.
func Attest(t testing.TB, key crypto.PrivKey, b Binpkg, at time.Time) *trust.Signed {
	t.Helper()
	return AttestFile(t, key, b, b, at)
}

// AttestFile signs an attestation that claims claim's build and content
// but names file's container (SHA-256, size, piece root): what an attacker
// signs to get its own file fetched under an honest content id.
func AttestFile(t testing.TB, key crypto.PrivKey, claim, file Binpkg, at time.Time) *trust.Signed {
	t.Helper()
	lp := claim.Local
	s, err := trust.Sign(trust.Attestation{
		Version: trust.AttestationVersion, BuildKey: keys.Build(lp.BuildKey), VariantKey: keys.Variant(lp.VariantKey),
		CPV: lp.CPV, Platform: lp.Platform, Descriptor: claim.Descriptor, Index: claim.Index,
		Content:    claim.Content(),
		FileSHA256: file.Local.FileSHA256, Size: file.Local.Size, PieceRoot: file.Local.PieceRoot,
		PieceSize: pieces.Size, Format: lp.Format, Time: at, Served: claim.Served, Needs: claim.Needs,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// CID decodes a key (build or variant key) that must be well-formed.
func CID(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Counter is the sum of the counter metric name in reg; the metric must be
// registered.
func Counter(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n float64
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
			return n
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// NewSigner makes a build server's Ed25519 endorsement key.
func NewSigner(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}
