package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestVouchGivesPartialWeight: on an open network (fresh_weight 0, as
// testnet's closed default is not) a consumer counts builder A, its
// vouched peer; B and C, who built the same layout, count nothing. A
// vouches for B and C over its socket, as `gentoo-p2pd trust vouch` does;
// the vouches travel by gossip and each of B and C weighs half a vote at
// the consumer: 1 + 0.5 + 0.5 reaches its threshold 2. A revokes its
// vouch for C: 1.5 no longer does.
func TestVouchGivesPartialWeight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	builders := startTogether(t, ctx, dir, []peerSpec{
		{name: "builder-a", sets: []string{fixtures.ReproGPKG1}},
		{name: "builder-b", sets: []string{fixtures.ReproGPKG2}},
		{name: "builder-c", sets: []string{fixtures.ReproXPAK1}},
	})
	a, b, c := builders[0], builders[1], builders[2]
	consumer := startTogether(t, ctx, dir, []peerSpec{{name: "open", configure: func(cfg *config.Config) {
		cfg.Trust.FreshWeight, cfg.Trust.Threshold, cfg.Trust.VouchedPeers = 0, 2, peerIDs(builders[:1])
	}}}, a)[0]
	honest := honestContents(t, a)[layoutCPV]

	ex := explainOverSocket(t, ctx, consumer, layoutCPV, 3)
	if v := ex.Verdicts[0]; v.Decision == trust.Allowed {
		t.Fatalf("before any vouch: %s, want A alone below threshold 2\n%s", v.Decision, ex.Text)
	}
	checkVoters(t, "before", ex, honest, builders, func(vi trust.VoterInfo) string {
		if (vi.Peer == a.Daemon.ID()) != vi.Counted {
			return "want only A counted"
		}
		return ""
	})

	vouch := func(n *testnet.Node, undo bool) api.VouchView {
		t.Helper()
		var v api.VouchView
		if err := api.NewClient(a.Config.API.Socket).Post(ctx, api.PathTrustVouch, api.VouchRequest{Peer: n.Daemon.ID().String(), Expires: map[bool]string{false: "720h"}[undo], Undo: undo}, &v); err != nil {
			t.Fatalf("trust vouch %s: %v", n.Name, err)
		}
		return v
	}
	for _, n := range []*testnet.Node{b, c} {
		if v := vouch(n, false); !v.Active || v.Voucher != a.Daemon.ID().String() {
			t.Fatalf("vouch for %s: %+v", n.Name, v)
		}
	}
	from := fmt.Sprintf("vouched for by %s (1 hop(s), decayed to 50 %%)", a.Daemon.ID())
	cli := api.NewClient(consumer.Config.API.Socket)
	waitExplain := func(what string, done func(trust.Verdict) bool) api.Explanation {
		t.Helper()
		var ex api.Explanation
		waitFor(t, what, func() bool {
			var err error
			ex, err = consumer.Daemon.API().Explain(ctx, layoutCPV)
			return err == nil && len(ex.Verdicts) == 1 && done(ex.Verdicts[0])
		})
		return ex
	}
	ex = waitExplain("the consumer to allow the layout with A and the vouched B and C", func(v trust.Verdict) bool { return v.Decision == trust.Allowed })
	if v := ex.Verdicts[0]; *v.Content != honest || v.Tally[0].Weight != 2*trust.FullWeight {
		t.Fatalf("vouched: %s weight %s\n%s", v.Content, trust.Weight(v.Tally[0].Weight), ex.Text)
	}
	checkVoters(t, "vouched", ex, honest, builders, func(vi trust.VoterInfo) string {
		if vi.Peer == a.Daemon.ID() {
			return ""
		}
		if !vi.Counted || vi.Weight != trust.FullWeight/2 || vi.WeightFrom != from {
			return "want counted at 0.5: " + from
		}
		return ""
	})
	if !strings.Contains(ex.Text, from) {
		t.Errorf("trust explain does not say where the weight comes from:\n%s", ex.Text)
	}
	var st api.Status
	if err := cli.Get(ctx, api.PathStatus, nil, &st); err != nil || st.VouchWeighted != 2 {
		t.Errorf("consumer status: %d identities weighted by vouches (%v), want 2", st.VouchWeighted, err)
	}
	var pol api.PolicyView
	if err := api.NewClient(a.Config.API.Socket).Get(ctx, api.PathTrustPolicy, nil, &pol); err != nil || len(pol.Vouches) != 2 || pol.VouchDecay != 50 || pol.VouchHops != 2 {
		t.Errorf("A's trust policy: %+v (%v), want its two vouches, decay 50, 2 hops", pol, err)
	}

	if v := vouch(c, true); v.Active {
		t.Fatalf("revocation: %+v", v)
	}
	ex = waitExplain("the revocation to take C's weight away", func(v trust.Verdict) bool { return v.Decision != trust.Allowed })
	if v := ex.Verdicts[0]; v.Rule != trust.RuleBelowThreshold || v.Tally[0].Weight != 1500 {
		t.Fatalf("after revoking C: %s (%s), weight %s\n%s", v.Decision, v.Rule, trust.Weight(v.Tally[0].Weight), ex.Text)
	}
}
