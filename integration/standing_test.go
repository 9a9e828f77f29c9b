package integration

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// The build key both the honest and the backdoored fixture claim.
const layoutCPV = "app-misc/layout-1.0-r1"

// TestSybilSwarmWeighsNothing: three builders the consumer vouches for
// built the honest layout; a swarm of fresh daemons, one identity each,
// attest the backdoored layout of the same build key. On the open network
// (trust.fresh_weight 0) the swarm weighs nothing: the honest layout is
// allowed, listed and served, and the swarm is listed as without standing.
// With a little weight each the swarm still counts at most threshold−1
// and less than one dispute; alone (nobody vouched) it gets nothing
// allowed. The control is a closed-network consumer (fresh_weight 100),
// where the same votes dispute the layout: they did arrive, and would
// matter without standing.
func TestSybilSwarmWeighsNothing(t *testing.T) {
	const swarmSize = 8
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	specs := []peerSpec{
		{name: "honest-a", sets: []string{fixtures.ReproGPKG1}},
		{name: "honest-b", sets: []string{fixtures.ReproGPKG2}},
		{name: "honest-c", sets: []string{fixtures.ReproXPAK1}},
	}
	// The swarm's daemons are DHT clients, as machines behind NAT are:
	// eight more DHT servers on loopback only slow every lookup (the test
	// took 13 s instead of 4 s under -race), and votes travel by catalog
	// and gossip either way.
	sybilNet := func(c *config.Config) { c.Network.DHTMode = "client" }
	for i := range swarmSize {
		specs = append(specs, peerSpec{name: fmt.Sprintf("sybil-%d", i), sets: []string{fixtures.Backdoored}, configure: sybilNet})
	}
	nodes := startTogether(t, ctx, dir, specs)
	builders, swarm := nodes[:3], nodes[3:]
	vouched := peerIDs(builders)
	consumers := startTogether(t, ctx, dir, []peerSpec{
		{name: "open", configure: func(c *config.Config) { c.Trust.FreshWeight, c.Trust.VouchedPeers = 0, vouched }},
		{name: "half", configure: func(c *config.Config) { c.Trust.FreshWeight, c.Trust.VouchedPeers = 50, vouched }},
		{name: "alone", configure: func(c *config.Config) { c.Trust.FreshWeight = 0 }},
		{name: "closed"}, // testnet's closed network: fresh_weight 100
	}, nodes[0])
	open, half, alone, closed := consumers[0], consumers[1], consumers[2], consumers[3]

	honest := honestContents(t, builders[0])
	backdoor := backdoorContent(t, swarm[0])
	if backdoor == honest[layoutCPV] {
		t.Fatal("the backdoored fixture has the honest content id")
	}
	voters := len(builders) + len(swarm)

	// Open network: the vouched builders decide; the swarm is listed, not
	// counted. Read as `trust explain --json` reads it, over the socket.
	ex := explainOverSocket(t, ctx, open, layoutCPV, voters)
	v := ex.Verdicts[0]
	if v.Decision != trust.Allowed || v.Content == nil || *v.Content != honest[layoutCPV] {
		t.Fatalf("open: layout %s (rule %s), want the honest content allowed\n%s", v.Decision, v.Rule, ex.Text)
	}
	checkVoters(t, "open", ex, honest[layoutCPV], builders, func(vi trust.VoterInfo) string {
		if !vi.Counted || vi.Weight != trust.FullWeight || !strings.Contains(vi.WeightFrom, "vouched") {
			return "want counted with full weight, vouched"
		}
		return ""
	})
	checkVoters(t, "open", ex, backdoor, swarm, func(vi trust.VoterInfo) string {
		if vi.Counted || vi.Weight != 0 || vi.Reason != trust.ReasonNoStanding {
			return "want not counted: " + trust.ReasonNoStanding
		}
		return ""
	})
	entries := waitListed(t, ctx, open, "app-misc/hello-1.0", layoutCPV)
	checkServed(t, ctx, open, entries[layoutCPV], honest[layoutCPV])

	// A little weight each (fresh_weight 50): eight half votes would be
	// four, but together they count threshold−1 for a quorum and less
	// than one dispute.
	ex = explainWhenVoted(t, half, layoutCPV, voters)
	v = ex.Verdicts[0]
	if v.Decision != trust.Allowed || v.Content == nil || *v.Content != honest[layoutCPV] {
		t.Fatalf("half: layout %s (rule %s), want the honest content allowed\n%s", v.Decision, v.Rule, ex.Text)
	}
	checkVoters(t, "half", ex, backdoor, swarm, func(vi trust.VoterInfo) string {
		if !vi.Counted || vi.Weight != trust.FullWeight/2 {
			return "want counted with weight 0.5"
		}
		return ""
	})
	if ct := tallyOf(v, backdoor); ct.Weight != (v.Threshold-1)*trust.FullWeight || ct.Decision != trust.Refused {
		t.Errorf("half: the swarm's content weighs %s (%s), want %d (threshold−1), refused\n%s",
			trust.Weight(ct.Weight), ct.Decision, v.Threshold-1, ex.Text)
	}

	// Nobody vouched: the honest builders and the swarm are all fresh,
	// nothing counts, nothing is listed.
	ex = explainWhenVoted(t, alone, layoutCPV, voters)
	v = ex.Verdicts[0]
	if v.Decision == trust.Allowed || v.Rule != trust.RuleNoVotes {
		t.Errorf("alone: layout %s (rule %s), want no counted votes\n%s", v.Decision, v.Rule, ex.Text)
	}
	unvouched := func(vi trust.VoterInfo) string {
		if vi.Counted || vi.Reason != trust.ReasonNoStanding {
			return "want not counted: " + trust.ReasonNoStanding
		}
		return ""
	}
	checkVoters(t, "alone", ex, backdoor, swarm, unvouched)
	checkVoters(t, "alone", ex, honest[layoutCPV], builders, unvouched)
	waitGatewayNote(t, ctx, alone, 0, "nothing listed: 2 builds of this platform known, none allowed yet")

	// Control, a closed network: every fresh identity weighs 1, and the
	// swarm disputes the layout; hello, which it did not touch, is listed.
	ex = explainWhenVoted(t, closed, layoutCPV, voters)
	v = ex.Verdicts[0]
	if v.Decision != trust.Disputed {
		t.Errorf("closed: layout %s (rule %s), want disputed by the swarm\n%s", v.Decision, v.Rule, ex.Text)
	}
	checkVoters(t, "closed", ex, backdoor, swarm, func(vi trust.VoterInfo) string {
		if !vi.Counted || vi.Weight != trust.FullWeight || !strings.Contains(vi.WeightFrom, "fresh_weight") {
			return "want counted with full weight from trust.fresh_weight"
		}
		return ""
	})
	waitListed(t, ctx, closed, "app-misc/hello-1.0")
}

// TestFreshTrollCannotDispute: one fresh identity attests another content
// (the backdoored layout) for a build key three vouched builders agree
// on. On the open network the troll does not count and cannot block the
// honest build; the control vouches for the troll too, whose vote then
// disputes the layout.
func TestFreshTrollCannotDispute(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	nodes := startTogether(t, ctx, dir, []peerSpec{
		{name: "honest-a", sets: []string{fixtures.ReproGPKG1}},
		{name: "honest-b", sets: []string{fixtures.ReproGPKG2}},
		{name: "honest-c", sets: []string{fixtures.ReproXPAK1}},
		{name: "troll", sets: []string{fixtures.Backdoored}},
	})
	builders, troll := nodes[:3], nodes[3]
	consumers := startTogether(t, ctx, dir, []peerSpec{
		{name: "open", configure: func(c *config.Config) { c.Trust.FreshWeight, c.Trust.VouchedPeers = 0, peerIDs(builders) }},
		{name: "vouches-troll", configure: func(c *config.Config) { c.Trust.FreshWeight, c.Trust.VouchedPeers = 0, peerIDs(nodes) }},
	}, nodes[0])
	open, vouchesTroll := consumers[0], consumers[1]
	honest := honestContents(t, builders[0])
	trolled := backdoorContent(t, troll)

	ex := explainOverSocket(t, ctx, open, layoutCPV, len(nodes))
	v := ex.Verdicts[0]
	if v.Decision != trust.Allowed || v.Content == nil || *v.Content != honest[layoutCPV] {
		t.Fatalf("open: layout %s (rule %s), want the honest content allowed\n%s", v.Decision, v.Rule, ex.Text)
	}
	checkVoters(t, "open", ex, trolled, nodes[3:], func(vi trust.VoterInfo) string {
		if vi.Counted || vi.Reason != trust.ReasonNoStanding {
			return "want not counted: " + trust.ReasonNoStanding
		}
		return ""
	})
	entries := waitListed(t, ctx, open, "app-misc/hello-1.0", layoutCPV)
	checkServed(t, ctx, open, entries[layoutCPV], honest[layoutCPV])

	// Control: vouched for, the troll's one vote is a dispute.
	ex = explainWhenVoted(t, vouchesTroll, layoutCPV, len(nodes))
	v = ex.Verdicts[0]
	if v.Decision != trust.Disputed {
		t.Errorf("vouches-troll: layout %s (rule %s), want disputed\n%s", v.Decision, v.Rule, ex.Text)
	}
	checkVoters(t, "vouches-troll", ex, trolled, nodes[3:], func(vi trust.VoterInfo) string {
		if !vi.Counted || vi.Weight != trust.FullWeight || !strings.Contains(vi.WeightFrom, "vouched") {
			return "want counted with full weight, vouched"
		}
		return ""
	})
	waitListed(t, ctx, vouchesTroll, "app-misc/hello-1.0")
}

// startTogether starts a daemon per spec at once, each bootstrapping to
// boot (or, without one, to the first, started before the others), and
// stops them when the test ends. Started one after the other, a swarm
// would take most of the test's time.
func startTogether(t *testing.T, ctx context.Context, dir string, specs []peerSpec, boot ...*testnet.Node) []*testnet.Node {
	t.Helper()
	nodes := make([]*testnet.Node, len(specs))
	start := func(i int, boot []string) error {
		s := specs[i]
		for _, set := range s.sets {
			if _, err := fixtures.WritePKGDIR(set, filepath.Join(dir, s.name, "pkgdir")); err != nil {
				return err
			}
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: s.name, Dir: dir, Bootstrap: boot, Configure: s.configure, Logger: testLogger()})
		nodes[i] = n
		return err
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				stopNode(t, n)
			}
		}
	})
	first := 0
	if len(boot) == 0 {
		if err := start(0, nil); err != nil {
			t.Fatal(err)
		}
		boot, first = nodes[:1], 1
	}
	var g errgroup.Group
	for i := first; i < len(specs); i++ {
		g.Go(func() error { return start(i, []string{boot[0].Addr()}) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// peerIDs are the nodes' peer ids as trust.vouched_peers takes them.
func peerIDs(nodes []*testnet.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Daemon.ID().String())
	}
	return out
}

// votersOf counts the voters of every content in ex's single verdict.
func votersOf(ex api.Explanation) int {
	if len(ex.Verdicts) != 1 {
		return 0
	}
	total := 0
	for _, ct := range ex.Verdicts[0].Tally {
		total += len(ct.Voters)
	}
	return total
}

// explainWhenVoted polls n's trust explain for cpv until its one verdict
// holds the votes of want attesters, and returns it.
func explainWhenVoted(t *testing.T, n *testnet.Node, cpv string, want int) api.Explanation {
	t.Helper()
	var ex api.Explanation
	waitFor(t, fmt.Sprintf("%s to hold %d votes for %s", n.Name, want, cpv), func() bool {
		var err error
		ex, err = n.Daemon.API().Explain(context.Background(), cpv)
		return err == nil && votersOf(ex) >= want
	})
	if got := votersOf(ex); got != want {
		t.Fatalf("%s: %d voters for %s, want %d\n%s", n.Name, got, cpv, want, ex.Text)
	}
	return ex
}

// explainOverSocket is explainWhenVoted through the local API's socket:
// the JSON `gentoo-p2pd trust explain --json` prints.
func explainOverSocket(t *testing.T, ctx context.Context, n *testnet.Node, cpv string, want int) api.Explanation {
	t.Helper()
	c := api.NewClient(n.Config.API.Socket)
	var ex api.Explanation
	waitFor(t, fmt.Sprintf("%s to hold %d votes for %s", n.Name, want, cpv), func() bool {
		ex = api.Explanation{}
		return c.Get(ctx, api.PathTrustExplain, url.Values{"q": {cpv}}, &ex) == nil && votersOf(ex) >= want
	})
	if got := votersOf(ex); got != want {
		t.Fatalf("%s: %d voters for %s, want %d\n%s", n.Name, got, cpv, want, ex.Text)
	}
	return ex
}

// tallyOf is content's entry in v's tally (zero if it has none).
func tallyOf(v trust.Verdict, content trust.ContentID) trust.ContentTally {
	for _, ct := range v.Tally {
		if ct.Content == content {
			return ct
		}
	}
	return trust.ContentTally{}
}

// checkVoters checks that exactly the nodes voted for content in ex's
// verdict, that each voter passes bad (which says what was wanted), and
// that the text trust explain prints states each one's weight and where it
// comes from, or why it is not counted.
func checkVoters(t *testing.T, who string, ex api.Explanation, content trust.ContentID, nodes []*testnet.Node, bad func(trust.VoterInfo) string) {
	t.Helper()
	ct := tallyOf(ex.Verdicts[0], content)
	var got, want []string
	for _, vi := range ct.Voters {
		got = append(got, vi.Peer.String())
		if why := bad(vi); why != "" {
			t.Errorf("%s: voter %s of %s: counted %v, weight %s (%s), reason %q; %s",
				who, vi.Peer, content, vi.Counted, trust.Weight(vi.Weight), vi.WeightFrom, vi.Reason, why)
		}
		if line := voterLine(ex.Text, vi.Peer); !strings.Contains(line, explainTag(vi)) {
			t.Errorf("%s: trust explain says %q for %s, want it to contain %q", who, line, vi.Peer, explainTag(vi))
		}
	}
	for _, n := range nodes {
		want = append(want, n.Daemon.ID().String())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: voters of %s are %v, want %v\n%s", who, content, got, want, ex.Text)
	}
}

// explainTag is what trust explain's text must say of a voter: its
// weight and where it comes from, or why it does not count.
func explainTag(vi trust.VoterInfo) string {
	if vi.Counted {
		return fmt.Sprintf("weight %s: %s", trust.Weight(vi.Weight), vi.WeightFrom)
	}
	return "not counted: " + vi.Reason
}

// voterLine is the line of an explanation that lists id as a voter
// (another voter's line may name it as its voucher).
func voterLine(text string, id peer.ID) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), id.String()+" ") {
			return line
		}
	}
	return ""
}

// waitListed polls n's gateway until it lists exactly the cpvs, and
// returns its index. The index follows the verdicts a moment after they
// change, so an index that lists more is waited out; one that keeps
// listing a build it must not list fails the test at the timeout.
func waitListed(t *testing.T, ctx context.Context, n *testnet.Node, cpvs ...string) map[string]portagehook.Entry {
	t.Helper()
	slices.Sort(cpvs)
	var entries map[string]portagehook.Entry
	if err := testnet.WaitFor(ctx, waitTimeout, n.Name+"'s gateway listing", func() bool {
		entries = gatewayIndex(t, ctx, n)
		listed := entryNames(entries)
		slices.Sort(listed)
		return slices.Equal(listed, cpvs)
	}); err != nil {
		t.Fatalf("%s: gateway lists %v, want %v", n.Name, entryNames(entries), cpvs)
	}
	return entries
}

// waitGatewayNote polls n's status until the gateway lists listed builds
// and its note starts with note.
func waitGatewayNote(t *testing.T, ctx context.Context, n *testnet.Node, listed int, note string) {
	t.Helper()
	var st api.Status
	if err := testnet.WaitFor(ctx, waitTimeout, n.Name+"'s gateway listing", func() bool {
		st = n.Daemon.API().Status(ctx)
		return st.GatewayListed == listed && strings.HasPrefix(st.GatewayNote, note)
	}); err != nil {
		t.Errorf("%s: gateway lists %d, note %q; want %d, %q", n.Name, st.GatewayListed, st.GatewayNote, listed, note)
	}
}
