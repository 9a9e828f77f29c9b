// Package binhost is what portage sees through the gateway: the Allowed
// builds of this platform as index listings, and their files, fetched from
// peers and verified when portage asks for one.
package binhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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
}

var _ portagehook.Listings = (*Listings)(nil)

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
func (ls *Listings) Entries(ctx context.Context) ([]portagehook.Listing, error) {
	builds, err := ls.votes.AllowedBuilds(ls.platform)
	if err != nil {
		return nil, err
	}
	m, err := ls.machine()
	if err != nil {
		return nil, fmt.Errorf("this machine's installed system: %w", err)
	}
	var installed map[string]bool
	if ls.prefetch == config.PrefetchInstalled {
		installed = ls.installed()
	}
	var (
		cands []portagehook.Listing
		bks   []keys.Build
		fits  []fit.Build
	)
	for _, b := range builds {
		bk := b.Verdict.BuildKey
		served := votes.AgreedServed(b.Atts)
		// A build whose voters state no served form can only be listed
		// once its file is here (portage needs SIZE): fetched already, or
		// prefetched.
		if served == (trust.ServedSizes{}) && !ls.held(b) && !ls.prefetched(b, installed) {
			ls.unfit.Store(bk, "its voters state no served size: listed once fetched (gentoo-p2pd fetch)")
			continue
		}
		l, fb, err := ls.listing(b, served)
		if err != nil {
			ls.unfit.Store(bk, err.Error())
			ls.log.Debug("gateway: not listed", "build_key", bk, "err", err)
			continue
		}
		l.Prefetch = ls.prefetched(b, installed)
		cands, bks, fits = append(cands, l), append(bks, bk), append(fits, fb)
	}
	var out []portagehook.Listing
	for i, err := range m.FitAll(fits) {
		if err != nil {
			ls.unfit.Store(bks[i], err.Error())
			ls.log.Debug("gateway: not listed", "build_key", bks[i], "err", err)
			continue
		}
		ls.unfit.Delete(bks[i])
		ls.listed.Store(listingKey(cands[i].Content, cands[i].BuildID), bks[i])
		out = append(out, cands[i])
	}
	return out, nil
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
	att := b.Atts[0].Attestation
	cat, pf, ok := strings.Cut(att.CPV, "/")
	if !ok {
		return portagehook.Listing{}, fit.Build{}, fmt.Errorf("cpv %q has no category", att.CPV)
	}
	agreed, err := votes.AgreedIndex(b.Atts)
	if err != nil {
		return portagehook.Listing{}, fit.Build{}, err
	}
	needs, ok := votes.AgreedNeeds(b.Atts)
	if !ok {
		return portagehook.Listing{}, fit.Build{}, errors.New("its voters disagree on what it needs of a machine (glibc, ISA level)")
	}
	// The descriptor is the one the build key binds (votes checked it).
	var desc identity.Descriptor
	if err := json.Unmarshal(att.Descriptor, &desc); err != nil {
		return portagehook.Listing{}, fit.Build{}, fmt.Errorf("descriptor: %w", err)
	}
	fb, err := fit.BuildOf(desc, agreed, fit.Needs{Glibc: needs.Glibc, X86Level: needs.X86Level})
	if err != nil {
		return portagehook.Listing{}, fit.Build{}, err
	}
	raw := map[string][]byte{}
	for k, v := range agreed {
		raw[k] = []byte(v + "\n")
	}
	// After the claims: the descriptor's CPV is the one that counts.
	raw["CATEGORY"], raw["PF"] = []byte(cat+"\n"), []byte(pf+"\n")
	// BUILD_TIME (and the served mtimes) is the median attestation time
	// of the voters that allowed the content here — when the network made
	// it, which a minority of voters cannot move — pinned the first time
	// it is listed, so later votes never force a re-pack; never the
	// re-pack's time.
	times := make([]time.Time, len(b.Atts))
	for i, s := range b.Atts {
		times[i] = s.Attestation.Time
	}
	slices.SortFunc(times, time.Time.Compare)
	at, err := ls.store.FirstSeen("listing\x00"+string(b.Verdict.BuildKey)+"\x00"+att.Content.String(), times[(len(times)-1)/2])
	if err != nil {
		return portagehook.Listing{}, fit.Build{}, err
	}
	return portagehook.Listing{
		Content:     att.Content.String(),
		ImageDigest: att.Content.Image,
		Metadata:    xpak.NewMetadata(raw),
		BuildID:     identity.ServedBuildID(b.Verdict.BuildKey),
		Time:        at,
		Served:      xpak.ServedSizes{MetadataTar: served.MetadataTar, ImageTar: served.ImageTar},
	}, fb, nil
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
func (ls *Listings) prefetched(b votes.Build, installed map[string]bool) bool {
	switch ls.prefetch {
	case config.PrefetchAll:
		return true
	case config.PrefetchInstalled:
		cat, pf, _ := strings.Cut(b.Atts[0].Attestation.CPV, "/")
		pn, ok := portagehook.SplitPN(pf)
		return ok && installed[cat+"/"+pn]
	}
	return false
}
