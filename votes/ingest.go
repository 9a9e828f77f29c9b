package votes

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// Gossip messages carry one tag byte so attestations, equivocation
// proofs, endorsements (gossipTagEndorsement), demand records
// (gossipTagDemand) and vouches (gossipTagVouch) share a platform topic.
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
func bindDescriptor(raw json.RawMessage) (bk keys.Build, vk keys.Variant, cpv string, err error) {
	var desc identity.Descriptor
	if err := json.Unmarshal(raw, &desc); err != nil {
		return "", "", "", err
	}
	return desc.BuildKey(), desc.VariantKey(), desc.CPV, nil
}

// ingestAttestation checks one attestation from the network and stores it.
// Everything is verified before anything is written; an equivocation it
// reveals is recorded as evidence (and gossiped when publish is set).
func (vb *Book) ingestAttestation(ctx context.Context, blob []byte, via arrival, publish bool) (added bool, err error) {
	n, err := vb.ingest(ctx, [][]byte{blob}, via, publish)
	return n > 0, err
}

// ingestBatch is ingestAttestation for a page of a catalog sync: every
// blob is checked the same way, and what passes is stored in one
// transaction (one fsync instead of one per record). A blob that fails is
// counted and skipped; the others are still stored.
func (vb *Book) ingestBatch(ctx context.Context, blobs [][]byte, via arrival) (int, error) {
	n, err := vb.ingest(ctx, blobs, via, false)
	if errors.Is(err, errRejected) || errors.Is(err, errFlooding) {
		err = nil // counted in status; the page's other records stand
	}
	return n, err
}

// ingest vets blobs, checks each against the per-build-key caps and its
// attester's storage budget (evicting that attester's least useful
// records), and stores what passes in one transaction. It returns how many
// were new and the first error met.
func (vb *Book) ingest(ctx context.Context, blobs [][]byte, via arrival, publish bool) (int, error) {
	var vetted []*trust.Signed
	var firstErr error
	for _, b := range blobs {
		s, ok, err := vb.vetAttestation(b, via)
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if ok {
			vetted = append(vetted, s)
		}
	}
	if len(vetted) == 0 {
		return 0, firstErr
	}
	// Caps and budgets are read and enforced with the write that follows,
	// so concurrent gossip validators cannot both take the last slot.
	vb.ingestMu.Lock()
	var ss []*trust.Signed
	var recs []store.AttestationRecord
	pending := map[string]int{} // build key, and build key + attester → records of this batch
	use := map[peer.ID]store.Usage{}
	var batchBytes int64
	for _, s := range vetted {
		rec := vb.attestationRecord(s, via)
		// A copy that arrived meanwhile (another validator, this batch)
		// must not evict anything or count against a cap.
		if known, err := vb.store.HasAttestation(rec.ID); err != nil || known || pending["id\x00"+string(rec.ID[:])] > 0 {
			if err != nil {
				vb.ingestMu.Unlock()
				return 0, err
			}
			continue
		}
		pending["id\x00"+string(rec.ID[:])]++
		// The checks that evict come after those that only refuse, and
		// a full build key is opened last: nothing is evicted for a
		// record refused afterwards (an attester's own records aside).
		full, err := vb.checkCaps(s, pending)
		if err == nil {
			err = vb.admit(s.Attester, len(rec.Blob), use[s.Attester])
		}
		if err == nil {
			err = vb.admitTotal(s.Attester, len(rec.Blob), batchBytes)
		}
		if err == nil && full {
			err = vb.makeRoomInBuild(s)
		}
		if err != nil {
			if !errors.Is(err, errBudget) && !errors.Is(err, errTooMany) {
				vb.ingestMu.Unlock()
				return 0, err // the store failed; nothing to blame the peer for
			}
			vb.reject("attestation", via.from, err)
			firstErr = cmp.Or(firstErr, fmt.Errorf("%w: %w", errRejected, err))
			continue
		}
		a := s.Attestation
		pending[string(a.BuildKey)]++
		pending[string(a.BuildKey)+"\x00"+s.Attester.String()]++
		u := use[s.Attester]
		u.Records++
		u.Bytes += int64(len(rec.Blob))
		use[s.Attester] = u
		batchBytes += int64(len(rec.Blob))
		ss = append(ss, s)
		recs = append(recs, rec)
	}
	var added []bool
	var err error
	if len(recs) > 0 {
		added, err = vb.store.PutAttestations(recs)
	}
	vb.ingestMu.Unlock()
	if err != nil {
		return 0, err
	}
	n, quiet := 0, false
	for i, ok := range added {
		if ok {
			n++
			vb.stored(ctx, ss[i], publish)
			quiet = quiet || vb.flooders.recent(ss[i].Attester)
		}
	}
	if firstErr == nil && quiet {
		firstErr = errFlooding
	}
	return n, firstErr
}

// vetAttestation runs every check on an attestation from the network that
// needs no lock: signature, descriptor binding, claims. ok is false, with
// no error, for what needs no storing: a known blob, or this daemon's own
// attestation coming back.
func (vb *Book) vetAttestation(blob []byte, via arrival) (s *trust.Signed, ok bool, err error) {
	// Catalog syncs and relays repeat what is known: skip those before
	// paying for a signature check.
	id := sha256.Sum256(blob)
	known, err := vb.store.HasAttestation(id)
	if err != nil {
		return nil, false, err
	}
	if known {
		// Its attester delivering it directly is the evidence of where
		// it sits that a relayed copy lacked.
		if via.addr != "" {
			if r, found, err := vb.store.GetAttestation(id); err == nil && found && r.Addr == "" && r.Attester == via.from.String() {
				if _, err := vb.store.SetAttestationAddr(id, via.addr); err != nil {
					return nil, false, err
				}
			}
		}
		return nil, false, nil
	}
	s, err = vb.Decode(blob)
	if err == nil {
		err = s.Attestation.Bind(bindDescriptor)
	}
	if err == nil {
		err = vb.checkClaims(s.Attestation)
	}
	if err != nil {
		vb.reject("attestation", via.from, err)
		return nil, false, fmt.Errorf("%w: %v", errRejected, err)
	}
	if s.Attester == vb.self {
		// Own attestations come only from PKGDIR (attestLocal). One coming
		// back from a peer's catalog is an echo, or one withdrawn when its
		// file left PKGDIR, which must stay withdrawn.
		return nil, false, nil
	}
	return s, true, nil
}

// checkCaps bounds the records per build key: a build needs a few dozen
// votes, and an honest peer attests one content per build key (and a few
// files of it). pending counts records of the same batch not stored yet.
// full reports a build key at its cap, which makeRoomInBuild may open.
func (vb *Book) checkCaps(s *trust.Signed, pending map[string]int) (full bool, err error) {
	a := s.Attestation
	total, mine, err := vb.store.CountForBuildKey(string(a.BuildKey), s.Attester.String())
	if err != nil {
		return false, err
	}
	mine += pending[string(a.BuildKey)+"\x00"+s.Attester.String()]
	switch {
	case mine >= maxAttestationsPerAttester:
		return false, fmt.Errorf("%w: %s already has %d attestations for %s", errTooMany, s.Attester, mine, a.BuildKey)
	case total+pending[string(a.BuildKey)] >= maxAttestationsPerBuild:
		if pending[string(a.BuildKey)] > 0 {
			return false, fmt.Errorf("%w: %s already has %d attestations", errTooMany, a.BuildKey, total)
		}
		return true, nil
	}
	return false, nil
}

// makeRoomInBuild evicts one record of a full build key for s, if one is
// worth less: first a record by a blocked peer; then, when s is its
// attester's first record here, a duplicate (an attester's further record
// adds nothing to a tally of distinct attesters); else a record of the
// content with the fewest distinct attesters, provided s's content would
// then have more. Without such a record s is refused (errTooMany). It
// reads no blob.
func (vb *Book) makeRoomInBuild(s *trust.Signed) error {
	bk := s.Attestation.BuildKey
	recs, err := vb.store.InfosFor(string(bk))
	if err != nil {
		return err
	}
	refuse := fmt.Errorf("%w: %s already has %d attestations", errTooMany, bk, len(recs))
	support := map[string]map[string]bool{}
	count := map[string]int{}
	for _, r := range recs {
		if support[r.Content] == nil {
			support[r.Content] = map[string]bool{}
		}
		support[r.Content][r.Attester] = true
		count[r.Attester]++
	}
	mine := s.Attestation.Content.String()
	after := len(support[mine])
	if !support[mine][s.Attester.String()] {
		after++
	}
	self := vb.self.String()
	var victim *store.AttestationInfo
	for i, r := range recs {
		if id, err := peer.Decode(r.Attester); err == nil && slices.Contains(vb.policy.BlockedPeers, id) {
			victim = &recs[i]
			break
		}
	}
	if victim == nil && count[s.Attester.String()] == 0 {
		for i, r := range recs {
			if count[r.Attester] > 1 && r.Attester != self &&
				(victim == nil || count[r.Attester] > count[victim.Attester] || count[r.Attester] == count[victim.Attester] && r.ReceivedAt.After(victim.ReceivedAt)) {
				victim = &recs[i]
			}
		}
	}
	if victim == nil {
		weakest := ""
		for c, who := range support {
			if c != mine && (weakest == "" || len(who) < len(support[weakest]) || len(who) == len(support[weakest]) && c < weakest) {
				weakest = c
			}
		}
		if weakest == "" || len(support[weakest]) >= after {
			return refuse
		}
		for i, r := range recs {
			if r.Content == weakest && r.Attester != self && (victim == nil || r.ReceivedAt.After(victim.ReceivedAt)) {
				victim = &recs[i]
			}
		}
	}
	if victim == nil {
		return refuse
	}
	_, err = vb.evict([]store.AttestationInfo{*victim})
	return err
}

// stored follows a newly stored attestation: it may prove that its signer
// equivocated, which is recorded (and gossiped when publish is set).
func (vb *Book) stored(ctx context.Context, s *trust.Signed, publish bool) {
	vb.metrics.attestations.Inc()
	recs, err := vb.store.AttestationsFor(string(s.Attestation.BuildKey))
	if err != nil {
		return
	}
	var mine []*trust.Signed
	for _, r := range recs {
		if r.Attester != s.Attester.String() {
			continue
		}
		if o, err := vb.Decode(r.Blob); err == nil {
			mine = append(mine, o)
		}
	}
	for _, ev := range trust.DetectEquivocation(mine) {
		if newEv, err := vb.storeEvidence(ev); err == nil && newEv && publish && vb.net != nil {
			vb.log.Warn("equivocation", "peer", ev.Peer.String(), "build_key", ev.BuildKey)
			if err := vb.net.Publish(ctx, s.Attestation.Platform, gossipEvidence(ev.Marshal())); err != nil {
				vb.log.Debug("gossip evidence", "peer", ev.Peer.String(), "err", err) // stored; it travels with the next attest answer
			}
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

// attestationRecord is how an attestation is kept: the blob plus the
// columns the store indexes.
func (vb *Book) attestationRecord(s *trust.Signed, via arrival) store.AttestationRecord {
	a := s.Attestation
	return store.AttestationRecord{
		ID:         s.ID(),
		BuildKey:   string(a.BuildKey),
		VariantKey: string(a.VariantKey),
		CPV:        a.CPV,
		Platform:   a.Platform,
		Attester:   s.Attester.String(),
		Content:    a.Content.String(),
		Blob:       s.Marshal(),
		ReceivedAt: time.Now().UTC(),
		From:       via.from.String(),
		Time:       a.Time.Unix(),
		Addr:       via.addrOf(s.Attester),
	}
}

// evidenceMatters reports whether evidence from the network is worth
// keeping: its peer has an attestation for its build key stored here, and
// no evidence against that peer on that build key is held yet.
func (vb *Book) evidenceMatters(ev trust.Equivocation) (bool, error) {
	_, mine, err := vb.store.CountForBuildKey(string(ev.BuildKey), ev.Peer.String())
	if err != nil || mine == 0 {
		return false, err
	}
	held, err := vb.store.EvidenceFor(string(ev.BuildKey))
	if err != nil {
		return false, err
	}
	for _, e := range held {
		if e.Peer == ev.Peer.String() {
			return false, nil
		}
	}
	return true, nil
}

func (vb *Book) storeEvidence(ev trust.Equivocation) (bool, error) {
	return vb.store.PutEvidence(store.EvidenceRecord{
		Peer:     ev.Peer.String(),
		BuildKey: string(ev.BuildKey),
		Blob:     ev.Marshal(),
		At:       time.Now().UTC(),
	})
}

// reject counts and logs input that failed verification.
func (vb *Book) reject(what string, from peer.ID, err error) {
	vb.metrics.rejected.WithLabelValues(what).Inc()
	// In memory only: a flood of bad messages must not become a flood of
	// fsync'd writes.
	vb.rejected.Add(1)
	vb.log.Debug("rejected "+what, "from", from.String(), "err", err)
}

// OnGossip is the GossipSub validator: a message is forwarded only if it
// verifies here. origin signed the message; relay delivered it.
func (vb *Book) OnGossip(origin, relay peer.ID, platform string, msg []byte) error {
	if len(msg) < 2 {
		return fmt.Errorf("empty gossip message")
	}
	if !vb.gossipRates.Allow(relay) {
		return fmt.Errorf("%w: %s relays more than limits.peer_gossip_rate", wire.ErrGossipIgnore, relay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch msg[0] {
	case gossipTagAttestation:
		added, err := vb.ingestAttestation(ctx, msg[1:], vb.arrivalFrom(relay), true)
		switch {
		case err == nil && !added:
			// Held already (or this daemon's own): a replay must not
			// travel on through this daemon.
			return fmt.Errorf("%w: attestation held here", wire.ErrGossipIgnore)
		case err == nil:
			return nil
		case errors.Is(err, errRejected) && !errors.Is(err, errBudget) && !errors.Is(err, errTooMany):
			return err // invalid: rejected, not forwarded, counted
		default:
			// Valid but over a bound, or this daemon failed to store it:
			// not forwarded, and not counted against the relay that
			// passed on a valid record.
			return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err)
		}
	case gossipTagEvidence:
		ev, err := trust.DecodeEquivocation(msg[1:])
		if err == nil {
			err = ev.Verify()
		}
		if err != nil {
			vb.reject("evidence", relay, err)
			return err
		}
		// Anyone can prove its own equivocation on invented build keys:
		// evidence is kept only against a peer whose attestation for that
		// build key is stored here (where it changes a tally), once per
		// (peer, build key), so the attesters' budgets bound it too.
		if keep, err := vb.evidenceMatters(ev); err != nil || !keep {
			if err == nil {
				err = fmt.Errorf("%w: evidence against %s on %s changes no tally here", wire.ErrGossipIgnore, ev.Peer, ev.BuildKey)
			}
			return err
		}
		_, err = vb.storeEvidence(ev)
		return err
	case gossipTagEndorsement:
		_, err := vb.IngestEndorsement(ctx, msg[1:], relay, false)
		return err
	case gossipTagDemand:
		return vb.ingestDemand(msg[1:], relay, platform)
	case gossipTagIDs:
		return vb.ingestAnnounced(ctx, origin, relay, platform, msg[1:])
	case gossipTagVouch:
		return vb.ingestVouch(msg[1:], relay)
	case gossipTagPGPVouch:
		return vb.ingestPGPVouch(msg[1:], relay)
	default:
		return fmt.Errorf("unknown gossip message type %q", msg[0])
	}
}
