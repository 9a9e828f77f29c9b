package localapi

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/libp2p/go-libp2p/core/peer"
)

// aboutAnswer is what /gentoo-p2p/about/1 answers (docs/PROTOCOL.md): the
// answering peer's platform, the settings that make it, and the CPVs of
// its platform's catalog that match the query.
type aboutAnswer struct {
	Platform string            `json:"platform"`
	Settings map[string]string `json:"settings"`
	CPVs     []string          `json:"cpvs"`
}

// aboutMaxCPVs bounds the CPVs of one about answer (it must fit a blob).
const aboutMaxCPVs = 32

// settingNames are the settings a platform hashes, in the order shown.
var settingNames = []string{"CHOST", "CFLAGS", "CXXFLAGS", "FFLAGS", "FCFLAGS", "LDFLAGS"}

// matcher is how find and search match a query against a CPV: a CPV
// (with or without "=" and category) matches itself, any other term is a
// case-insensitive substring of category/package-version, as eix does.
func matcher(q string) func(cpv string) bool {
	q = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(q), "="))
	return func(cpv string) bool {
		c := strings.ToLower(cpv)
		return c == q || strings.HasSuffix(c, "/"+q) || strings.Contains(c, q)
	}
}

// aboutMaxScan bounds the CPV index entries one about request walks, so
// its cost does not grow with the store (entries past it are not looked
// at: the answer only explains an empty search).
const aboutMaxScan = 1 << 16

// About answers a peer's /gentoo-p2p/about/1 request: at most
// aboutMaxCPVs CPVs from at most aboutMaxScan index entries, given up
// when ctx ends.
func (srv *Server) About(ctx context.Context, query string) ([]byte, error) {
	a := aboutAnswer{Platform: srv.platform, Settings: srv.settings, CPVs: []string{}}
	if strings.TrimSpace(query) != "" {
		found, err := srv.store.MatchingCPVs(ctx, srv.platform, matcher(query), aboutMaxCPVs, aboutMaxScan)
		if err != nil {
			return nil, err
		}
		a.CPVs = append(a.CPVs, found...)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	if len(b) > wire.MaxAboutAnswer {
		return nil, fmt.Errorf("about answer of %d bytes exceeds %d", len(b), wire.MaxAboutAnswer)
	}
	return b, nil
}

// askPeers bounds how many connected peers one "why" asks, and how long.
const (
	askPeers   = 32
	askTimeout = 5 * time.Second
)

// nothingFound asks the connected peers what they are and what they hold
// for query, and groups those of other platforms that hold something.
func (srv *Server) nothingFound(ctx context.Context, query string) *api.NothingFound {
	why := &api.NothingFound{Platform: srv.platform, Settings: srv.settings}
	peers := srv.net.Peers()
	peers = peers[:min(len(peers), askPeers)]
	why.PeersAsked = len(peers)
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	match := matcher(query)
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		answers = map[peer.ID]aboutAnswer{}
	)
	for _, p := range peers {
		wg.Go(func() {
			b, err := srv.net.About(ctx, p.ID, query)
			if err != nil {
				return
			}
			var a aboutAnswer
			if json.Unmarshal(b, &a) != nil {
				return
			}
			a, ok := cleanAbout(a, match)
			if !ok {
				return
			}
			mu.Lock()
			answers[p.ID] = a
			mu.Unlock()
		})
	}
	wg.Wait()
	why.PeersAnswered = len(answers)
	byPlatform := map[string]*api.OtherPlatform{}
	for p, a := range answers {
		if a.Platform == srv.platform || len(a.CPVs) == 0 {
			continue
		}
		op := byPlatform[a.Platform]
		if op == nil {
			op = &api.OtherPlatform{Platform: a.Platform, Differs: diffSettings(srv.settings, a.Settings)}
			byPlatform[a.Platform] = op
		}
		op.Peers = append(op.Peers, p.String())
		for _, c := range a.CPVs {
			if !slices.Contains(op.CPVs, c) {
				op.CPVs = append(op.CPVs, c)
			}
		}
	}
	for _, op := range byPlatform {
		slices.Sort(op.Peers)
		slices.Sort(op.CPVs)
		why.Elsewhere = append(why.Elsewhere, *op)
	}
	slices.SortFunc(why.Elsewhere, func(a, b api.OtherPlatform) int {
		return cmp.Or(len(b.Peers)-len(a.Peers), strings.Compare(a.Platform, b.Platform))
	})
	return why
}

// A peer's about answer reaches the API and the terminal: only what has
// the shape of a platform (identity.Descriptor.Platform: CHOST, "-", 16
// hex digits), settings of printable ASCII and CPVs
// (category/package-version, PMS 3.1) passes, so a peer cannot slip
// terminal escapes or other text into what `search` prints.
var (
	platformRE = regexp.MustCompile(`^[A-Za-z0-9_.+-]{1,100}-[0-9a-f]{16}$`)
	cpvRE      = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9+_.-]*/[A-Za-z0-9_][A-Za-z0-9+_-]*?-[0-9]+(\.[0-9]+)*[a-z]?((_alpha|_beta|_pre|_rc|_p)[0-9]*)*(-r[0-9]+)?$`)
)

// maxSettingLen bounds one setting of an about answer.
const maxSettingLen = 4096

// cleanAbout keeps of a peer's answer what passes the checks above:
// false when its platform does not; settings other than settingNames,
// or not printable ASCII, are dropped, and CPVs that are not CPVs or do
// not match the query.
func cleanAbout(a aboutAnswer, match func(cpv string) bool) (aboutAnswer, bool) {
	if !platformRE.MatchString(a.Platform) {
		return aboutAnswer{}, false
	}
	out := aboutAnswer{Platform: a.Platform, Settings: map[string]string{}}
	for _, k := range settingNames {
		if v, ok := a.Settings[k]; ok && len(v) <= maxSettingLen && printableASCII(v) {
			out.Settings[k] = v
		}
	}
	for _, c := range a.CPVs {
		if len(out.CPVs) == aboutMaxCPVs {
			break
		}
		if len(c) <= 256 && cpvRE.MatchString(c) && match(c) && !slices.Contains(out.CPVs, c) {
			out.CPVs = append(out.CPVs, c)
		}
	}
	return out, true
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// diffSettings lists the settings that differ, whitespace aside (the
// platform hash ignores it too).
func diffSettings(here, there map[string]string) []api.SettingDiff {
	var out []api.SettingDiff
	for _, k := range settingNames {
		h, t := strings.Join(strings.Fields(here[k]), " "), strings.Join(strings.Fields(there[k]), " ")
		if h != t {
			out = append(out, api.SettingDiff{Setting: k, Here: h, There: t})
		}
	}
	return out
}

// Search lists the builds of this machine's platform whose CPV matches
// term, with their votes and how many peers hold a copy; when none does,
// it says why (nothingFound).
func (srv *Server) Search(ctx context.Context, term string) (api.SearchResult, error) {
	res := api.SearchResult{Query: term, Platform: srv.platform, Builds: []api.SearchBuild{}}
	if strings.TrimSpace(term) == "" {
		return res, api.Errorf(api.CodeBadRequest, "search: give a term (a package name, category/package or category/package-version)")
	}
	found, err := srv.store.CPVBuilds(srv.platform, matcher(term))
	if err != nil {
		return res, classify(err, api.CodeInternal)
	}
	voters, err := srv.store.BuildKeyVoters(srv.platform)
	if err != nil {
		return res, classify(err, api.CodeInternal)
	}
	cached := srv.cachedBuilds()
	for _, cpv := range sortedKeys(found) {
		for _, bk := range found[cpv] {
			if len(res.Builds) == api.SearchLimit {
				res.More++
				continue
			}
			b := srv.searchBuild(cpv, keys.Build(bk), voters[bk])
			if b.Here == "" && cached[bk] {
				b.Here = "cached"
			}
			res.Builds = append(res.Builds, b)
		}
	}
	res.Wanted = srv.wantedMatching(term, res.Builds)
	if len(res.Builds) == 0 {
		res.Why = srv.nothingFound(ctx, term)
		return res, nil
	}
	srv.countHolders(ctx, res.Builds, voters)
	return res, nil
}

// wantedMatching lists the variants of this platform matching term that
// peers want and none of builds is of, most wanted first, at most
// api.SearchLimit.
func (srv *Server) wantedMatching(term string, builds []api.SearchBuild) []api.WantedVariant {
	listed := map[keys.Variant]bool{}
	for _, b := range builds {
		listed[b.VariantKey] = true
	}
	match := matcher(term)
	wants, err := srv.votes.WantedWhere(srv.platform, api.SearchLimit, func(v keys.Variant, cpv string) bool {
		return !listed[v] && match(cpv)
	})
	if err != nil {
		return nil
	}
	var out []api.WantedVariant
	for _, w := range wants {
		out = append(out, api.WantedVariant{CPV: w.CPV, VariantKey: w.Variant, USE: w.USE, Wanters: w.Wanters, LastSeen: w.LastSeen})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// searchBuild is what the store and the verdict say of one build key.
func (srv *Server) searchBuild(cpv string, bk keys.Build, attesters []string) api.SearchBuild {
	b := api.SearchBuild{CPV: cpv, BuildKey: bk, Builders: len(attesters), Holders: -1,
		Threshold: srv.votes.Policy().Threshold}
	if v, _, err := srv.votes.Verdict(bk); err == nil {
		b.Verdict = v.Decision.String()
		b.Threshold = v.Threshold
		if len(v.Tally) > 0 {
			b.Votes, b.Weight = v.Tally[0].Count, v.Tally[0].Weight
		}
		if v.Decision == trust.Allowed && srv.notListed != nil {
			if why, ok := srv.notListed(bk); ok {
				b.NotListed = why
			}
		}
	}
	if lps, _ := srv.store.LocalByBuildKey(string(bk)); len(lps) > 0 {
		b.Here = "built here"
	}
	if recs, _ := srv.store.AttestationsFor(string(bk)); len(recs) > 0 {
		b.VariantKey = keys.Variant(recs[0].VariantKey)
		b.Wanted = srv.votes.WantCount(b.VariantKey)
	}
	return b
}

// cachedBuilds are the build keys the content cache holds a file of.
func (srv *Server) cachedBuilds() map[string]bool {
	out := map[string]bool{}
	entries, err := srv.store.Cache().List()
	if err != nil {
		return out // search still answers; "cached" is only left out
	}
	for _, e := range entries {
		out[e.Meta.BuildKey] = true
	}
	return out
}

// countHolders looks each build up on the DHT, a few at a time, within
// askTimeout: Holders are the providers, FetchedCopies those that are not
// among its attesters.
func (srv *Server) countHolders(ctx context.Context, builds []api.SearchBuild, voters map[string][]string) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range builds {
		b := &builds[i]
		key, err := b.BuildKey.CID()
		if err != nil {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			provs, err := srv.net.FindProviders(ctx, key, 64)
			if err != nil && len(provs) == 0 {
				return
			}
			b.Holders = 0
			for _, p := range provs {
				if p.ID == srv.self {
					continue
				}
				b.Holders++
				if !slices.Contains(voters[string(b.BuildKey)], p.ID.String()) {
					b.FetchedCopies++
				}
			}
		})
	}
	wg.Wait()
}
