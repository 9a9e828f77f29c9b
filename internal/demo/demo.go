// Package demo is `gentoo-p2pd demo`: five real daemons on loopback show a
// package travel from the peers that built it, through the trust check, to
// portage's binhost gateway on another peer — and a trojaned build stopped.
package demo

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Options tune the demo.
type Options struct {
	// Dir holds the nodes' state; "" makes (and removes) a temp dir.
	Dir string
	// Logger receives the daemons' own logs (discarded by default).
	Logger *slog.Logger
	// Timeout bounds each waiting step.
	Timeout time.Duration
	// Hold keeps the network running after the last step until ctx ends,
	// so a real `emerge --getbinpkg` can be pointed at erin's gateway.
	Hold bool
}

// peerSpec is one demo node: who it is and what it built.
type peerSpec struct {
	name, role string
	sets       []string
}

var peers = []peerSpec{
	{"alice", "built hello + layout (GPKG)", []string{fixtures.ReproGPKG1}},
	{"bob", "built hello + layout independently (GPKG)", []string{fixtures.ReproGPKG2}},
	{"carol", "built hello + layout as XPAK", []string{fixtures.ReproXPAK1}},
	{"mallory", "uploads a layout whose pkg_postinst pipes curl into sh", []string{fixtures.Backdoored}},
	{"erin", "builds nothing; runs emerge --getbinpkg against her gateway", nil},
}

// Run executes the demo, printing each step's outcome to w. It returns an
// error when any step does not turn out as the design promises.
func Run(ctx context.Context, w io.Writer, o Options) (err error) {
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "gentoo-p2pd-demo-")
		if err != nil {
			return err
		}
		defer func() {
			if rerr := os.RemoveAll(dir); rerr != nil {
				fmt.Fprintf(w, "warning: demo directory left behind: %v\n", rerr)
			}
		}()
		o.Dir = dir
	}
	step := stepper(w)

	// 1. Five daemons on loopback.
	step("start five daemons on 127.0.0.1 (default trust policy: 3 agreeing peers, any competing vote is a dispute)")
	var nodes []*testnet.Node
	defer func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			if serr := nodes[i].Stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	for i, p := range peers {
		dir := filepath.Join(o.Dir, p.name)
		for _, set := range p.sets {
			if _, err := fixtures.WritePKGDIR(set, filepath.Join(dir, "pkgdir")); err != nil {
				return err
			}
		}
		var boot []string
		if i > 0 {
			boot = []string{nodes[0].Addr()}
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: p.name, Dir: o.Dir, Bootstrap: boot, Logger: o.Logger})
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		st := n.Daemon.API().Status(ctx)
		fmt.Fprintf(w, "   %-8s %s  %s\n", p.name, short(st.PeerID), p.role)
	}
	erin := nodes[len(nodes)-1]

	// 2. Announce + attest: every builder signed an attestation per build.
	step("each builder indexed its PKGDIR, signed an attestation per build and announced the build keys in the DHT")
	for _, n := range nodes[:len(nodes)-1] {
		st := n.Daemon.API().Status(ctx)
		fmt.Fprintf(w, "   %-8s %d build(s), %d DHT key(s) provided\n", n.Name, st.PackagesShared, st.KeysProvided)
	}

	// 3. Erin's catalog fills from gossip and catalog sync.
	step("erin collects the signed attestations (GossipSub + catalog sync), verifying each signature")
	want := 7 // hello ×3, layout ×3 honest + 1 trojaned
	if err := testnet.WaitFor(ctx, o.Timeout, "erin's catalog", func() bool {
		return erin.Daemon.API().Status(ctx).CatalogAttestations >= want
	}); err != nil {
		return err
	}
	st := erin.Daemon.API().Status(ctx)
	fmt.Fprintf(w, "   erin holds %d attestations for %d build key(s)\n", st.CatalogAttestations, st.CatalogBuilds)

	// 4. Verdicts.
	step("erin's trust verdicts")
	hello, err := erin.Daemon.API().Explain(ctx, "app-misc/hello-1.0")
	if err != nil {
		return err
	}
	layout, err := erin.Daemon.API().Explain(ctx, "app-misc/layout-1.0-r1")
	if err != nil {
		return err
	}
	if err := expect(hello, trust.Allowed); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if err := expect(layout, trust.Disputed); err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	for _, ex := range []struct {
		name string
		v    trust.Verdict
	}{{"app-misc/hello-1.0", hello.Verdicts[0]}, {"app-misc/layout-1.0-r1", layout.Verdicts[0]}} {
		fmt.Fprintf(w, "   %-24s %-9s (%s)\n", ex.name, strings.ToUpper(ex.v.Decision.String()), ex.v.Rule)
		for _, t := range ex.v.Tally {
			fmt.Fprintf(w, "      content %s: %d vote(s)\n", short(t.Content.String()), t.Count)
		}
	}

	// 5. Portage's view: the gateway's Packages index.
	base := erin.Daemon.GatewayURL()
	step("portage asks erin's gateway for Packages.gz: erin lists the allowed builds that fit its machine, with the exact size the peers attested, before fetching any of them")
	fmt.Fprintf(w, "   %s/Packages.gz\n", base)
	// Asked once: the verdict above is in, so the index must list hello
	// now (a stale index here was a real bug); when it does not, erin's
	// own account of why goes with the error.
	index, err := getIndex(ctx, base+"/Packages.gz")
	if err != nil {
		return err
	}
	entries := parseEntries(index)
	helloEntry, ok := entries["app-misc/hello-1.0"]
	if !ok {
		why := ""
		if ex, err := erin.Daemon.API().Explain(ctx, "app-misc/hello-1.0"); err == nil {
			why = ex.Text
		}
		st := erin.Daemon.API().Status(ctx)
		return fmt.Errorf("gateway index does not list app-misc/hello-1.0 (status now: %d listed; %s)\n%s\nthe index:\n%s", st.GatewayListed, st.GatewayNote, why, index)
	}
	if _, ok := entries["app-misc/layout-1.0-r1"]; ok {
		return fmt.Errorf("gateway lists the disputed app-misc/layout-1.0-r1")
	}
	fmt.Fprintf(w, "   listed: app-misc/hello-1.0 (allowed, SIZE %s, %d bytes fetched so far); absent: app-misc/layout-1.0-r1 (disputed)\n",
		helloEntry["SIZE"], erin.Daemon.API().Status(ctx).BytesFetched)

	// 6. The download: fetched from peers on demand, verified, re-signed.
	path := helloEntry["PATH"]
	step("portage downloads " + path + ": erin fetches it from the peers, verifies every piece and both digests, and streams it re-signed")
	file := filepath.Join(o.Dir, "downloaded.gpkg.tar")
	n, err := download(ctx, base+"/"+path, file)
	if err != nil {
		return err
	}
	pkg, err := xpak.ReadFile(file, xpak.DefaultLimits())
	if err != nil {
		return fmt.Errorf("served package: %w", err)
	}
	allowed := hello.Verdicts[0].Content
	if pkg.ImageDigest != allowed.Image {
		return fmt.Errorf("served image digest differs from the agreed content")
	}
	// The gateway rewrote the metadata to exactly what the voters compared.
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		return fmt.Errorf("served metadata: %w", err)
	}
	if md != allowed.Metadata {
		return fmt.Errorf("served metadata digest differs from the agreed content")
	}
	info, err := erin.Daemon.API().GatewayInfo()
	if err != nil {
		return err
	}
	keyring, err := openpgp.ReadArmoredKeyRing(strings.NewReader(info.PublicKey))
	if err != nil {
		return err
	}
	// The check portage's gpkg.py makes with verify-signature = true.
	if err := trust.VerifyGPKGSignatures(file, keyring); err != nil {
		return fmt.Errorf("served package fails OpenPGP verification: %w", err)
	}
	fmt.Fprintf(w, "   %d bytes, %s; image and metadata digests = the agreed content; every member signed by erin's gateway key %s\n", n, pkg.Format, info.Fingerprint)

	step("the Packages entry portage installs from")
	for _, k := range slices.Sorted(maps.Keys(helloEntry)) {
		fmt.Fprintf(w, "   %s: %s\n", k, helloEntry[k])
	}

	// 8. The honest builders compared mallory's rebuild with their own.
	step("alice built layout too: her daemon fetched mallory's content into quarantine, compared it with her build and reports it (trust explain app-misc/layout-1.0-r1)")
	alice := nodes[0]
	var layoutEx api.Explanation
	if err := testnet.WaitFor(ctx, o.Timeout, "alice's report of mallory's rebuild", func() bool {
		layoutEx, err = alice.Daemon.API().Explain(ctx, "app-misc/layout-1.0-r1")
		return err == nil && len(layoutEx.Disagreements) > 0
	}); err != nil {
		return err
	}
	d := layoutEx.Disagreements[0]
	fmt.Fprintf(w, "   rebuild disagrees: content %s by %s\n", short(d.Other.String()), short(d.OtherAttesters[0].String()))
	for _, line := range strings.Split(strings.TrimSpace(d.Explain()), "\n")[2:] {
		fmt.Fprintf(w, " %s\n", line)
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "demo complete: a build travelled alice/bob/carol -> erin -> portage only because 3 independent peers agreed; mallory's trojaned layout was held back.")
	if o.Hold {
		pub := filepath.Join(o.Dir, "erin-gateway.asc")
		if err := os.WriteFile(pub, []byte(info.PublicKey), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nholding the network until interrupted:\n   gateway  %s\n   key      %s (fingerprint %s)\n", base, pub, info.Fingerprint)
		<-ctx.Done()
	}
	return nil
}

// expect checks the single verdict of an explanation.
func expect(ex api.Explanation, d trust.Decision) error {
	if len(ex.Verdicts) != 1 {
		return fmt.Errorf("want one build key, got %d:\n%s", len(ex.Verdicts), ex.Text)
	}
	if got := ex.Verdicts[0].Decision; got != d {
		return fmt.Errorf("verdict %s, want %s:\n%s", got, d, ex.Text)
	}
	return nil
}

func stepper(w io.Writer) func(string) {
	n := 0
	return func(s string) {
		n++
		fmt.Fprintf(w, "\n[%d] %s\n", n, s)
	}
}

func short(s string) string {
	if len(s) > 20 {
		return s[:8] + "…" + s[len(s)-8:]
	}
	return s
}

// getIndex fetches and gunzips Packages.gz the way portage does.
func getIndex(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	b, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	return string(b), err
}

// parseEntries splits a Packages index into its package blocks by CPV.
func parseEntries(index string) map[string]map[string]string {
	out := map[string]map[string]string{}
	blocks := strings.Split(index, "\n\n")
	for _, b := range blocks[1:] {
		e := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
				e[k] = v
			}
		}
		if cpv := e["CPV"]; cpv != "" {
			out[cpv] = e
		}
	}
	return out
}

func download(ctx context.Context, url, dst string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}
