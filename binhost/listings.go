// Package binhost is what portage sees through the gateway: the Allowed
// builds of this platform as index listings, and their files, fetched from
// peers and verified when portage asks for one.
package binhost

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
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
	Logger    *slog.Logger
	Registry  prometheus.Registerer
}

// Listings is the gateway's source (portagehook.Listings).
type Listings struct {
	store     *store.Store
	votes     *votes.Book
	mz        *materialize.Materializer
	platform  string
	prefetch  string
	installed func() map[string]bool
	log       *slog.Logger
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
		prefetch: o.Prefetch, installed: o.Installed, log: o.Logger,
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
// platform, nothing else.
func (ls *Listings) Entries(ctx context.Context) ([]portagehook.Listing, error) {
	builds, err := ls.votes.AllowedBuilds(ls.platform)
	if err != nil {
		return nil, err
	}
	var installed map[string]bool
	if ls.prefetch == config.PrefetchInstalled {
		installed = ls.installed()
	}
	var out []portagehook.Listing
	for _, b := range builds {
		served := votes.AgreedServed(b.Atts)
		// A build whose voters state no served form can only be listed
		// once its file is here (portage needs SIZE): fetched already, or
		// prefetched.
		if served == (trust.ServedSizes{}) && !ls.held(b) && !ls.prefetched(b, installed) {
			continue
		}
		l, err := ls.listing(b, served)
		if err == nil {
			l.Prefetch = ls.prefetched(b, installed)
		}
		if err == nil {
			ls.listed.Store(listingKey(l.Content, l.BuildID), b.Verdict.BuildKey)
		}
		if err != nil {
			ls.log.Warn("gateway: skipping build", "build_key", b.Verdict.BuildKey, "err", err)
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

// listing describes an allowed build for the index. Its CPV (hence PATH)
// is the descriptor's, which the build key binds; its other fields are
// what the counted voters' attestations agree on until the file is here,
// then the file's own (covered) metadata, so the served entry is exactly
// the served file. Nothing a single attester claims decides a field.
func (ls *Listings) listing(b votes.Build, served trust.ServedSizes) (portagehook.Listing, error) {
	att := b.Atts[0].Attestation
	cat, pf, ok := strings.Cut(att.CPV, "/")
	if !ok {
		return portagehook.Listing{}, fmt.Errorf("cpv %q has no category", att.CPV)
	}
	agreed, err := votes.AgreedIndex(b.Atts)
	if err != nil {
		return portagehook.Listing{}, err
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
		return portagehook.Listing{}, err
	}
	return portagehook.Listing{
		Content:     att.Content.String(),
		ImageDigest: att.Content.Image,
		Metadata:    xpak.NewMetadata(raw),
		BuildID:     identity.ServedBuildID(b.Verdict.BuildKey),
		Time:        at,
		Served:      xpak.ServedSizes{MetadataTar: served.MetadataTar, ImageTar: served.ImageTar},
	}, nil
}

func (ls *Listings) Materialize(ctx context.Context, l portagehook.Listing) (string, error) {
	c, err := trust.ParseContentID(l.Content)
	if err != nil {
		return "", err
	}
	// Entries remembered which build key each listing came from; its
	// verdict is checked again (materialize refuses what is no longer
	// allowed) without evaluating the whole catalog.
	bk, ok := ls.listed.Load(listingKey(l.Content, l.BuildID))
	if !ok {
		return "", fmt.Errorf("content %s is not listed", l.Content)
	}
	m, err := ls.mz.Materialize(ctx, bk.(keys.Build), nil)
	if err != nil {
		ls.fetchFailed.Inc()
		return "", err
	}
	if m.Verdict.Content == nil || *m.Verdict.Content != c {
		return "", fmt.Errorf("content %s is no longer allowed", l.Content)
	}
	if err := ls.store.IncCounter("bytes_saved", m.Att.Attestation.Size); err != nil {
		ls.log.Warn("count bytes saved", "err", err) // a statistic: the file is served anyway
	}
	return m.Path, nil
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
