package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

var fixturePlatform = hostile.Platform{CHOST: testnet.FixturePortage.CHOST, CFLAGS: testnet.FixturePortage.CFLAGS,
	CXXFLAGS: testnet.FixturePortage.CXXFLAGS, LDFLAGS: testnet.FixturePortage.LDFLAGS}

func startAttacker(t *testing.T, ctx context.Context) *hostile.Peer {
	t.Helper()
	h, err := hostile.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// TestHostileRelabelling: identities that attest an honest, allowed content
// with an older time and lying index claims never change what portage
// sees. Claims the descriptor refutes (CPV, PATH, BUILD_ID, USE, slot
// operators …) are rejected and counted; claims it cannot refute (SLOT,
// DEPEND, RDEPEND without slot operators) are stored and outvoted: the
// listing shows the served file's own fields.
func TestHostileRelabelling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, before, after := relabelAttack(t, ctx)
	if len(after) != len(before) {
		t.Fatalf("victim lists %v after the attack, %v before", entryNames(after), entryNames(before))
	}
	hello, got := before["app-misc/hello-1.0"], after["app-misc/hello-1.0"]
	for _, k := range []string{"CPV", "PATH", "SLOT", "USE", "RDEPEND", "DEPEND", "BUILD_ID", "BUILD_TIME", "SIZE", "SHA1", "DESCRIPTION"} {
		if got.Value(k) != hello.Value(k) {
			t.Errorf("%s: %q after the attack, %q before", k, got.Value(k), hello.Value(k))
		}
	}
}

// relabelAttack starts two honest builders of the fixtures and a victim
// gateway (threshold 2), has fresh identities attest hello's honest
// content with an older time and each lie portage acts on, waits until
// the victim has judged them all (refuted ones rejected, the rest stored),
// and returns the victim with its index before and after.
func relabelAttack(t *testing.T, ctx context.Context) (victim *testnet.Node, before, after map[string]portagehook.Entry) {
	t.Helper()
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "a", sets: []string{fixtures.ReproGPKG1}},
		{name: "b", sets: []string{fixtures.ReproGPKG2}},
		{name: "victim", configure: func(c *config.Config) { c.Trust.Threshold = 2 }},
	})
	a, victim := nodes[0], nodes[2]
	waitCatalog(t, victim, 4)
	// The listing follows the votes once their verdicts are evaluated,
	// which may be a moment after the catalog holds them.
	if err := testnet.WaitFor(ctx, waitTimeout, "the victim's gateway to list hello", func() bool {
		before = gatewayIndex(t, ctx, victim)
		_, ok := before["app-misc/hello-1.0"]
		return ok
	}); err != nil {
		t.Fatalf("victim lists %v before the attack, want hello", entryNames(before))
	}
	honest := ownAttestations(t, a.Daemon.Store(), localByName(t, a, "app-misc/hello-1.0").BuildKey, a.Daemon.ID().String())[0]

	refuted := map[string]map[string]string{
		"CATEGORY/PF": {"CATEGORY": "sys-apps", "PF": "portage-99.0"},
		"CPV":         {"CPV": "sys-apps/portage-99.0"},
		"PATH":        {"PATH": "sys-apps/portage/portage-99.0-1.gpkg.tar"},
		"BUILD_ID":    {"BUILD_ID": "1"},
		"BUILD_TIME":  {"BUILD_TIME": "1"},
		"USE":         {"USE": "amd64 kernel_linux"},
		"slot op":     {"RDEPEND": "dev-libs/evil:0/1="},
	}
	unrefuted := map[string]string{"SLOT": "9", "DEPEND": "sys-apps/evil", "RDEPEND": "sys-apps/evil", "DESCRIPTION": "evil"}
	old := time.Now().Add(-365 * 24 * time.Hour)
	var blobs [][]byte
	sign := func(claims map[string]string) *trust.Signed {
		// A fresh identity each: per-build-key caps must not be what stops them.
		k, err := hostile.Identity()
		if err != nil {
			t.Fatal(err)
		}
		s, err := hostile.Relabel(honest, k, old, claims)
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, s.Marshal())
		return s
	}
	for _, claims := range refuted {
		sign(claims)
	}
	stored := sign(unrefuted)
	rejectedBefore := victim.Daemon.API().Status(ctx).RejectedAttestations
	h := startAttacker(t, ctx)
	h.SetCatalog(blobs)
	if err := h.Connect(ctx, victim.Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the victim to judge the relabelled attestations", func() bool {
		has, _ := victim.Daemon.Store().HasAttestation(stored.ID())
		return has && victim.Daemon.API().Status(ctx).RejectedAttestations >= rejectedBefore+int64(len(refuted))
	})
	for _, b := range blobs[:len(refuted)] {
		if has, _ := victim.Daemon.Store().HasAttestation(sha256.Sum256(b)); has {
			t.Errorf("the victim stored an attestation whose claims contradict its descriptor")
		}
	}
	return victim, before, gatewayIndex(t, ctx, victim)
}

// TestHostileFloodIsBoundedPerIdentity: one identity floods the victim with
// valid junk attestations by gossip and through its catalog; the victim
// keeps at most its budget of them, its database grows by about that, its
// honest records stay, and it still answers an honest newcomer's catalog
// sync and portage's index.
func TestHostileFloodIsBoundedPerIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Each wave (catalog, then gossip) of 54 KiB records is twice the
	// budget: either alone would overflow it.
	const budget, wave = 1 << 20, 40
	dir := t.TempDir()
	nodes := startNetwork(t, dir, []peerSpec{
		{name: "a", sets: []string{fixtures.ReproGPKG1}},
		{name: "victim", configure: func(c *config.Config) { c.Limits.PeerAttestationBytes = budget }},
	})
	victim := nodes[1]
	waitCatalog(t, victim, 2)
	dbPath := filepath.Join(victim.Config.StateDir, store.DBFile)
	dbBefore := fileSize(t, dbPath)

	h := startAttacker(t, ctx)
	var page [][]byte
	for i := range wave {
		s, err := hostile.Junk(h.Key, fixturePlatform, i, 54<<10, time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		page = append(page, s.Marshal())
	}
	h.SetCatalog(page)
	if err := h.Connect(ctx, victim.Addr()); err != nil {
		t.Fatal(err)
	}
	// The victim syncs the attacker's catalog once connected; the gossip
	// wave comes after it, so its last record is the newest the victim
	// holds (eviction takes the oldest first).
	waitFor(t, "the victim to sync the attacker's catalog", func() bool {
		u, _ := victim.Daemon.Store().AttesterUsage(h.ID.String())
		return u.Records > 0
	})
	plat := victim.Daemon.Platform()
	if err := h.Node.JoinPlatform(plat); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the attacker to see the victim on the topic", func() bool {
		for _, p := range h.Node.TopicPeers(plat) {
			if p == victim.Daemon.ID() {
				return true
			}
		}
		return false
	})
	var last *trust.Signed
	for i := range wave {
		s, err := hostile.Junk(h.Key, fixturePlatform, 1000+i, 54<<10, time.Now().Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.PublishAttestation(ctx, plat, s.Marshal()); err != nil {
			t.Fatal(err)
		}
		last = s
	}
	// Gossip drops what a busy validator cannot take: the attacker sends
	// its last record again (a new message each time) until it is in.
	waitFor(t, "the victim to take the last gossiped junk", func() bool {
		if has, _ := victim.Daemon.Store().HasAttestation(last.ID()); has {
			return true
		}
		if err := h.PublishAttestation(ctx, plat, last.Marshal()); err != nil {
			t.Fatal(err)
		}
		return false
	})
	u, err := victim.Daemon.Store().AttesterUsage(h.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if u.Bytes > budget || u.Records == 0 {
		t.Errorf("the flooder holds %d records, %d bytes; budget %d bytes", u.Records, u.Bytes, budget)
	}
	if grew := fileSize(t, dbPath) - dbBefore; grew > 4*budget {
		t.Errorf("state.db grew by %d bytes under a %d-byte budget", grew, budget)
	}
	if err := victim.Daemon.Store().Check(); err != nil {
		t.Fatal(err)
	}

	// An honest newcomer still gets the victim's honest records, and
	// portage still gets its index.
	newcomer, err := testnet.Start(ctx, testnet.NodeOptions{Name: "newcomer", Dir: dir, Bootstrap: []string{victim.Addr()}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer stopNode(t, newcomer)
	honestID := nodes[0].Daemon.ID().String()
	waitFor(t, "the newcomer to sync a's attestations from the victim", func() bool {
		au, _ := newcomer.Daemon.Store().AttesterUsage(honestID)
		return au.Records >= 2
	})
	if entries := gatewayIndex(t, ctx, victim); len(entries) != 0 {
		// Threshold 3 with one honest builder: nothing is allowed, and
		// none of the junk either.
		t.Errorf("victim lists %v", entryNames(entries))
	}
}

// TestHostileCatalogRequests: identities that hold catalog requests open
// without reading the answers get their per-peer share of request slots
// and are refused as busy past it, and an honest peer's request is
// answered meanwhile.
func TestHostileCatalogRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	nodes := startNetwork(t, dir, []peerSpec{
		{name: "a", sets: []string{fixtures.ReproGPKG1}},
		{name: "honest"},
	})
	a, honest := nodes[0], nodes[1]
	waitCatalog(t, honest, 2)
	// Give a a large catalog, so each answer is a full page that a
	// non-reading client stalls.
	var recs []store.AttestationRecord
	for i := range 200 {
		k, err := hostile.Identity()
		if err != nil {
			t.Fatal(err)
		}
		s, err := hostile.Junk(k, fixturePlatform, i, 20<<10, time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		at := s.Attestation
		recs = append(recs, store.AttestationRecord{ID: s.ID(), BuildKey: string(at.BuildKey), VariantKey: string(at.VariantKey), CPV: at.CPV,
			Platform: at.Platform, Attester: s.Attester.String(), Content: at.Content.String(), Blob: s.Marshal(),
			ReceivedAt: time.Now(), Time: at.Time.Unix()})
	}
	if _, err := a.Daemon.Store().PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	target := addrInfo(t, a.Addr())
	plat := a.Daemon.Platform()
	for range 4 {
		h := startAttacker(t, ctx)
		if err := h.Node.Host().Connect(ctx, target); err != nil {
			t.Fatal(err)
		}
		for range p2p.DefaultMaxPeerRequests {
			s, err := h.HoldCatalog(ctx, target.ID, plat)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
		}
		// Past its share, the next request is refused.
		if _, err := h.Node.SyncCatalog(ctx, target.ID, plat, p2p.CatalogCursor{}); !errors.Is(err, p2p.ErrRefused) {
			t.Fatalf("a request past the per-peer limit: %v, want refused as busy", err)
		}
	}
	bs, err := honest.Daemon.Node().SyncCatalog(ctx, target.ID, plat, p2p.CatalogCursor{})
	if err != nil {
		t.Fatalf("honest catalog request while 8 are held: %v", err)
	}
	if len(bs) == 0 {
		t.Fatal("honest catalog request answered empty")
	}
}

func addrInfo(t testing.TB, addr string) peer.AddrInfo {
	t.Helper()
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		t.Fatal(err)
	}
	return *ai
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// slotSiege starts a provider of a 4 MiB build, an honest fetcher, and
// eight attacker identities that hold upload requests they never read (one
// slot each: every slot of the provider's default eight). It returns the
// fetcher, the build and the provider's metrics URL.
func slotSiege(tb testing.TB, ctx context.Context) (*testnet.Node, xferPkg, string) {
	tb.Helper()
	dir := tb.TempDir()
	pkg := xferBigGPKG(tb, dir, 4<<20, 11, "")
	provider := xferStart(tb, ctx, dir, xferNodeSpec{Name: "provider", Threshold: 1, Pkgs: []xferPkg{pkg},
		Configure: func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }})
	fetcher := xferStart(tb, ctx, dir, xferNodeSpec{Name: "fetcher", Threshold: 1}, provider.Addr())
	xferWait(tb, ctx, "the fetcher to find the provider", func() bool {
		return xferProviders(ctx, fetcher, pkg.BuildKey)[provider.Daemon.ID().String()]
	})
	target := addrInfo(tb, provider.Addr())
	for range provider.Config.Transfer.UploadSlots {
		h, err := hostile.New(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = h.Close() })
		if err := h.Node.Host().Connect(ctx, target); err != nil {
			tb.Fatal(err)
		}
		// 8 pieces (2 MiB) per request: far more than a stream's window.
		for first := range uint64(2) {
			s, err := h.HoldRange(ctx, target.ID, pkg.SHA256, first*8, 8)
			if err != nil {
				tb.Fatalf("attacker hold: %v", err)
			}
			tb.Cleanup(func() { _ = s.Reset() })
		}
	}
	return fetcher, pkg, provider.Daemon.MetricsURL()
}

// TestHostileSlotHolders: eight identities hold every upload slot of a
// real daemon with requests they never read; an honest daemon's fetch
// still completes from it, because a holder that makes no progress loses
// its slot to a waiting peer.
func TestHostileSlotHolders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fetcher, pkg, metrics := slotSiege(t, ctx)
	start := time.Now()
	var first time.Duration
	res, err := fetcher.Daemon.API().FetchWithProgress(ctx, api.FetchRequest{Query: pkg.BuildKey}, func(p transfer.Progress) {
		if first == 0 && p.Done > 0 {
			first = time.Since(start)
		}
	})
	if err != nil {
		t.Fatalf("honest fetch while eight identities hold every slot: %v", err)
	}
	xferCheckFile(t, res.Path, pkg)
	if metricSum(t, metrics, "gentoo_p2pd_transfer_server_slot_reclaims_total") < 1 {
		t.Error("the provider reclaimed no slot from the stalled holders")
	}
	t.Logf("first verified byte after %s, done after %s", first, time.Since(start))
}

// TestStatusSaysWhyAFetchFailed: a fetch that cannot complete (here: the
// only provider left) is reported by status with its reason.
func TestStatusSaysWhyAFetchFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "a", sets: []string{fixtures.ReproGPKG1}},
		{name: "fetcher", configure: func(c *config.Config) { c.Trust.Threshold = 1 }},
	})
	a, fetcher := nodes[0], nodes[1]
	waitCatalog(t, fetcher, 2)
	if st := fetcher.Daemon.API().Status(ctx); st.LastFetchError != "" {
		t.Fatalf("a failure reported before any fetch: %q", st.LastFetchError)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := fetcher.Daemon.API().Fetch(ctx, api.FetchRequest{Query: "app-misc/hello-1.0"})
	if err == nil {
		t.Fatal("fetch succeeded with its only provider gone")
	}
	st := fetcher.Daemon.API().Status(ctx)
	if st.LastFetchError == "" || st.LastFetchErrorAt.IsZero() {
		t.Fatalf("status does not say why the fetch failed (%v)", err)
	}
	t.Logf("status: %s", st.LastFetchError)
}

// TestStallingProviderDoesNotStallFetch: a stranger that announces itself
// as a provider of a build key and never answers the attest protocol
// must not keep a victim from fetching the build from its honest holders
// (each provider is asked at once, for a bounded time). Before that, the
// victim asked providers one after another within one 30 s budget, and a
// staller asked before the honest holders used it all: the fetch failed.
func TestStallingProviderDoesNotStallFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := startTogether(t, ctx, t.TempDir(), []peerSpec{
		{name: "honest-a", sets: []string{fixtures.ReproGPKG1}},
		{name: "honest-b", sets: []string{fixtures.ReproGPKG2}},
		{name: "victim", configure: func(c *config.Config) { c.Trust.Threshold = 2; c.Mode = config.ModeConsume }},
	})
	a, victim := nodes[0], nodes[2]
	waitCatalog(t, victim, 4)
	bk := localByName(t, a, layoutCPV).BuildKey

	// Five stallers: asked one after another in the DHT's order, one of
	// them comes before both honest holders (all but 1 in 21 orders) and
	// takes the whole budget of the search for holders.
	var stallers []peer.ID
	for range 5 {
		h := startAttacker(t, ctx)
		h.Node.Host().SetStreamHandler(p2p.AttestProtocol, func(s network.Stream) {
			<-ctx.Done() // hold the stream: never answer
			_ = s.Reset()
		})
		for _, n := range []string{a.Addr(), victim.Addr()} {
			if err := h.Connect(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.Node.Provide(mustDecodeCID(t, bk)); err != nil {
			t.Fatal(err)
		}
		stallers = append(stallers, h.ID)
	}
	waitFor(t, "the victim to see the stallers as providers", func() bool {
		ps, _ := victim.Daemon.Node().FindProviders(ctx, mustDecodeCID(t, bk), 32)
		seen := 0
		for _, p := range ps {
			if slices.Contains(stallers, p.ID) {
				seen++
			}
		}
		return seen == len(stallers)
	})
	res, err := victim.Daemon.API().Fetch(ctx, api.FetchRequest{Query: layoutCPV})
	if err != nil {
		t.Fatalf("fetch with a stalling provider among the honest ones: %v", err)
	}
	if string(res.BuildKey) != bk {
		t.Fatalf("fetched build %s, want %s", res.BuildKey, bk)
	}
}
