package localapi

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// settingsOf is a platform's settings with CFLAGS set.
func settingsOf(cflags string) map[string]string {
	return map[string]string{"CHOST": "x86_64-pc-linux-gnu", "CFLAGS": cflags, "CXXFLAGS": "-O2 -pipe",
		"FFLAGS": "", "FCFLAGS": "", "LDFLAGS": "-Wl,-O1"}
}

// TestSearch: search lists the builds of the platform whose CPV contains
// the term, with the verdict, the votes against the threshold, the
// builders, the DHT's holders and what this machine has of it.
func TestSearch(t *testing.T) {
	w := newWorld(t)
	h := w.searchServer(t, jobtest.FixturePlatform(t), settingsOf("-O2 -pipe")).Handler()
	hello := w.a.Local(t, "app-misc/hello-1.0")

	res := decode[api.SearchResult](t, do(h, "GET", api.PathSearch+"?q=hello", ""))
	if res.Platform != jobtest.FixturePlatform(t) || len(res.Builds) != 1 || res.Why != nil {
		t.Fatalf("search hello: %+v", res)
	}
	b := res.Builds[0]
	want := api.SearchBuild{CPV: "app-misc/hello-1.0", BuildKey: b.BuildKey, Verdict: "allowed", Votes: 1, Threshold: 1, Weight: trust.FullWeight,
		Builders: 1, VariantKey: keys.Variant(hello.VariantKey), Holders: 0, FetchedCopies: 0, Here: "built here"}
	if string(b.BuildKey) != hello.BuildKey || b != want {
		t.Errorf("hello\n got %+v\nwant %+v", b, want)
	}
	// Demand: a and b want hello's variant (b's record arrives by
	// gossip); b also wants a variant of hello nobody built.
	if err := w.a.Node.JoinPlatform(jobtest.FixturePlatform(t)); err != nil {
		t.Fatal(err)
	}
	desc := jobtest.Identify(t, hello.Path).Descriptor
	var hd identity.Descriptor
	if err := json.Unmarshal(desc, &hd); err != nil {
		t.Fatal(err)
	}
	unbuilt := hd
	unbuilt.USE = []string{"nls"}
	for _, r := range []struct {
		n *node
		d identity.Descriptor
	}{{w.a, hd}, {w.b, hd}, {w.b, unbuilt}} {
		if _, err := r.n.Book.RecordDemand(t.Context(), r.d, trust.DemandSource); err != nil {
			t.Fatal(err)
		}
	}
	res = decode[api.SearchResult](t, do(h, "GET", api.PathSearch+"?q=hello", ""))
	if len(res.Builds) != 1 || res.Builds[0].Wanted != 2 {
		t.Fatalf("search hello with demand: %+v", res)
	}
	if len(res.Wanted) != 1 || res.Wanted[0].VariantKey != unbuilt.VariantKey() || res.Wanted[0].Wanters != 1 ||
		!slices.Equal(res.Wanted[0].USE, []string{"nls"}) || res.Wanted[0].CPV != "app-misc/hello-1.0" {
		t.Fatalf("wanted, not built: %+v", res.Wanted)
	}
	if fres := decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q=app-misc/hello-1.0", "")); len(fres.Builds) != 1 || fres.Builds[0].Wanted != 2 {
		t.Fatalf("find hello with demand: %+v", fres)
	}
	if n, err := w.a.Store.DemandRecords(); err != nil || n != 3 {
		t.Errorf("a holds %d demand records (%v), want 3", n, err)
	}
	// b's libfoo: a holds no copy; the DHT names b, its builder.
	res = decode[api.SearchResult](t, do(h, "GET", api.PathSearch+"?q="+url.QueryEscape("DEV-LIBS/"), ""))
	if len(res.Builds) != 1 || res.Builds[0].CPV != "dev-libs/libfoo-2.1" || res.Builds[0].Here != "" ||
		res.Builds[0].Holders != 1 || res.Builds[0].FetchedCopies != 0 || res.Builds[0].Builders != 1 {
		t.Errorf("search dev-libs/: %+v", res)
	}
	wantError(t, "search with no term", do(h, "GET", api.PathSearch+"?q=", ""), api.CodeBadRequest, "give a term")
}

// searchServer is a's local API on platform, the platform the records
// of the fixtures name (the world's gossip topic is testPlatform).
func (w *world) searchServer(t *testing.T, platform string, settings map[string]string) *Server {
	return New(Options{Store: w.a.Store, Votes: w.a.Book, Own: w.a.own, Materialize: w.a.mz, Net: w.a.Node,
		Self: w.a.ID, Platform: platform, PlatformSettings: settings, Config: w.cfg})
}

// TestNothingFoundSaysWhy: on another platform than its peers, search and
// find find nothing and say so: this machine's platform and settings, the
// peers of the other platform that hold the package, and the setting
// that differs.
func TestNothingFoundSaysWhy(t *testing.T) {
	w := newWorld(t)
	for _, n := range []*node{w.b, w.c} {
		peerSrv := New(Options{Store: n.Store, Votes: n.Book, Net: n.Node, Self: n.ID, Platform: jobtest.FixturePlatform(t),
			PlatformSettings: settingsOf("-O2 -pipe")})
		n.Node.Serve(p2p.Handlers{Attestations: n.Book.ServeAttestations, Catalog: n.Book.ServeCatalog,
			OnGossip: n.Book.OnGossip, About: peerSrv.About})
	}
	const other = "x86_64-pc-linux-gnu-0123456789abcdef"
	h := w.searchServer(t, other, settingsOf("-O3 -march=x86-64-v3  -pipe")).Handler()

	// b built consumer; c holds only its layout.
	res := decode[api.SearchResult](t, do(h, "GET", api.PathSearch+"?q=consumer", ""))
	if len(res.Builds) != 0 || res.Why == nil {
		t.Fatalf("search consumer on another platform: %+v", res)
	}
	checkWhy(t, "search", res.Why, other, w.b.ID.String())

	// find lists what it knows of every platform (a heard b's attestation),
	// and says none of it is for this machine, and why.
	fres := decode[api.FindResult](t, do(h, "GET", api.PathFind+"?q=app-misc/consumer-1.0", ""))
	if len(fres.Builds) != 1 || fres.Why == nil {
		t.Fatalf("find consumer: %+v", fres)
	}
	checkWhy(t, "find", fres.Why, other, w.b.ID.String())
	// On the fixtures' platform it is this machine's: no why.
	same := w.searchServer(t, jobtest.FixturePlatform(t), settingsOf("-O2 -pipe")).Handler()
	if fres := decode[api.FindResult](t, do(same, "GET", api.PathFind+"?q=app-misc/consumer-1.0", "")); fres.Why != nil {
		t.Errorf("find consumer on its platform says why: %+v", fres.Why)
	}

	// Peers of the same platform holding nothing: nothing elsewhere.
	res = decode[api.SearchResult](t, do(same, "GET", api.PathSearch+"?q=nosuchpackage", ""))
	if len(res.Builds) != 0 || res.Why == nil || res.Why.PeersAsked != 2 || len(res.Why.Elsewhere) != 0 {
		t.Errorf("search nosuchpackage: %+v", res)
	}
}

func checkWhy(t *testing.T, what string, why *api.NothingFound, platform string, peers ...string) {
	t.Helper()
	if why.Platform != platform || why.Settings["CFLAGS"] != "-O3 -march=x86-64-v3  -pipe" || why.PeersAsked != 2 || why.PeersAnswered != 2 {
		t.Errorf("%s: why %+v", what, why)
	}
	if len(why.Elsewhere) != 1 {
		t.Fatalf("%s: elsewhere %+v", what, why.Elsewhere)
	}
	op := why.Elsewhere[0]
	slices.Sort(peers)
	if op.Platform != jobtest.FixturePlatform(t) || !slices.Equal(op.Peers, peers) || !slices.Equal(op.CPVs, []string{"app-misc/consumer-1.0"}) {
		t.Errorf("%s: other platform %+v", what, op)
	}
	want := []api.SettingDiff{{Setting: "CFLAGS", Here: "-O3 -march=x86-64-v3 -pipe", There: "-O2 -pipe"}}
	if !slices.Equal(op.Differs, want) {
		t.Errorf("%s: differs %+v, want %+v", what, op.Differs, want)
	}
}

// TestNothingFoundDropsPeerText: what peers answer reaches the API and
// the terminal, so an answer whose platform is not a platform is left
// out, and of the others only settings of printable ASCII and CPVs that
// are CPVs matching the query are kept: no terminal escape gets through.
func TestNothingFoundDropsPeerText(t *testing.T) {
	w := newWorld(t)
	const theirs = "x86_64-pc-linux-gnu-fedcba9876543210"
	answers := map[*node]string{
		w.b: `{"platform":"\u001b[2J\u001b]0;owned\u0007","settings":{},"cpvs":["app-misc/consumer-1.0"]}`,
		w.c: `{"platform":"` + theirs + `","settings":{"CHOST":"x86_64-pc-linux-gnu","CFLAGS":"-O2\u001b[31m","LDFLAGS":"-Wl,-O1","EVIL":"x"},` +
			`"cpvs":["app-misc/consumer-1.0\u001b[31m","\u001b]0;pwn\u0007","not a cpv","app-misc/other-1.0","app-misc/consumer-1.0","app-misc/consumer-1.0"]}`,
	}
	for n, answer := range answers {
		n.Node.Serve(p2p.Handlers{About: func(context.Context, string) ([]byte, error) { return []byte(answer), nil }})
	}
	const here = "x86_64-pc-linux-gnu-0123456789abcdef"
	h := w.searchServer(t, here, settingsOf("-O2 -pipe")).Handler()
	res := decode[api.SearchResult](t, do(h, "GET", api.PathSearch+"?q=consumer", ""))
	if res.Why == nil || res.Why.PeersAsked != 2 || res.Why.PeersAnswered != 1 || len(res.Why.Elsewhere) != 1 {
		t.Fatalf("search consumer: %+v", res.Why)
	}
	op := res.Why.Elsewhere[0]
	if op.Platform != theirs || !slices.Equal(op.Peers, []string{w.c.ID.String()}) || !slices.Equal(op.CPVs, []string{"app-misc/consumer-1.0"}) {
		t.Errorf("other platform %+v", op)
	}
	for _, d := range op.Differs {
		if strings.ContainsAny(d.There, "\x1b\x07") || d.Setting == "EVIL" {
			t.Errorf("setting %s passed through as %q", d.Setting, d.There)
		}
	}
}
