package trust

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/libp2p/go-libp2p/core/peer"
)

// signerKey returns a deterministic build-server key.
func signerKey(n int) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(fmt.Sprintf("gentoo-p2p test signer %d", n)))
	return ed25519.NewKeyFromSeed(seed[:])
}

func signerPub(n int) ed25519.PublicKey { return signerKey(n).Public().(ed25519.PublicKey) }

// tv describes one vote in a verdict test.
type tv struct {
	peer     int
	content  string
	addr     string
	buildKey string // label; default "hello"
	cpv      string
	endorse  []int  // signers endorsing (buildKey, content)
	endorseC string // endorse this content instead (mismatch)
	pgp      bool
	tamper   bool // change the content in memory after signing
}

func TestEvaluate(t *testing.T) {
	bk := testCID(t, "hello")
	keyring := openpgp.EntityList{&openpgp.Entity{}}
	withSigner := func(p *Policy) { p.Signers = []ed25519.PublicKey{signerPub(1), signerPub(2)} }
	cases := []struct {
		name     string
		policy   func(p *Policy)
		votes    []tv
		evidence func(t *testing.T) []Equivocation
		self     int
		want     Decision
		rule     string
		content  string         // allowed content label
		counts   map[string]int // counted votes per content label
		perC     map[string]Decision
	}{
		{name: "no votes", want: Unknown, rule: RuleNoVotes},
		{name: "quorum met", votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			want: Allowed, rule: RuleQuorum, content: "A", counts: map[string]int{"A": 3}},
		{name: "below threshold", votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}},
			want: Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "duplicate votes count once", votes: []tv{{peer: 1, content: "A"}, {peer: 1, content: "A"}, {peer: 1, content: "A"}, {peer: 2, content: "A"}},
			want: Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "single competing vote disputes", votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "B"}},
			want: Disputed, rule: RuleDispute, counts: map[string]int{"A": 3, "B": 1}, perC: map[string]Decision{"A": Disputed, "B": Disputed}},
		{name: "competitor below dispute count is refused", policy: func(p *Policy) { p.Dispute = 2 },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "B"}},
			want:  Allowed, rule: RuleQuorum, content: "A", perC: map[string]Decision{"A": Allowed, "B": Refused}},
		{name: "tie at threshold", policy: func(p *Policy) { p.Threshold, p.Dispute = 2, 5 },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "B"}, {peer: 4, content: "B"}},
			want:  Disputed, rule: RuleDispute, counts: map[string]int{"A": 2, "B": 2}},
		{name: "large majority over a smaller quorum with high dispute count", policy: func(p *Policy) { p.Dispute = 5 },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "A"}, {peer: 5, content: "A"},
				{peer: 6, content: "B"}, {peer: 7, content: "B"}, {peer: 8, content: "B"}},
			want: Allowed, rule: RuleQuorum, content: "A", perC: map[string]Decision{"A": Allowed, "B": Refused}},
		{name: "two quorums under the dispute count are a tie", policy: func(p *Policy) { p.Dispute = 5 },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 6, content: "B"}, {peer: 7, content: "B"}, {peer: 8, content: "B"}},
			want:  Disputed, rule: RuleDispute, perC: map[string]Decision{"A": Disputed, "B": Disputed}},
		{name: "tie below threshold", votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "B"}},
			want: Unknown, rule: RuleBelowThreshold},
		{name: "blocked peer does not count", policy: func(p *Policy) { p.BlockedPeers = []peer.ID{testPeer(t, 3)} },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "blocked peer cannot dispute", policy: func(p *Policy) { p.BlockedPeers = []peer.ID{testPeer(t, 9)} },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 9, content: "B"}},
			want:  Allowed, rule: RuleQuorum, content: "A", counts: map[string]int{"A": 3, "B": 0}},
		{name: "same /24 counts once", policy: func(p *Policy) { p.DistinctNetworks = true },
			votes: []tv{{peer: 1, content: "A", addr: "192.0.2.1"}, {peer: 2, content: "A", addr: "192.0.2.77"}, {peer: 3, content: "A", addr: "192.0.2.254"}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 1}},
		{name: "same /24 allowed when distinctness off",
			votes: []tv{{peer: 1, content: "A", addr: "192.0.2.1"}, {peer: 2, content: "A", addr: "192.0.2.77"}, {peer: 3, content: "A", addr: "192.0.2.254"}},
			want:  Allowed, rule: RuleQuorum, content: "A"},
		{name: "distinct /24s", policy: func(p *Policy) { p.DistinctNetworks = true },
			votes: []tv{{peer: 1, content: "A", addr: "192.0.2.1"}, {peer: 2, content: "A", addr: "192.0.3.1"}, {peer: 3, content: "A", addr: "203.0.113.1"}},
			want:  Allowed, rule: RuleQuorum, content: "A", counts: map[string]int{"A": 3}},
		{name: "same /48 counts once", policy: func(p *Policy) { p.DistinctNetworks = true },
			votes: []tv{{peer: 1, content: "A", addr: "2001:db8:1:1::1"}, {peer: 2, content: "A", addr: "2001:db8:1:ffff::2"}, {peer: 3, content: "A", addr: "2001:db8:2::1"}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "IPv4-mapped IPv6 is the same /24", policy: func(p *Policy) { p.DistinctNetworks = true },
			votes: []tv{{peer: 1, content: "A", addr: "192.0.2.1"}, {peer: 2, content: "A", addr: "::ffff:192.0.2.9"}, {peer: 3, content: "A", addr: "198.51.100.1"}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "relayed or unknown origins share one network", policy: func(p *Policy) { p.DistinctNetworks = true },
			votes: []tv{{peer: 1, content: "A", addr: "192.0.2.1"}, {peer: 2, content: "A", addr: "192.0.2.2"}, {peer: 3, content: "A"}, {peer: 4, content: "A"}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "relayed origins plus two networks reach the threshold", policy: func(p *Policy) { p.DistinctNetworks = true },
			votes: []tv{{peer: 1, content: "A", addr: "192.0.2.1"}, {peer: 2, content: "A", addr: "198.51.100.2"}, {peer: 3, content: "A"}, {peer: 4, content: "A"}},
			want:  Allowed, rule: RuleQuorum, content: "A", counts: map[string]int{"A": 3}},
		{name: "signer endorsement allows a single vote", policy: withSigner,
			votes: []tv{{peer: 1, content: "A", endorse: []int{1}}},
			want:  Allowed, rule: RuleSigner, content: "A"},
		{name: "signer overrides a dispute", policy: withSigner,
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "B", endorse: []int{2}}},
			want:  Allowed, rule: RuleSigner, content: "B", perC: map[string]Decision{"A": Refused, "B": Allowed}},
		{name: "unconfigured signer ignored", policy: withSigner,
			votes: []tv{{peer: 1, content: "A", endorse: []int{3}}},
			want:  Unknown, rule: RuleBelowThreshold},
		{name: "endorsement of another content ignored", policy: withSigner,
			votes: []tv{{peer: 1, content: "A", endorse: []int{1}, endorseC: "B"}},
			want:  Unknown, rule: RuleBelowThreshold},
		{name: "endorsement of another build key ignored", policy: withSigner,
			votes: []tv{{peer: 1, content: "A", endorse: []int{1}, endorseC: "@other"}},
			want:  Unknown, rule: RuleBelowThreshold},
		{name: "two signers back different contents", policy: withSigner,
			votes: []tv{{peer: 1, content: "A", endorse: []int{1}}, {peer: 2, content: "B", endorse: []int{2}}},
			want:  Disputed, rule: RuleSignerConflict},
		{name: "trusted peer allows", policy: func(p *Policy) { p.TrustedPeers = []peer.ID{testPeer(t, 7)} },
			votes: []tv{{peer: 7, content: "A"}},
			want:  Allowed, rule: RuleTrustedPeer, content: "A"},
		{name: "equivocating trusted peer gives no backing", policy: func(p *Policy) { p.TrustedPeers = []peer.ID{testPeer(t, 7)} },
			votes: []tv{{peer: 7, content: "A"}, {peer: 7, content: "B"}},
			want:  Unknown, rule: RuleNoVotes},
		{name: "pgp verified with keyring", policy: func(p *Policy) { p.PGPKeyring = keyring },
			votes: []tv{{peer: 1, content: "A", pgp: true}},
			want:  Allowed, rule: RulePGPSigner, content: "A"},
		{name: "pgp verified without keyring ignored",
			votes: []tv{{peer: 1, content: "A", pgp: true}},
			want:  Unknown, rule: RuleBelowThreshold},
		{name: "require signer refuses a quorum", policy: func(p *Policy) { withSigner(p); p.RequireSigner = true },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "A"}},
			want:  Refused, rule: RuleRequireSigner, perC: map[string]Decision{"A": Refused}},
		{name: "require signer with signer", policy: func(p *Policy) { withSigner(p); p.RequireSigner = true },
			votes: []tv{{peer: 1, content: "A", endorse: []int{1}}},
			want:  Allowed, rule: RuleSigner, content: "A"},
		{name: "threshold 0 is signer only", policy: func(p *Policy) { withSigner(p); p.Threshold = 0 },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			want:  Refused, rule: RuleRequireSigner},
		{name: "glob override lowers threshold", policy: func(p *Policy) {
			p.Overrides = []Override{{Glob: "app-misc/*", Threshold: intp(1)}}
		}, votes: []tv{{peer: 1, content: "A"}},
			want: Allowed, rule: RuleQuorum, content: "A"},
		{name: "glob override requires signer", policy: func(p *Policy) {
			withSigner(p)
			p.Overrides = []Override{{Glob: "sys-libs/*", RequireSigner: boolp(true)}}
		}, votes: []tv{{peer: 1, content: "A", cpv: "sys-libs/glibc-2.40"}, {peer: 2, content: "A", cpv: "sys-libs/glibc-2.40"}, {peer: 3, content: "A", cpv: "sys-libs/glibc-2.40"}},
			want: Refused, rule: RuleRequireSigner},
		{name: "mislabelled cpv cannot pick a weaker override", policy: func(p *Policy) {
			withSigner(p)
			p.Overrides = []Override{{Glob: "app-misc/*", Threshold: intp(1)}, {Glob: "sys-libs/*", RequireSigner: boolp(true)}}
		}, votes: []tv{{peer: 1, content: "A", cpv: "sys-libs/glibc-2.40"}, {peer: 2, content: "A", cpv: "app-misc/hello-1.0"}},
			want: Refused, rule: RuleRequireSigner},
		{name: "tampered vote ignored",
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "B", tamper: true}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "vote for another build key ignored",
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A", buildKey: "other"}},
			want:  Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "equivocation among votes voids that peer",
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "A"}, {peer: 4, content: "B"}},
			want:  Allowed, rule: RuleQuorum, content: "A", counts: map[string]int{"A": 3, "B": 0}},
		{name: "equivocation evidence voids votes",
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			evidence: func(t *testing.T) []Equivocation {
				return []Equivocation{proof(t, 3, bk, "A", "Z")}
			},
			want: Unknown, rule: RuleBelowThreshold, counts: map[string]int{"A": 2}},
		{name: "forged evidence ignored",
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			evidence: func(t *testing.T) []Equivocation {
				e := proof(t, 3, bk, "A", "Z")
				e.B = signAs(t, 3, testAttestation(t, bk, testContent("A")))
				return []Equivocation{e}
			},
			want: Allowed, rule: RuleQuorum, content: "A"},
		{name: "evidence for another build key does not void",
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			evidence: func(t *testing.T) []Equivocation {
				return []Equivocation{proof(t, 3, testCID(t, "other"), "A", "Z")}
			},
			want: Allowed, rule: RuleQuorum, content: "A"},
		{name: "own build counts as one vote", self: 1,
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			want:  Allowed, rule: RuleQuorum, content: "A"},
		{name: "own build disagreeing disputes", self: 4,
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}, {peer: 4, content: "B"}},
			want:  Disputed, rule: RuleDispute},
		{name: "invalid policy refuses", policy: func(p *Policy) { p.Dispute = 0 },
			votes: []tv{{peer: 1, content: "A"}, {peer: 2, content: "A"}, {peer: 3, content: "A"}},
			want:  Refused, rule: RuleInvalidPolicy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := labPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			var votes []Vote
			for _, x := range tc.votes {
				key := bk
				if x.buildKey != "" {
					key = testCID(t, x.buildKey)
				}
				a := testAttestation(t, key, testContent(x.content))
				if x.cpv != "" {
					a.CPV = x.cpv
				}
				s := signAs(t, x.peer, a)
				if x.tamper {
					s.Attestation.Content = testContent("A")
				}
				vote := Vote{Att: s, PGPVerified: x.pgp}
				if x.addr != "" {
					vote.Addr = netip.MustParseAddr(x.addr)
				}
				for _, n := range x.endorse {
					ek, ec := bk, testContent(x.content)
					switch {
					case x.endorseC == "@other":
						ek = testCID(t, "other")
					case x.endorseC != "":
						ec = testContent(x.endorseC)
					}
					vote.Endorsements = append(vote.Endorsements, Endorse(ek, ec, signerKey(n)))
				}
				votes = append(votes, vote)
			}
			var evidence []Equivocation
			if tc.evidence != nil {
				evidence = tc.evidence(t)
			}
			var self peer.ID
			if tc.self != 0 {
				self = testPeer(t, tc.self)
			}
			v := Evaluate(p, bk, votes, evidence, self)
			explain := v.Explain()
			if v.Decision != tc.want || v.Rule != tc.rule {
				t.Fatalf("decision %s by %s, want %s by %s\n%s", v.Decision, v.Rule, tc.want, tc.rule, explain)
			}
			if tc.content != "" {
				if v.Content == nil || *v.Content != testContent(tc.content) {
					t.Fatalf("allowed content %v, want %s\n%s", v.Content, tc.content, explain)
				}
			} else if v.Content != nil {
				t.Fatalf("content %s allowed, want none\n%s", v.Content, explain)
			}
			tallyOf := func(label string) *ContentTally {
				for i := range v.Tally {
					if v.Tally[i].Content == testContent(label) {
						return &v.Tally[i]
					}
				}
				t.Fatalf("no tally for %s\n%s", label, explain)
				return nil
			}
			for label, n := range tc.counts {
				if got := tallyOf(label).Count; got != n {
					t.Errorf("content %s counted %d, want %d\n%s", label, got, n, explain)
				}
			}
			for label, d := range tc.perC {
				if got := tallyOf(label).Decision; got != d {
					t.Errorf("content %s decision %s, want %s\n%s", label, got, d, explain)
				}
			}
			if !strings.Contains(explain, "rule: "+tc.rule) || !strings.Contains(explain, string(bk)) {
				t.Errorf("explanation lacks rule or build key:\n%s", explain)
			}
			if tc.self != 0 && !strings.Contains(explain, "this node") {
				t.Errorf("explanation does not mark own build:\n%s", explain)
			}
		})
	}
}

// proof makes equivocation evidence: peer n signed contents a and b for bk.
func proof(t testing.TB, n int, bk keys.Build, a, b string) Equivocation {
	t.Helper()
	sa := signAs(t, n, testAttestation(t, bk, testContent(a)))
	sb := signAs(t, n, testAttestation(t, bk, testContent(b)))
	return Equivocation{Peer: testPeer(t, n), BuildKey: bk, A: sa, B: sb}
}

func TestEvaluateInvalidBuildKey(t *testing.T) {
	v := Evaluate(labPolicy(), "not-a-cid", nil, nil, "")
	if v.Decision != Refused || v.Rule != RuleInvalidBuildKey {
		t.Fatalf("%s %s", v.Decision, v.Rule)
	}
}

func TestVerdictJSONAndExplain(t *testing.T) {
	bk := testCID(t, "hello")
	p := labPolicy()
	p.BlockedPeers = []peer.ID{testPeer(t, 4)}
	p.DistinctNetworks = true
	var votes []Vote
	for i, addr := range []string{"192.0.2.1", "198.51.100.1", "192.0.2.99", "203.0.113.1"} {
		votes = append(votes, Vote{Att: signAs(t, i+1, testAttestation(t, bk, testContent("A"))), Addr: netip.MustParseAddr(addr)})
	}
	v := Evaluate(p, bk, votes, nil, testPeer(t, 1))
	if v.Decision != Unknown || v.Tally[0].Count != 2 {
		t.Fatalf("%s", v.Explain())
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"decision":"unknown"`, `"rule":"below-threshold"`, `"reason":"blocked peer"`, `"counted":true`, `"content":"` + testContent("A").String()} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("JSON lacks %s: %s", want, raw)
		}
	}
	var back Verdict
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Decision != v.Decision || back.Tally[0].Content != v.Tally[0].Content || back.Tally[0].Voters[0].Peer != v.Tally[0].Voters[0].Peer {
		t.Fatalf("JSON round trip: %+v", back)
	}
	ex := v.Explain()
	for _, want := range []string{
		"decision: unknown (rule: below-threshold)",
		"policy: threshold 3, dispute 1, require signer no, distinct networks yes",
		testPeer(t, 4).String() + " 2026-11-21T04:15:00Z [203.0.113.1, portage 3.0.82, gcc 12.2.0]: not counted: blocked peer",
		"not counted: same network 192.0.2.0/24 as 12D3KooW",
		"[this node, 192.0.2.1, portage 3.0.82, gcc 12.2.0]: ",
		"gcc 12.2.0, weight 1: fresh identity (trust.fresh_weight)]: counted",
		"no content reached the threshold",
	} {
		if !strings.Contains(ex, want) {
			t.Errorf("explanation lacks %q:\n%s", want, ex)
		}
	}
}
