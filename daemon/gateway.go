package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// gatewayState is the daemon's side of the binhost gateway.
type gatewayState struct {
	key     *openpgp.Entity
	handler *portagehook.Gateway
}

// SigningKey loads (or creates) the OpenPGP key the gateway signs served
// GPKGs with; setup-portage imports its public half into portage's keyring.
func SigningKey(stateDir string) (*openpgp.Entity, error) {
	return portagehook.LoadOrCreateSigningKey(filepath.Join(stateDir, SigningKeyFile), "gentoo-p2pd gateway")
}

func (d *Daemon) newGateway() (http.Handler, error) {
	key, err := SigningKey(d.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("gateway signing key: %w", err)
	}
	gs := &gatewayState{key: key}
	gs.handler = portagehook.NewGateway(gatewayCatalog{d}, portagehook.GatewayOptions{
		Path:       d.cfg.Gateway.Path,
		CacheDir:   filepath.Join(d.cfg.StateDir, "gateway"),
		Signer:     portagehook.NewSigner(key, d.started),
		Covered:    identity.IsCovered,
		Canonical:  canonicalMetadata,
		Header:     d.indexHeader(),
		Limits:     d.limits,
		Logger:     d.log.With("component", "gateway"),
		Registerer: d.reg,
		// portage 3.0.82 needs SIZE for every entry, so a build is listed
		// once it is fetched and re-packed; an index request starts that
		// for every allowed build and waits a while for it.
		PrepareOnIndex: true,
		IndexWait:      30 * time.Second,
	})
	d.gateway = gs
	return gs.handler, nil
}

// indexHeader is what portage merges into its settings from a binhost
// index: the platform the listed builds were made for.
func (d *Daemon) indexHeader() portagehook.Fields {
	var f portagehook.Fields
	if d.cfg.Portage.ARCH != "" {
		f.Set("ARCH", d.cfg.Portage.ARCH)
	}
	if d.cfg.Portage.CHOST != "" {
		f.Set("CHOST", d.cfg.Portage.CHOST)
	}
	return f
}

// gatewayCatalog is what portage may see: the Allowed builds of the local
// platform, nothing else.
type gatewayCatalog struct{ d *Daemon }

func (gc gatewayCatalog) Entries(ctx context.Context) ([]portagehook.Listing, error) {
	d := gc.d
	builds, err := d.allowed(d.platform)
	if err != nil {
		return nil, err
	}
	var installed map[string]bool
	if d.cfg.Gateway.Prefetch == config.PrefetchInstalled {
		installed = installedPackages(d.vdb)
	}
	var out []portagehook.Listing
	for _, b := range builds {
		if !d.worthListing(b, installed) {
			continue
		}
		l, err := d.listing(b)
		if err == nil {
			d.listed.Store(listingKey(l.Content, l.BuildID), b.Verdict.BuildKey)
		}
		if err != nil {
			d.log.Warn("gateway: skipping build", "build_key", b.Verdict.BuildKey, "err", err)
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
func (d *Daemon) listing(b allowedBuild) (portagehook.Listing, error) {
	att := b.Atts[0].Attestation
	cat, pf, ok := strings.Cut(att.CPV, "/")
	if !ok {
		return portagehook.Listing{}, fmt.Errorf("cpv %q has no category", att.CPV)
	}
	raw := map[string][]byte{}
	for k, v := range agreedIndex(b.Atts) {
		raw[k] = []byte(v + "\n")
	}
	// After the claims: the descriptor's CPV is the one that counts.
	raw["CATEGORY"], raw["PF"] = []byte(cat+"\n"), []byte(pf+"\n")
	// The served BUILD_TIME and mtimes are when this daemon first listed
	// the content: an attester's time would let any peer change them (and
	// force a re-pack) at will.
	at, err := d.store.FirstSeen("listing\x00"+b.Verdict.BuildKey+"\x00"+att.Content.String(), time.Now())
	if err != nil {
		return portagehook.Listing{}, err
	}
	return portagehook.Listing{
		Content:     att.Content.String(),
		ImageDigest: att.Content.Image,
		Metadata:    xpak.NewMetadata(raw),
		BuildID:     gatewayBuildID(b.Verdict.BuildKey),
		Time:        at,
	}, nil
}

// gatewayBuildID gives each build key a stable BUILD_ID, so portage's
// cached index stays valid across daemon restarts and two builds of one
// CPV (other USE) never share an id.
func gatewayBuildID(buildKey string) int64 {
	h := sha256.Sum256([]byte(buildKey))
	return int64(binary.BigEndian.Uint32(h[:4])&0x7fffffff) + 1
}

func (gc gatewayCatalog) Materialize(ctx context.Context, l portagehook.Listing) (string, error) {
	d := gc.d
	c, err := trust.ParseContentID(l.Content)
	if err != nil {
		return "", err
	}
	// Entries remembered which build key each listing came from; its
	// verdict is checked again (materialize refuses what is no longer
	// allowed) without evaluating the whole catalog.
	bk, ok := d.listed.Load(listingKey(l.Content, l.BuildID))
	if !ok {
		return "", fmt.Errorf("content %s is not listed", l.Content)
	}
	m, err := d.materialize(ctx, bk.(string), nil)
	if err != nil {
		d.metrics.fetchFailed.Inc()
		return "", err
	}
	if m.Verdict.Content == nil || *m.Verdict.Content != c {
		return "", fmt.Errorf("content %s is no longer allowed", l.Content)
	}
	d.store.IncCounter("bytes_saved", m.Att.Attestation.Size)
	return m.Path, nil
}

func listingKey(content string, buildID int64) string { return fmt.Sprintf("%s/%d", content, buildID) }

// GatewayInfo reports the gateway URL and its signing key.
func (d *Daemon) GatewayInfo() (api.GatewayInfo, error) {
	if d.gateway == nil {
		return api.GatewayInfo{}, fmt.Errorf("the gateway is disabled (gateway.enabled = false)")
	}
	pub, err := portagehook.ExportPublic(d.gateway.key)
	if err != nil {
		return api.GatewayInfo{}, err
	}
	return api.GatewayInfo{URL: d.GatewayURL(), Fingerprint: portagehook.Fingerprint(d.gateway.key), PublicKey: string(pub)}, nil
}

// worthListing decides whether the gateway offers an allowed build to
// portage. Listing means fetching first (portage needs SIZE), so the
// default lists builds already here plus upgrades of installed packages,
// not every build of the platform the network knows.
func (d *Daemon) worthListing(b allowedBuild, installed map[string]bool) bool {
	if d.cfg.Gateway.Prefetch == config.PrefetchAll {
		return true
	}
	for _, s := range b.Atts {
		sha := s.Attestation.FileSHA256
		if lps, _ := d.store.LocalBySHA(sha); len(lps) > 0 {
			return true
		}
		if ok, _ := d.store.Cache().Has(sha); ok {
			return true
		}
	}
	if installed == nil {
		return false
	}
	cat, pf, _ := strings.Cut(b.Atts[0].Attestation.CPV, "/")
	pn, ok := portagehook.SplitPN(pf)
	return ok && installed[cat+"/"+pn]
}

// installedPackages reads the category/PN of every package installed in
// portage's vdb (/var/db/pkg/CAT/PF). A missing vdb is an empty set.
func installedPackages(vdb string) map[string]bool {
	out := map[string]bool{}
	cats, err := os.ReadDir(vdb)
	if err != nil {
		return out
	}
	for _, c := range cats {
		if !c.IsDir() || strings.HasPrefix(c.Name(), ".") {
			continue
		}
		pkgs, err := os.ReadDir(filepath.Join(vdb, c.Name()))
		if err != nil {
			continue
		}
		for _, p := range pkgs {
			if pn, ok := portagehook.SplitPN(p.Name()); ok && p.IsDir() {
				out[c.Name()+"/"+pn] = true
			}
		}
	}
	return out
}
