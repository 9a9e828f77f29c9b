package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
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
	s, ok, err := d.vetAttestation(blob, from, nil)
	if err != nil || !ok {
		return false, err
	}
	added, err = d.storeAttestation(s, from.String())
	if err != nil || !added {
		return added, err
	}
	d.stored(ctx, s, publish)
	return true, nil
}

// ingestBatch is ingestAttestation for a page of a catalog sync: every
// blob is checked the same way, and what passes is stored in one
// transaction (one fsync instead of one per record).
func (d *Daemon) ingestBatch(ctx context.Context, blobs [][]byte, from peer.ID) (int, error) {
	var ss []*trust.Signed
	var recs []store.AttestationRecord
	pending := map[string]int{} // build key and attester → records in this batch
	for _, b := range blobs {
		s, ok, err := d.vetAttestation(b, from, pending)
		if err != nil || !ok {
			continue
		}
		a := s.Attestation
		pending[a.BuildKey]++
		pending[a.BuildKey+"\x00"+s.Attester.String()]++
		ss = append(ss, s)
		recs = append(recs, d.attestationRecord(s, from.String()))
	}
	if len(recs) == 0 {
		return 0, nil
	}
	added, err := d.store.PutAttestations(recs)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, ok := range added {
		if ok {
			n++
			d.stored(ctx, ss[i], false)
		}
	}
	return n, nil
}

// vetAttestation runs every check on an attestation from the network.
// ok is false, with no error, for what needs no storing: a known blob, or
// this daemon's own attestation coming back. pending counts records of the
// same batch not stored yet, for the caps.
func (d *Daemon) vetAttestation(blob []byte, from peer.ID, pending map[string]int) (s *trust.Signed, ok bool, err error) {
	// Catalog syncs and relays repeat what is known: skip those before
	// paying for a signature check.
	if known, _ := d.store.HasAttestation(sha256.Sum256(blob)); known {
		return nil, false, nil
	}
	s, err = d.decodeAttestation(blob)
	if err == nil {
		err = s.Attestation.Bind(bindDescriptor)
	}
	if err == nil {
		err = d.checkClaims(s.Attestation)
	}
	if err != nil {
		d.reject("attestation", from, err)
		return nil, false, fmt.Errorf("%w: %v", errRejected, err)
	}
	if s.Attester == d.self {
		// Own attestations come only from PKGDIR (attestLocal). One coming
		// back from a peer's catalog is an echo, or one withdrawn when its
		// file left PKGDIR, which must stay withdrawn.
		return nil, false, nil
	}
	// Bounded storage: one peer cannot grow every database without limit.
	a := s.Attestation
	recs, err := d.store.AttestationsFor(a.BuildKey)
	if err != nil {
		return nil, false, err
	}
	mine := pending[a.BuildKey+"\x00"+s.Attester.String()]
	for _, r := range recs {
		if r.Attester == s.Attester.String() {
			mine++
		}
	}
	switch {
	case mine >= maxAttestationsPerAttester:
		d.reject("attestation", from, errTooMany)
		return nil, false, fmt.Errorf("%w: %s already has %d attestations for %s", errRejected, s.Attester, mine, a.BuildKey)
	case len(recs)+pending[a.BuildKey] >= maxAttestationsPerBuild:
		d.reject("attestation", from, errTooMany)
		return nil, false, fmt.Errorf("%w: %s already has %d attestations", errRejected, a.BuildKey, len(recs))
	}
	return s, true, nil
}

// stored follows a newly stored attestation: it may prove that its signer
// equivocated, which is recorded (and gossiped when publish is set).
func (d *Daemon) stored(ctx context.Context, s *trust.Signed, publish bool) {
	d.metrics.attestations.Inc()
	recs, err := d.store.AttestationsFor(s.Attestation.BuildKey)
	if err != nil {
		return
	}
	var mine []*trust.Signed
	for _, r := range recs {
		if r.Attester != s.Attester.String() {
			continue
		}
		if o, err := d.decodeAttestation(r.Blob); err == nil {
			mine = append(mine, o)
		}
	}
	for _, ev := range trust.DetectEquivocation(mine) {
		if newEv, err := d.storeEvidence(ev); err == nil && newEv && publish && d.node != nil {
			d.log.Warn("equivocation", "peer", ev.Peer.String(), "build_key", ev.BuildKey)
			d.node.Publish(ctx, s.Attestation.Platform, gossipEvidence(ev.Marshal()))
		}
	}
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
	// Catalog sync pages by attestation time: a date far in the future
	// would let one attester jump a newcomer past honest records.
	if a.Time.After(time.Now().Add(24 * time.Hour)) {
		return fmt.Errorf("attestation dated %s, in the future", a.Time.Format(time.RFC3339))
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
	return d.store.PutAttestation(d.attestationRecord(s, from))
}

// attestationRecord is how an attestation is kept: the blob plus the
// columns the store indexes.
func (d *Daemon) attestationRecord(s *trust.Signed, from string) store.AttestationRecord {
	a := s.Attestation
	return store.AttestationRecord{
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
	}
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
	// Endorsements first: a response is capped, and a flood of
	// attestations must not push signer backing out of it.
	var out [][]byte
	if len(recs) > 0 {
		if es, err := d.store.EndorsementsFor(recs[0].BuildKey); err == nil {
			out = append(out, es...)
		}
	}
	return append(out, blobs(recs)...), nil
}

// serveCatalog answers /gentoo-p2p/catalog/1: the platform's attestations
// made after since (Unix seconds of the attestation's own time), oldest
// first, each page led by the endorsements of its build keys. A client
// pages by asking again with the newest time it got.
func (d *Daemon) serveCatalog(ctx context.Context, platform string, since int64) ([][]byte, error) {
	recs, err := d.store.Catalog(platform)
	if err != nil {
		return nil, err
	}
	type dated struct {
		at  int64
		rec store.AttestationRecord
	}
	var page []dated
	for _, r := range recs {
		s, err := d.decodeAttestation(r.Blob)
		if err != nil {
			continue
		}
		if at := s.Attestation.Time.Unix(); at > since {
			page = append(page, dated{at, r})
		}
	}
	sort.SliceStable(page, func(i, j int) bool { return page[i].at < page[j].at })
	// Half a response of attestations leaves room for their endorsements.
	// A page never ends inside one second (the client continues after the
	// newest second it got), unless a single second fills it.
	if limit := p2p.MaxBlobs / 2; len(page) > limit {
		cut := limit
		for cut > 0 && page[cut-1].at == page[limit].at {
			cut--
		}
		if cut == 0 {
			cut = limit
		}
		page = page[:cut]
	}
	out := make([]store.AttestationRecord, len(page))
	for i, p := range page {
		out[i] = p.rec
	}
	var bs [][]byte
	for _, bk := range uniqueBuildKeys(out) {
		if es, err := d.store.EndorsementsFor(bk); err == nil {
			bs = append(bs, es...)
		}
	}
	return append(bs, blobs(out)...), nil
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
	n := 0
	var since int64
	seen := map[[32]byte]bool{}
	// Page by attestation time; bounded, so a flood of records cannot keep
	// a sync going for ever.
	for range maxCatalogPages {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		bs, err := d.node.SyncCatalog(pctx, p, d.platform, since)
		cancel()
		if err != nil {
			return n, err
		}
		newest := since
		var atts [][]byte
		for _, b := range bs {
			// A peer that ignores since repeats itself: judge each blob once.
			if id := sha256.Sum256(b); seen[id] {
				continue
			} else {
				seen[id] = true
			}
			if bytes.HasPrefix(b, endorsementMagic) {
				d.ingestEndorsement(ctx, b, p, false)
				continue
			}
			atts = append(atts, b)
			if s, err := d.decodeAttestation(b); err == nil && s.Attestation.Time.Unix() > newest {
				newest = s.Attestation.Time.Unix()
			}
		}
		added, err := d.ingestBatch(ctx, atts, p)
		n += added
		if err != nil {
			return n, err
		}
		if newest <= since {
			return n, nil
		}
		since = newest
	}
	return n, nil
}

// maxCatalogPages bounds one catalog sync (2048 attestations a page).
const maxCatalogPages = 64

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
			n, err := d.syncCatalogFrom(ctx, pi.ID)
			if n > 0 {
				d.log.Info("catalog sync", "peer", pi.ID.String(), "new", n)
			}
			synced[pi.ID] = time.Now()
			if err != nil {
				// Try this peer again in a minute, not in ten.
				d.log.Debug("catalog sync", "peer", pi.ID.String(), "err", err)
				synced[pi.ID] = time.Now().Add(-9 * time.Minute)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
