package votes

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// member is a daemon's Book on a shared in-memory network, with the key
// that signs its own attestations and its network node.
type member struct {
	*Book
	key  crypto.PrivKey
	node *memnet.Node
}

// joinBook makes a Book on a fresh store, joined to net under a fresh
// identity. When serve is set its node answers catalog and attest requests
// and takes gossip on the platform topic with the Book's handlers, as the
// daemon wires them.
func joinBook(t testing.TB, net *memnet.Network, serve bool, configure func(*config.Config)) member {
	t.Helper()
	cfg := config.Defaults()
	cfg.Trust.FreshWeight = 100 // a closed network: every attester counts
	if configure != nil {
		configure(cfg)
	}
	policy, err := PolicyFromConfig(cfg.Trust)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "state"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key, self := mustKey(t)
	node := net.Join(self)
	vb := New(Options{
		Store: st, Policy: policy, Self: self, Key: key, Platform: testPlatform.Platform(),
		Limits: cfg.Limits, Files: xpak.DefaultLimits(), Net: node,
	})
	if serve {
		node.Serve(p2p.Handlers{Catalog: vb.ServeCatalog, CatalogIDs: vb.ServeCatalogIDs, CatalogRecords: vb.ServeCatalogRecords, CatalogIDsUntil: vb.ServeCatalogIDsUntil, CatalogFingerprints: vb.ServeCatalogFingerprints, Attestations: vb.ServeAttestations, OnGossip: vb.OnGossip})
		if err := node.JoinPlatform(vb.platform); err != nil {
			t.Fatal(err)
		}
	}
	return member{Book: vb, key: key, node: node}
}

// resign returns a's attestation changed by edit and signed with k.
func resign(t testing.TB, s *trust.Signed, k crypto.PrivKey, edit func(*trust.Attestation)) *trust.Signed {
	t.Helper()
	a := s.Attestation
	a.Index = map[string]string{}
	for key, v := range s.Attestation.Index {
		a.Index[key] = v
	}
	if edit != nil {
		edit(&a)
	}
	out, err := trust.Sign(a, k)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// agreeing returns n attestations by fresh attesters of base's build and
// content, dated an hour ago plus i seconds.
func agreeing(t testing.TB, base *trust.Signed, n int) []*trust.Signed {
	t.Helper()
	var out []*trust.Signed
	for i := range n {
		k, _ := mustKey(t)
		out = append(out, resign(t, base, k, func(a *trust.Attestation) {
			a.Time = time.Now().Add(-time.Hour + time.Duration(i)*time.Second)
		}))
	}
	return out
}

func blobsOf(ss ...*trust.Signed) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = s.Marshal()
	}
	return out
}

func attesters(ss []*trust.Signed) []peer.ID {
	out := make([]peer.ID, len(ss))
	for i, s := range ss {
		out[i] = s.Attester
	}
	return out
}

// setDescriptor edits a's descriptor and the keys, cpv and platform it
// binds.
func setDescriptor(t testing.TB, a *trust.Attestation, edit func(*identity.Descriptor)) {
	t.Helper()
	var d identity.Descriptor
	if err := json.Unmarshal(a.Descriptor, &d); err != nil {
		t.Fatal(err)
	}
	edit(&d)
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	a.Descriptor = raw
	a.BuildKey, a.VariantKey, a.CPV, a.Platform = d.BuildKey(), d.VariantKey(), d.CPV, d.Platform()
}

// newSigner makes a build server's Ed25519 key.
func newSigner(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// eventually polls cond until it holds or a few seconds pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncThenLate runs b's SyncLoop until the test ends: a's first records
// (a catalog dated an hour ago on) reach b, then a record that reaches a
// after that sync, dated five minutes before the newest one b saw (inside
// the resync margin), reaches b too. It returns that newest time.
func syncThenLate(t *testing.T, a, b *Book) time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	first := catalogOf(t, 4, 2, 1000)
	if n, err := a.ingestBatch(ctx, blobsOf(first...), arrival{}); n != len(first) || err != nil {
		t.Fatal(n, err)
	}
	go func() {
		defer close(done)
		b.SyncLoop(ctx)
	}()
	eventually(t, "a's records at b", func() bool { return has(t, b, first...) == len(first) })
	newest := first[len(first)-1].Attestation.Time
	k, _ := mustKey(t)
	late, err := hostile.Junk(k, testPlatform, 99, 1000, newest.Add(-5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := a.ingestBatch(ctx, blobsOf(late), arrival{}); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	eventually(t, "the late record at b", func() bool { return has(t, b, late) == 1 })
	return newest
}
