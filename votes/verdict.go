package votes

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// Verdict recomputes the decision for one build key from the stored
// attestations and evidence. Nothing is cached: a change of policy or a new
// piece of evidence takes effect on the next call.
func (vb *Book) Verdict(buildKey keys.Build) (trust.Verdict, []*trust.Signed, error) {
	if err := vb.refreshStanding(); err != nil {
		return trust.Verdict{}, nil, err
	}
	recs, err := vb.store.AttestationsFor(string(buildKey))
	if err != nil {
		return trust.Verdict{}, nil, err
	}
	votes := make([]trust.Vote, 0, len(recs))
	atts := make([]*trust.Signed, 0, len(recs))
	endorsed := vb.endorsementsFor(buildKey)
	for _, r := range recs {
		s, err := vb.Decode(r.Blob)
		if err != nil {
			continue // verified when stored; a decode failure here means corruption
		}
		atts = append(atts, s)
		a := s.Attestation
		w, from := vb.standingOf(s.Attester)
		votes = append(votes, trust.Vote{
			Att:          s,
			Addr:         recordAddr(r),
			Endorsements: endorsed[a.Content],
			PGPVerified:  vb.pgpVerified(a),
			Standing:     w,
			StandingFrom: from,
		})
	}
	evr, err := vb.store.EvidenceFor(string(buildKey))
	if err != nil {
		return trust.Verdict{}, nil, err
	}
	var evidence []trust.Equivocation
	for _, e := range evr {
		if ev, err := trust.DecodeEquivocation(e.Blob); err == nil {
			evidence = append(evidence, ev)
		}
	}
	v := trust.Evaluate(vb.policy, buildKey, votes, evidence, vb.self)
	vb.metrics.verdicts.WithLabelValues(v.Decision.String()).Inc()
	vb.credit(v)
	return v, atts, nil
}

// recordAddr is the address an attestation arrived from directly, as
// recorded at arrival; zero when it came relayed.
func recordAddr(r store.AttestationRecord) netip.Addr {
	a, err := netip.ParseAddr(r.Addr)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Resolve turns a CLI query — a build key, a variant key or a CPV
// (with or without category) — into the build keys it names.
func (vb *Book) Resolve(q string) ([]keys.Build, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, fmt.Errorf("empty query: give a build key, variant key or category/package-version")
	}
	if bk, err := keys.ParseBuild(q); err == nil {
		recs, err := vb.store.AttestationsFor(string(bk))
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			return []keys.Build{bk}, nil
		}
		vrecs, err := vb.store.AttestationsByVariant(string(bk))
		if err != nil {
			return nil, err
		}
		if len(vrecs) > 0 {
			return uniqueBuildKeys(vrecs), nil
		}
		return []keys.Build{bk}, nil
	}
	recs, err := vb.store.AttestationsByCPV(strings.TrimPrefix(q, "="))
	if err != nil {
		return nil, err
	}
	return uniqueBuildKeys(recs), nil
}

func uniqueBuildKeys(recs []store.AttestationRecord) []keys.Build {
	seen := map[keys.Build]bool{}
	var out []keys.Build
	for _, r := range recs {
		if bk := keys.Build(r.BuildKey); !seen[bk] {
			seen[bk] = true
			out = append(out, bk)
		}
	}
	slices.Sort(out)
	return out
}

// Build is a build key whose verdict allows a content id, with the
// attestations that vouch for that content.
type Build struct {
	Verdict trust.Verdict
	// Atts are the verified attestations for the allowed content, own
	// first, then oldest first.
	Atts []*trust.Signed
}

// AllowedBuilds returns the allowed builds of a platform ("" = every platform).
// Build keys no vote count could allow are skipped before their votes are
// decoded: a store full of one-vote junk costs an index walk, not a
// verdict per record.
func (vb *Book) AllowedBuilds(platform string) ([]Build, error) {
	bks, err := vb.Candidates(platform)
	if err != nil {
		return nil, err
	}
	builds, ok, err := vb.AllowedBuildsOf(bks)
	if err != nil {
		return nil, err
	}
	var out []Build
	for i, b := range builds {
		if ok[i] {
			out = append(out, b)
		}
	}
	return out, nil
}

// Generation changes whenever a verdict of this book may have: it counts
// the store's committed writes of attestations, endorsements and evidence
// (store.VotesGeneration; the policy is fixed for a Book's life). A result
// derived from verdicts computed after Generation returned g is still
// right while Generation returns g: read it first.
func (vb *Book) Generation() uint64 {
	// A new standing epoch moves the store's generation: read it after.
	if err := vb.refreshStanding(); err != nil {
		vb.log.Warn("standing ledger", "err", err)
	}
	return vb.store.VotesGeneration()
}

// Changed is the generation (Generation) of the last change of build key
// bk's votes, or a later one: a verdict on bk computed after Generation
// returned at least Changed(bk) is still right.
func (vb *Book) Changed(bk keys.Build) uint64 { return vb.store.VotesChanged(string(bk)) }

// candidates remembers Candidates per platform for one generation.
type candidates struct {
	mu         sync.Mutex
	byPlatform map[string]candidateList
}

type candidateList struct {
	gen uint64
	bks []keys.Build
}

// Candidates are the build keys of a platform ("" = every platform), sorted,
// whose verdict some count of their votes could make Allowed: the others
// (fewer attesters than any threshold, and no backing that allows below
// it) are left out without decoding a vote. The list is kept while
// Generation stays the same; callers must not modify it.
func (vb *Book) Candidates(platform string) ([]keys.Build, error) {
	gen := vb.Generation()
	vb.cands.mu.Lock()
	if c, ok := vb.cands.byPlatform[platform]; ok && c.gen == gen {
		vb.cands.mu.Unlock()
		return c.bks, nil
	}
	vb.cands.mu.Unlock()
	voters, err := vb.store.BuildKeyVoters(platform)
	if err != nil {
		return nil, err
	}
	out := []keys.Build{}
	for _, k := range slices.Sorted(maps.Keys(voters)) {
		bk := keys.Build(k)
		if hopeless, err := vb.hopeless(bk, voters[k]); err != nil {
			return nil, err
		} else if !hopeless {
			out = append(out, bk)
		}
	}
	vb.cands.mu.Lock()
	if vb.cands.byPlatform == nil {
		vb.cands.byPlatform = map[string]candidateList{}
	}
	vb.cands.byPlatform[platform] = candidateList{gen: gen, bks: out}
	vb.cands.mu.Unlock()
	return out, nil
}

// AllowedBuildsOf is AllowedBuild for each of bks, computed on every CPU:
// ok[i] reports whether bks[i] is allowed, and builds[i] is then its
// Build. The first store error fails the whole call.
func (vb *Book) AllowedBuildsOf(bks []keys.Build) (builds []Build, ok []bool, err error) {
	builds, ok = make([]Build, len(bks)), make([]bool, len(bks))
	errs := make([]error, len(bks))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(bks)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(bks) {
					return
				}
				builds[i], ok[i], errs[i] = vb.AllowedBuild(bks[i])
				if errs[i] != nil {
					next.Store(int64(len(bks))) // the others need not be computed
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return builds, ok, nil
}

// hopeless reports that build key bk cannot be allowed whatever its
// attesters voted: they are fewer than the lowest threshold any package
// has, and none of the backings that allow below the threshold is
// possible (no trusted peer among them, no endorsement held, no PGP
// keyring configured).
func (vb *Book) hopeless(bk keys.Build, attesters []string) (bool, error) {
	if len(vb.policy.PGPKeyring) > 0 {
		return false, nil
	}
	for _, a := range attesters {
		if id, err := peer.Decode(a); err == nil && vb.isTrustedPeer(id) {
			return false, nil
		}
	}
	// Only an endorsement by a signer configured here backs a build; the
	// ones relayed for other users' signers change nothing here.
	es, err := vb.store.EndorsementsFor(string(bk))
	if err != nil {
		return false, err
	}
	for _, b := range es {
		if e, err := DecodeEndorsement(b); err == nil && vb.configuredSigner(e.Endorsement.SignerKey) {
			return false, nil
		}
	}
	lowest := vb.policy.Threshold
	for _, o := range vb.policy.Overrides {
		if o.Threshold != nil {
			lowest = min(lowest, *o.Threshold)
		}
	}
	// Threshold 0 is signer only: without backing nothing is allowed.
	return lowest <= 0 || len(attesters) < lowest, nil
}

// AllowedBuild returns the allowed content of one build key, if any.
func (vb *Book) AllowedBuild(buildKey keys.Build) (Build, bool, error) {
	v, atts, err := vb.Verdict(buildKey)
	if err != nil {
		return Build{}, false, err
	}
	if v.Decision != trust.Allowed || v.Content == nil {
		return Build{}, false, nil
	}
	// Only attestations by voters that counted describe files worth
	// fetching: a blocked or equivocating peer may name the allowed content
	// next to a file of its own (junk of any size that stalls at the end).
	counted := map[peer.ID]bool{}
	for _, t := range v.Tally {
		if t.Content != *v.Content {
			continue
		}
		for _, vi := range t.Voters {
			if vi.Counted || vi.Trusted && vi.Reason == "" {
				counted[vi.Peer] = true
			}
		}
	}
	ab := Build{Verdict: v}
	for _, s := range atts {
		if s.Attestation.Content == *v.Content && (counted[s.Attester] || s.Attester == vb.self) {
			ab.Atts = append(ab.Atts, s)
		}
	}
	sort.SliceStable(ab.Atts, func(i, j int) bool {
		si, sj := ab.Atts[i].Attester == vb.self, ab.Atts[j].Attester == vb.self
		if si != sj {
			return si
		}
		return ab.Atts[i].Attestation.Time.Before(ab.Atts[j].Attestation.Time)
	})
	return ab, len(ab.Atts) > 0, nil
}

// decodedCache keeps attestations already decoded and verified, by the
// SHA-256 of their bytes: verdicts are recomputed on every request (so a
// change in policy or evidence counts at once), but the signatures under
// them never change.
type decodedCache struct {
	mu    sync.Mutex
	m     map[[32]byte]*trust.Signed
	bytes int
	max   int // maxDecodedBytes unless Options.DecodedCacheBytes says otherwise
}

// maxDecodedBytes bounds the cache by the size of the blobs it holds (a
// decoded attestation takes about as much): a flood of large attestations
// must not grow it past a few tens of MiB. When full it starts over
// (cheap, and the hot set refills within one request).
const maxDecodedBytes = 32 << 20

// Decode is trust.Decode with the cache. Callers must not modify
// the result.
func (vb *Book) Decode(blob []byte) (*trust.Signed, error) {
	id := sha256.Sum256(blob)
	vb.decoded.mu.Lock()
	s, ok := vb.decoded.m[id]
	vb.decoded.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := trust.Decode(blob)
	if err != nil {
		return nil, err
	}
	vb.decoded.mu.Lock()
	if vb.decoded.m == nil || vb.decoded.bytes+len(blob) > vb.decoded.max {
		vb.decoded.m = make(map[[32]byte]*trust.Signed)
		vb.decoded.bytes = 0
	}
	vb.decoded.m[id] = s
	vb.decoded.bytes += len(blob)
	vb.decoded.mu.Unlock()
	return s, nil
}
