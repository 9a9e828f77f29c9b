package votes

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"golang.org/x/time/rate"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// fixtureDescriptor is the build descriptor of a real portage binpkg.
func fixtureDescriptor(t testing.TB, name string) identity.Descriptor {
	t.Helper()
	dir := t.TempDir()
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, dir); err != nil {
		t.Fatal(err)
	}
	pkg, err := xpak.ReadFile(filepath.Join(dir, name), xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	return desc
}

// signDemand signs a demand for desc's variant with k; edit may relabel it.
func signDemand(t testing.TB, k crypto.PrivKey, desc identity.Descriptor, at time.Time, edit func(*trust.Demand)) *trust.SignedDemand {
	t.Helper()
	raw, err := json.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	d := trust.Demand{VariantKey: desc.VariantKey(), CPV: desc.CPV, Platform: desc.Platform(), Descriptor: raw, Kind: trust.DemandBinary, Time: at}
	if edit != nil {
		edit(&d)
	}
	s, err := trust.SignDemand(d, k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func demandMsg(s *trust.SignedDemand) []byte { return append([]byte{gossipTagDemand}, s.Marshal()...) }

// A daemon's own demand reaches the other daemons on the platform topic,
// and each identity counts once per variant.
func TestDemandTravelsAndCountsOncePerIdentity(t *testing.T) {
	net := memnet.New()
	a := joinBook(t, net, true, nil)
	b := joinBook(t, net, true, nil)
	c := joinBook(t, net, true, nil)
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	layout := fixtureDescriptor(t, "app-misc/layout-1.0-r1.gpkg.tar")
	platform := hello.Platform()
	for _, m := range []member{a, b, c} {
		if err := m.node.JoinPlatform(platform); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	if _, err := a.RecordDemand(ctx, hello, trust.DemandSource); err != nil {
		t.Fatal(err)
	}
	// memnet delivers synchronously; the daemon's own record counts too.
	for name, m := range map[string]member{"a": a, "b": b, "c": c} {
		if n := m.WantCount(hello.VariantKey()); n != 1 {
			t.Fatalf("%s counts %d wanters of hello, want 1", name, n)
		}
	}
	// a again (a newer record): still one wanter.
	if _, err := a.RecordDemand(ctx, hello, trust.DemandBinary); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecordDemand(ctx, hello, trust.DemandWanted); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecordDemand(ctx, layout, trust.DemandSource); err != nil {
		t.Fatal(err)
	}
	wants, err := b.Wanted(platform, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(wants) != 2 {
		t.Fatalf("b wants %+v, want hello and layout", wants)
	}
	w := wants[0]
	if w.Variant != hello.VariantKey() || w.CPV != "app-misc/hello-1.0" || w.Wanters != 2 || w.Platform != platform {
		t.Fatalf("first want %+v, want hello with 2 wanters", w)
	}
	if w.Descriptor.EbuildDigest != hello.EbuildDigest || w.Descriptor.CFLAGS != hello.CFLAGS || w.Descriptor.VariantKey() != hello.VariantKey() {
		t.Fatalf("want's descriptor %+v does not describe hello's variant", w.Descriptor)
	}
	if len(w.Descriptor.SlotDeps) != 0 || len(w.Descriptor.Requires) != 0 {
		t.Fatalf("demand carries linked libraries %v %v", w.Descriptor.SlotDeps, w.Descriptor.Requires)
	}
	if wants[1].Variant != layout.VariantKey() || wants[1].Wanters != 1 {
		t.Fatalf("second want %+v, want layout with 1 wanter", wants[1])
	}
	if one, _ := b.Wanted(platform, 1); len(one) != 1 || one[0].Variant != hello.VariantKey() {
		t.Fatalf("Wanted(1) = %+v", one)
	}
	if other, _ := b.Wanted("aarch64-unknown-linux-gnu-0000000000000000", 0); len(other) != 0 {
		t.Fatalf("another platform wants %+v", other)
	}
	if b.Rejected() != 0 {
		t.Fatalf("%d rejections of honest demand", b.Rejected())
	}
}

// Demand that does not say what it claims is rejected with an error that
// names the problem (and penalises the relay); valid demand beyond a bound
// is ignored.
func TestDemandRejectsWhatFailsItsChecks(t *testing.T) {
	net := memnet.New()
	b := joinBook(t, net, true, nil)
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	layout := fixtureDescriptor(t, "app-misc/layout-1.0-r1.gpkg.tar")
	platform := hello.Platform()
	k, id := mustKey(t)
	now := time.Now()
	good := signDemand(t, k, hello, now, nil)
	badSig := *good
	badSig.Signature = append([]byte(nil), good.Signature...)
	badSig.Signature[5] ^= 1
	native := hello
	native.CFLAGS = "-O2 -march=native"
	evilUSE := hello
	evilUSE.USE = []string{"system\n=app-misc/evil-1 foo"}
	for _, tc := range []struct {
		name, topic string
		msg         []byte
		want        string
	}{
		{"relabelled variant key", platform, demandMsg(signDemand(t, k, hello, now, func(d *trust.Demand) { d.VariantKey = layout.VariantKey() })), "variant key"},
		{"relabelled cpv", platform, demandMsg(signDemand(t, k, hello, now, func(d *trust.Demand) { d.CPV = "sys-libs/glibc-2.40" })), "cpv"},
		{"bad signature", platform, demandMsg(&badSig), "signature"},
		{"wrong platform topic", testPlatform.Platform(), demandMsg(good), "gossiped on topic"},
		{"dated in the future", platform, demandMsg(signDemand(t, k, hello, now.Add(48*time.Hour), nil)), "in the future"},
		// Dated just under a day ahead, it would outlive every honest
		// record at the store-wide bound.
		{"dated an hour ahead", platform, demandMsg(signDemand(t, k, hello, now.Add(time.Hour), nil)), "in the future"},
		{"USE flag a builder would hand to portage as two lines", platform, demandMsg(signDemand(t, k, evilUSE, now, nil)), "use flag"},
		{"native flags", native.Platform(), demandMsg(signDemand(t, k, native, now, nil)), "native"},
		{"not json", platform, append([]byte{gossipTagDemand}, "garbage"...), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Rejected()
			err := b.OnGossip(id, id, tc.topic, tc.msg)
			if err == nil || errors.Is(err, wire.ErrGossipIgnore) || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Fatalf("OnGossip = %v; want a rejection naming %q", err, tc.want)
			}
			if b.Rejected() != before+1 {
				t.Fatal("rejection not counted")
			}
		})
	}
	if n := b.WantCount(layout.VariantKey()) + b.WantCount(hello.VariantKey()); n != 0 {
		t.Fatalf("rejected demand counted: %d", n)
	}
	// The good one passes; past the horizon it is ignored, not rejected.
	if err := b.OnGossip(id, id, platform, demandMsg(good)); err != nil {
		t.Fatal(err)
	}
	old := signDemand(t, k, layout, now.Add(-DemandHorizon-time.Hour), nil)
	if err := b.OnGossip(id, id, platform, demandMsg(old)); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("demand past the horizon: %v", err)
	}
	if b.WantCount(hello.VariantKey()) != 1 || b.WantCount(layout.VariantKey()) != 0 {
		t.Fatal("counts after the good and the old demand")
	}
}

// One identity (a Sybil inventing variants) holds at most
// limits.peer_demands records here; its oldest go, nobody else's.
func TestDemandBoundedPerIdentity(t *testing.T) {
	net := memnet.New()
	b := joinBook(t, net, true, func(c *config.Config) { c.Limits.PeerDemands = 3 })
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	platform := hello.Platform()
	honestKey, honest := mustKey(t)
	if err := b.OnGossip(honest, honest, platform, demandMsg(signDemand(t, honestKey, hello, time.Now().Add(-time.Hour), nil))); err != nil {
		t.Fatal(err)
	}
	sybilKey, sybil := mustKey(t)
	var variants []identity.Descriptor
	for i := range 5 {
		d := hello
		d.USE = []string{fmt.Sprintf("invented%d", i)}
		variants = append(variants, d)
		if err := b.OnGossip(sybil, sybil, platform, demandMsg(signDemand(t, sybilKey, d, time.Now().Add(time.Duration(i-10)*time.Minute), nil))); err != nil {
			t.Fatalf("sybil's demand %d: %v", i, err)
		}
	}
	if n, err := b.store.DemandsBy(sybil.String()); err != nil || n != 3 {
		t.Fatalf("sybil holds %d demand records (%v), cap 3", n, err)
	}
	for i, d := range variants {
		if got, want := b.WantCount(d.VariantKey()), map[bool]int{true: 1, false: 0}[i >= 2]; got != want {
			t.Errorf("invented variant %d: %d wanters, want %d (the oldest go)", i, got, want)
		}
	}
	if b.WantCount(hello.VariantKey()) != 1 {
		t.Fatal("the honest peer's demand was evicted")
	}
	// An older record than all it holds is ignored, not an offence.
	d := hello
	d.USE = []string{"late"}
	if err := b.OnGossip(sybil, sybil, platform, demandMsg(signDemand(t, sybilKey, d, time.Now().Add(-time.Hour), nil))); !errors.Is(err, wire.ErrGossipIgnore) {
		t.Fatalf("old record over the cap: %v", err)
	}
}

// Past its identity's rate, demand is ignored unstored, whoever relays it.
func TestDemandRatePerIdentity(t *testing.T) {
	b := joinBook(t, memnet.New(), true, nil)
	// The burst lowered to keep the test short, and a token every hour so
	// a slow machine cannot refill one between the sends.
	b.demandRates = wire.NewPeerRates(rate.Every(time.Hour), 2)
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	k, id := mustKey(t)
	_, relay := mustKey(t)
	for i := range 3 {
		d := hello
		d.USE = []string{fmt.Sprintf("flag%d", i)}
		err := b.OnGossip(id, relay, hello.Platform(), demandMsg(signDemand(t, k, d, time.Now(), nil)))
		switch {
		case i < 2 && err != nil:
			t.Fatalf("demand %d within the burst: %v", i, err)
		case i == 2 && (!errors.Is(err, wire.ErrGossipIgnore) || !strings.Contains(err.Error(), "demand records per second")):
			t.Fatalf("demand past the burst: %v", err)
		}
	}
	if n, _ := b.store.DemandsBy(id.String()); n != 2 {
		t.Fatalf("%d records stored, want the burst of 2", n)
	}
}

// Without a key a Book cannot record demand; with native flags it refuses.
func TestRecordDemandRefuses(t *testing.T) {
	vb := offlineBook(t, nil)
	hello := fixtureDescriptor(t, "app-misc/hello-1.0.gpkg.tar")
	native := hello
	native.CFLAGS = "-march=native -O2"
	if _, err := vb.RecordDemand(t.Context(), native, trust.DemandSource); err == nil {
		t.Fatal("native flags recorded")
	}
	vb.key = nil
	if _, err := vb.RecordDemand(t.Context(), hello, trust.DemandSource); !errors.Is(err, ErrNoKey) {
		t.Fatalf("without a key: %v", err)
	}
}

// Mirror mode's order: most wanted variant first, then most attested.
func TestSortByDemand(t *testing.T) {
	vb := offlineBook(t, nil)
	k, _ := mustKey(t)
	var builds []Build
	for i := range 3 {
		s := junk(t, k, i, 1000)
		atts := []*trust.Signed{s}
		if i == 2 {
			atts = append(atts, junk(t, k, i, 1000)) // the most attested
		}
		builds = append(builds, Build{Atts: atts})
	}
	var wanted identity.Descriptor
	if err := json.Unmarshal(builds[1].Atts[0].Attestation.Descriptor, &wanted); err != nil {
		t.Fatal(err)
	}
	if _, err := vb.RecordDemand(t.Context(), wanted, trust.DemandWanted); err != nil {
		t.Fatal(err)
	}
	first := builds[0].Atts[0]
	vb.SortByDemand(builds)
	if builds[0].Atts[0].Attestation.VariantKey != wanted.VariantKey() || len(builds[1].Atts) != 2 || builds[2].Atts[0] != first {
		t.Fatalf("order %s %s %s: want the wanted variant, then the most attested, then the rest",
			builds[0].Atts[0].Attestation.CPV, builds[1].Atts[0].Attestation.CPV, builds[2].Atts[0].Attestation.CPV)
	}
}
