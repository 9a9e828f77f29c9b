package votes

import (
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// A fresh attester that agrees with a build its vouched peers allowed
// earns a day of standing, which counts from the next day; with
// standing_days of them it is established and helps allow builds. A group
// of fresh attesters that only agree with each other never earns: their
// build is never allowed, so nobody's agreement is corroborated.
func TestStandingIsEarnedByAgreeing(t *testing.T) {
	k0, _ := mustKey(t)
	base := junk(t, k0, 1, 1000)
	bk := base.Attestation.BuildKey
	vouched := agreeing(t, base, 3)
	newcomer := agreeing(t, base, 1)[0]
	loners := agreeing(t, junk(t, k0, 2, 1000), 3)

	vb := joinBook(t, memnet.New(), false, func(c *config.Config) {
		c.Trust.FreshWeight = 0
		for _, s := range vouched {
			c.Trust.VouchedPeers = append(c.Trust.VouchedPeers, s.Attester.String())
		}
	})
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	vb.standing.now = func() time.Time { return now }
	vb.standing.days = 2
	for _, s := range append(append(vouched, newcomer), loners...) {
		ingestAs(t, vb.Book, s, s.Attester)
	}
	weightOf := func(what string) trust.VoterInfo {
		t.Helper()
		v, _, err := vb.Verdict(bk)
		if err != nil {
			t.Fatal(err)
		}
		vi, ok := voter(v, newcomer.Attester)
		if !ok {
			t.Fatalf("%s: the newcomer is not in the tally", what)
		}
		return vi
	}

	if vi := weightOf("day 0"); vi.Counted || !vi.Corroborated {
		t.Fatalf("day 0: newcomer counted %v (weight %d), corroborated %v; want not counted, corroborated", vi.Counted, vi.Weight, vi.Corroborated)
	}
	gen := vb.Generation()
	now = now.Add(24 * time.Hour)
	if vb.Generation() == gen {
		t.Fatal("a new standing epoch left the generation alone: listings would keep the old weights")
	}
	vi := weightOf("day 1")
	if !vi.Counted || vi.Weight != trust.FullWeight/2 || !strings.Contains(vi.WeightFrom, "1 day(s) of 2") {
		t.Fatalf("day 1: newcomer counted %v, weight %d from %q; want half weight from 1 day of 2", vi.Counted, vi.Weight, vi.WeightFrom)
	}
	now = now.Add(24 * time.Hour)
	if vi := weightOf("day 2"); vi.Weight != trust.FullWeight {
		t.Fatalf("day 2: newcomer weight %d, want full", vi.Weight)
	}
	// Established now, it reaches the threshold with two vouched peers.
	vb.policy.VouchedPeers = vb.policy.VouchedPeers[:2]
	v, _, err := vb.Verdict(bk)
	if err != nil || v.Decision != trust.Allowed {
		t.Fatalf("two vouched and the established newcomer: %s, %v; want allowed", v.Decision, err)
	}

	// The loners agreed with each other on every one of those days.
	lv, _, err := vb.Verdict(loners[0].Attestation.BuildKey)
	if err != nil || lv.Decision == trust.Allowed {
		t.Fatalf("three fresh loners: %s, %v; want not allowed", lv.Decision, err)
	}
	if err := vb.FlushStanding(); err != nil {
		t.Fatal(err)
	}
	_, ledger, err := vb.store.StandingEpoch(store.DayOf(now))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range loners {
		if _, ok := ledger[string(s.Attester)]; ok {
			t.Errorf("loner %s earned standing by agreeing with other fresh identities", s.Attester)
		}
	}
	if rec := ledger[string(newcomer.Attester)]; rec.Days != 3 {
		t.Errorf("newcomer's ledger entry %+v, want 3 credited days", rec)
	}
}

// One day of ninety weighs 11 thousandths and says so.
func TestStandingSaysItsDays(t *testing.T) {
	vb := joinBook(t, memnet.New(), false, nil)
	_, id := mustKey(t)
	today := store.DayOf(time.Now())
	if err := vb.store.SetStanding(map[string]store.Standing{string(id): {First: today - 1, Last: today - 1, Days: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := vb.refreshStanding(); err != nil {
		t.Fatal(err)
	}
	w, from := vb.standingOf(id)
	if w != trust.FullWeight/DefaultStandingDays || !strings.Contains(from, "1 day(s) of 90") {
		t.Fatalf("one day of 90: weight %d from %q", w, from)
	}
}
