package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/scan"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// localExtra is what the daemon keeps per local package beyond the store's
// columns: what it needs to re-sign the attestation after a restart without
// reading the file again.
type localExtra struct {
	Descriptor json.RawMessage   `json:"descriptor"`
	Index      map[string]string `json:"index"`
}

// indexer implements scan.Indexer: it is the one place a PKGDIR file is
// read and identified.
type indexer struct{ d *Daemon }

func (ix indexer) Index(path string) (store.LocalPackage, error) {
	return ix.d.identify(path)
}

// identify reads a binpkg once for its identities and once for its piece
// layer (the layer needs the raw container bytes, the digests the
// decompressed image; both passes are streaming).
func (d *Daemon) identify(path string) (store.LocalPackage, error) {
	pkg, err := xpak.ReadFile(path, d.limits)
	if err != nil {
		return store.LocalPackage{}, err
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		return store.LocalPackage{}, fmt.Errorf("%s: metadata digest: %w", path, err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, d.md5cache)
	if err != nil {
		return store.LocalPackage{}, fmt.Errorf("%s: build descriptor: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return store.LocalPackage{}, err
	}
	leaves, size, err := pieces.Layer(f)
	f.Close()
	if err != nil {
		return store.LocalPackage{}, fmt.Errorf("%s: piece layer: %w", path, err)
	}
	if size != pkg.Size {
		return store.LocalPackage{}, fmt.Errorf("%s: file changed while it was read", path)
	}
	if err := d.store.PutLeaves(pkg.FileSHA256, leaves); err != nil {
		return store.LocalPackage{}, err
	}
	descJSON, err := json.Marshal(desc)
	if err != nil {
		return store.LocalPackage{}, err
	}
	extra, err := json.Marshal(localExtra{Descriptor: descJSON, Index: indexFields(pkg.Metadata)})
	if err != nil {
		return store.LocalPackage{}, err
	}
	buildID, _ := pkg.Metadata.BuildID()
	return store.LocalPackage{
		Path:           path,
		Size:           pkg.Size,
		FileSHA256:     pkg.FileSHA256,
		Format:         string(pkg.Format),
		CPV:            pkg.Metadata.CPV(),
		BuildID:        buildID,
		BuildKey:       desc.BuildKey().String(),
		VariantKey:     desc.VariantKey().String(),
		ImageDigest:    pkg.ImageDigest,
		MetadataDigest: md,
		PieceRoot:      pieces.RootOf(leaves),
		Platform:       desc.Platform(),
		IndexedAt:      time.Now().UTC(),
		Extra:          extra,
	}, nil
}

// indexFields are the metadata keys a Packages index entry carries, taken
// only from keys the metadata digest covers: what the gateway lists must be
// what the voters agreed on.
var indexKeys = []string{
	"BDEPEND", "DEFINED_PHASES", "DEPEND", "DESCRIPTION", "EAPI", "HOMEPAGE",
	"IDEPEND", "IUSE", "KEYWORDS", "LICENSE", "PDEPEND", "PROPERTIES", "PROVIDES",
	"RDEPEND", "REQUIRES", "RESTRICT", "SLOT", "USE", "repository",
}

func indexFields(m *xpak.Metadata) map[string]string {
	out := make(map[string]string)
	for _, k := range indexKeys {
		if !identity.IsCovered(k) {
			continue
		}
		if v := strings.Join(strings.Fields(m.Get(k)), " "); v != "" {
			out[k] = v
		}
	}
	return out
}

// syncPKGDIR brings the store in line with PKGDIR once, at start.
func (d *Daemon) syncPKGDIR(ctx context.Context) error {
	ch, err := d.scanner.Sync(ctx)
	if errors.Is(err, scan.ErrNoPKGDIR) {
		msg := "missing: nothing to share until portage writes binpkgs there"
		d.pkgdirMsg.Store(msg)
		d.log.Warn("PKGDIR "+msg, "pkgdir", d.cfg.Portage.PkgDir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan PKGDIR: %w", err)
	}
	d.applyChanges(ctx, ch)
	return nil
}

// applyChanges attests and announces new builds and withdraws removed ones.
func (d *Daemon) applyChanges(ctx context.Context, ch scan.Changes) {
	for _, err := range ch.Errors {
		d.log.Warn("skipping binpkg", "err", err)
	}
	for _, lp := range ch.Removed {
		d.withdraw(lp)
	}
	for _, lp := range ch.Replaced {
		d.withdrawStale(lp)
	}
	for _, lp := range append(append([]store.LocalPackage(nil), ch.Added...), ch.Replaced...) {
		if err := d.attestLocal(ctx, lp, true); err != nil {
			d.log.Warn("attest", "path", lp.Path, "err", err)
		}
	}
	if n := len(ch.Added) + len(ch.Replaced) + len(ch.Removed); n > 0 {
		d.log.Info("PKGDIR changed", "added", len(ch.Added), "replaced", len(ch.Replaced), "removed", len(ch.Removed))
	}
	d.pkgdirMsg.Store("")
}

// announceAll re-announces every stored local package (after a restart the
// DHT has forgotten us, but the files were not re-read).
func (d *Daemon) announceAll(ctx context.Context) error {
	lps, err := d.store.ListLocal()
	if err != nil {
		return err
	}
	for _, lp := range lps {
		if err := d.attestLocal(ctx, lp, false); err != nil {
			d.log.Warn("re-announce", "path", lp.Path, "err", err)
		}
	}
	return nil
}

// attestLocal signs (or finds) this daemon's attestation for a local
// package, stores it, and provides its keys. publish gossips it.
func (d *Daemon) attestLocal(ctx context.Context, lp store.LocalPackage, publish bool) error {
	var ex localExtra
	if err := json.Unmarshal(lp.Extra, &ex); err != nil {
		return fmt.Errorf("stored package %s: %w", lp.Path, err)
	}
	signed, err := d.ownAttestation(lp, ex)
	if err != nil {
		return err
	}
	if _, err := d.storeAttestation(signed, d.self.String()); err != nil {
		return err
	}
	bk, err := cid.Decode(lp.BuildKey)
	if err != nil {
		return err
	}
	vk, err := cid.Decode(lp.VariantKey)
	if err != nil {
		return err
	}
	if d.cfg.Mode != config.ModeConsume {
		if err := d.node.Provide(bk, vk); err != nil {
			return fmt.Errorf("provide %s: %w", lp.CPV, err)
		}
		d.metrics.announces.Inc()
	}
	if publish {
		if err := d.node.JoinPlatform(signed.Attestation.Platform); err != nil {
			return err
		}
		if err := d.node.Publish(ctx, signed.Attestation.Platform, gossipAttestation(signed.Marshal())); err != nil {
			d.log.Debug("gossip attestation", "cpv", lp.CPV, "err", err)
		}
	}
	return nil
}

// ownAttestation returns the stored own attestation for this exact file, or
// signs a new one. Re-signing on every start would flood peers with
// equivalent attestations that differ only in time.
func (d *Daemon) ownAttestation(lp store.LocalPackage, ex localExtra) (*trust.Signed, error) {
	recs, err := d.store.AttestationsFor(lp.BuildKey)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Attester != d.self.String() {
			continue
		}
		s, err := trust.Decode(r.Blob)
		if err == nil && s.Attestation.FileSHA256 == lp.FileSHA256 {
			return s, nil
		}
	}
	a := trust.Attestation{
		Version:    trust.AttestationVersion,
		BuildKey:   lp.BuildKey,
		VariantKey: lp.VariantKey,
		CPV:        lp.CPV,
		Platform:   lp.Platform,
		Descriptor: ex.Descriptor,
		Index:      ex.Index,
		Content:    trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest},
		FileSHA256: lp.FileSHA256,
		Size:       lp.Size,
		PieceRoot:  lp.PieceRoot,
		PieceSize:  pieces.Size,
		Format:     lp.Format,
		Builder:    builderVersions(),
		Time:       time.Now().UTC().Truncate(time.Second),
	}
	return trust.Sign(a, d.key)
}

// withdraw stops announcing a build that left PKGDIR: the keys are no
// longer provided (unless another local file has them) and this daemon's
// own attestation for the file is dropped, so it no longer claims to hold
// it. Copies other peers collected stay valid votes: the statement "I
// built it and got C" remains true.
func (d *Daemon) withdraw(lp store.LocalPackage) {
	d.withdrawStale(lp)
	left, _ := d.store.LocalByBuildKey(lp.BuildKey)
	var keep []cid.Cid
	if len(left) == 0 {
		if bk, err := cid.Decode(lp.BuildKey); err == nil {
			keep = append(keep, bk)
		}
	}
	if others, _ := d.store.AttestationsByVariant(lp.VariantKey); !holdsVariant(others, d.self.String(), lp.FileSHA256) {
		if vk, err := cid.Decode(lp.VariantKey); err == nil {
			keep = append(keep, vk)
		}
	}
	if len(keep) > 0 {
		if err := d.node.Withdraw(keep...); err != nil {
			d.log.Warn("withdraw", "cpv", lp.CPV, "err", err)
		}
	}
	d.log.Info("withdrawn", "cpv", lp.CPV, "path", lp.Path)
}

// withdrawStale drops the own attestation for the file lp described.
func (d *Daemon) withdrawStale(lp store.LocalPackage) {
	recs, _ := d.store.AttestationsFor(lp.BuildKey)
	for _, r := range recs {
		if r.Attester != d.self.String() {
			continue
		}
		if s, err := trust.Decode(r.Blob); err == nil && s.Attestation.FileSHA256 == lp.FileSHA256 {
			d.store.DeleteAttestation(r.ID)
		}
	}
}

// holdsVariant reports whether self still attests another file of the
// variant.
func holdsVariant(recs []store.AttestationRecord, self string, gone [32]byte) bool {
	for _, r := range recs {
		if r.Attester != self {
			continue
		}
		if s, err := trust.Decode(r.Blob); err == nil && s.Attestation.FileSHA256 != gone {
			return true
		}
	}
	return false
}

var (
	builderOnce sync.Once
	builder     trust.Builder
)

// builderVersions asks the local toolchain once; on a machine without
// portage or gcc the fields stay empty rather than guessed.
func builderVersions() trust.Builder {
	builderOnce.Do(func() {
		run := func(name string, args ...string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, name, args...).Output()
			if err != nil {
				return ""
			}
			return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
		if _, err := exec.LookPath("portageq"); err == nil {
			if v := run("python3", "-c", "import portage; print(portage.VERSION)"); v != "" {
				builder.Portage = v
			}
		}
		if _, err := exec.LookPath("gcc"); err == nil {
			builder.GCC = run("gcc", "-dumpfullversion", "-dumpversion")
		}
	})
	return builder
}

func hexs(b [32]byte) string { return hex.EncodeToString(b[:]) }
