package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// Gossip messages carry one tag byte so attestations and equivocation
// proofs share a platform topic.
const (
	gossipTagAttestation = 'a'
	gossipTagEvidence    = 'e'
)

func gossipAttestation(blob []byte) []byte { return append([]byte{gossipTagAttestation}, blob...) }
func gossipEvidence(blob []byte) []byte    { return append([]byte{gossipTagEvidence}, blob...) }

// errRejected marks input from the network that failed a check; it is
// counted in status.
var errRejected = errors.New("rejected")

// bindDescriptor is trust's Binder: an attestation's descriptor must really
// yield its build key, variant key and cpv.
func bindDescriptor(raw json.RawMessage) (bk, vk, cpv string, err error) {
	var desc identity.Descriptor
	if err := json.Unmarshal(raw, &desc); err != nil {
		return "", "", "", err
	}
	return desc.BuildKey().String(), desc.VariantKey().String(), desc.CPV, nil
}

// ingestAttestation checks one attestation from the network and stores it.
// Everything is verified before anything is written; an equivocation it
// reveals is recorded as evidence (and gossiped when publish is set).
func (d *Daemon) ingestAttestation(ctx context.Context, blob []byte, from peer.ID, publish bool) (added bool, err error) {
	// Catalog syncs and relays repeat what is known: skip those before
	// paying for a signature check.
	if known, _ := d.store.HasAttestation(sha256.Sum256(blob)); known {
		return false, nil
	}
	s, err := d.decodeAttestation(blob)
	if err == nil {
		err = s.Attestation.Bind(bindDescriptor)
	}
	if err == nil {
		err = d.checkClaims(s.Attestation)
	}
	if err != nil {
		d.reject("attestation", from, err)
		return false, fmt.Errorf("%w: %v", errRejected, err)
	}
	if s.Attester == d.self {
		// Own attestations come only from PKGDIR (attestLocal). One coming
		// back from a peer's catalog is an echo, or one withdrawn when its
		// file left PKGDIR, which must stay withdrawn.
		return false, nil
	}
	recs, err := d.store.AttestationsFor(s.Attestation.BuildKey)
	if err != nil {
		return false, err
	}
	// Bounded storage: one peer cannot grow every database without limit.
	var mine []*trust.Signed
	for _, r := range recs {
		if r.Attester != s.Attester.String() {
			continue
		}
		if o, err := d.decodeAttestation(r.Blob); err == nil {
			mine = append(mine, o)
		}
	}
	switch {
	case len(mine) >= maxAttestationsPerAttester:
		d.reject("attestation", from, errTooMany)
		return false, fmt.Errorf("%w: %s already has %d attestations for %s", errRejected, s.Attester, len(mine), s.Attestation.BuildKey)
	case len(recs) >= maxAttestationsPerBuild:
		d.reject("attestation", from, errTooMany)
		return false, fmt.Errorf("%w: %s already has %d attestations", errRejected, s.Attestation.BuildKey, len(recs))
	}
	added, err = d.storeAttestation(s, from.String())
	if err != nil || !added {
		return added, err
	}
	d.metrics.attestations.Inc()
	// A new attestation may prove that its signer equivocated.
	for _, ev := range trust.DetectEquivocation(append(mine, s)) {
		if newEv, err := d.storeEvidence(ev); err == nil && newEv && publish && d.node != nil {
			d.log.Warn("equivocation", "peer", ev.Peer.String(), "build_key", ev.BuildKey)
			d.node.Publish(ctx, s.Attestation.Platform, gossipEvidence(ev.Marshal()))
		}
	}
	return true, nil
}

// Storage caps per build key. An honest peer attests one content per build
// key (and a few files of it); a build needs a few dozen votes at most.
const (
	maxAttestationsPerAttester = 4
	maxAttestationsPerBuild    = 512
)

var errTooMany = errors.New("too many attestations")

// checkClaims rejects attestations whose claims the daemon can check
// cheaply: the platform must be the descriptor's (or a build made with
// other CFLAGS could be listed for this machine), and the container size
// must fit the configured limits (a fetch reserves that much disk).
func (d *Daemon) checkClaims(a trust.Attestation) error {
	var desc identity.Descriptor
	if err := json.Unmarshal(a.Descriptor, &desc); err != nil {
		return err
	}
	if p := desc.Platform(); p != a.Platform {
		return fmt.Errorf("platform %q, but the descriptor's CHOST and flags make %q", a.Platform, p)
	}
	if a.Size <= 0 || a.Size > d.limits.MaxImageBytes+maxContainerOverhead {
		return fmt.Errorf("container size %d outside 1..%d", a.Size, d.limits.MaxImageBytes+maxContainerOverhead)
	}
	return nil
}

// maxContainerOverhead is what a container may add to its image: metadata,
// signatures, tar padding, and compression that did not compress.
const maxContainerOverhead = 64 << 20

func (d *Daemon) storeAttestation(s *trust.Signed, from string) (bool, error) {
	a := s.Attestation
	return d.store.PutAttestation(store.AttestationRecord{
		ID:         s.ID(),
		BuildKey:   a.BuildKey,
		VariantKey: a.VariantKey,
		CPV:        a.CPV,
		Platform:   a.Platform,
		Attester:   s.Attester.String(),
		Content:    a.Content.String(),
		Blob:       s.Marshal(),
		ReceivedAt: time.Now().UTC(),
		From:       from,
	})
}

func (d *Daemon) storeEvidence(ev trust.Equivocation) (bool, error) {
	return d.store.PutEvidence(store.EvidenceRecord{
		Peer:     ev.Peer.String(),
		BuildKey: ev.BuildKey,
		Blob:     ev.Marshal(),
		At:       time.Now().UTC(),
	})
}

// reject counts and logs input that failed verification.
func (d *Daemon) reject(what string, from peer.ID, err error) {
	d.metrics.rejected.WithLabelValues(what).Inc()
	// In memory only: a flood of bad messages must not become a flood of
	// fsync'd writes.
	d.counters.rejected.Add(1)
	d.log.Debug("rejected "+what, "from", from.String(), "err", err)
}

// onGossip is the GossipSub validator: a message is forwarded only if it
// verifies here.
func (d *Daemon) onGossip(from peer.ID, platform string, msg []byte) error {
	if len(msg) < 2 {
		return fmt.Errorf("empty gossip message")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch msg[0] {
	case gossipTagAttestation:
		_, err := d.ingestAttestation(ctx, msg[1:], from, true)
		return err
	case gossipTagEvidence:
		ev, err := trust.DecodeEquivocation(msg[1:])
		if err == nil {
			err = ev.Verify()
		}
		if err != nil {
			d.reject("evidence", from, err)
			return err
		}
		_, err = d.storeEvidence(ev)
		return err
	case gossipTagEndorsement:
		_, err := d.ingestEndorsement(ctx, msg[1:], from, false)
		return err
	default:
		return fmt.Errorf("unknown gossip message type %q", msg[0])
	}
}

// serveAttestations answers /gentoo-p2p/attest/1 for a build or variant
// key: every verified attestation held, own and collected.
func (d *Daemon) serveAttestations(ctx context.Context, key cid.Cid) ([][]byte, error) {
	k := key.String()
	recs, err := d.store.AttestationsFor(k)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		if recs, err = d.store.AttestationsByVariant(k); err != nil {
			return nil, err
		}
	}
	d.metrics.attestServed.Inc()
	out := blobs(recs)
	if len(recs) > 0 {
		if es, err := d.store.EndorsementsFor(recs[0].BuildKey); err == nil {
			out = append(out, es...)
		}
	}
	return out, nil
}

// serveCatalog answers /gentoo-p2p/catalog/1: the platform's attestations
// newer than since, oldest first.
func (d *Daemon) serveCatalog(ctx context.Context, platform string, since int64) ([][]byte, error) {
	recs, err := d.store.Catalog(platform)
	if err != nil {
		return nil, err
	}
	var out []store.AttestationRecord
	for _, r := range recs {
		if r.ReceivedAt.Unix() > since {
			out = append(out, r)
		}
	}
	bs := blobs(out)
	// Endorsements ride along, so a newcomer learns signer backing too.
	for _, bk := range uniqueBuildKeys(out) {
		if es, err := d.store.EndorsementsFor(bk); err == nil {
			bs = append(bs, es...)
		}
	}
	return bs, nil
}

func blobs(recs []store.AttestationRecord) [][]byte {
	out := make([][]byte, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Blob)
	}
	return out
}

// syncCatalogFrom pulls a peer's catalog for our platform (a newcomer's way
// to fill its catalog without waiting for gossip).
func (d *Daemon) syncCatalogFrom(ctx context.Context, p peer.ID) (int, error) {
	bs, err := d.node.SyncCatalog(ctx, p, d.platform, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range bs {
		if bytes.HasPrefix(b, endorsementMagic) {
			d.ingestEndorsement(ctx, b, p, false)
			continue
		}
		if added, err := d.ingestAttestation(ctx, b, p, false); err == nil && added {
			n++
		}
	}
	return n, nil
}

// catalogLoop syncs the catalog from every newly connected peer, and again
// every few minutes, so a catalog fills even when gossip was missed.
func (d *Daemon) catalogLoop(ctx context.Context) {
	synced := make(map[peer.ID]time.Time)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		for _, pi := range d.node.Peers() {
			if last, ok := synced[pi.ID]; ok && time.Since(last) < 10*time.Minute {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			n, err := d.syncCatalogFrom(sctx, pi.ID)
			cancel()
			if err != nil {
				d.log.Debug("catalog sync", "peer", pi.ID.String(), "err", err)
			} else if n > 0 {
				d.log.Info("catalog sync", "peer", pi.ID.String(), "new", n)
			}
			synced[pi.ID] = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
