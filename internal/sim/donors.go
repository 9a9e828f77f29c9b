package sim

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// DefaultDonors is the share of peers that donate CPU when -donors is not
// given: build.donate is off by default, and few users of any volunteer
// scheme opt in (an assumption, docs/SCALE.md).
const DefaultDonors = 0.05

// The build time of one package on a donor (docs/SCALE.md): log-normal,
// median 15 minutes, σ 1.2 (p90 70 minutes, p99 4 hours): most packages
// build in minutes, compilers and browsers in hours. An assumption.
const (
	buildMedian = 15 * time.Minute
	buildSigma  = 1.2
)

func buildTime(r *rand.Rand) time.Duration {
	return time.Duration(float64(buildMedian) * math.Exp(buildSigma*r.NormFloat64()))
}

// The builder's defaults (builder.Options): plans read the demand in a
// window of 4 × QueueLen variants, doubled up to maxPlanWindow, and read at
// most maxSupplyReads variants' votes.
const (
	builderQueueLen = 16
	maxPlanWindow   = 4096
	maxSupplyReads  = 512
)

type jobKind int

const (
	kindBuild jobKind = iota
	kindRebuild
)

// donor is one donating peer's builder: the build running, if any;
// idle when its last plan found nothing, at seen changes of its platform.
type donor struct {
	job  *donorJob
	idle bool
	seen int
}

type donorJob struct {
	vb      variantBuild
	rebuild bool
	left    time.Duration // build time still to run
}

// planHead is the head of the queue builder/plan.go plans from book's
// demand on platform: the most wanted variant (then by variant key) that
// this node did not attest and that has no trusted build here, or, as a
// rebuilder (build.rebuild, the default), fewer reproducers than the
// threshold. Book.Supply decides; ok is false when nothing qualifies
// within the builder's budgets.
func planHead(ctx context.Context, book *votes.Book, platform string, threshold int) (votes.Want, jobKind, bool, error) {
	seen := map[string]bool{}
	supplies := 0
	for window := 4 * builderQueueLen; ; window *= 2 {
		wants, err := book.Wanted(platform, window)
		if err != nil {
			return votes.Want{}, 0, false, err
		}
		slices.SortStableFunc(wants, func(x, y votes.Want) int {
			if x.Wanters != y.Wanters {
				return y.Wanters - x.Wanters
			}
			return strings.Compare(string(x.Variant), string(y.Variant))
		})
		for _, w := range wants {
			if supplies == maxSupplyReads {
				break
			}
			if seen[string(w.Variant)] || w.CPV == "" {
				continue
			}
			seen[string(w.Variant)] = true
			supplies++
			trusted, reproducers, thisNode, err := book.Supply(ctx, w.Variant)
			if err != nil {
				return votes.Want{}, 0, false, err
			}
			switch {
			case thisNode:
			case !trusted:
				return w, kindBuild, true, nil
			case reproducers < threshold:
				return w, kindRebuild, true, nil
			}
		}
		if len(wants) < window || window >= maxPlanWindow || supplies == maxSupplyReads {
			return votes.Want{}, 0, false, nil
		}
	}
}

// weightReached is when the allowed content of v reached the threshold
// weight: its counted voters taken oldest first, weighed as the verdict
// weighs them (trust's support: full-standing voters count fully, the
// others together at most threshold−1). Without an allowed content, or
// if the walk never gets there, it is otherwise.
func weightReached(v trust.Verdict, threshold int, otherwise time.Time) time.Time {
	if v.Content == nil {
		return otherwise
	}
	for _, ct := range v.Tally {
		if ct.Content != *v.Content {
			continue
		}
		voters := slices.Clone(ct.Voters)
		slices.SortStableFunc(voters, func(a, b trust.VoterInfo) int { return a.Time.Compare(b.Time) })
		full, partial := 0, 0
		for _, vi := range voters {
			if !vi.Counted {
				continue
			}
			if vi.Weight >= trust.FullWeight {
				full++
			} else {
				partial += vi.Weight
			}
			if full*trust.FullWeight+min(partial, max(0, threshold-1)*trust.FullWeight) >= threshold*trust.FullWeight {
				return vi.Time
			}
		}
	}
	return otherwise
}
