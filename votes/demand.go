package votes

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// gossipTagDemand marks a signed demand record on a platform topic.
const gossipTagDemand = 'd'

// DemandHorizon is how long a demand record counts: a peer that stopped
// using a variant a month ago no longer asks builders for it.
const DemandHorizon = 30 * 24 * time.Hour

// Per-identity demand gossip rate: beyond the per-relay gossip rate, one
// identity's demand records are verified and stored at most this often
// (an `emerge @world` of binaries bursts; a Sybil identity gains nothing
// from a faster stream than its storage share anyway).
const (
	demandRate  = 1   // records per second, sustained
	demandBurst = 300 // records at once
)

// pruneDemandEvery is how often stored demand past the horizon is pruned.
const pruneDemandEvery = time.Hour

// ErrNoKey means the Book was made without this daemon's key, so it cannot
// sign its own demand records.
var ErrNoKey = errors.New("votes: no peer key to sign with")

// demandSkew is how far ahead of this daemon's clock a demand may be
// dated: clock skew, not a day (records are evicted oldest first, so one
// dated ahead would outlive honest ones at the store-wide bound).
const demandSkew = 10 * time.Minute

// bindDemandDescriptor is trust's DemandBinder: the descriptor must yield
// the demand's variant key, cpv and platform, and must not still say
// "native" (its variant would name other code on every CPU).
func bindDemandDescriptor(raw json.RawMessage) (keys.Variant, string, string, error) {
	var desc identity.Descriptor
	if err := json.Unmarshal(raw, &desc); err != nil {
		return "", "", "", err
	}
	if err := refuseNativeFlags(desc); err != nil {
		return "", "", "", err
	}
	// Builders hand cpv and USE to portage, and search prints them.
	if err := desc.CheckBuildable(); err != nil {
		return "", "", "", err
	}
	return desc.VariantKey(), desc.CPV, desc.Platform(), nil
}

// demandLimits are the store's bounds for a record by attester: this
// daemon's own records are exempt from the per-identity share.
func (vb *Book) demandLimits(attester peer.ID) store.DemandLimits {
	lim := store.DemandLimits{PerAttester: vb.limits.PeerDemands, Total: vb.limits.Demands}
	if attester == vb.self {
		// This machine's own use is bounded by what it installs, and
		// strangers filling the store must not silence it.
		lim.PerAttester, lim.Total = 0, 0
	}
	return lim
}

// RecordDemand signs this daemon's demand for desc's variant with its
// peer key, stores it and gossips it on the variant's platform topic. The
// descriptor's linked libraries (SlotDeps, Requires) are left out: the
// variant key does not cover them. A descriptor whose flags still say
// "native" is refused; resolve it first (identity.Descriptor.ResolveNative).
// A record older than one this daemon already holds for the variant is
// not stored again, and nil is returned with it.
func (vb *Book) RecordDemand(ctx context.Context, desc identity.Descriptor, kind trust.DemandKind) (*trust.SignedDemand, error) {
	if vb.key == nil {
		return nil, ErrNoKey
	}
	if err := refuseNativeFlags(desc); err != nil {
		return nil, err
	}
	desc.SlotDeps, desc.Requires = nil, nil
	raw, err := json.Marshal(desc)
	if err != nil {
		return nil, err
	}
	return vb.signDemand(ctx, trust.Demand{
		VariantKey: desc.VariantKey(), CPV: desc.CPV, Platform: desc.Platform(),
		Descriptor: raw, Kind: kind, Time: vb.standing.now(),
	})
}

// signDemand signs d with the peer key, stores it and gossips it on its
// platform's topic (RecordDemand, and the refresh of an own record).
func (vb *Book) signDemand(ctx context.Context, d trust.Demand) (*trust.SignedDemand, error) {
	s, err := trust.SignDemand(d, vb.key)
	if err != nil {
		return nil, err
	}
	vb.pruneDemand()
	added, err := vb.store.PutDemand(demandRecord(s), vb.demandLimits(vb.self))
	if err != nil || !added {
		return s, err
	}
	if vb.net != nil {
		if err := vb.announce(ctx, s.Demand.Platform, wire.RecordDemand, s.Marshal()); err != nil {
			vb.log.Debug("gossip demand", "variant_key", s.Demand.VariantKey, "err", err) // stored; counted here, peers miss it
		}
	}
	return s, nil
}

func demandRecord(s *trust.SignedDemand) store.DemandRecord {
	d := s.Demand
	return store.DemandRecord{
		VariantKey: string(d.VariantKey), Platform: d.Platform, CPV: d.CPV, Attester: s.Attester.String(),
		Kind: string(d.Kind), Time: d.Time.Unix(), ReceivedAt: time.Now().UTC(), Blob: s.Marshal(),
	}
}

// ingestDemand checks a demand record gossiped on topic and stores it.
// Invalid records (bad signature, descriptor not binding the variant key,
// wrong topic, dated in the future) are errors: rejected and counted;
// valid records over a bound are wire.ErrGossipIgnore.
func (vb *Book) ingestDemand(blob []byte, relay peer.ID, topic string) error {
	s, err := vb.vetDemand(blob, relay, "gossiped on topic", topic)
	if err != nil {
		return err
	}
	if err := vb.admitDemand(s); err != nil {
		return err
	}
	vb.pruneDemand()
	added, err := vb.store.PutDemand(demandRecord(s), vb.demandLimits(s.Attester))
	switch {
	case errors.Is(err, store.ErrDemandFull):
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err)
	case err != nil:
		return fmt.Errorf("%w: %w", wire.ErrGossipIgnore, err) // this daemon failed to store it; the relay did nothing wrong
	case !added:
		return fmt.Errorf("%w: a newer demand by %s for %s is held", wire.ErrGossipIgnore, s.Attester, s.Demand.VariantKey)
	}
	return nil
}

// vetDemand runs the checks a demand record from the network fails when it
// is invalid, whether gossiped or synced: signature, descriptor binding,
// the platform it came for (came says how: "gossiped on topic"), a date
// not in the future. A failure is
// counted and wraps errRejected.
func (vb *Book) vetDemand(blob []byte, from peer.ID, came, platform string) (*trust.SignedDemand, error) {
	s, err := vb.decodeDemand(blob)
	if err == nil {
		err = s.Demand.Bind(bindDemandDescriptor)
	}
	if err == nil && s.Demand.Platform != platform {
		err = fmt.Errorf("demand for platform %s %s %s", s.Demand.Platform, came, platform)
	}
	if err == nil && s.Demand.Time.After(vb.standing.now().Add(demandSkew)) {
		err = fmt.Errorf("demand dated %s, in the future", s.Demand.Time.Format(time.RFC3339))
	}
	if err != nil {
		vb.reject("demand", from, err)
		return nil, fmt.Errorf("%w: demand: %w", errRejected, err)
	}
	return s, nil
}

// admitDemand refuses a valid record this daemon does not keep: its own
// coming back (a dropped one must stay dropped), a blocked peer's, one
// past the horizon, or one over its identity's rate
// (wire.ErrGossipIgnore).
func (vb *Book) admitDemand(s *trust.SignedDemand) error {
	d := s.Demand
	switch {
	case s.Attester == vb.self:
		return fmt.Errorf("%w: own demand echoed", wire.ErrGossipIgnore)
	case slices.Contains(vb.policy.BlockedPeers, s.Attester):
		return fmt.Errorf("%w: demand by blocked peer %s", wire.ErrGossipIgnore, s.Attester)
	case d.Time.Before(vb.standing.now().Add(-DemandHorizon)):
		return fmt.Errorf("%w: demand by %s dated %s, past the horizon", wire.ErrGossipIgnore, s.Attester, d.Time.Format(time.RFC3339))
	case !vb.demandRates.Allow(s.Attester):
		return fmt.Errorf("%w: %s sends more than %d demand records per second", wire.ErrGossipIgnore, s.Attester, demandRate)
	}
	return nil
}

// pruneDemand deletes demand past the horizon, at most once per
// pruneDemandEvery.
func (vb *Book) pruneDemand() {
	now := vb.standing.now()
	last := vb.demandPruned.Load()
	if last != 0 && now.Sub(time.Unix(last, 0)) < pruneDemandEvery || !vb.demandPruned.CompareAndSwap(last, now.Unix()) {
		return
	}
	if n, err := vb.store.PruneDemand(now.Add(-DemandHorizon)); err != nil {
		vb.log.Warn("prune demand", "err", err)
	} else if n > 0 {
		vb.log.Debug("pruned demand past the horizon", "records", n)
	}
}

// Want is one variant peers want on a platform: what to build and how
// many distinct identities asked for it.
type Want struct {
	// Variant is the variant key.
	Variant keys.Variant
	// CPV is category/package-version.
	CPV string
	// USE is the enabled USE flags (limited to IUSE_EFFECTIVE, sorted).
	USE []string
	// Platform is the gossip platform (CHOST and flags).
	Platform string
	// Descriptor is what to build: the ebuild (EbuildDigest, the SHA-256
	// of the .ebuild; Eclasses with their md5-cache digests), USE, CHOST
	// and flags, as the newest demand states them (without SlotDeps or
	// Requires: the variant key does not cover them).
	Descriptor identity.Descriptor
	// Wanters is how many distinct identities want it (records signed
	// within DemandHorizon).
	Wanters int
	// Kinds counts the wanters by how the want arose.
	Kinds map[trust.DemandKind]int
	// LastSeen is when it was last wanted (the newest record's time).
	LastSeen time.Time
}

// Wanted lists the variants wanted on platform, most wanters first (then
// most recently wanted), at most n of them (all when n ≤ 0). Demand never
// affects a verdict; this is for builders choosing what to spend CPU on.
func (vb *Book) Wanted(platform string, n int) ([]Want, error) {
	return vb.WantedWhere(platform, n, nil)
}

// WantedWhere is Wanted of the variants keep accepts (nil: all): keep is
// asked before a variant's record is read, so a filtered listing reads
// only the records it returns.
func (vb *Book) WantedWhere(platform string, n int, keep func(v keys.Variant, cpv string) bool) ([]Want, error) {
	counts, err := vb.store.DemandByPlatform(platform, vb.standing.now().Add(-DemandHorizon))
	if err != nil {
		return nil, err
	}
	out := []Want{}
	for _, c := range counts {
		if n > 0 && len(out) >= n {
			break
		}
		if keep != nil && !keep(keys.Variant(c.VariantKey), c.CPV) {
			continue
		}
		blob, ok, err := vb.store.DemandBlob(c.VariantKey, c.Newest.Attester)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // pruned or replaced since the tally
		}
		desc, err := vb.wantDescs.descriptor(blob, vb.decodeDemand)
		if err != nil {
			return nil, fmt.Errorf("demand record for %s: %w", c.VariantKey, err)
		}
		w := Want{
			Variant: keys.Variant(c.VariantKey), CPV: c.CPV, USE: desc.USE, Platform: c.Platform,
			Descriptor: desc, Wanters: c.Wanters, Kinds: map[trust.DemandKind]int{}, LastSeen: c.LastSeen,
		}
		for k, v := range c.Kinds {
			w.Kinds[trust.DemandKind(k)] = v
		}
		out = append(out, w)
	}
	return out, nil
}

// WantCount is how many distinct identities want variant v (records
// signed within DemandHorizon); 0 when none, or when the store fails.
func (vb *Book) WantCount(v keys.Variant) int {
	c, err := vb.store.DemandFor(string(v), vb.standing.now().Add(-DemandHorizon))
	if err != nil {
		return 0
	}
	return c.Wanters
}

// SortByDemand orders builds most wanted first: by the distinct peers
// whose demand names the build's variant (WantCount), then by how many
// attestations vouch for it, keeping the given order among equals. Mirror
// mode replicates in this order ("popular first").
func (vb *Book) SortByDemand(builds []Build) {
	variant := func(b Build) keys.Variant {
		if len(b.Atts) == 0 {
			return ""
		}
		return b.Atts[0].Attestation.VariantKey
	}
	wanted := map[keys.Variant]int{}
	for _, b := range builds {
		if v := variant(b); v != "" {
			if _, ok := wanted[v]; !ok {
				wanted[v] = vb.WantCount(v)
			}
		}
	}
	slices.SortStableFunc(builds, func(x, y Build) int {
		return cmp.Or(cmp.Compare(wanted[variant(y)], wanted[variant(x)]), cmp.Compare(len(y.Atts), len(x.Atts)))
	})
}

// wantDescriptors keeps the descriptors of the demand records Wanted has
// read, by record id: a builder plans again and again from the same
// records, and each was verified when it arrived; without this, every plan
// checked the signature of each of up to 4096 records again.
type wantDescriptors struct {
	mu sync.Mutex
	m  map[[32]byte]identity.Descriptor
}

// maxWantDescriptors bounds the cache: the demand store's default bound
// (limits.demands); when full it starts over.
const maxWantDescriptors = 1 << 16

// descriptor decodes blob with decode (its signature checked the first
// time) and returns its descriptor.
func (w *wantDescriptors) descriptor(blob []byte, decode func([]byte) (*trust.SignedDemand, error)) (identity.Descriptor, error) {
	id := sha256.Sum256(blob)
	w.mu.Lock()
	d, ok := w.m[id]
	w.mu.Unlock()
	if ok {
		return d, nil
	}
	s, err := decode(blob)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(s.Demand.Descriptor, &d); err != nil {
		return d, err
	}
	w.mu.Lock()
	if w.m == nil || len(w.m) >= maxWantDescriptors {
		w.m = make(map[[32]byte]identity.Descriptor)
	}
	w.m[id] = d
	w.mu.Unlock()
	return d, nil
}
