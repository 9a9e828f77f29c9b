package daemon

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
func (d *Daemon) ingestAttestation(ctx context.Context, blob []byte, via arrival, publish bool) (added bool, err error) {
	n, err := d.ingest(ctx, [][]byte{blob}, via, publish)
	return n > 0, err
}

// ingestBatch is ingestAttestation for a page of a catalog sync: every
// blob is checked the same way, and what passes is stored in one
// transaction (one fsync instead of one per record). A blob that fails is
// counted and skipped; the others are still stored.
func (d *Daemon) ingestBatch(ctx context.Context, blobs [][]byte, via arrival) (int, error) {
	n, err := d.ingest(ctx, blobs, via, false)
	if errors.Is(err, errRejected) || errors.Is(err, errFlooding) {
		err = nil // counted in status; the page's other records stand
	}
	return n, err
}

// ingest vets blobs, checks each against the per-build-key caps and its
// attester's storage budget (evicting that attester's least useful
// records), and stores what passes in one transaction. It returns how many
// were new and the first error met.
func (d *Daemon) ingest(ctx context.Context, blobs [][]byte, via arrival, publish bool) (int, error) {
	var vetted []*trust.Signed
	var firstErr error
	for _, b := range blobs {
		s, ok, err := d.vetAttestation(b, via)
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
	d.ingestMu.Lock()
	var ss []*trust.Signed
	var recs []store.AttestationRecord
	pending := map[string]int{} // build key, and build key + attester → records of this batch
	use := map[peer.ID]store.Usage{}
	var batchBytes int64
	for _, s := range vetted {
		rec := d.attestationRecord(s, via)
		// A copy that arrived meanwhile (another validator, this batch)
		// must not evict anything or count against a cap.
		if known, err := d.store.HasAttestation(rec.ID); err != nil || known || pending["id\x00"+string(rec.ID[:])] > 0 {
			if err != nil {
				d.ingestMu.Unlock()
				return 0, err
			}
			continue
		}
		pending["id\x00"+string(rec.ID[:])]++
		// The checks that evict come after those that only refuse, and
		// a full build key is opened last: nothing is evicted for a
		// record refused afterwards (an attester's own records aside).
		full, err := d.checkCaps(s, pending)
		if err == nil {
			err = d.admit(s.Attester, len(rec.Blob), use[s.Attester])
		}
		if err == nil {
			err = d.admitTotal(s.Attester, len(rec.Blob), batchBytes)
		}
		if err == nil && full {
			err = d.makeRoomInBuild(s)
		}
		if err != nil {
			if !errors.Is(err, errBudget) && !errors.Is(err, errTooMany) {
				d.ingestMu.Unlock()
				return 0, err // the store failed; nothing to blame the peer for
			}
			d.reject("attestation", via.from, err)
			firstErr = cmp.Or(firstErr, fmt.Errorf("%w: %w", errRejected, err))
			continue
		}
		a := s.Attestation
		pending[a.BuildKey]++
		pending[a.BuildKey+"\x00"+s.Attester.String()]++
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
		added, err = d.store.PutAttestations(recs)
	}
	d.ingestMu.Unlock()
	if err != nil {
		return 0, err
	}
	n, quiet := 0, false
	for i, ok := range added {
		if ok {
			n++
			d.stored(ctx, ss[i], publish)
			quiet = quiet || d.flooders.recent(ss[i].Attester)
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
func (d *Daemon) vetAttestation(blob []byte, via arrival) (s *trust.Signed, ok bool, err error) {
	// Catalog syncs and relays repeat what is known: skip those before
	// paying for a signature check.
	id := sha256.Sum256(blob)
	known, err := d.store.HasAttestation(id)
	if err != nil {
		return nil, false, err
	}
	if known {
		// Its attester delivering it directly is the evidence of where
		// it sits that a relayed copy lacked.
		if via.addr != "" {
			if r, found, err := d.store.GetAttestation(id); err == nil && found && r.Addr == "" && r.Attester == via.from.String() {
				if _, err := d.store.SetAttestationAddr(id, via.addr); err != nil {
					return nil, false, err
				}
			}
		}
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
		d.reject("attestation", via.from, err)
		return nil, false, fmt.Errorf("%w: %v", errRejected, err)
	}
	if s.Attester == d.self {
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
func (d *Daemon) checkCaps(s *trust.Signed, pending map[string]int) (full bool, err error) {
	a := s.Attestation
	total, mine, err := d.store.CountForBuildKey(a.BuildKey, s.Attester.String())
	if err != nil {
		return false, err
	}
	mine += pending[a.BuildKey+"\x00"+s.Attester.String()]
	switch {
	case mine >= maxAttestationsPerAttester:
		return false, fmt.Errorf("%w: %s already has %d attestations for %s", errTooMany, s.Attester, mine, a.BuildKey)
	case total+pending[a.BuildKey] >= maxAttestationsPerBuild:
		if pending[a.BuildKey] > 0 {
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
func (d *Daemon) makeRoomInBuild(s *trust.Signed) error {
	bk := s.Attestation.BuildKey
	recs, err := d.store.InfosFor(bk)
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
	self := d.self.String()
	var victim *store.AttestationInfo
	for i, r := range recs {
		if id, err := peer.Decode(r.Attester); err == nil && slices.Contains(d.policy.BlockedPeers, id) {
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
	_, err = d.evict([]store.AttestationInfo{*victim})
	return err
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

// attestationRecord is how an attestation is kept: the blob plus the
// columns the store indexes.
func (d *Daemon) attestationRecord(s *trust.Signed, via arrival) store.AttestationRecord {
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
		From:       via.from.String(),
		Time:       a.Time.Unix(),
		Addr:       via.addrOf(s.Attester),
	}
}

// evidenceMatters reports whether evidence from the network is worth
// keeping: its peer has an attestation for its build key stored here, and
// no evidence against that peer on that build key is held yet.
func (d *Daemon) evidenceMatters(ev trust.Equivocation) (bool, error) {
	_, mine, err := d.store.CountForBuildKey(ev.BuildKey, ev.Peer.String())
	if err != nil || mine == 0 {
		return false, err
	}
	held, err := d.store.EvidenceFor(ev.BuildKey)
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
// verifies here. origin signed the message; relay delivered it.
func (d *Daemon) onGossip(origin, relay peer.ID, platform string, msg []byte) error {
	if len(msg) < 2 {
		return fmt.Errorf("empty gossip message")
	}
	if !d.gossipRates.allow(relay) {
		return fmt.Errorf("%w: %s relays more than limits.peer_gossip_rate", p2p.ErrGossipIgnore, relay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch msg[0] {
	case gossipTagAttestation:
		_, err := d.ingestAttestation(ctx, msg[1:], d.arrivalFrom(relay), true)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errRejected) && !errors.Is(err, errBudget) && !errors.Is(err, errTooMany):
			return err // invalid: not forwarded, and the relay is penalised
		default:
			// Valid but over a bound, or this daemon failed to store it:
			// not forwarded, and the relay that passed on a valid record
			// is not penalised for it.
			return fmt.Errorf("%w: %w", p2p.ErrGossipIgnore, err)
		}
	case gossipTagEvidence:
		ev, err := trust.DecodeEquivocation(msg[1:])
		if err == nil {
			err = ev.Verify()
		}
		if err != nil {
			d.reject("evidence", relay, err)
			return err
		}
		// Anyone can prove its own equivocation on invented build keys:
		// evidence is kept only against a peer whose attestation for that
		// build key is stored here (where it changes a tally), once per
		// (peer, build key), so the attesters' budgets bound it too.
		if keep, err := d.evidenceMatters(ev); err != nil || !keep {
			if err == nil {
				err = fmt.Errorf("%w: evidence against %s on %s changes no tally here", p2p.ErrGossipIgnore, ev.Peer, ev.BuildKey)
			}
			return err
		}
		_, err = d.storeEvidence(ev)
		return err
	case gossipTagEndorsement:
		_, err := d.ingestEndorsement(ctx, msg[1:], relay, false)
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
		if recs, err = d.store.AttestationsByVariantUpTo(k, 4*attestAnswerBytes); err != nil {
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
	// Then one vote per attester, of the contents the most distinct
	// attesters agree on first, then the attesters' further records: the
	// byte cap leaves out padded junk of few-attester contents, however
	// many records each of their identities sent.
	attesters := map[string]map[string]bool{}
	for _, r := range recs {
		if attesters[r.Content] == nil {
			attesters[r.Content] = map[string]bool{}
		}
		attesters[r.Content][r.Attester] = true
	}
	seen := map[string]bool{}
	first := make([]bool, len(recs))
	for i, r := range recs {
		first[i] = !seen[r.Attester]
		seen[r.Attester] = true
	}
	order := make([]int, len(recs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		a, b := recs[i], recs[j]
		if first[i] != first[j] {
			if first[i] {
				return -1
			}
			return 1
		}
		return cmp.Compare(len(attesters[b.Content]), len(attesters[a.Content]))
	})
	size := 0
	for _, i := range order {
		if size += len(recs[i].Blob); size > attestAnswerBytes {
			break
		}
		out = append(out, recs[i].Blob)
	}
	return out, nil
}

// attestAnswerBytes bounds the attestations of one attest/1 answer: a
// build key's caps allow 512 records, and sixteen concurrent answers of
// those must not cost hundreds of MiB.
const attestAnswerBytes = 4 << 20

// serveCatalog answers /gentoo-p2p/catalog/2: the platform's attestations
// after the cursor in (time, id) order, each led by the endorsements of its
// build key the answer has not carried yet. A page holds at most MaxBlobs
// blobs and about catalogPageBytes of them, endorsements included, and
// always at least one attestation, so a client paging from the last
// attestation it got always moves on. It is read from the store's time
// index, so its memory and work are the page's whatever the catalog
// holds.
func (d *Daemon) serveCatalog(ctx context.Context, platform string, cur p2p.CatalogCursor) ([][]byte, error) {
	recs, err := d.store.CatalogPage(platform, cur.Since, cur.After, p2p.MaxBlobs/2, catalogPageBytes)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	size := 0
	sent := map[string]bool{}
	for _, r := range recs {
		group := [][]byte{}
		if !sent[r.BuildKey] {
			sent[r.BuildKey] = true
			es, err := d.store.EndorsementsFor(r.BuildKey)
			if err != nil {
				return nil, err
			}
			group = append(group, es...)
		}
		group = append(group, r.Blob)
		n := 0
		for _, b := range group {
			n += len(b)
		}
		if len(out) > 0 && (len(out)+len(group) > p2p.MaxBlobs || size+n > catalogPageBytes) {
			break
		}
		out = append(out, group...)
		size += n
	}
	return out, nil
}

// catalogPageBytes bounds one catalog page, endorsements included: a few
// hundred honest records, and what sixteen concurrent requests can make
// this daemon hold stays in tens of MiB.
const catalogPageBytes = 2 << 20

func blobs(recs []store.AttestationRecord) [][]byte {
	out := make([][]byte, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Blob)
	}
	return out
}

// syncCatalogFrom pulls a peer's catalog for our platform (a newcomer's way
// to fill its catalog without waiting for gossip), from cur on. It stops
// after maxCatalogPages pages, so a flood of records cannot keep one sync
// going for ever; more reports that the peer had more, and next is where
// to go on.
func (d *Daemon) syncCatalogFrom(ctx context.Context, p peer.ID, cur p2p.CatalogCursor) (n int, next p2p.CatalogCursor, more bool, err error) {
	seen := map[[32]byte]bool{}
	via := d.arrivalFrom(p)
	got := 0
	for range maxCatalogPages {
		if got >= maxSyncBytes {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		bs, err := d.node.SyncCatalog(pctx, p, d.platform, cur)
		cancel()
		if err != nil {
			return n, cur, false, err
		}
		var atts, endorsements [][]byte
		moved := false
		next := cur
		for _, b := range bs {
			// A peer that ignores the cursor repeats itself: judge each
			// blob once.
			id := sha256.Sum256(b)
			if seen[id] {
				continue
			}
			seen[id] = true
			got += len(b)
			if bytes.HasPrefix(b, endorsementMagic) {
				endorsements = append(endorsements, b)
				continue
			}
			atts = append(atts, b)
			// The next page starts after the last attestation in (time,
			// id) order, whatever order a peer sent.
			if s, err := d.decodeAttestation(b); err == nil {
				c := p2p.CatalogCursor{Since: s.Attestation.Time.Unix(), After: id[:]}
				if cursorAfter(c, next) {
					next, moved = c, true
				}
			}
		}
		added, err := d.ingestBatch(ctx, atts, via)
		n += added
		if err != nil {
			// The cursor stays before this page: it is asked for again.
			return n, cur, false, err
		}
		cur = next
		// After the page's attestations: an endorsement by a signer not
		// configured here is kept only for a build key someone attested.
		for _, b := range endorsements {
			if _, err := d.ingestEndorsement(ctx, b, p, false); err != nil {
				d.log.Debug("catalog sync: endorsement not kept", "peer", p.String(), "err", err)
			}
		}
		if !moved {
			return n, p2p.CatalogCursor{}, false, nil
		}
	}
	return n, cur, true, nil
}

// cursorAfter reports whether a comes after b in (time, id) order.
func cursorAfter(a, b p2p.CatalogCursor) bool {
	if a.Since != b.Since {
		return a.Since > b.Since
	}
	return bytes.Compare(a.After, b.After) > 0
}

// maxSyncedPeers bounds the catalog loop's memory of peers.
const maxSyncedPeers = 4096

// maxCatalogPages and maxSyncBytes bound one catalog sync; a peer with
// more is synced again at the next tick, from where this sync stopped, at
// most maxSyncBursts times before the usual pause: what one peer makes
// this daemon decode and verify is bounded in time too.
const (
	maxCatalogPages = 64
	maxSyncBytes    = 64 << 20
	maxSyncBursts   = 4
)

// catalogLoop syncs the catalog from every newly connected peer, and again
// every few minutes, so a catalog fills even when gossip was missed.
func (d *Daemon) catalogLoop(ctx context.Context) {
	type syncState struct {
		next   time.Time         // when to sync this peer again
		cur    p2p.CatalogCursor // where a sync cut short goes on
		bursts int               // syncs cut short in a row
	}
	peers := make(map[peer.ID]*syncState)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		for _, pi := range d.node.Peers() {
			st, ok := peers[pi.ID]
			if ok && time.Now().Before(st.next) {
				continue
			}
			if !ok {
				if len(peers) >= maxSyncedPeers {
					clear(peers) // everyone is synced once more, from the start
				}
				st = &syncState{}
				peers[pi.ID] = st
			}
			n, next, more, err := d.syncCatalogFrom(ctx, pi.ID, st.cur)
			if n > 0 {
				d.log.Info("catalog sync", "peer", pi.ID.String(), "new", n)
			}
			st.cur = next
			switch {
			case err != nil:
				// Try this peer again in a minute, not in ten.
				d.log.Debug("catalog sync", "peer", pi.ID.String(), "err", err)
				st.next = time.Now().Add(time.Minute)
			case more && st.bursts < maxSyncBursts:
				// Cut short by the page bound: go on at the next tick.
				st.bursts++
				st.next = time.Now()
			case more:
				// Still more after several syncs in a row: go on from
				// here after the usual pause.
				st.bursts = 0
				st.next = time.Now().Add(10 * time.Minute)
			default:
				// Done: the next sync starts from the beginning again, so
				// records that arrived there dated earlier are not missed.
				st.bursts = 0
				st.next = time.Now().Add(10 * time.Minute)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
