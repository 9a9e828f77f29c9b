package votes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// gossipTagVouch marks a vouch signed by a peer key on a platform topic,
// gossipTagPGPVouch one signed by an OpenPGP key (trust.vouch_keyring).
const (
	gossipTagVouch    = 'v'
	gossipTagPGPVouch = 'g'
)

// Per-identity vouch gossip rate: beyond the per-relay gossip rate, one
// voucher's records are stored and relayed at most this often. A voucher
// needs a handful; its republishing (VouchLoop) fits well inside.
const (
	vouchRate  = 1  // records per second, sustained
	vouchBurst = 64 // records at once
)

// vouchClockSkew is how far in the future a vouch may be dated: peers'
// clocks differ.
const vouchClockSkew = time.Hour

// VouchRepublishEvery is how often VouchLoop gossips this daemon's own
// vouches again, so peers that joined since learn them.
const VouchRepublishEvery = 6 * time.Hour

// vouchState is the vouch graph's result: vouch-derived weights, and
// when they must be computed again.
type vouchState struct {
	// weights are nil until first computed.
	weights map[peer.ID]trust.Vouched
	// gen is the vouch generation (Book.vouchGen) they were computed at,
	// next when one of the vouches read starts or stops counting.
	gen  uint64
	next time.Time
}

// vouchLimits are the store's bounds for a vouch by voucher: this
// daemon's own vouches are exempt from the per-identity share.
func (vb *Book) vouchLimits(voucher peer.ID) store.VouchLimits {
	lim := store.VouchLimits{PerVoucher: vb.limits.PeerVouches, Total: vb.limits.Vouches}
	if voucher == vb.self {
		lim.PerVoucher = 0
	}
	return lim
}

func vouchRecord(s *trust.SignedVouch) store.VouchRecord {
	return newVouchRecord(s.Voucher, s.Vouch, s.Marshal())
}

// newVouchRecord keeps a vouch by voucher (a peer, or an OpenPGP key's
// trust.PGPVoucher name) with its wire blob.
func newVouchRecord(voucher peer.ID, v trust.Vouch, blob []byte) store.VouchRecord {
	return store.VouchRecord{
		Voucher: voucherKey(voucher), Vouchee: v.Vouchee.String(),
		Issued: v.Issued.Unix(), Expires: v.Expires.Unix(),
		ReceivedAt: time.Now().UTC(), Blob: blob,
	}
}

// voucherKey is how the store names a voucher: a peer ID's string, or an
// OpenPGP voucher's name as it is.
func voucherKey(id peer.ID) string {
	if strings.HasPrefix(string(id), trust.PGPVoucherPrefix) {
		return string(id)
	}
	return id.String()
}

// Vouch signs this daemon's vouch for vouchee, lasting ttl (at most
// trust.MaxVouchLifetime), stores it and gossips it on the platform topic.
// A ttl of 0 revokes: the record, newer than any earlier vouch for
// vouchee, replaces it everywhere it arrives.
func (vb *Book) Vouch(ctx context.Context, vouchee peer.ID, ttl time.Duration) (*trust.SignedVouch, error) {
	if vb.key == nil {
		return nil, ErrNoKey
	}
	if vouchee == vb.self {
		return nil, fmt.Errorf("%w: a node cannot vouch for itself", trust.ErrMalformed)
	}
	if ttl < 0 || ttl > trust.MaxVouchLifetime {
		return nil, fmt.Errorf("%w: vouch lifetime %s: want 0 (revoke) to %s", trust.ErrMalformed, ttl, trust.MaxVouchLifetime)
	}
	now := vb.standing.now().UTC().Truncate(time.Second)
	// A vouch replaces an older one only when issued later: a revocation
	// right after a vouch, within the same second, must still win.
	r, found, err := vb.store.GetVouch(vb.self.String(), vouchee.String())
	if err != nil {
		return nil, err
	}
	if found && r.Issued >= now.Unix() {
		now = time.Unix(r.Issued+1, 0).UTC()
	}
	s, err := trust.SignVouch(trust.Vouch{Vouchee: vouchee, Issued: now, Expires: now.Add(ttl)}, vb.key)
	if err != nil {
		return nil, err
	}
	rec := vouchRecord(s)
	rec.Own = true
	if _, err := vb.store.PutVouch(rec, vb.vouchLimits(vb.self)); err != nil {
		return nil, err
	}
	vb.vouchGen.Add(1)
	vb.publishVouch(ctx, s)
	return s, nil
}

// publishVouch gossips one vouch; a failure leaves it stored, to go with
// the next republishing.
func (vb *Book) publishVouch(ctx context.Context, s *trust.SignedVouch) {
	vb.publish(ctx, gossipTagVouch, s.Marshal(), s.Vouch.Vouchee)
}

func (vb *Book) publish(ctx context.Context, tag byte, blob []byte, vouchee peer.ID) {
	if vb.net == nil || vb.platform == "" {
		return
	}
	err := vb.net.JoinPlatform(vb.platform)
	if err == nil {
		err = vb.net.Publish(ctx, vb.platform, append([]byte{tag}, blob...))
	}
	if err != nil {
		vb.log.Debug("gossip vouch", "vouchee", vouchee.String(), "err", err)
	}
}

// ingestVouch checks a vouch gossiped by relay and stores it. Invalid
// records (bad signature, self-vouch, malformed) are errors: rejected and
// counted; valid ones that change nothing here or are over a bound are
// wire.ErrGossipIgnore, so they are not relayed either. A vouch already
// held is accepted and relayed: that is how a republished vouch reaches
// peers that joined since.
func (vb *Book) ingestVouch(blob []byte, relay peer.ID) error {
	s, err := trust.DecodeVouch(blob)
	if err != nil {
		vb.reject("vouch", relay, err)
		return fmt.Errorf("%w: vouch: %w", errRejected, err)
	}
	return vb.keepVouch(s.Voucher, s.Vouch, s.Marshal())
}

// ingestPGPVouch is ingestVouch for a vouch signed by an OpenPGP key. A
// daemon can check only signatures by keys of its own trust.vouch_keyring:
// one by another key is ignored (not relayed, not counted as invalid),
// so such vouches travel among daemons that share the keyring.
func (vb *Book) ingestPGPVouch(blob []byte, relay peer.ID) error {
	p, err := trust.DecodePGPVouch(blob, vb.policy.VouchKeyring)
	if errors.Is(err, trust.ErrUntrustedKey) {
		return fmt.Errorf("%w: OpenPGP vouch: %w", wire.ErrGossipIgnore, err)
	}
	if err != nil {
		vb.reject("vouch", relay, err)
		return fmt.Errorf("%w: OpenPGP vouch: %w", errRejected, err)
	}
	return vb.keepVouch(p.Voucher, p.Vouch, p.Marshal())
}

// ImportPGPVouch checks a vouch an OpenPGP key of trust.vouch_keyring
// signed (trust.PGPVouchFromStatement's envelope), stores it and gossips
// it.
func (vb *Book) ImportPGPVouch(ctx context.Context, blob []byte) (*trust.PGPVouch, error) {
	p, err := trust.DecodePGPVouch(blob, vb.policy.VouchKeyring)
	if err != nil {
		return nil, err
	}
	rec := newVouchRecord(p.Voucher, p.Vouch, p.Marshal())
	rec.Own = true
	if _, err := vb.store.PutVouch(rec, vb.vouchLimits(vb.self)); err != nil {
		return nil, err
	}
	vb.vouchGen.Add(1)
	vb.publish(ctx, gossipTagPGPVouch, p.Marshal(), p.Vouch.Vouchee)
	return p, nil
}

// keepVouch applies the checks every verified vouch passes, whoever signed
// it, and stores it.
func (vb *Book) keepVouch(voucher peer.ID, v trust.Vouch, blob []byte) error {
	now := vb.standing.now()
	switch {
	case voucher == vb.self:
		return fmt.Errorf("%w: own vouch echoed", wire.ErrGossipIgnore)
	case slices.Contains(vb.policy.BlockedPeers, voucher):
		return fmt.Errorf("%w: vouch by blocked peer %s", wire.ErrGossipIgnore, trust.VoucherName(voucher))
	case v.Issued.After(now.Add(vouchClockSkew)):
		return fmt.Errorf("%w: vouch by %s issued %s, in the future", wire.ErrGossipIgnore, trust.VoucherName(voucher), v.Issued.Format(time.RFC3339))
	case !v.Revocation() && !now.Before(v.Expires):
		return fmt.Errorf("%w: vouch by %s expired %s", wire.ErrGossipIgnore, trust.VoucherName(voucher), v.Expires.Format(time.RFC3339))
	case !vb.vouchRates.Allow(voucher):
		return fmt.Errorf("%w: %s sends more than %d vouches per second", wire.ErrGossipIgnore, trust.VoucherName(voucher), vouchRate)
	}
	added, err := vb.store.PutVouch(newVouchRecord(voucher, v, blob), vb.vouchLimits(voucher))
	switch {
	case errors.Is(err, store.ErrVouchFull):
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err)
	case err != nil:
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err) // this daemon failed to store it; the relay did nothing wrong
	case added:
		vb.vouchGen.Add(1)
		return nil
	}
	r, found, err := vb.store.GetVouch(voucherKey(voucher), v.Vouchee.String())
	if err != nil || !found || string(r.Blob) != string(blob) {
		return fmt.Errorf("%w: a newer vouch by %s for %s is held", wire.ErrGossipIgnore, trust.VoucherName(voucher), v.Vouchee)
	}
	return nil
}

// refreshVouches computes the vouch-derived weights again when vouches
// arrived, one of them started or stopped counting, or force is set (a
// new standing epoch moved the roots). When the weights moved, every
// verdict may change and the store is told so.
func (vb *Book) refreshVouches(force bool) error {
	st := &vb.standing
	now := st.now()
	gen := vb.vouchGen.Load()
	st.mu.Lock()
	vs := st.vouch
	due := force || vs.weights == nil || vs.gen != gen || !vs.next.IsZero() && !now.Before(vs.next)
	roots := []peer.ID{vb.self}
	if due {
		for id, e := range st.weights {
			if e.weight >= trust.FullWeight {
				roots = append(roots, id)
			}
		}
	}
	st.mu.Unlock()
	if !due {
		return nil
	}
	p := vb.policy
	roots = append(append(roots, p.TrustedPeers...), p.VouchedPeers...)
	for _, e := range p.VouchKeyring {
		roots = append(roots, trust.PGPVoucher(e))
	}
	recs, err := vb.store.Vouches()
	if err != nil {
		return fmt.Errorf("vouches: %w", err)
	}
	var edges []trust.VouchEdge
	var next time.Time
	later := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, r := range recs {
		issued, expires := time.Unix(r.Issued, 0), time.Unix(r.Expires, 0)
		later(issued)
		later(expires)
		if now.Before(issued) || !now.Before(expires) {
			continue
		}
		voucher, err1 := trust.ParseVoucher(r.Voucher)
		vouchee, err2 := peer.Decode(r.Vouchee)
		if err1 != nil || err2 != nil {
			continue // checked when stored
		}
		edges = append(edges, trust.VouchEdge{Voucher: voucher, Vouchee: vouchee})
	}
	weights := trust.VouchGraph{Roots: roots, Blocked: p.BlockedPeers, Edges: edges, Decay: p.VouchDecay, Hops: p.VouchHops}.Weights()
	st.mu.Lock()
	first := st.vouch.weights == nil
	changed := !maps.Equal(st.vouch.weights, weights)
	st.vouch = vouchState{weights: weights, gen: gen, next: next}
	st.mu.Unlock()
	// Results derived before a restart may rest on vouches that expired
	// since: the first computation counts as a change when any is held.
	if changed && !first || first && len(recs) > 0 {
		return vb.store.WeightsChanged()
	}
	return nil
}

// VouchInfo is one stored vouch as the local API shows it.
type VouchInfo struct {
	Voucher, Vouchee peer.ID
	Issued, Expires  time.Time
	// Active reports whether it counts now (issued, not expired, not a
	// revocation).
	Active bool
}

// Vouches lists the stored vouches made by voucher ("" for all).
func (vb *Book) Vouches(voucher peer.ID) ([]VouchInfo, error) {
	recs, err := vb.store.Vouches()
	if err != nil {
		return nil, err
	}
	now := vb.standing.now()
	var out []VouchInfo
	for _, r := range recs {
		if voucher != "" && r.Voucher != voucherKey(voucher) {
			continue
		}
		vr, err1 := trust.ParseVoucher(r.Voucher)
		ve, err2 := peer.Decode(r.Vouchee)
		if err1 != nil || err2 != nil {
			continue
		}
		vi := VouchInfo{Voucher: vr, Vouchee: ve, Issued: time.Unix(r.Issued, 0).UTC(), Expires: time.Unix(r.Expires, 0).UTC()}
		vi.Active = !now.Before(vi.Issued) && now.Before(vi.Expires)
		out = append(out, vi)
	}
	return out, nil
}

// VouchedWeights are the vouch-derived weights in force: who has weight
// through vouches, how much and by which path.
func (vb *Book) VouchedWeights() (map[peer.ID]trust.Vouched, error) {
	if err := vb.refreshStanding(); err != nil {
		return nil, err
	}
	st := &vb.standing
	st.mu.Lock()
	defer st.mu.Unlock()
	return maps.Clone(st.vouch.weights), nil
}

// VouchLoop gossips this daemon's active vouches again every
// VouchRepublishEvery, so peers that joined since learn them, and prunes
// the records no vouch can need any more. It returns when ctx ends.
func (vb *Book) VouchLoop(ctx context.Context) {
	t := time.NewTicker(VouchRepublishEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		vb.republishVouches(ctx)
	}
}

// republishVouches gossips the vouches and revocations this daemon
// signed or imported once (each origin republishes its own, so the
// network carries each record once per round), and prunes records issued
// over a vouch lifetime ago (every vouch they could have replaced has
// expired too).
func (vb *Book) republishVouches(ctx context.Context) {
	now := vb.standing.now()
	if n, err := vb.store.PruneVouches(now.Add(-trust.MaxVouchLifetime).Unix()); err != nil {
		vb.log.Warn("prune vouches", "err", err)
	} else if n > 0 {
		vb.vouchGen.Add(1)
	}
	recs, err := vb.store.Vouches()
	if err != nil {
		vb.log.Warn("vouches", "err", err)
		return
	}
	for _, r := range recs {
		switch {
		case !r.Own:
		case r.Voucher == vb.self.String():
			if s, err := trust.DecodeVouch(r.Blob); err == nil {
				vb.publishVouch(ctx, s)
			}
		case strings.HasPrefix(r.Voucher, trust.PGPVoucherPrefix):
			if p, err := trust.DecodePGPVouch(r.Blob, vb.policy.VouchKeyring); err == nil {
				vb.publish(ctx, gossipTagPGPVouch, p.Marshal(), p.Vouch.Vouchee)
			}
		}
	}
}
