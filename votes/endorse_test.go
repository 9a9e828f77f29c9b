package votes

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
)

// Endorsements by configured signers are always kept; others only for a
// build key someone attested (or the local user's own), and only a few.
func TestIngestEndorsement(t *testing.T) {
	pub, mine := newSigner(t)
	vb := offlineBook(t, func(c *config.Config) { c.Trust.Signers = []string{hex.EncodeToString(pub)} })
	ctx := context.Background()
	k, id := mustKey(t)
	attested := junk(t, k, 1, 1000)
	ingestAs(t, vb, attested, id)
	bk, c := attested.Attestation.BuildKey, attested.Attestation.Content
	unattested := junk(t, k, 2, 1000).Attestation

	// A configured signer's endorsement of a build nobody attested is kept.
	e := NewEndorsement(unattested.BuildKey, vb.platform, unattested.Content, mine)
	if added, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); !added || err != nil {
		t.Fatalf("configured signer, unattested build: added %v, %v", added, err)
	}
	if added, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); added || err != nil {
		t.Fatalf("the same endorsement again: added %v, %v", added, err)
	}

	// A foreign one is not, unless the local user made it.
	_, foreign := newSigner(t)
	f := NewEndorsement(unattested.BuildKey, vb.platform, unattested.Content, foreign)
	if added, err := vb.IngestEndorsement(ctx, f.Marshal(), id, false); added || !errors.Is(err, p2p.ErrGossipIgnore) {
		t.Fatalf("foreign signer, unattested build: added %v, %v; want ignored", added, err)
	}
	if added, err := vb.IngestEndorsement(ctx, f.Marshal(), vb.self, false); !added || err != nil {
		t.Fatalf("the local user's own endorsement: added %v, %v", added, err)
	}

	// Foreign endorsements of an attested build: a few, then no more; a
	// configured signer's still goes in.
	for i := range maxForeignEndorsements {
		_, priv := newSigner(t)
		e := NewEndorsement(bk, vb.platform, c, priv)
		if added, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); !added || err != nil {
			t.Fatalf("foreign endorsement %d: added %v, %v", i, added, err)
		}
	}
	_, priv := newSigner(t)
	over := NewEndorsement(bk, vb.platform, c, priv)
	if added, err := vb.IngestEndorsement(ctx, over.Marshal(), id, false); added || err == nil {
		t.Fatalf("foreign endorsement past the cap: added %v, %v", added, err)
	}
	ours := NewEndorsement(bk, vb.platform, c, mine)
	if added, err := vb.IngestEndorsement(ctx, ours.Marshal(), id, false); !added || err != nil {
		t.Fatalf("configured signer past the foreign cap: added %v, %v", added, err)
	}
	if es, _ := vb.store.EndorsementsFor(string(bk)); len(es) != maxForeignEndorsements+1 {
		t.Fatalf("%d endorsements held, want %d", len(es), maxForeignEndorsements+1)
	}

	// What does not verify is rejected and counted.
	tampered := NewEndorsement(bk, vb.platform, c, mine)
	tampered.Content.Image[0] ^= 1
	notCID := NewEndorsement("not-a-cid", vb.platform, c, mine)
	before := vb.Rejected()
	for name, blob := range map[string][]byte{
		"garbage":           []byte("hello"),
		"no magic":          tampered.Marshal()[len(endorsementMagic):],
		"bad signature":     tampered.Marshal(),
		"build key not cid": notCID.Marshal(),
		"unknown field":     append(append([]byte(nil), endorsementMagic...), `{"build_key":"x","extra":1}`...),
		"oversized":         append(append([]byte(nil), endorsementMagic...), bytes.Repeat([]byte(" "), 5000)...),
	} {
		if added, err := vb.IngestEndorsement(ctx, blob, id, false); added || err == nil {
			t.Errorf("%s: added %v, %v; want an error", name, added, err)
		}
	}
	if got := vb.Rejected() - before; got != 6 {
		t.Errorf("%d rejections counted, want 6", got)
	}
	if !IsEndorsement(ours.Marshal()) || IsEndorsement(attested.Marshal()) {
		t.Error("IsEndorsement mistakes one blob for the other")
	}
}

// A new endorsement ingested with publish reaches the other peers on the
// platform topic through their validators; a known one is not sent again.
func TestIngestEndorsementPublishes(t *testing.T) {
	pub, priv := newSigner(t)
	signer := func(c *config.Config) { c.Trust.Signers = []string{hex.EncodeToString(pub)} }
	net := memnet.New()
	a := joinBook(t, net, true, signer)
	b := joinBook(t, net, true, signer)
	k, _ := mustKey(t)
	s := junk(t, k, 1, 1000)
	e := NewEndorsement(s.Attestation.BuildKey, a.platform, s.Attestation.Content, priv)
	for range 2 {
		if _, err := a.IngestEndorsement(context.Background(), e.Marshal(), a.self, true); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.node.Published(); n != 1 {
		t.Errorf("a published %d messages, want 1", n)
	}
	es, err := b.store.EndorsementsFor(string(s.Attestation.BuildKey))
	if err != nil || len(es) != 1 || !bytes.Equal(es[0], e.Marshal()) {
		t.Fatalf("b holds %d endorsements, %v; want a's", len(es), err)
	}
}

// Evicting a build key's last attestation drops the foreign endorsements
// kept for it, and keeps the configured signers'.
func TestEvictionDropsOrphanedForeignEndorsements(t *testing.T) {
	pub, mine := newSigner(t)
	vb := offlineBook(t, func(c *config.Config) {
		c.Trust.Signers = []string{hex.EncodeToString(pub)}
		c.Limits.PeerAttestations = 2
	})
	ctx := context.Background()
	k, id := mustKey(t)
	first := junk(t, k, 1, 1000)
	ingestAs(t, vb, first, id)
	bk, c := first.Attestation.BuildKey, first.Attestation.Content
	_, foreign := newSigner(t)
	for _, priv := range [][]byte{foreign, mine} {
		e := NewEndorsement(bk, vb.platform, c, priv)
		if _, err := vb.IngestEndorsement(ctx, e.Marshal(), id, false); err != nil {
			t.Fatal(err)
		}
	}
	// Two more records: the budget of two evicts the oldest.
	ingestAs(t, vb, junk(t, k, 2, 1000), id)
	ingestAs(t, vb, junk(t, k, 3, 1000), id, errFlooding)
	if has, _ := vb.store.HasAttestation(first.ID()); has {
		t.Fatal("the oldest record survived its attester's budget")
	}
	es, err := vb.store.EndorsementsFor(string(bk))
	if err != nil || len(es) != 1 {
		t.Fatalf("%d endorsements left, %v; want the configured signer's only", len(es), err)
	}
	if e, err := DecodeEndorsement(es[0]); err != nil || !bytes.Equal(e.Endorsement.SignerKey, pub) {
		t.Fatalf("the endorsement left is not the configured signer's: %v", err)
	}
}
