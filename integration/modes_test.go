package integration

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
)

// xferBuildKeyOf returns the build key n's own attestation gives cpv.
func xferBuildKeyOf(t testing.TB, n *testnet.Node, cpv string) string {
	t.Helper()
	lps, err := n.Daemon.Store().ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	for _, lp := range lps {
		if lp.CPV == cpv {
			return lp.BuildKey
		}
	}
	t.Fatalf("%s has no local build of %s", n.Name, cpv)
	return ""
}

// xferHasAttestation reports whether n stored an attestation of buildKey
// signed by attester.
func xferHasAttestation(n *testnet.Node, buildKey string, attester peer.ID) bool {
	recs, err := n.Daemon.Store().AttestationsFor(buildKey)
	if err != nil {
		return false
	}
	for _, r := range recs {
		if r.Attester == attester.String() {
			return true
		}
	}
	return false
}

// TestXferConsumeMode: a consume-mode daemon attests its builds but
// provides no DHT key and serves no byte — its transfer server answers
// "disabled" — so a build only it holds cannot be fetched.
func TestXferConsumeMode(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	b := xferStart(t, ctx, dir, xferNodeSpec{Name: "builder", Sets: []string{fixtures.ReproGPKG1}})
	c := xferStart(t, ctx, dir, xferNodeSpec{Name: "consumer", Mode: config.ModeConsume, Sets: []string{fixtures.ReproGPKG2}}, b.Addr())
	f := xferStart(t, ctx, dir, xferNodeSpec{Name: "fetcher", Threshold: 2}, b.Addr())
	bk := xferBuildKeyOf(t, b, "app-misc/hello-1.0")
	if got := xferBuildKeyOf(t, c, "app-misc/hello-1.0"); got != bk {
		t.Fatalf("the two reproducible builds of hello have build keys %s and %s", bk, got)
	}

	// The consumer's vote reaches the fetcher (it still attests) ...
	xferWait(t, ctx, "fetcher holds both builders' attestations", func() bool {
		return xferHasAttestation(f, bk, b.Daemon.ID()) && xferHasAttestation(f, bk, c.Daemon.ID())
	})
	// ... and the builder's keys are in the DHT; the consumer's never.
	xferWait(t, ctx, "the fetcher finds the share-mode builder", func() bool {
		return xferProviders(ctx, f, bk)[b.Daemon.ID().String()]
	})
	if got := xferProviders(ctx, f, bk); got[c.Daemon.ID().String()] {
		t.Errorf("the DHT lists the consume-mode daemon as a provider: %v", got)
	}
	if st := c.Daemon.API().Status(ctx); st.KeysProvided != 0 || st.PackagesShared != 2 {
		t.Errorf("consume daemon: %d keys provided, %d packages indexed; want 0 and 2", st.KeysProvided, st.PackagesShared)
	}
	if st := b.Daemon.API().Status(ctx); st.KeysProvided == 0 {
		t.Errorf("share daemon provides no keys")
	}

	// Asked directly, the consumer's transfer server refuses.
	own := xferOwnAttestation(t, c, bk).Attestation
	want := transfer.Want{SHA256: own.FileSHA256, Size: own.Size, PieceRoot: own.PieceRoot, PieceSize: own.PieceSize}
	res, err := transfer.Fetch(ctx, f.Daemon.Node().Host(), want, []peer.AddrInfo{c.Daemon.Node().AddrInfo()},
		transfer.FetchOptions{Dir: t.TempDir()})
	if !errors.Is(err, transfer.ErrNoProviders) {
		t.Fatalf("fetch from the consume daemon: %v, want ErrNoProviders", err)
	}
	if len(res.BadPeers) != 1 || res.BadPeers[0].Kind != transfer.FaultUnavailable || !strings.Contains(res.BadPeers[0].Err.Error(), "disabled") {
		t.Fatalf("fetch from the consume daemon: faults %+v, want one %q fault saying disabled", res.BadPeers, transfer.FaultUnavailable)
	}
	t.Logf("consume daemon refused: %v", res.BadPeers[0].Err)

	// With the builder gone, the consumer alone cannot serve the build.
	xferStop(t, b)
	if res, err := f.Daemon.API().Fetch(ctx, api.FetchRequest{Query: bk}); err == nil {
		t.Fatalf("fetched %s with only a consume-mode holder online: %+v", bk, res)
	} else {
		t.Logf("fetch with only the consumer online: %v", err)
	}
	if n := xferServed(ctx, c); n != 0 {
		t.Errorf("consume daemon served %d bytes", n)
	}
}

// TestXferMirrorMode: a mirror-mode daemon with a small disk budget fetches
// several builds; its cache stays within the budget, its own PKGDIR build
// (bigger than the whole budget) is never evicted, and once the original
// builder is gone a third daemon fetches from the mirror alone — both a
// build the mirror fetched and the mirror's own.
func TestXferMirrorMode(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	const budget = 25 << 10 // two of the 10 KiB fixture builds
	own := xferBigGPKG(t, dir, 1<<20, 3, "mirror-own")

	b := xferStart(t, ctx, dir, xferNodeSpec{Name: "builder", Threshold: 1, Sets: []string{fixtures.MultiInstance}})
	m := xferStart(t, ctx, dir, xferNodeSpec{Name: "mirror", Mode: config.ModeMirror, Threshold: 1, Pkgs: []xferPkg{own},
		Configure: func(c *config.Config) { c.Cache.DiskBudget = budget }}, b.Addr())
	third := xferStart(t, ctx, dir, xferNodeSpec{Name: "third", Threshold: 1}, b.Addr())

	lps, err := b.Daemon.Store().ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{} // build key -> cpv
	for _, lp := range lps {
		keys[lp.BuildKey] = lp.CPV
	}
	xferWait(t, ctx, "mirror and third hold the builder's attestations", func() bool {
		for bk := range keys {
			if !xferHasAttestation(m, bk, b.Daemon.ID()) || !xferHasAttestation(third, bk, b.Daemon.ID()) {
				return false
			}
		}
		return true
	})

	var fetched []api.FetchResult
	for bk, cpv := range keys {
		res, err := m.Daemon.API().Fetch(ctx, api.FetchRequest{Query: bk})
		if err != nil {
			v, _ := m.Daemon.API().Explain(ctx, bk)
			t.Logf("mirror does not fetch %s (%s): %v", cpv, strings.TrimSpace(v.Text), err)
			continue
		}
		fetched = append(fetched, res)
		// The budget holds right after each fetch, not a GC tick later.
		if err := testnet.WaitFor(ctx, 10*time.Second, "cache within budget", func() bool {
			return m.Daemon.Store().Cache().Usage() <= budget
		}); err != nil {
			t.Errorf("after fetching %s: cache usage %d > budget %d", cpv, m.Daemon.Store().Cache().Usage(), budget)
		}
	}
	if len(fetched) < 3 {
		t.Fatalf("mirror fetched %d builds, want at least 3 to exceed the %d-byte budget", len(fetched), budget)
	}
	entries, err := m.Daemon.Store().Cache().List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) >= len(fetched) {
		t.Errorf("cache holds %d of %d fetched builds under a %d-byte budget: nothing was evicted", len(entries), len(fetched), budget)
	}
	if sum := xferSHA256File(t, filepath.Join(m.PKGDIR, "app-misc", own.Name)); sum != own.SHA256 {
		t.Fatalf("mirror's own PKGDIR build changed")
	}
	t.Logf("mirror fetched %d builds, cache holds %d (%d bytes, budget %d)", len(fetched), len(entries), m.Daemon.Store().Cache().Usage(), budget)

	// The builder leaves: the mirror is the only holder of everything.
	xferStop(t, b)
	last := fetched[len(fetched)-1] // most recently used: still cached
	if ok, _ := m.Daemon.Store().Cache().Has(xferSHA(t, last.FileSHA256)); !ok {
		t.Fatalf("the last build the mirror fetched (%s) is not in its cache", last.CPV)
	}
	t.Run("re-serves a fetched build", func(t *testing.T) {
		servedBefore := xferServed(ctx, m)
		res, err := third.Daemon.API().Fetch(ctx, api.FetchRequest{Query: string(last.BuildKey)})
		if err != nil {
			t.Fatalf("fetch %s with the mirror as the only provider: %v", last.CPV, err)
		}
		if res.Providers != 1 {
			t.Errorf("fetched from %d providers, want the mirror alone", res.Providers)
		}
		if res.FileSHA256 != last.FileSHA256 {
			t.Fatalf("fetched file %s, mirror holds %s", res.FileSHA256, last.FileSHA256)
		}
		if sum := xferSHA256File(t, res.Path); xferHex(sum) != last.FileSHA256 {
			t.Fatalf("fetched file hashes to %x", sum)
		}
		if xferServed(ctx, m) <= servedBefore {
			t.Errorf("mirror served nothing")
		}
	})
	t.Run("own build survives GC and is served", func(t *testing.T) {
		res, err := third.Daemon.API().Fetch(ctx, api.FetchRequest{Query: own.BuildKey})
		if err != nil {
			t.Fatalf("fetch the mirror's own build: %v", err)
		}
		xferCheckFile(t, res.Path, own)
	})
}
