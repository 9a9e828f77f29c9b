package jobtest

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Peer is one daemon's votes on an in-memory network: its identity, a real
// store, a real votes Book, and a node that serves the Book as the
// daemon's p2p node does (attest and catalog requests, gossip on the
// platform topic, which it has joined).
type Peer struct {
	ID       peer.ID
	Key      crypto.PrivKey
	Store    *store.Store
	Book     *votes.Book
	Node     *memnet.Node
	Platform string
}

// PeerOption changes how NewPeer makes a peer.
type PeerOption func(*peerOptions)

type peerOptions struct {
	key      crypto.PrivKey
	st       *store.Store
	policy   trust.Policy
	platform string
}

// WithKey makes the peer under key's identity (a restart) instead of a
// fresh one.
func WithKey(k crypto.PrivKey) PeerOption { return func(o *peerOptions) { o.key = k } }

// WithStore uses st (a restart) instead of a fresh store; the caller
// closes it.
func WithStore(st *store.Store) PeerOption { return func(o *peerOptions) { o.st = st } }

// WithPolicy sets the trust policy (default LabPolicy()).
func WithPolicy(p trust.Policy) PeerOption { return func(o *peerOptions) { o.policy = p } }

// WithThreshold sets the policy's threshold.
func WithThreshold(n int) PeerOption { return func(o *peerOptions) { o.policy.Threshold = n } }

// WithPlatform sets the Book's platform (default FixturePlatform).
func WithPlatform(p string) PeerOption { return func(o *peerOptions) { o.platform = p } }

// NewPeer joins a new peer to net. Its Book has the daemon's default
// limits; store and node go away with the test.
func NewPeer(t testing.TB, net *memnet.Network, opts ...PeerOption) *Peer {
	t.Helper()
	o := peerOptions{policy: LabPolicy()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.platform == "" {
		o.platform = FixturePlatform(t)
	}
	p := &Peer{Key: o.key, Store: o.st, Platform: o.platform}
	if p.Key == nil {
		p.Key, p.ID = NewKey(t)
	} else {
		id, err := peer.IDFromPrivateKey(p.Key)
		if err != nil {
			t.Fatal(err)
		}
		p.ID = id
	}
	if p.Store == nil {
		st, err := store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		p.Store = st
	}
	p.Node = net.Join(p.ID)
	p.Book = votes.New(votes.Options{
		Store: p.Store, Policy: o.policy, Self: p.ID, Key: p.Key, Platform: p.Platform,
		Limits: config.Defaults().Limits, Files: xpak.DefaultLimits(), Net: p.Node,
	})
	p.Node.Serve(p2p.Handlers{Attestations: p.Book.ServeAttestations, Catalog: p.Book.ServeCatalog, CatalogIDs: p.Book.ServeCatalogIDs, CatalogRecords: p.Book.ServeCatalogRecords, CatalogIDsUntil: p.Book.ServeCatalogIDsUntil, CatalogFingerprints: p.Book.ServeCatalogFingerprints, OnGossip: p.Book.OnGossip})
	if err := p.Node.JoinPlatform(p.Platform); err != nil {
		t.Fatal(err)
	}
	return p
}

// Local is p's one indexed package of cpv.
func (p *Peer) Local(t testing.TB, cpv string) store.LocalPackage {
	t.Helper()
	lps, err := p.Store.ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	var out []store.LocalPackage
	for _, lp := range lps {
		if lp.CPV == cpv {
			out = append(out, lp)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d indexed packages of %s, want 1 (all: %d)", len(out), cpv, len(lps))
	}
	return out[0]
}

// Providing reports whether p's node announces key.
func (p *Peer) Providing(t testing.TB, key string) bool {
	t.Helper()
	return p.Node.Providing(CID(t, key))
}

// AttestationsBy are the attestations by who that p stores for a build
// key, each verified.
func (p *Peer) AttestationsBy(t testing.TB, buildKey keys.Build, who peer.ID) []*trust.Signed {
	t.Helper()
	recs, err := p.Store.AttestationsFor(string(buildKey))
	if err != nil {
		t.Fatal(err)
	}
	var out []*trust.Signed
	for _, r := range recs {
		if r.Attester != who.String() {
			continue
		}
		s, err := p.Book.Decode(r.Blob)
		if err != nil {
			t.Fatalf("stored attestation does not verify: %v", err)
		}
		out = append(out, s)
	}
	return out
}

// LabPolicy is trust's default policy in a closed network, where every
// attester counts fully (trust.fresh_weight = 100): what the job tests
// that are about counting votes, not standing, run with.
func LabPolicy() trust.Policy {
	p := trust.DefaultPolicy()
	p.FreshWeight = trust.FullWeight
	return p
}
