package integration

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// TestGatewayListsOnlyAllowed: A holds the fixture packages, B and C built
// them too and went offline (their attestations live on in the catalogs),
// D uploads a backdoored layout. Consumers' gateways list exactly what their
// policy allows, and a download works with A as the only provider online.
func TestGatewayListsOnlyAllowed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "a", sets: []string{fixtures.ReproGPKG1}},
		{name: "b", sets: []string{fixtures.ReproGPKG2}},
		{name: "c", sets: []string{fixtures.ReproXPAK1}},
		{name: "d", sets: []string{fixtures.Backdoored}},
		{name: "strict"}, // defaults: any competing vote is a dispute
		{name: "lenient", configure: func(c *config.Config) { c.Trust.Dispute = 2 }},
	})
	a, b, c, strict, lenient := nodes[0], nodes[1], nodes[2], nodes[4], nodes[5]
	waitCatalog(t, strict, 7)
	waitCatalog(t, lenient, 7)
	// B and C leave: A is the only honest provider still online.
	for _, n := range []*testnet.Node{b, c} {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	honest := honestContents(t, a)

	// strict: hello allowed, layout disputed → only hello is listed.
	entries := gatewayIndex(t, ctx, strict)
	if _, ok := entries["app-misc/hello-1.0"]; !ok || len(entries) != 1 {
		t.Fatalf("strict gateway lists %v, want exactly app-misc/hello-1.0", entryNames(entries))
	}
	checkServed(t, ctx, strict, entries["app-misc/hello-1.0"], honest["app-misc/hello-1.0"])

	// lenient: the backdoored layout is refused, the honest one allowed and
	// listed; what is served is the honest content.
	entries = gatewayIndex(t, ctx, lenient)
	if len(entries) != 2 {
		t.Fatalf("lenient gateway lists %v, want hello and layout", entryNames(entries))
	}
	checkServed(t, ctx, lenient, entries["app-misc/layout-1.0-r1"], honest["app-misc/layout-1.0-r1"])
	checkServed(t, ctx, lenient, entries["app-misc/hello-1.0"], honest["app-misc/hello-1.0"])
	st := lenient.Daemon.API().Status(ctx)
	if st.BuildsFetched != 2 {
		t.Errorf("lenient fetched %d builds, want 2 (both from A)", st.BuildsFetched)
	}

	// Portage keeps what it downloaded in PKGDIR. The daemon indexes it
	// but must not attest it as its own build: a download is no
	// independent reproduction.
	served := checkServed(t, ctx, lenient, entries["app-misc/hello-1.0"], honest["app-misc/hello-1.0"])
	dst := filepath.Join(lenient.PKGDIR, entries["app-misc/hello-1.0"].Value("PATH"))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := xferCopy(served, dst); err != nil {
		t.Fatal(err)
	}
	// What the bashrc hook does; it returns once the daemon indexed the
	// file and decided on attesting it.
	if _, err := lenient.Daemon.API().Announce(ctx, api.AnnounceRequest{Path: dst}); err != nil {
		t.Fatal(err)
	}
	lp, ok, _ := lenient.Daemon.Store().GetLocal(dst)
	if !ok {
		t.Fatal("the downloaded package was not indexed")
	}
	if own := ownAttestations(t, lenient.Daemon.Store(), lp.BuildKey, lenient.Daemon.ID().String()); len(own) != 0 {
		t.Errorf("the daemon attested a package portage downloaded from its gateway (%d own attestations)", len(own))
	}
}

// honestContents are the content ids of A's builds, by CPV.
func honestContents(t *testing.T, a *testnet.Node) map[string]trust.ContentID {
	t.Helper()
	lps, err := a.Daemon.Store().ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]trust.ContentID{}
	for _, lp := range lps {
		out[lp.CPV] = trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}
	}
	return out
}

// gatewayIndex fetches Packages.gz as portage does and parses it with
// portage's rules.
func gatewayIndex(t testing.TB, ctx context.Context, n *testnet.Node) map[string]portagehook.Entry {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.Daemon.GatewayURL()+"/Packages.gz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: Packages.gz: %s", n.Name, resp.Status)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h, es, err := portagehook.ParseIndex(zr)
	if err != nil {
		t.Fatalf("%s: index does not parse: %v", n.Name, err)
	}
	if h.Value("VERSION") != "0" || h.Value("TIMESTAMP") == "" {
		t.Errorf("%s: index header %v", n.Name, h)
	}
	out := map[string]portagehook.Entry{}
	for _, e := range es {
		out[e.CPV()] = e
	}
	return out
}

func entryNames(m map[string]portagehook.Entry) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// checkServed downloads an entry as portage would and checks what portage
// checks (SIZE, signatures by the gateway key) and what the vote was about
// (both digests).
func checkServed(t *testing.T, ctx context.Context, n *testnet.Node, e portagehook.Entry, want trust.ContentID) string {
	t.Helper()
	if e.Fields == nil {
		t.Fatalf("%s: no such entry", n.Name)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.Daemon.GatewayURL()+"/"+e.Value("PATH"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET %s: %s %v", n.Name, e.Value("PATH"), resp.Status, err)
	}
	if got := e.Value("SIZE"); got != strconv.Itoa(len(body)) {
		t.Errorf("%s: index SIZE %s, served %d bytes", n.Name, got, len(body))
	}
	path := filepath.Join(t.TempDir(), "served.gpkg.tar")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := n.Daemon.API().GatewayInfo()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := openpgp.ReadArmoredKeyRing(strings.NewReader(info.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.VerifyGPKGSignatures(path, kr); err != nil {
		t.Errorf("%s: served package fails portage's signature rules: %v", n.Name, err)
	}
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if pkg.ImageDigest != want.Image || md != want.Metadata {
		t.Errorf("%s: served %s is not the allowed honest content", n.Name, e.CPV())
	}
	return path
}

// TestGatewayListsBeforeFetching: with default settings the gateway lists
// every allowed build of the platform, with the exact SIZE portage needs,
// before fetching any: bytes_fetched stays 0 until portage asks for a
// file, which then arrives with that size, signed by the gateway key and
// carrying the allowed content. gateway.prefetch = installed then fetches
// upgrades of installed packages ahead, and only those.
func TestGatewayListsBeforeFetching(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, filepath.Join(dir, "a", "pkgdir")); err != nil {
		t.Fatal(err)
	}
	a, err := testnet.Start(ctx, testnet.NodeOptions{Name: "a", Dir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	e, err := testnet.Start(ctx, testnet.NodeOptions{Name: "e", Dir: dir, Bootstrap: []string{a.Addr()}, Logger: testLogger(),
		Configure: func(c *config.Config) { c.Trust.Threshold = 1 }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if err := testnet.WaitFor(ctx, 60*time.Second, "e's catalog", func() bool {
		return e.Daemon.API().Status(ctx).CatalogAttestations >= 2
	}); err != nil {
		t.Fatal(err)
	}
	// The listing follows the votes once their verdicts are evaluated,
	// which may be a moment after the catalog holds them.
	var entries map[string]portagehook.Entry
	if err := testnet.WaitFor(ctx, 60*time.Second, "e's gateway listing both builds", func() bool {
		entries = gatewayIndex(t, ctx, e)
		return len(entries) == 2
	}); err != nil {
		t.Fatalf("gateway lists %v; want both allowed builds before any fetch", entryNames(entries))
	}
	if st := e.Daemon.API().Status(ctx); st.BuildsFetched != 0 || st.BytesFetched != 0 {
		t.Fatalf("listing fetched %d builds (%d bytes); nothing may be fetched before portage asks", st.BuildsFetched, st.BytesFetched)
	}
	hello := entries["app-misc/hello-1.0"]
	checkServed(t, ctx, e, hello, honestContents(t, a)["app-misc/hello-1.0"])
	if st := e.Daemon.API().Status(ctx); st.BuildsFetched != 1 || st.BytesFetched == 0 {
		t.Errorf("after portage asked for hello: fetched %d builds (%d bytes), want 1", st.BuildsFetched, st.BytesFetched)
	}

	// prefetch = installed: an index read fetches the upgrade of the
	// installed package, and nothing else.
	vdb := filepath.Join(dir, "vdb")
	if err := os.MkdirAll(filepath.Join(vdb, "app-misc", "layout-0.9"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := testnet.InstallGlibc(vdb); err != nil {
		t.Fatal(err)
	}
	p, err := testnet.Start(ctx, testnet.NodeOptions{Name: "p", Dir: dir, Bootstrap: []string{a.Addr()}, VDB: vdb, Logger: testLogger(),
		Configure: func(c *config.Config) { c.Trust.Threshold = 1; c.Gateway.Prefetch = config.PrefetchInstalled }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := testnet.WaitFor(ctx, 60*time.Second, "p's catalog", func() bool {
		return p.Daemon.API().Status(ctx).CatalogAttestations >= 2
	}); err != nil {
		t.Fatal(err)
	}
	var got map[string]portagehook.Entry
	if err := testnet.WaitFor(ctx, 60*time.Second, "p's gateway listing both builds", func() bool {
		got = gatewayIndex(t, ctx, p)
		return len(got) == 2
	}); err != nil {
		t.Fatalf("p lists %v", entryNames(got))
	}
	if err := testnet.WaitFor(ctx, 60*time.Second, "p prefetches layout", func() bool {
		return p.Daemon.API().Status(ctx).BuildsFetched >= 1
	}); err != nil {
		t.Fatal(err)
	}
	if st := p.Daemon.API().Status(ctx); st.BuildsFetched != 1 {
		t.Errorf("prefetch = installed fetched %d builds, want 1 (only layout is installed)", st.BuildsFetched)
	}
}
