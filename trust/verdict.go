package trust

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Decision is the outcome for one build key (or one content id in a tally).
type Decision int

// Decisions. Only Allowed lets a build reach portage.
const (
	// Unknown: not enough eligible votes yet; ask more peers later.
	Unknown Decision = iota
	// Allowed: this content may be served to portage.
	Allowed
	// Refused: policy forbids it (require-signer without backing, a content
	// that lost to a signer-backed or uncontested quorum, invalid input).
	Refused
	// Disputed: competing contents both have real support; nothing is
	// allowed until a signer or the user decides.
	Disputed
)

var decisionNames = [...]string{Unknown: "unknown", Allowed: "allowed", Refused: "refused", Disputed: "disputed"}

// String returns the lowercase name used in JSON and explanations.
func (d Decision) String() string {
	if d >= 0 && int(d) < len(decisionNames) {
		return decisionNames[d]
	}
	return fmt.Sprintf("decision(%d)", int(d))
}

// MarshalText writes the lowercase name, so API JSON is readable.
func (d Decision) MarshalText() ([]byte, error) {
	if d < 0 || int(d) >= len(decisionNames) {
		return nil, fmt.Errorf("trust: unknown decision %d", int(d))
	}
	return []byte(d.String()), nil
}

// UnmarshalText parses the lowercase name, for the CLI reading API JSON.
func (d *Decision) UnmarshalText(b []byte) error {
	for i, n := range decisionNames {
		if string(b) == n {
			*d = Decision(i)
			return nil
		}
	}
	return fmt.Errorf("trust: unknown decision %q", b)
}

// Rules name what decided a verdict; Verdict.Rule holds one of them.
const (
	// RuleQuorum: a content reached the threshold, no competitor reached the
	// dispute count.
	RuleQuorum = "quorum"
	// RuleSigner: a configured Ed25519 signer endorsed the content.
	RuleSigner = "signer"
	// RulePGPSigner: the content's GPKG verified against the PGP keyring.
	RulePGPSigner = "pgp-signer"
	// RuleTrustedPeer: a trusted peer attested the content.
	RuleTrustedPeer = "trusted-peer"
	// RuleDispute: competing contents both have enough votes.
	RuleDispute = "dispute"
	// RuleSignerConflict: signer backing exists for two different contents.
	RuleSignerConflict = "signer-conflict"
	// RuleBelowThreshold: votes exist but no content reached the threshold.
	RuleBelowThreshold = "below-threshold"
	// RuleRequireSigner: the policy needs signer backing (require_signer or
	// threshold 0) and no content has it.
	RuleRequireSigner = "require-signer"
	// RuleNoVotes: no eligible vote for this build key.
	RuleNoVotes = "no-votes"
	// RuleInvalidPolicy: the policy failed Validate; nothing is allowed.
	RuleInvalidPolicy = "invalid-policy"
	// RuleInvalidBuildKey: the build key asked about is not a canonical CID.
	RuleInvalidBuildKey = "invalid-build-key"
)

// ReasonNoStanding is why an attester in good standing but without
// weight does not count. Agreeing with an allowed build is how it earns
// weight: such voters are still marked Corroborated.
const ReasonNoStanding = "no standing yet: a fresh identity can attest but does not count (trust.fresh_weight)"

// Vote is one signed attestation as the daemon holds it, with what the
// daemon observed around it.
type Vote struct {
	// Att is the signed attestation (re-verified by Evaluate).
	Att *Signed
	// Addr is the address the attestation arrived from when its attester
	// delivered it directly; the zero Addr means relayed or unknown, and
	// under DistinctNetworks all such votes share one network.
	Addr netip.Addr
	// Endorsements are signer co-signatures the daemon holds for this
	// vote's (build key, content).
	Endorsements []Endorsement
	// PGPVerified is set by the daemon after VerifyGPKGSignatures against
	// Policy.PGPKeyring succeeded for a file with this vote's content id.
	PGPVerified bool
	// Standing is the attester's earned standing in thousandths (0 to
	// FullWeight) as this daemon's ledger holds it, or what signed vouches
	// give it (VouchGraph), whichever is more, and StandingFrom says where
	// it comes from; an attester without standing weighs
	// Policy.FreshWeight.
	Standing     int
	StandingFrom string
}

// VoterInfo is one attester in a tally, counted or not and why.
type VoterInfo struct {
	// Peer is the attester.
	Peer peer.ID `json:"peer"`
	// Time is the attestation time (the earliest, if the peer attested the
	// same content more than once).
	Time time.Time `json:"time"`
	// Addr is the observed address, if known.
	Addr string `json:"addr,omitempty"`
	// Toolchain is the attester's claimed portage and gcc versions, which
	// often explain a dispute between honest builders.
	Toolchain string `json:"toolchain,omitempty"`
	// Class is the attester's build environment (Builder.Class) and
	// Builder the fields it is made of, from its newest attestation of
	// the content: votes dispute each other only when their environments
	// are compatible (Builder.Compatible).
	Class   string  `json:"class,omitempty"`
	Builder Builder `json:"builder"`
	// Weight is what the vote counts, in thousandths (FullWeight for an
	// established attester), and WeightFrom where that comes from.
	Weight     int    `json:"weight"`
	WeightFrom string `json:"weight_from,omitempty"`
	// Corroborated is set on the voters of an allowed content that was
	// allowed without them: their agreement earns them standing.
	Corroborated bool `json:"corroborated,omitempty"`
	// Counted reports whether the vote counts toward the threshold.
	Counted bool `json:"counted"`
	// Reason says why a vote does not count.
	Reason string `json:"reason,omitempty"`
	// Self marks this node's own build.
	Self bool `json:"self,omitempty"`
	// Trusted marks a configured trusted peer.
	Trusted bool `json:"trusted,omitempty"`
}

// ContentTally is the support for one content id.
type ContentTally struct {
	// Content is the content id voted for.
	Content ContentID `json:"content"`
	// Count is the number of counted distinct attesters.
	Count int `json:"count"`
	// Weight is the content's support in thousandths: the established
	// voters' weight plus the others', which together count at most
	// threshold−1 (an established voter must agree for a quorum).
	Weight int `json:"weight"`
	// Decision is this content's outcome: allowed, refused (it lost),
	// disputed, or unknown.
	Decision Decision `json:"decision"`
	// Voters lists every attester, counted or not.
	Voters []VoterInfo `json:"voters"`
	// Endorsed reports signer backing of any kind.
	Endorsed bool `json:"endorsed"`
	// Backing names each backing source ("signer ed25519:…", "pgp-signer",
	// "trusted-peer 12D3…").
	Backing []string `json:"backing,omitempty"`
}

// Verdict is the decision for one build key, with everything needed to
// explain it.
type Verdict struct {
	// BuildKey is the build key decided on.
	BuildKey keys.Build `json:"build_key"`
	// CPV is the package the votes name ("" without votes).
	CPV string `json:"cpv,omitempty"`
	// Decision is the overall outcome.
	Decision Decision `json:"decision"`
	// Content is the allowed content id, nil unless Decision is Allowed.
	Content *ContentID `json:"content,omitempty"`
	// Rule names what decided (one of the Rule constants).
	Rule string `json:"rule"`
	// Threshold, Dispute, RequireSigner and DistinctNetworks are the
	// effective policy values applied.
	Threshold        int  `json:"threshold"`
	Dispute          int  `json:"dispute"`
	RequireSigner    bool `json:"require_signer"`
	DistinctNetworks bool `json:"distinct_networks"`
	// FreshWeight is Policy.FreshWeight, in thousandths.
	FreshWeight int `json:"fresh_weight"`
	// Tally has one entry per content id, heaviest first.
	Tally []ContentTally `json:"tally"`
	// Reasons are human sentences: the deciding one first, then notes on
	// ignored votes and evidence.
	Reasons []string `json:"reasons,omitempty"`
}

// Evaluate decides whether any content may be installed for buildKey.
//
// Counting: each vote is re-verified; votes for another build key, invalid
// votes, blocked peers and peers with equivocation evidence for this build
// key (given, or found among the votes) never count. Each peer counts once
// per content. With DistinctNetworks, at most one attester per /24 or /48
// counts per content. Each counted vote has a weight, in thousandths:
// FullWeight for this node, trusted and vouched peers, else the
// attester's standing (Vote.Standing) or Policy.FreshWeight, whichever is
// more; a vote of weight 0 is listed, not counted. A content's weight is
// its full-weight voters' plus the others', which count together at most
// threshold−1 (and just under one dispute), so attesters without full
// standing never decide alone.
//
// Deciding, in order:
//  1. Signer backing (a configured signer's endorsement, a PGP-verified GPKG,
//     or a trusted peer's attestation) allows a content at any threshold and
//     wins over competing votes: the signer is the authority the user chose.
//     Backing for two different contents is a dispute ("signer-conflict").
//  2. Without backing, require_signer (or threshold 0) refuses.
//  3. A content of weight ≥ Threshold is allowed unless another content
//     of a compatible build environment (Builder.Compatible) weighs ≥
//     Dispute against it ("dispute"); two such contents at the threshold
//     are disputed too. Contents of other environments are other builds:
//     when several are allowed, the heaviest is.
//  4. Otherwise the build key is unknown ("below-threshold", "no-votes").
//
// Contents that lose to an allowed content are marked Refused in the tally.
// All comparisons are on integers.
func Evaluate(p Policy, buildKey keys.Build, votes []Vote, evidence []Equivocation, self peer.ID) Verdict {
	v := Verdict{BuildKey: buildKey, Tally: []ContentTally{}}
	if err := checkCID("build key", string(buildKey)); err != nil {
		v.Decision, v.Rule = Refused, RuleInvalidBuildKey
		v.Reasons = []string{err.Error()}
		return v
	}
	if err := p.Validate(); err != nil {
		v.Decision, v.Rule = Refused, RuleInvalidPolicy
		v.Reasons = []string{err.Error()}
		return v
	}
	var notes []string

	// 1. Keep verified votes for this build key.
	var valid []Vote
	for i, vote := range votes {
		if vote.Att == nil {
			notes = append(notes, fmt.Sprintf("vote %d ignored: no attestation", i))
			continue
		}
		if err := vote.Att.Verify(); err != nil {
			notes = append(notes, fmt.Sprintf("vote %d ignored: %v", i, err))
			continue
		}
		if vote.Att.Attestation.BuildKey != buildKey {
			notes = append(notes, fmt.Sprintf("vote by %s ignored: it attests build key %s", vote.Att.Attester, vote.Att.Attestation.BuildKey))
			continue
		}
		valid = append(valid, vote)
	}

	// 2. Effective policy: the strictest over every cpv the votes claim, so
	// a mislabelled cpv cannot pick a weaker override.
	var cpvs []string
	for _, vote := range valid {
		if !slices.Contains(cpvs, vote.Att.Attestation.CPV) {
			cpvs = append(cpvs, vote.Att.Attestation.CPV)
		}
	}
	slices.Sort(cpvs)
	eff := p.For("")
	if len(cpvs) > 0 {
		v.CPV = cpvs[0]
		eff = p.For(cpvs[0])
		for _, c := range cpvs[1:] {
			eff = stricter(eff, p.For(c))
		}
		if len(cpvs) > 1 {
			notes = append(notes, fmt.Sprintf("attestations disagree on the cpv (%s); the strictest policy of them applies", strings.Join(cpvs, ", ")))
		}
	}
	v.Threshold, v.Dispute, v.RequireSigner, v.DistinctNetworks = eff.Threshold, eff.Dispute, eff.RequireSigner, eff.DistinctNetworks
	v.FreshWeight = p.FreshWeight

	// 3. Equivocators for this build key: given evidence and the votes.
	equivocators := make(map[peer.ID]bool)
	for _, e := range evidence {
		if e.BuildKey != buildKey {
			continue
		}
		if err := e.Verify(); err != nil {
			notes = append(notes, fmt.Sprintf("equivocation evidence against %s ignored: %v", e.Peer, err))
			continue
		}
		equivocators[e.Peer] = true
	}
	signed := make([]*Signed, len(valid))
	for i, vote := range valid {
		signed[i] = vote.Att
	}
	for _, e := range detectEquivocation(signed, false) { // verified above
		equivocators[e.Peer] = true
	}
	for _, id := range sortedPeers(equivocators) {
		notes = append(notes, fmt.Sprintf("%s signed different contents for this build key: all its votes here are void", id))
	}

	blocked := make(map[peer.ID]bool, len(p.BlockedPeers))
	for _, id := range p.BlockedPeers {
		blocked[id] = true
	}
	trusted := make(map[peer.ID]bool, len(p.TrustedPeers))
	for _, id := range p.TrustedPeers {
		trusted[id] = true
	}
	vouched := make(map[peer.ID]bool, len(p.VouchedPeers))
	for _, id := range p.VouchedPeers {
		vouched[id] = true
	}
	// weightOf is what a voter in good standing counts, and why.
	weightOf := func(id peer.ID, vote Vote) (int, string) {
		switch {
		case id == self:
			return FullWeight, "this node"
		case trusted[id]:
			return FullWeight, "trusted peer"
		case vouched[id]:
			return FullWeight, "vouched by you"
		case vote.Standing > p.FreshWeight:
			return min(vote.Standing, FullWeight), vote.StandingFrom
		case p.FreshWeight > 0:
			return p.FreshWeight, "fresh identity (trust.fresh_weight)"
		}
		return 0, ""
	}

	// 4. Tally per content: one voter entry per peer, backing per content.
	type voter struct {
		info VoterInfo
		addr netip.Addr
		vote Vote
		// latest is the time of the attestation the environment is
		// taken from: a daemon re-signs its build when it learns more of
		// its environment, and the newest statement is the one it stands by.
		latest time.Time
	}
	type tally struct {
		content ContentID
		voters  []*voter
		byPeer  map[peer.ID]*voter
		backing map[string]string // source name -> rule
	}
	tallies := make(map[ContentID]*tally)
	for _, vote := range valid {
		a := vote.Att.Attestation
		t := tallies[a.Content]
		if t == nil {
			t = &tally{content: a.Content, byPeer: make(map[peer.ID]*voter), backing: make(map[string]string)}
			tallies[a.Content] = t
		}
		id := vote.Att.Attester
		if existing := t.byPeer[id]; existing != nil {
			if a.Time.Before(existing.info.Time) {
				existing.info.Time = a.Time
			}
			if !existing.addr.IsValid() && vote.Addr.IsValid() {
				existing.addr = vote.Addr
				existing.info.Addr = vote.Addr.String()
			}
			existing.vote.Standing = max(existing.vote.Standing, vote.Standing)
			if a.Time.After(existing.latest) {
				existing.latest = a.Time
				existing.info.Builder, existing.info.Class = a.Builder, a.Builder.Class()
				existing.info.Toolchain = toolchain(a.Builder)
			}
		} else {
			vr := &voter{info: VoterInfo{Peer: id, Time: a.Time, Toolchain: toolchain(a.Builder), Class: a.Builder.Class(), Builder: a.Builder, Self: id == self, Trusted: trusted[id]}, addr: vote.Addr, vote: vote, latest: a.Time}
			if vote.Addr.IsValid() {
				vr.info.Addr = vote.Addr.String()
			}
			t.byPeer[id] = vr
			t.voters = append(t.voters, vr)
		}
		// An endorsement vouches for (build key, content) whoever carries
		// it. PGP and trusted-peer backing ride on this vote, so they count
		// only when the voter itself is in good standing: a blocked or
		// equivocating peer must not be able to borrow them.
		for _, e := range vote.Endorsements {
			if e.VerifyBy(buildKey, a.Content, p.Signers) == nil {
				t.backing["signer "+e.Signer()] = RuleSigner
			}
		}
		inGoodStanding := !blocked[id] && !equivocators[id]
		if vote.PGPVerified && len(p.PGPKeyring) > 0 && inGoodStanding {
			t.backing["pgp-signer"] = RulePGPSigner
		}
		if trusted[id] && inGoodStanding {
			t.backing["trusted-peer "+id.String()] = RuleTrustedPeer
		}
	}

	var tallyList []*tally
	for _, t := range tallies {
		// Stable order inside a tally: by time, then peer id.
		slices.SortFunc(t.voters, func(x, y *voter) int {
			return cmp.Or(x.info.Time.Compare(y.info.Time), cmp.Compare(x.info.Peer, y.info.Peer))
		})
		seenNet := make(map[netip.Prefix]peer.ID)
		for _, vr := range t.voters {
			switch {
			case blocked[vr.info.Peer]:
				vr.info.Reason = "blocked peer"
			case equivocators[vr.info.Peer]:
				vr.info.Reason = "equivocated on this build key"
			default:
				vr.info.Weight, vr.info.WeightFrom = weightOf(vr.info.Peer, vr.vote)
				if vr.info.Weight == 0 {
					vr.info.Reason = ReasonNoStanding
					continue
				}
				// Attestations that arrived through a relay or another
				// peer prove nothing about where their attester sits: they
				// all share one bucket. This node's own vote has no arrival
				// address and takes no bucket.
				prefix, ok := networkOf(vr.addr)
				if eff.DistinctNetworks && (ok || !vr.info.Self) {
					name := prefix.String()
					if !ok {
						prefix, name = netip.Prefix{}, "relayed or unknown"
					}
					if first, dup := seenNet[prefix]; dup {
						vr.info.Reason = fmt.Sprintf("same network %s as %s", name, first)
						continue
					}
					seenNet[prefix] = vr.info.Peer
				}
				vr.info.Counted = true
			}
		}
		tallyList = append(tallyList, t)
	}

	v.Tally = make([]ContentTally, 0, len(tallyList))
	for _, t := range tallyList {
		ct := ContentTally{Content: t.content}
		for _, vr := range t.voters {
			ct.Voters = append(ct.Voters, vr.info)
			if vr.info.Counted {
				ct.Count++
			}
		}
		ct.Weight = support(ct.Voters, eff.Threshold, "")
		for src := range t.backing {
			ct.Backing = append(ct.Backing, src)
		}
		slices.Sort(ct.Backing)
		ct.Endorsed = len(ct.Backing) > 0
		v.Tally = append(v.Tally, ct)
	}
	slices.SortFunc(v.Tally, func(x, y ContentTally) int {
		return cmp.Or(cmp.Compare(y.Weight, x.Weight), cmp.Compare(y.Count, x.Count), bytes.Compare(x.Content.Image[:], y.Content.Image[:]), bytes.Compare(x.Content.Metadata[:], y.Content.Metadata[:]))
	})

	decide(&v, eff)
	unweighed := 0
	for _, ct := range v.Tally {
		for _, vi := range ct.Voters {
			if vi.Reason == ReasonNoStanding {
				unweighed++
			}
		}
	}
	if unweighed > 0 {
		notes = append(notes, fmt.Sprintf("%d attester(s) without standing were not counted (trust.fresh_weight %d %%)", unweighed, Weight(p.FreshWeight).Percent()))
	}
	v.Reasons = append(v.Reasons, notes...)
	return v
}

// backingRule picks the rule name reported for a backed content: an
// explicit signer first, then PGP, then a trusted peer.
func backingRule(ct *ContentTally) string {
	rule := RuleTrustedPeer
	for _, b := range ct.Backing {
		switch {
		case strings.HasPrefix(b, "signer "):
			return RuleSigner
		case b == "pgp-signer":
			rule = RulePGPSigner
		}
	}
	return rule
}

// decide applies the decision rules to a filled tally.
func decide(v *Verdict, eff Policy) {
	allow := func(i int, rule, reason string) {
		v.Decision, v.Rule = Allowed, rule
		c := v.Tally[i].Content
		v.Content = &c
		for j := range v.Tally {
			if j == i {
				v.Tally[j].Decision = Allowed
			} else {
				v.Tally[j].Decision = Refused
			}
		}
		v.Reasons = append(v.Reasons, reason)
	}
	dispute := func(idx []int, rule, reason string) {
		v.Decision, v.Rule = Disputed, rule
		for _, i := range idx {
			v.Tally[i].Decision = Disputed
		}
		v.Reasons = append(v.Reasons, reason)
	}

	var backed []int
	for i := range v.Tally {
		if v.Tally[i].Endorsed {
			backed = append(backed, i)
		}
	}
	switch len(backed) {
	case 0:
	case 1:
		i := backed[0]
		ct := &v.Tally[i]
		reason := fmt.Sprintf("content %s is backed by %s", ct.Content, strings.Join(ct.Backing, ", "))
		if len(v.Tally) > 1 {
			reason += "; signer backing overrides the competing votes"
		}
		allow(i, backingRule(ct), reason)
		// Agreeing with a build the user's signer or trusted peer backs
		// earns standing; the trusted peer itself needs none.
		for j := range ct.Voters {
			vi := &ct.Voters[j]
			vi.Corroborated = (vi.Counted || vi.Reason == ReasonNoStanding) && !vi.Self && !vi.Trusted
		}
		return
	default:
		var names []string
		for _, i := range backed {
			names = append(names, v.Tally[i].Content.String())
		}
		dispute(backed, RuleSignerConflict, fmt.Sprintf("signer backing exists for %d different contents (%s)", len(backed), strings.Join(names, ", ")))
		return
	}

	total := 0
	for _, ct := range v.Tally {
		total += ct.Count
	}
	if eff.signerOnly() {
		v.Decision, v.Rule = Refused, RuleRequireSigner
		for j := range v.Tally {
			v.Tally[j].Decision = Refused
		}
		v.Reasons = append(v.Reasons, fmt.Sprintf("policy needs signer backing and no content has it (%d counted votes do not suffice)", total))
		return
	}
	if total == 0 {
		v.Decision, v.Rule = Unknown, RuleNoVotes
		reason := "no counted votes for this build key"
		if len(v.Tally) > 0 {
			reason += " (attesters without standing do not count: trust.fresh_weight, trust.vouched_peers)"
		}
		v.Reasons = append(v.Reasons, reason)
		return
	}

	need := eff.Threshold * FullWeight
	var quorum []int
	for i, ct := range v.Tally {
		if ct.Weight >= need {
			quorum = append(quorum, i)
		}
	}
	if len(quorum) == 0 {
		v.Decision, v.Rule = Unknown, RuleBelowThreshold
		best := v.Tally[0]
		reason := fmt.Sprintf("no content reached the threshold: best is %s with weight %s of %d", best.Content, Weight(best.Weight), eff.Threshold)
		if full, _ := weigh(best.Voters, func(VoterInfo) bool { return true }); full == 0 && best.Count >= eff.Threshold {
			reason += " (attesters without full standing count at most threshold−1 together: an established attester must agree)"
		}
		v.Reasons = append(v.Reasons, reason)
		if n := sameClassContents(v.Tally); n > 1 {
			v.Reasons = append(v.Reasons, fmt.Sprintf("%d different contents come from one build environment: the package may not build reproducibly", n))
		}
		return
	}
	// A content wins when it reached the threshold and no other content
	// of its build environment has the dispute weight. Contents of other
	// environments (another gcc, binutils, libc or build directory) are
	// other builds, not competitors. With dispute ≤ threshold (the usual
	// case) two contents of one environment at the threshold block each
	// other; with a larger dispute a big majority can win over a smaller
	// quorum.
	rivalsOf := func(i int) []int {
		var out []int
		for j := range v.Tally {
			if j != i && disputeWeight(v.Tally[j], v.Tally[i], eff.Dispute) >= eff.Dispute*FullWeight {
				out = append(out, j)
			}
		}
		return out
	}
	var winners []int
	for _, i := range quorum {
		if len(rivalsOf(i)) == 0 {
			winners = append(winners, i)
		}
	}
	// Two winners of one environment still dispute each other.
	involved := map[int]bool{}
	for x, i := range winners {
		for _, j := range winners[x+1:] {
			if sharesClass(v.Tally[i], v.Tally[j]) {
				involved[i], involved[j] = true, true
			}
		}
	}
	if len(winners) > 0 && len(involved) == 0 {
		i := winners[0] // the heaviest: the tally is sorted by weight
		ct := v.Tally[i]
		heaviest := 0
		for j := range v.Tally {
			if j != i {
				heaviest = max(heaviest, disputeWeight(v.Tally[j], ct, eff.Dispute))
			}
		}
		reason := fmt.Sprintf("content %s has weight %s from %d attester(s) (threshold %d); the heaviest competitor of its build environment weighs %s as a dispute, under %d (attesters without full standing stay under one dispute together)",
			ct.Content, Weight(ct.Weight), ct.Count, eff.Threshold, Weight(heaviest), eff.Dispute)
		allow(i, RuleQuorum, reason)
		for _, j := range winners[1:] {
			v.Reasons = append(v.Reasons, fmt.Sprintf("content %s, from another build environment, reached the threshold too; the heavier one is served", v.Tally[j].Content))
		}
		markCorroborated(&v.Tally[i], eff.Threshold)
		return
	}
	for _, i := range quorum {
		if len(winners) == 0 || involved[i] {
			involved[i] = true
			for _, j := range rivalsOf(i) {
				involved[j] = true
			}
		}
	}
	var idx []int
	for i := range v.Tally {
		if involved[i] {
			idx = append(idx, i)
		}
	}
	lead := v.Tally[quorum[0]]
	reason := fmt.Sprintf("content %s has weight %s (threshold %d) but %d competing content(s) of its build environment have at least %d (dispute weight)",
		lead.Content, Weight(lead.Weight), eff.Threshold, len(idx)-1, eff.Dispute)
	if len(quorum) > 1 {
		reason = fmt.Sprintf("%d different contents reached the threshold %d and none is free of a competitor of its build environment with weight %d (dispute)", len(quorum), eff.Threshold, eff.Dispute)
	}
	dispute(idx, RuleDispute, reason)
	if n := sameClassContents(v.Tally); n > 1 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d different contents come from one build environment: the package may not build reproducibly, or some attesters lie", n))
	}
}

// Weight renders thousandths as a decimal ("2.5").
type Weight int

// Percent is the weight in percent of FullWeight, as trust.fresh_weight
// is configured.
func (w Weight) Percent() int { return int(w) * 100 / FullWeight }

func (w Weight) String() string {
	s := fmt.Sprintf("%d.%03d", w/FullWeight, w%FullWeight)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// support is a content's weight from its counted voters (less one peer,
// when without is set): established voters count fully; the others
// together count at most threshold−1, so they can help an established
// voter reach the threshold but never reach it by themselves, however
// many identities they are.
func support(voters []VoterInfo, threshold int, without peer.ID) int {
	full, partial := weigh(voters, func(vi VoterInfo) bool { return without == "" || vi.Peer != without })
	return full*FullWeight + min(partial, max(0, threshold-1)*FullWeight)
}

// weigh sums the counted voters that keep selects: how many have full
// weight, and the others' weight.
func weigh(voters []VoterInfo, keep func(VoterInfo) bool) (full, partial int) {
	for _, vi := range voters {
		if !vi.Counted || !keep(vi) {
			continue
		}
		if vi.Weight >= FullWeight {
			full++
		} else {
			partial += vi.Weight
		}
	}
	return full, partial
}

// disputeWeight is what rival weighs against target: its counted voters
// of target's build environments (a voter that stated none is of every
// environment), where voters without full standing together stay below
// one dispute — they cannot block a build by themselves either.
func disputeWeight(rival, target ContentTally, dispute int) int {
	full, partial := weigh(rival.Voters, func(vi VoterInfo) bool { return ofClasses(vi.Builder, target) })
	return full*FullWeight + min(partial, dispute*FullWeight-1)
}

// ofClasses reports whether a voter of environment b shares a build
// environment with any counted voter of ct.
func ofClasses(b Builder, ct ContentTally) bool {
	for _, vi := range ct.Voters {
		if vi.Counted && b.Compatible(vi.Builder) {
			return true
		}
	}
	return false
}

// sharesClass reports whether two contents have counted voters of one
// build environment.
func sharesClass(a, b ContentTally) bool {
	for _, vi := range a.Voters {
		if vi.Counted && ofClasses(vi.Builder, b) {
			return true
		}
	}
	return false
}

// sameClassContents is the largest number of contents whose counted
// voters stated one and the same build environment: more than one means
// that environment does not reproduce the package.
func sameClassContents(tally []ContentTally) int {
	per := map[string]map[ContentID]bool{}
	most := 0
	for _, ct := range tally {
		for _, vi := range ct.Voters {
			if !vi.Counted || vi.Class == "" {
				continue
			}
			if per[vi.Class] == nil {
				per[vi.Class] = map[ContentID]bool{}
			}
			per[vi.Class][ct.Content] = true
			most = max(most, len(per[vi.Class]))
		}
	}
	return most
}

// markCorroborated flags the voters of an allowed content whose agreement
// was not needed: the content would have been allowed without them. Only
// they earn standing from it, so a group cannot lift itself.
func markCorroborated(ct *ContentTally, threshold int) {
	for i := range ct.Voters {
		vi := &ct.Voters[i]
		if (vi.Counted || vi.Reason == ReasonNoStanding) && !vi.Self && support(ct.Voters, threshold, vi.Peer) >= threshold*FullWeight {
			vi.Corroborated = true
		}
	}
}

// networkOf maps an address to the network that counts once under
// DistinctNetworks: its /24 (IPv4, including IPv4-mapped IPv6) or /48.
func networkOf(a netip.Addr) (netip.Prefix, bool) {
	if !a.IsValid() {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, false
	}
	return p, true
}

// toolchain renders a Builder for explanations ("" when unknown).
func toolchain(b Builder) string {
	var parts []string
	if b.Portage != "" {
		parts = append(parts, "portage "+b.Portage)
	}
	if b.GCC != "" {
		parts = append(parts, "gcc "+b.GCC)
	}
	return strings.Join(parts, ", ")
}

// sortedPeers returns the keys of a peer set in order.
func sortedPeers(set map[peer.ID]bool) []peer.ID {
	out := make([]peer.ID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Explain renders the verdict for "gentoo-p2pd trust explain": the
// decision and the rule, the policy applied, then every content id with its
// voters (who, when, counted or why not) and its signer backing.
func (v Verdict) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "build key %s", v.BuildKey)
	if v.CPV != "" {
		fmt.Fprintf(&b, " (%s)", v.CPV)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "decision: %s (rule: %s)\n", v.Decision, v.Rule)
	if v.Content != nil {
		fmt.Fprintf(&b, "allowed content: %s\n", v.Content)
	}
	threshold := fmt.Sprint(v.Threshold)
	if v.Threshold == 0 {
		threshold = "0 (signer only)"
	}
	fmt.Fprintf(&b, "policy: threshold %s, dispute %d, require signer %s, distinct networks %s, fresh keys weigh %d %%\n",
		threshold, v.Dispute, yesNo(v.RequireSigner), yesNo(v.DistinctNetworks), Weight(v.FreshWeight).Percent())
	if len(v.Tally) == 0 {
		b.WriteString("no votes\n")
	}
	for _, ct := range v.Tally {
		fmt.Fprintf(&b, "content %s: %s, weight %s from %d counted vote(s) of %d\n", ct.Content, ct.Decision, Weight(ct.Weight), ct.Count, len(ct.Voters))
		for _, src := range ct.Backing {
			fmt.Fprintf(&b, "  backed by %s\n", src)
		}
		for _, vi := range ct.Voters {
			status := "counted"
			if !vi.Counted {
				status = "not counted: " + vi.Reason
			}
			var tags []string
			if vi.Self {
				tags = append(tags, "this node")
			}
			if vi.Trusted {
				tags = append(tags, "trusted")
			}
			if vi.Addr != "" {
				tags = append(tags, vi.Addr)
			}
			if vi.Toolchain != "" {
				tags = append(tags, vi.Toolchain)
			}
			if vi.Class != "" && !strings.Contains(vi.Toolchain, vi.Class) {
				tags = append(tags, vi.Class)
			}
			if vi.Counted {
				tags = append(tags, fmt.Sprintf("weight %s: %s", Weight(vi.Weight), vi.WeightFrom))
			}
			if vi.Corroborated {
				tags = append(tags, "agreement earns standing")
			}
			tag := ""
			if len(tags) > 0 {
				tag = " [" + strings.Join(tags, ", ") + "]"
			}
			fmt.Fprintf(&b, "  %s %s%s: %s\n", vi.Peer, vi.Time.UTC().Format(time.RFC3339), tag, status)
		}
	}
	if len(v.Reasons) > 0 {
		b.WriteString("why:\n")
		for _, r := range v.Reasons {
			fmt.Fprintf(&b, "  - %s\n", r)
		}
	}
	return b.String()
}

// yesNo renders a boolean for humans.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
