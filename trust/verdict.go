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
	// Tally has one entry per content id, most counted votes first.
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
// counts per content. Own builds (self) count as one ordinary vote.
//
// Deciding, in order:
//  1. Signer backing (a configured signer's endorsement, a PGP-verified GPKG,
//     or a trusted peer's attestation) allows a content at any threshold and
//     wins over competing votes: the signer is the authority the user chose.
//     Backing for two different contents is a dispute ("signer-conflict").
//  2. Without backing, require_signer (or threshold 0) refuses.
//  3. A content with ≥ Threshold counted votes is allowed unless another
//     content has ≥ Dispute counted votes ("dispute"); two contents at the
//     threshold are disputed too.
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

	// 4. Tally per content: one voter entry per peer, backing per content.
	type voter struct {
		info VoterInfo
		addr netip.Addr
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
		} else {
			vr := &voter{info: VoterInfo{Peer: id, Time: a.Time, Toolchain: toolchain(a.Builder), Self: id == self, Trusted: trusted[id]}, addr: vote.Addr}
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
		for src := range t.backing {
			ct.Backing = append(ct.Backing, src)
		}
		slices.Sort(ct.Backing)
		ct.Endorsed = len(ct.Backing) > 0
		v.Tally = append(v.Tally, ct)
	}
	slices.SortFunc(v.Tally, func(x, y ContentTally) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), bytes.Compare(x.Content.Image[:], y.Content.Image[:]), bytes.Compare(x.Content.Metadata[:], y.Content.Metadata[:]))
	})

	decide(&v, eff)
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
		v.Reasons = append(v.Reasons, "no counted votes for this build key")
		return
	}

	var quorum []int
	for i, ct := range v.Tally {
		if ct.Count >= eff.Threshold {
			quorum = append(quorum, i)
		}
	}
	if len(quorum) == 0 {
		v.Decision, v.Rule = Unknown, RuleBelowThreshold
		best := v.Tally[0]
		v.Reasons = append(v.Reasons, fmt.Sprintf("no content reached the threshold: best is %s with %d of %d", best.Content, best.Count, eff.Threshold))
		return
	}
	// A content wins when it reached the threshold and no other content has
	// the dispute count. With dispute ≤ threshold (the usual case) two
	// contents at the threshold block each other; with a larger dispute
	// count a big majority can win over a smaller quorum.
	rivalsOf := func(i int) []int {
		var out []int
		for j, ct := range v.Tally {
			if j != i && ct.Count >= eff.Dispute {
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
	if len(winners) == 1 {
		i := winners[0]
		allow(i, RuleQuorum, fmt.Sprintf("content %s has %d distinct counted attesters (threshold %d) and no competitor has %d",
			v.Tally[i].Content, v.Tally[i].Count, eff.Threshold, eff.Dispute))
		return
	}
	involved := map[int]bool{}
	for _, i := range quorum {
		involved[i] = true
		for _, j := range rivalsOf(i) {
			involved[j] = true
		}
	}
	var idx []int
	for i := range v.Tally {
		if involved[i] {
			idx = append(idx, i)
		}
	}
	lead := v.Tally[quorum[0]]
	if len(quorum) > 1 {
		dispute(idx, RuleDispute, fmt.Sprintf("%d different contents reached the threshold %d and none is free of a competitor with %d votes (dispute count)", len(quorum), eff.Threshold, eff.Dispute))
		return
	}
	dispute(idx, RuleDispute, fmt.Sprintf("content %s has %d votes (threshold %d) but %d competing content(s) have at least %d (dispute count)",
		lead.Content, lead.Count, eff.Threshold, len(idx)-1, eff.Dispute))
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
	fmt.Fprintf(&b, "policy: threshold %s, dispute %d, require signer %s, distinct networks %s\n",
		threshold, v.Dispute, yesNo(v.RequireSigner), yesNo(v.DistinctNetworks))
	if len(v.Tally) == 0 {
		b.WriteString("no votes\n")
	}
	for _, ct := range v.Tally {
		fmt.Fprintf(&b, "content %s: %s, %d counted vote(s) of %d\n", ct.Content, ct.Decision, ct.Count, len(ct.Voters))
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
