// Package binhost is what portage sees through the gateway: the Allowed
// builds of this platform as index listings, and their files, fetched from
// peers and verified when portage asks for one.
package binhost

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Options are what Listings needs.
type Options struct {
	Store       *store.Store
	Votes       *votes.Book
	Materialize *materialize.Materializer
	// Platform is the platform whose builds are listed.
	Platform string
	// Prefetch is gateway.prefetch: which Allowed builds are listed before
	// any copy is held here.
	Prefetch string
	// Installed lists the installed packages (category/name), for
	// gateway.prefetch = installed.
	Installed func() map[string]bool
	// Machine is the machine portage installs onto (fit.LoadMachine):
	// only builds that fit it are listed. Required.
	Machine  func() (*fit.Machine, error)
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Listings is the gateway's source (portagehook.Listings).
type Listings struct {
	store     *store.Store
	votes     *votes.Book
	mz        *materialize.Materializer
	platform  string
	prefetch  string
	installed func() map[string]bool
	machine   func() (*fit.Machine, error)
	log       *slog.Logger
	// unfit holds, per build key, why the last listing left an allowed
	// build out (it does not fit this machine, or its voters disagree),
	// for `trust explain`.
	unfit sync.Map // keys.Build → string
	// listed maps what the index listed (content/BUILD_ID) to its build
	// key (a keys.Build): portage asks for a file by what the index said.
	listed      sync.Map
	fetchFailed prometheus.Counter

	// mu makes one Entries computation at a time: requests that arrive
	// meanwhile wait for it and take its result.
	mu sync.Mutex
	// derived holds, per candidate build key, what its votes make of it,
	// while its votes stay unchanged (votes.Book.Changed).
	derived map[keys.Build]*derived
	// last is the last Entries result and what it was computed from.
	last *lastEntries
	// printed is what a saved derived must carry to be used (print).
	printOnce sync.Once
	printed   string
	// evaluated counts the build keys whose votes the last computation
	// evaluated (neither kept nor read back): for tests.
	evaluated int
}

var _ portagehook.Listings = (*Listings)(nil)

// derived is what Entries made of one build key's votes at generation gen:
// everything of its listing that depends on the votes alone.
type derived struct {
	gen     uint64 // votes.Book.Generation before the votes were read
	allowed bool
	// reason is why an allowed build is not listed whatever the machine
	// ("" when it may be): its voters disagree on a field.
	reason  string
	listing portagehook.Listing // Prefetch unset
	fit     fit.Build
	// served is false when the voters state no served size: then build
	// holds the votes, and the build is listed once held or prefetched.
	served  bool
	build   *votes.Build
	cat, pn string // for gateway.prefetch = installed
}

// lastEntries is an Entries result and the state it was computed from:
// while the votes' generation, the machine, the installed set and (when a
// listing depended on held copies) the local files are the same, it is
// still right.
type lastEntries struct {
	gen       uint64
	machine   [32]byte
	installed [32]byte
	heldDep   bool
	local     uint64
	out       []portagehook.Listing
}

// New makes the gateway's Listings.
func New(o Options) *Listings {
	ls := &Listings{
		store: o.Store, votes: o.Votes, mz: o.Materialize, platform: o.Platform,
		prefetch: o.Prefetch, installed: o.Installed, machine: o.Machine, log: o.Logger,
	}
	if ls.log == nil {
		ls.log = slog.New(slog.DiscardHandler)
	}
	if ls.installed == nil {
		ls.installed = func() map[string]bool { return nil }
	}
	ls.fetchFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gentoo_p2pd", Name: "gateway_fetch_failures_total",
		Help: "Builds portage asked the gateway for that could not be fetched from peers.",
	})
	if o.Registry != nil {
		o.Registry.MustRegister(ls.fetchFailed)
	}
	return ls
}

// Entries is what portage may see: the Allowed builds of the local
// platform that fit this machine, nothing else.
//
// Nothing is computed twice: while no vote, no installed package and
// nothing of the machine changed, Entries returns its last result (the
// same slice: callers must not modify it); when something changed, only
// the build keys whose votes changed are evaluated again, and the fit of
// the whole list is checked again.
func (ls *Listings) Entries(ctx context.Context) ([]portagehook.Listing, error) {
	// Every generation is read before what it guards.
	gen, local := ls.votes.Generation(), ls.store.LocalGeneration()
	m, err := ls.machine()
	if err != nil {
		return nil, fmt.Errorf("this machine's installed system: %w", err)
	}
	var installed map[string]bool
	var instSum [32]byte
	if ls.prefetch == config.PrefetchInstalled {
		installed = ls.installed()
		instSum = setSum(installed)
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.evaluated = 0
	if l := ls.last; l != nil && l.gen == gen && l.machine == m.Fingerprint() && l.installed == instSum && (!l.heldDep || l.local == local) {
		return l.out, nil
	}
	bks, err := ls.votes.Candidates(ls.platform)
	if err != nil {
		return nil, err
	}
	if err := ls.derive(gen, bks); err != nil {
		return nil, err
	}
	var (
		cands   []portagehook.Listing
		listBKs []keys.Build
		fits    []fit.Build
		heldDep bool
	)
	for _, bk := range bks {
		d := ls.derived[bk]
		if !d.allowed {
			continue
		}
		if d.reason != "" {
			ls.unfit.Store(bk, d.reason)
			continue
		}
		prefetch := ls.prefetched(d, installed)
		l, fb := d.listing, d.fit
		if !d.served {
			// A build whose voters state no served form can only be
			// listed once its file is here (portage needs SIZE):
			// fetched already, or prefetched.
			heldDep = true
			if !ls.held(*d.build) && !prefetch {
				ls.unfit.Store(bk, "its voters state no served size: listed once fetched (gentoo-p2pd fetch)")
				continue
			}
			if l, fb, err = ls.listing(*d.build, trust.ServedSizes{}); err != nil {
				ls.unfit.Store(bk, err.Error())
				ls.log.Debug("gateway: not listed", "build_key", bk, "err", err)
				continue
			}
		}
		l.Prefetch = prefetch
		cands, listBKs, fits = append(cands, l), append(listBKs, bk), append(fits, fb)
	}
	out := []portagehook.Listing{}
	for i, err := range m.FitAll(fits) {
		if err != nil {
			ls.unfit.Store(listBKs[i], err.Error())
			ls.log.Debug("gateway: not listed", "build_key", listBKs[i], "err", err)
			continue
		}
		ls.unfit.Delete(listBKs[i])
		ls.listed.Store(listingKey(cands[i].Content, cands[i].BuildID), listBKs[i])
		out = append(out, cands[i])
	}
	ls.last = &lastEntries{gen: gen, machine: m.Fingerprint(), installed: instSum, heldDep: heldDep, local: local, out: out}
	return out, nil
}

// derive brings ls.derived up to date for the candidate build keys bks at
// generation gen: build keys whose votes did not change since they were
// derived are kept, the ones saved in the store whose votes did not change
// since are read back, the others are evaluated again (on every CPU) and
// saved, and build keys no longer candidates are forgotten.
func (ls *Listings) derive(gen uint64, bks []keys.Build) error {
	next := make(map[keys.Build]*derived, len(bks))
	var todo []keys.Build
	for _, bk := range bks {
		if d := ls.derived[bk]; d != nil && d.gen >= ls.votes.Changed(bk) {
			next[bk] = d
		} else {
			todo = append(todo, bk)
		}
	}
	print, persist := ls.print()
	var versions []uint64
	if persist && len(todo) > 0 {
		// Versions are read before the saved results and the votes.
		var saved [][]byte
		vs, err := ls.votes.VoteVersions(todo)
		if err == nil {
			saved, err = ls.store.Derived(savedKeys(todo))
		}
		if err != nil {
			ls.log.Warn("gateway: saved listings not read", "err", err) // derived afresh
			persist = false
		} else {
			back := make([]*derived, len(todo))
			parallel(len(todo), func(i int) { back[i] = restore(saved[i], print, vs[i], gen) })
			left := todo[:0:0]
			for i, bk := range todo {
				if back[i] != nil {
					next[bk] = back[i]
					continue
				}
				left, versions = append(left, bk), append(versions, vs[i])
			}
			todo = left
		}
	}
	ls.evaluated = len(todo)
	builds, ok, err := ls.votes.AllowedBuildsOf(todo)
	if err != nil {
		return err
	}
	// BUILD_TIME is pinned the first time a build is listed: the new
	// ones are recorded together (one transaction).
	var (
		pending []*derived
		fsKeys  []string
		fsTimes []time.Time
	)
	for i, bk := range todo {
		d := &derived{gen: gen, allowed: ok[i]}
		next[bk] = d
		if !d.allowed {
			continue
		}
		b := builds[i]
		d.cat, d.pn = splitCPV(b.Atts[0].Attestation.CPV)
		served := votes.AgreedServed(b.Atts)
		if served == (trust.ServedSizes{}) {
			d.build = &b
			continue
		}
		d.served = true
		l, fb, key, median, err := ls.describe(b, served)
		if err != nil {
			d.reason = err.Error()
			ls.log.Debug("gateway: not listed", "build_key", bk, "err", err)
			continue
		}
		d.listing, d.fit = l, fb
		pending, fsKeys, fsTimes = append(pending, d), append(fsKeys, key), append(fsTimes, median)
	}
	if len(pending) > 0 {
		at, err := ls.store.FirstSeenAll(fsKeys, fsTimes)
		if err != nil {
			return err
		}
		for i, d := range pending {
			d.listing.Time = at[i]
		}
	}
	if persist {
		vals := map[string][]byte{}
		var drop []string
		for i, bk := range todo {
			if raw, ok := next[bk].save(print, versions[i]); ok {
				vals[savedKey(bk)] = raw
			} else {
				drop = append(drop, savedKey(bk))
			}
		}
		for bk := range ls.derived {
			if next[bk] == nil {
				drop = append(drop, savedKey(bk))
			}
		}
		if ls.derived == nil {
			// The first computation of this process: what was saved for
			// build keys that stopped being candidates meanwhile goes.
			saved, err := ls.store.DerivedKeys(savedKey(""))
			if err != nil {
				ls.log.Warn("gateway: saved listings not listed", "err", err)
			}
			for _, k := range saved {
				if next[keys.Build(strings.TrimPrefix(k, savedKey("")))] == nil {
					drop = append(drop, k)
				}
			}
		}
		if len(vals) > 0 || len(drop) > 0 {
			if err := ls.store.PutDerived(vals, drop); err != nil {
				ls.log.Warn("gateway: listings not saved", "err", err) // derived again after a restart
			}
		}
	}
	ls.derived = next
	return nil
}

// parallel calls fn(0) … fn(n-1) on every CPU.
func parallel(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		})
	}
	wg.Wait()
}

func savedKeys(bks []keys.Build) []string {
	out := make([]string, len(bks))
	for i, bk := range bks {
		out[i] = savedKey(bk)
	}
	return out
}

// setSum fingerprints a set of strings.
func setSum(set map[string]bool) [32]byte {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if set[k] {
			h.Write([]byte(k))
			h.Write([]byte{0})
		}
	}
	return [32]byte(h.Sum(nil))
}

// splitCPV returns the category and PN of a CPV (PN "" when it has no
// valid version).
func splitCPV(cpv string) (cat, pn string) {
	cat, pf, _ := strings.Cut(cpv, "/")
	pn, _ = portagehook.SplitPN(pf)
	return cat, pn
}

// Why says why the gateway's last listing left an allowed build out, or
// ok false when it listed it (or never saw it).
func (ls *Listings) Why(bk keys.Build) (reason string, ok bool) {
	v, ok := ls.unfit.Load(bk)
	if !ok {
		return "", false
	}
	return v.(string), true
}

// listing describes an allowed build for the index. Its CPV (hence PATH)
// is the descriptor's, which the build key binds; its other fields are
// what the counted voters' attestations agree on until the file is here,
// then the file's own (covered) metadata, so the served entry is exactly
// the served file. Nothing a single attester claims decides a field.
func (ls *Listings) listing(b votes.Build, served trust.ServedSizes) (portagehook.Listing, fit.Build, error) {
	l, fb, key, median, err := ls.describe(b, served)
	if err != nil {
		return portagehook.Listing{}, fit.Build{}, err
	}
	if l.Time, err = ls.store.FirstSeen(key, median); err != nil {
		return portagehook.Listing{}, fit.Build{}, err
	}
	return l, fb, nil
}

// describe is listing without its time: it returns the first-seen key
// under which BUILD_TIME is pinned, and the time pinned the first time.
// BUILD_TIME (and the served mtimes) is the median attestation time of
// the voters that allowed the content here — when the network made it,
// which a minority of voters cannot move — pinned the first time it is
// listed, so later votes never force a re-pack; never the re-pack's time.
func (ls *Listings) describe(b votes.Build, served trust.ServedSizes) (l portagehook.Listing, fb fit.Build, firstSeenKey string, median time.Time, err error) {
	att := b.Atts[0].Attestation
	cat, pf, ok := strings.Cut(att.CPV, "/")
	if !ok {
		return l, fb, "", median, fmt.Errorf("cpv %q has no category", att.CPV)
	}
	agreed, err := votes.AgreedIndex(b.Atts)
	if err != nil {
		return l, fb, "", median, err
	}
	needs, ok := votes.AgreedNeeds(b.Atts)
	if !ok {
		return l, fb, "", median, errors.New("its voters disagree on what it needs of a machine (glibc, ISA level)")
	}
	// The descriptor is the one the build key binds (votes checked it).
	var desc identity.Descriptor
	if err := json.Unmarshal(att.Descriptor, &desc); err != nil {
		return l, fb, "", median, fmt.Errorf("descriptor: %w", err)
	}
	fb, err = fit.BuildOf(desc, agreed, fit.Needs{Glibc: needs.Glibc, X86Level: needs.X86Level})
	if err != nil {
		return l, fb, "", median, err
	}
	raw := map[string][]byte{}
	for k, v := range agreed {
		raw[k] = []byte(v + "\n")
	}
	// After the claims: the descriptor's CPV is the one that counts.
	raw["CATEGORY"], raw["PF"] = []byte(cat+"\n"), []byte(pf+"\n")
	times := make([]time.Time, len(b.Atts))
	for i, s := range b.Atts {
		times[i] = s.Attestation.Time
	}
	slices.SortFunc(times, time.Time.Compare)
	l = portagehook.Listing{
		Content:        att.Content.String(),
		ImageDigest:    att.Content.Image,
		MetadataDigest: att.Content.Metadata,
		Metadata:       xpak.NewMetadata(raw),
		BuildID:        identity.ServedBuildID(b.Verdict.BuildKey),
		Served:         xpak.ServedSizes{MetadataTar: served.MetadataTar, ImageTar: served.ImageTar},
	}
	return l, fb, "listing\x00" + string(b.Verdict.BuildKey) + "\x00" + att.Content.String(), times[(len(times)-1)/2], nil
}

func (ls *Listings) Materialize(ctx context.Context, l portagehook.Listing) (string, *xpak.Package, error) {
	c, err := trust.ParseContentID(l.Content)
	if err != nil {
		return "", nil, err
	}
	// Entries remembered which build key each listing came from; its
	// verdict is checked again (materialize refuses what is no longer
	// allowed) without evaluating the whole catalog.
	bk, ok := ls.listed.Load(listingKey(l.Content, l.BuildID))
	if !ok {
		return "", nil, fmt.Errorf("content %s is not listed", l.Content)
	}
	m, err := ls.mz.Materialize(ctx, bk.(keys.Build), nil)
	if err != nil {
		ls.fetchFailed.Inc()
		return "", nil, err
	}
	if m.Verdict.Content == nil || *m.Verdict.Content != c {
		return "", nil, fmt.Errorf("content %s is no longer allowed", l.Content)
	}
	if err := ls.store.IncCounter("bytes_saved", m.Att.Attestation.Size); err != nil {
		ls.log.Warn("count bytes saved", "err", err) // a statistic: the file is served anyway
	}
	return m.Path, ls.mz.VerifiedPackage(m.Att.Attestation.FileSHA256), nil
}

func listingKey(content string, buildID int64) string { return fmt.Sprintf("%s/%d", content, buildID) }

// held reports whether a copy of the build is here already (PKGDIR or
// the cache).
func (ls *Listings) held(b votes.Build) bool {
	for _, s := range b.Atts {
		sha := s.Attestation.FileSHA256
		if lps, _ := ls.store.LocalBySHA(sha); len(lps) > 0 {
			return true
		}
		if ok, _ := ls.store.Cache().Has(sha); ok {
			return true
		}
	}
	return false
}

// prefetched reports whether gateway.prefetch asks for the build to be
// fetched before portage asks: every build (all), or upgrades of the
// packages installed here (installed).
func (ls *Listings) prefetched(d *derived, installed map[string]bool) bool {
	switch ls.prefetch {
	case config.PrefetchAll:
		return true
	case config.PrefetchInstalled:
		return d.pn != "" && installed[d.cat+"/"+d.pn]
	}
	return false
}
