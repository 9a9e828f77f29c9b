package binhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

func entries(t *testing.T, ls *Listings) map[string]portagehook.Listing {
	t.Helper()
	out, err := ls.Entries(context.Background())
	if err != nil {
		t.Fatalf("Entries: %v", err)
	}
	return byCPV(t, out)
}

// TestEntriesByPrefetch: the gateway lists every Allowed build of its
// platform whose voters state the served form — before any byte of it is
// here, whatever gateway.prefetch says — and gateway.prefetch only marks
// which of them to fetch ahead: all, none, or builds of installed
// packages. Each listing describes its build: the descriptor's CPV, the
// allowed content, the stable BUILD_ID of the build key, the agreed
// served sizes, and a BUILD_TIME that is the voters' median attestation
// time.
func TestEntriesByPrefetch(t *testing.T) {
	g := newGateway(t)
	bks := map[string]keys.Build{jobtest.HelloCPV: g.buildKey(t, jobtest.HelloCPV), jobtest.LayoutCPV: g.buildKey(t, jobtest.LayoutCPV)}
	for cpv, bk := range bks {
		if _, ok, err := g.Book.AllowedBuild(bk); err != nil || !ok {
			t.Fatalf("%s is not allowed at threshold 2 (%v): the network was not set up", cpv, err)
		}
	}
	both := []string{jobtest.HelloCPV, jobtest.LayoutCPV}
	for _, tc := range []struct {
		name      string
		prefetch  string
		installed []string // PF dirs under the vdb
		ahead     []string // listings marked for prefetch
	}{
		{"all", config.PrefetchAll, nil, both},
		{"none", config.PrefetchNone, []string{jobtest.LayoutCPV}, nil},
		{"installed: nothing of it", config.PrefetchInstalled, []string{"sys-apps/portage-3.0.82"}, nil},
		{"installed: the same version", config.PrefetchInstalled, []string{jobtest.LayoutCPV}, []string{jobtest.LayoutCPV}},
		{"installed: an older version", config.PrefetchInstalled, []string{"app-misc/layout-0.9"}, []string{jobtest.LayoutCPV}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g.vdb = t.TempDir()
			for _, cpv := range tc.installed {
				g.install(t, cpv)
			}
			got := entries(t, g.listings(t, tc.prefetch))
			if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, both) {
				t.Fatalf("listed %v, want %v", names, both)
			}
			var ahead []string
			for cpv, l := range got {
				if l.Prefetch {
					ahead = append(ahead, cpv)
				}
				ab, _, err := g.Book.AllowedBuild(bks[cpv])
				if err != nil {
					t.Fatal(err)
				}
				if l.Content != ab.Verdict.Content.String() || l.ImageDigest != ab.Verdict.Content.Image {
					t.Errorf("%s: listed content %s, allowed %s", cpv, l.Content, ab.Verdict.Content)
				}
				if l.BuildID != identity.ServedBuildID(bks[cpv]) {
					t.Errorf("%s: BUILD_ID %d, want the build key's %d", cpv, l.BuildID, identity.ServedBuildID(bks[cpv]))
				}
				times := []time.Time{}
				for _, s := range ab.Atts {
					times = append(times, s.Attestation.Time)
				}
				slices.SortFunc(times, time.Time.Compare)
				first := times[(len(times)-1)/2]
				if l.Metadata.Get("SLOT") != "0" || !l.Time.Equal(first) {
					t.Errorf("%s: SLOT %q, time %v, want the voters' median %v", cpv, l.Metadata.Get("SLOT"), l.Time, first)
				}
				want := votes.AgreedServed(ab.Atts)
				if l.Served.ImageTar == 0 || l.Served.MetadataTar != want.MetadataTar || l.Served.ImageTar != want.ImageTar {
					t.Errorf("%s: served sizes %+v, the voters state %+v", cpv, l.Served, want)
				}
			}
			if slices.Sort(ahead); !slices.Equal(ahead, tc.ahead) {
				t.Errorf("marked for prefetch %v, want %v", ahead, tc.ahead)
			}
		})
	}
	// Another platform's gateway lists nothing of these.
	other := New(Options{Store: g.Store, Votes: g.Book, Materialize: g.mz, Platform: hostile.Platform{CHOST: "aarch64-unknown-linux-gnu"}.Platform(), Prefetch: config.PrefetchAll, Machine: func() (*fit.Machine, error) { return g.machine, nil }})
	if got := entries(t, other); len(got) != 0 {
		t.Errorf("another platform's listings: %v", slices.Sorted(maps.Keys(got)))
	}
}

// TestListingIndexIsAgreed: a field reaches the listing only as a strict
// majority of the voters states it. A third voter relabelling layout with
// its own DESCRIPTION votes for the same content and changes nothing;
// fields all agree on stay.
func TestListingIndexIsAgreed(t *testing.T) {
	g := newGateway(t)
	ls := g.listings(t, config.PrefetchAll)
	honest := entries(t, ls)[jobtest.LayoutCPV]
	desc := honest.Metadata.Get("DESCRIPTION")
	if desc == "" {
		t.Fatal("the honest listing has no DESCRIPTION")
	}

	bk := g.buildKey(t, jobtest.LayoutCPV)
	_, atts, err := g.Book.Verdict(bk)
	if err != nil || len(atts) == 0 {
		t.Fatalf("verdict: %v", err)
	}
	key, liarID := jobtest.NewKey(t)
	liar, err := hostile.Relabel(atts[0], key, atts[0].Attestation.Time, map[string]string{"DESCRIPTION": "run curl | sh first"})
	if err != nil {
		t.Fatal(err)
	}
	if added, err := g.Book.IngestFrom(context.Background(), liar.Marshal(), liarID); !added {
		t.Fatalf("relabelled attestation not stored: %v", err)
	}
	l := entries(t, ls)[jobtest.LayoutCPV]
	if got := l.Metadata.Get("DESCRIPTION"); got != desc {
		t.Errorf("DESCRIPTION %q listed; the majority states %q", got, desc)
	}
	if l.Metadata.Get("SLOT") != honest.Metadata.Get("SLOT") || listedCPV(l) != jobtest.LayoutCPV {
		t.Errorf("agreed fields changed: SLOT %q, CPV %s", l.Metadata.Get("SLOT"), listedCPV(l))
	}
	if l.Content != honest.Content || l.BuildID != honest.BuildID || !l.Time.Equal(honest.Time) {
		t.Error("a relabelled vote changed the listed content, BUILD_ID or time")
	}
}

// TestBuildIDStable: a build key's BUILD_ID and listed time survive a
// restart of the gateway, and two builds never share an id.
func TestBuildIDStable(t *testing.T) {
	g := newGateway(t)
	first := entries(t, g.listings(t, config.PrefetchAll))
	again := entries(t, g.listings(t, config.PrefetchAll)) // a new Listings: a restart
	for cpv, l := range first {
		if again[cpv].BuildID != l.BuildID || !again[cpv].Time.Equal(l.Time) || again[cpv].Content != l.Content {
			t.Errorf("%s: BUILD_ID %d → %d, time %v → %v", cpv, l.BuildID, again[cpv].BuildID, l.Time, again[cpv].Time)
		}
	}
	if first[jobtest.HelloCPV].BuildID == first[jobtest.LayoutCPV].BuildID {
		t.Error("two builds share a BUILD_ID")
	}
	seen := map[int64]bool{}
	for i := range 1000 {
		id := identity.ServedBuildID(keys.Build(string(rune('a'+i%26)) + strings.Repeat("k", i)))
		if id <= 0 || id > 1<<31 {
			t.Fatalf("BUILD_ID %d out of portage's range", id)
		}
		if id != identity.ServedBuildID(keys.Build(string(rune('a'+i%26))+strings.Repeat("k", i))) {
			t.Fatal("BUILD_ID not deterministic")
		}
		seen[id] = true
	}
	if len(seen) < 999 {
		t.Errorf("%d distinct BUILD_IDs for 1000 keys", len(seen))
	}
}

// TestMaterialize: a listed own build is served from PKGDIR without a
// fetch; a listed build held by peers is fetched from them, verified,
// cached and provided; a cached build is then listed even under
// prefetch = none. A listing Entries never returned is refused.
func TestMaterialize(t *testing.T) {
	ctx := context.Background()
	g := newGateway(t)
	ls := g.listings(t, config.PrefetchAll)
	got := entries(t, ls)

	path, _, err := ls.Materialize(ctx, got[jobtest.HelloCPV])
	if err != nil {
		t.Fatalf("Materialize hello: %v", err)
	}
	if path != filepath.Join(g.pkgdir, jobtest.HelloFile) || g.fetch.Calls() != 0 {
		t.Errorf("own build materialized at %s after %d fetches, want PKGDIR and none", path, g.fetch.Calls())
	}
	size := fileSize(t, path)
	if c, _ := g.Store.Counters(); c["bytes_saved"] != size {
		t.Errorf("bytes_saved = %d, want %d", c["bytes_saved"], size)
	}

	path, pkg, err := ls.Materialize(ctx, got[jobtest.LayoutCPV])
	if err != nil {
		t.Fatalf("Materialize layout: %v", err)
	}
	// Fetched and verified now: the package as read comes along, so the
	// re-pack does not read the file again.
	if pkg == nil || pkg.ImageDigest != got[jobtest.LayoutCPV].ImageDigest {
		t.Errorf("fetched layout comes without the verified package (%v)", pkg)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Either peer's build: independent, same content, other bytes.
	fromB, err := fixtures.Read(fixtures.ReproGPKG1, jobtest.LayoutFile)
	if err != nil {
		t.Fatal(err)
	}
	fromA, err := fixtures.Read(fixtures.ReproGPKG2, jobtest.LayoutFile)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); sum != sha256.Sum256(fromA) && sum != sha256.Sum256(fromB) ||
		!strings.HasPrefix(path, g.Store.Cache().Dir()) || g.fetch.Calls() != 1 {
		t.Errorf("layout materialized at %s (%d fetches), want the fetched file in the cache", path, g.fetch.Calls())
	}
	if !g.Node.Providing(jobtest.CID(t, string(g.buildKey(t, jobtest.LayoutCPV)))) {
		t.Error("the fetched copy is not provided")
	}
	if c, _ := g.Store.Counters(); c["bytes_saved"] != size+int64(len(data)) {
		t.Errorf("bytes_saved = %d, want %d", c["bytes_saved"], size+int64(len(data)))
	}
	// Held here now: listed without prefetching, and not fetched again.
	if names := slices.Sorted(maps.Keys(entries(t, g.listings(t, config.PrefetchNone)))); !slices.Equal(names, []string{jobtest.HelloCPV, jobtest.LayoutCPV}) {
		t.Errorf("prefetch none lists %v once layout is cached", names)
	}
	if p, _, err := ls.Materialize(ctx, got[jobtest.LayoutCPV]); err != nil || p != path || g.fetch.Calls() != 1 {
		t.Errorf("second Materialize: %s, %v after %d fetches", p, err, g.fetch.Calls())
	}

	// Listings Entries never returned.
	unlisted := got[jobtest.HelloCPV]
	unlisted.BuildID++
	backdoored := got[jobtest.LayoutCPV]
	backdoored.Content = trust.ContentID{Image: sha256.Sum256([]byte("other")), Metadata: sha256.Sum256([]byte("content"))}.String()
	for name, l := range map[string]portagehook.Listing{"other BUILD_ID": unlisted, "other content": backdoored} {
		if _, _, err := ls.Materialize(ctx, l); err == nil || !strings.Contains(err.Error(), "is not listed") {
			t.Errorf("%s: Materialize = %v, want \"is not listed\"", name, err)
		}
	}
	bad := got[jobtest.HelloCPV]
	bad.Content = "not a content id"
	if _, _, err := ls.Materialize(ctx, bad); err == nil {
		t.Error("Materialize accepted a malformed content id")
	}
	if n := jobtest.Counter(t, g.reg, "gentoo_p2pd_gateway_fetch_failures_total"); n != 0 {
		t.Errorf("fetch failures = %v, want 0", n)
	}
}

// TestMaterializeFetchFails: a listed build no peer delivers is an error
// and counts as a gateway fetch failure.
func TestMaterializeFetchFails(t *testing.T) {
	g := newGateway(t)
	ls := g.listings(t, config.PrefetchAll)
	l := entries(t, ls)[jobtest.LayoutCPV]
	g.fetch.SetFail(errors.New("every provider went away"))
	if _, _, err := ls.Materialize(context.Background(), l); err == nil || !strings.Contains(err.Error(), "every provider went away") {
		t.Errorf("Materialize = %v, want the fetch error", err)
	}
	if n := jobtest.Counter(t, g.reg, "gentoo_p2pd_gateway_fetch_failures_total"); n != 1 {
		t.Errorf("fetch failures = %v, want 1", n)
	}
}

// TestMaterializeDisputedAfterListing: a build listed a moment ago and
// disputed since (a peer attests a trojaned content for its build key) is
// refused, not fetched, and no longer listed.
func TestMaterializeDisputedAfterListing(t *testing.T) {
	g := newGateway(t)
	ls := g.listings(t, config.PrefetchAll)
	l := entries(t, ls)[jobtest.LayoutCPV]

	cdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.Backdoored, cdir)
	c := newNode(t, g.net, cdir, 2)
	c.start(t) // gossips the trojaned layout's attestation
	if v, _, err := g.Book.Verdict(g.buildKey(t, jobtest.LayoutCPV)); err != nil || v.Decision == trust.Allowed {
		t.Fatalf("layout still %v (%v) after a competing vote", v.Decision, err)
	}
	if _, _, err := ls.Materialize(context.Background(), l); !errors.Is(err, materialize.ErrNotAllowed) {
		t.Errorf("Materialize of a disputed build = %v, want ErrNotAllowed", err)
	}
	if g.fetch.Calls() != 0 {
		t.Error("a disputed build was fetched")
	}
	if got := entries(t, ls); len(got) != 1 || got[jobtest.HelloCPV].Content == "" {
		t.Errorf("listed %v after the dispute, want hello only", slices.Sorted(maps.Keys(got)))
	}
}

// TestEntriesStoreError: a store that cannot be read is an error, never an
// empty (or partial) listing.
func TestEntriesStoreError(t *testing.T) {
	g := newGateway(t)
	ls := g.listings(t, config.PrefetchAll)
	if err := g.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := ls.Entries(context.Background()); err == nil {
		t.Errorf("Entries on a closed store: %d listings, no error", len(got))
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestEntriesFitThisMachine: the listing leaves out an allowed build this
// machine cannot run — a soname no installed package provides, a glibc
// older than the content needs (from the voters' agreed needs), an ISA
// level the CPU lacks — and says why; the same build is listed on a
// machine it fits.
func TestEntriesFitThisMachine(t *testing.T) {
	g := newGateway(t)
	bk := g.buildKey(t, jobtest.HelloCPV)
	ab, ok, err := g.Book.AllowedBuild(bk)
	if err != nil || !ok {
		t.Fatalf("hello not allowed: %v", err)
	}
	needs, ok := votes.AgreedNeeds(ab.Atts)
	if !ok || needs.Glibc == "" {
		t.Fatalf("hello's voters state no glibc need (%+v, agreed %v): the attestations lack needs", needs, ok)
	}
	for _, tc := range []struct {
		name  string
		edit  func(m *fit.Machine)
		words string
	}{
		{"no libc installed", func(m *fit.Machine) { m.Provides = nil }, "libc.so.6"},
		{"older glibc", func(m *fit.Machine) { m.Glibc = "GLIBC_2.17" }, needs.Glibc},
		{"older CPU", func(m *fit.Machine) { m.X86Level, m.CPUFlags = 0, nil }, "x86-64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "older CPU" && needs.X86Level == 0 {
				t.Fatal("hello's voters state no ISA level: the needs are not attested")
			}
			g.machine = jobtest.Machine()
			tc.edit(g.machine)
			ls := g.listings(t, config.PrefetchNone)
			got := entries(t, ls)
			if _, listed := got[jobtest.HelloCPV]; listed {
				t.Fatalf("hello listed on a machine it does not fit")
			}
			if _, listed := got[jobtest.LayoutCPV]; !listed {
				t.Errorf("layout (no needs) left out too: %v", slices.Sorted(maps.Keys(got)))
			}
			why, ok := ls.Why(bk)
			if !ok || !strings.Contains(why, tc.words) {
				t.Errorf("why = %q (%v), want it to name %q", why, ok, tc.words)
			}
		})
	}
	g.machine = jobtest.Machine()
	ls := g.listings(t, config.PrefetchNone)
	if _, listed := entries(t, ls)[jobtest.HelloCPV]; !listed {
		t.Fatal("hello not listed on a machine it fits")
	}
	if why, ok := ls.Why(bk); ok {
		t.Errorf("listed, yet Why says %q", why)
	}
}
