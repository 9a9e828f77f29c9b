package own

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/scan"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// localExtra is what the daemon keeps per local package beyond the store's
// columns: what it needs to re-sign the attestation after a restart without
// reading the file again.
type localExtra struct {
	Descriptor json.RawMessage   `json:"descriptor"`
	Index      map[string]string `json:"index"`
	// Served are the served form's tar sizes (nil for a package indexed
	// before they existed, or one the served form cannot carry).
	Served *trust.ServedSizes `json:"served,omitempty"`
	// Needs is what its content needs of a machine (fit.Scanner).
	Needs *trust.Needs `json:"needs,omitempty"`
	// Toolchain is the build environment its attestation states (nil for
	// a package indexed before it was derived: derived again on its next
	// attestation, see withToolchain).
	Toolchain *toolchainFacts `json:"toolchain,omitempty"`
}

// errDownloaded marks a PKGDIR file portage downloaded from a binhost (this
// gateway included) rather than built here: attesting it would turn a
// download into an independent-looking vote, and pin its content against
// this machine's own later build.
var errDownloaded = errors.New("downloaded from a binhost, not built here: not attested")

// downloaded reports whether a GPKG carries valid signatures by this
// daemon's gateway key or by a binhost key of trust.pgp_keyring — the marks
// of a package portage fetched. A local build is unsigned, or signed with
// the user's own binpkg-signing key.
func (ob *Builds) downloaded(path string) bool {
	return len(ob.keyring) > 0 && trust.VerifyGPKGSignatures(path, ob.keyring) == nil
}

// errNonReproducible marks a rebuild whose content differs from what this
// peer attested for the same build key earlier.
var errNonReproducible = errors.New("non-reproducible rebuild")

// indexer implements scan.Indexer: it is the one place a PKGDIR file is
// read and identified.
type indexer struct{ ob *Builds }

func (ix indexer) Index(path string) (store.LocalPackage, error) {
	return ix.ob.identify(path)
}

// identify reads a binpkg once, in xpak.ReadFileWith's single pass: the
// raw bytes feed the piece layer as they are hashed, the one decode of
// the image gives its digest, what it needs of a machine and what its
// bytes say of the toolchain, and the one decode of environment.bz2 (as
// xpak checks its bound) its metadata digest, descriptor and served form.
func (ob *Builds) identify(path string) (store.LocalPackage, error) {
	var (
		layer pieces.Hasher
		img   *imageScan
		env   bytes.Buffer
	)
	pkg, err := xpak.ReadFileWith(path, ob.limits, xpak.Taps{
		File:        &layer,
		Environment: &env,
		Image: func(m *xpak.Metadata) func(xpak.ImageEntry, io.Reader) error {
			if m == nil {
				return nil // the image came first: scanned on its own below
			}
			img = newImageScan(m)
			return img.entry
		},
	})
	if err != nil {
		return store.LocalPackage{}, err
	}
	if img == nil {
		// A GPKG storing its image before its metadata (portage does
		// not): the toolchain scan needs the metadata first.
		if img, err = scanImage(path, ob.limits, pkg.Metadata); err != nil {
			return store.LocalPackage{}, fmt.Errorf("%s: what it needs of a machine: %w", path, err)
		}
	}
	defer img.release()
	leaves, _ := layer.Layer() // its size is pkg.Size: ReadFileWith read every byte once
	// environment.bz2 as xpak decoded it, for the digest, the descriptor
	// and the served sizes.
	parsed := identity.ParseDecoded(pkg.Metadata, env.Bytes())
	md, err := parsed.MetadataDigest()
	if err != nil {
		return store.LocalPackage{}, fmt.Errorf("%s: metadata digest: %w", path, err)
	}
	desc, err := parsed.Descriptor(ob.md5cache)
	if err != nil {
		return store.LocalPackage{}, fmt.Errorf("%s: build descriptor: %w", path, err)
	}
	// Before any key is computed: -march=native means this CPU's code.
	if desc, err = desc.ResolveNative(ob.expand); err != nil {
		return store.LocalPackage{}, fmt.Errorf("%s: build descriptor: %w", path, err)
	}
	descJSON, err := json.Marshal(desc)
	if err != nil {
		return store.LocalPackage{}, err
	}
	ex := localExtra{Descriptor: descJSON, Index: indexFields(pkg.Metadata)}
	if needs := img.needs.Needs(); needs != (fit.Needs{}) {
		ex.Needs = &trust.Needs{Glibc: needs.Glibc, X86Level: needs.X86Level}
	}
	tf := ob.toolchainOf(img.tc.Result(), pkg.Metadata)
	ex.Toolchain = &tf
	if tf.BuildDir != "" {
		// Indexed once per file: this is logged once per build.
		ob.log.Info("build directory compiled into the build: builders in another PORTAGE_TMPDIR make other bytes, so their votes count apart",
			"cpv", pkg.Metadata.CPV(), "build_dir", tf.BuildDir, "canonical", "PORTAGE_TMPDIR="+canonicalTmpdir)
	}
	if sizes, err := parsed.ServedSizes(pkg); err == nil {
		ex.Served = &trust.ServedSizes{MetadataTar: sizes.MetadataTar, ImageTar: sizes.ImageTar}
	} else {
		ob.log.Warn("no served form: gateways list this build only after fetching it", "path", path, "err", err)
	}
	extra, err := json.Marshal(ex)
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
		BuildKey:       string(desc.BuildKey()),
		VariantKey:     string(desc.VariantKey()),
		ImageDigest:    pkg.ImageDigest,
		MetadataDigest: md,
		PieceRoot:      pieces.RootOf(leaves),
		Leaves:         leaves, // stored with the record, in the scanner's batch
		Platform:       desc.Platform(),
		IndexedAt:      time.Now().UTC(),
		Extra:          extra,
	}, nil
}

// indexFields are the index keys an attestation carries (votes.IndexKeys),
// one line each: taken only from keys the metadata digest covers, so what
// the gateway lists is what the voters agreed on.
func indexFields(m *xpak.Metadata) map[string]string {
	out := make(map[string]string)
	for _, k := range votes.IndexKeys() {
		if v := strings.Join(strings.Fields(m.Get(k)), " "); v != "" {
			out[k] = v
		}
	}
	return out
}

// syncPKGDIR brings the store in line with PKGDIR once, at start. It
// returns the paths it attested and announced. Each batch the scanner
// records is attested before the next is read, so a first start on
// thousands of builds holds one batch of records at a time.
func (ob *Builds) syncPKGDIR(ctx context.Context) (map[string]bool, error) {
	done := make(map[string]bool)
	var added, replaced, removed int
	// Batches are attested by their own goroutine while the scanner
	// indexes the next one: two batches at most are held.
	batches := make(chan scan.Changes)
	attested := make(chan struct{})
	go func() {
		defer close(attested)
		for ch := range batches {
			ob.applyBatch(ctx, ch)
		}
	}()
	// What the scan recorded is acted on even if it was cut short, or the
	// files would stay indexed but unannounced.
	err := ob.scanner.SyncEach(ctx, func(ch scan.Changes) {
		batches <- ch
		for _, lp := range ch.Added {
			done[lp.Path] = true
		}
		for _, lp := range ch.Replaced {
			done[lp.Path] = true
		}
		added, replaced, removed = added+len(ch.Added), replaced+len(ch.Replaced), removed+len(ch.Removed)
	})
	close(batches)
	<-attested
	if errors.Is(err, scan.ErrNoPKGDIR) {
		msg := "missing: nothing to share until portage writes binpkgs there"
		ob.pkgdirMsg.Store(msg)
		ob.log.Warn("PKGDIR "+msg, "pkgdir", ob.pkgdir)
		return nil, nil
	}
	ob.logChanged(added, replaced, removed)
	ob.pkgdirMsg.Store("")
	if err != nil {
		return done, fmt.Errorf("scan PKGDIR: %w", err)
	}
	return done, nil
}

// applyChanges attests and announces new builds and withdraws removed ones.
func (ob *Builds) applyChanges(ctx context.Context, ch scan.Changes) {
	ob.applyBatch(ctx, ch)
	ob.logChanged(len(ch.Added), len(ch.Replaced), len(ch.Removed))
}

func (ob *Builds) logChanged(added, replaced, removed int) {
	if added+replaced+removed > 0 {
		ob.log.Info("PKGDIR changed", "added", added, "replaced", replaced, "removed", removed)
	}
}

// applyBatch is applyChanges without the summary log line.
func (ob *Builds) applyBatch(ctx context.Context, ch scan.Changes) {
	// ch.Errors need no logging here: the scanner logs each rejected
	// binpkg once, when it first fails to index.
	affected := map[keys.Build]keys.Variant{}
	for _, lp := range ch.Removed {
		affected[keys.Build(lp.BuildKey)] = keys.Variant(lp.VariantKey)
		ob.log.Info("withdrawn", "cpv", lp.CPV, "path", lp.Path)
	}
	lps := append(append([]store.LocalPackage(nil), ch.Added...), ch.Replaced...)
	for _, lp := range lps {
		affected[keys.Build(lp.BuildKey)] = keys.Variant(lp.VariantKey)
	}
	for i, err := range ob.attestBatch(ctx, lps) {
		if errors.Is(err, errDownloaded) {
			ob.log.Info("not attesting a downloaded package", "path", lps[i].Path)
		} else if err != nil {
			ob.log.Warn("attest", "path", lps[i].Path, "err", err)
		}
	}
	if len(ch.Replaced) > 0 {
		ob.orphanedOwn(affected)
	}
	ob.reconcileOwn(affected)
	ob.pkgdirMsg.Store("")
}

// reconcileOwn makes this peer's claims for the given build keys match the
// files it holds: an own attestation whose file left PKGDIR is dropped (the
// peer no longer claims to hold it; copies peers collected stay valid
// votes, since "I built it and got C" remains true), and a key that no held
// file carries any more is no longer (re)provided.
func (ob *Builds) reconcileOwn(affected map[keys.Build]keys.Variant) {
	self := ob.self.String()
	var gone []cid.Cid
	for bk, vk := range affected {
		// A store error must never read as "file gone": that would delete
		// and withdraw this peer's own attestations. Skip the build key.
		recs, err := ob.store.AttestationsFor(string(bk))
		if err != nil {
			ob.log.Warn("reconcile own builds: kept", "build_key", bk, "err", err)
			continue
		}
		held := false
		for _, r := range recs {
			if r.Attester != self {
				continue
			}
			s, err := ob.votes.Decode(r.Blob)
			if err != nil {
				continue
			}
			lps, err := ob.store.LocalBySHA(s.Attestation.FileSHA256)
			if err != nil {
				ob.log.Warn("reconcile own builds: kept", "build_key", bk, "err", err)
				held = true
				continue
			}
			if len(lps) == 0 {
				if _, err := ob.store.DeleteAttestation(r.ID); err != nil {
					ob.log.Warn("reconcile own builds: withdraw attestation", "build_key", bk, "err", err)
					held = true
				}
				continue
			}
			held = true
		}
		if held || ob.cachedBuild(bk) {
			continue
		}
		if c, err := bk.CID(); err == nil {
			gone = append(gone, c)
		}
		if !ob.ownsVariant(vk) {
			if c, err := vk.CID(); err == nil {
				gone = append(gone, c)
			}
		}
	}
	if len(gone) > 0 {
		if err := ob.net.Withdraw(gone...); err != nil {
			ob.log.Warn("withdraw", "err", err)
		}
	}
}

// orphanedOwn adds to affected the build keys of this peer's attestations
// whose file no PKGDIR record holds any more. Sync returns the new record
// of a rewritten file, not the old one, and the old one may have been
// another build: portage without binpkg-multi-instance rewrites
// CAT/PF.gpkg.tar in place when the package is rebuilt with other USE
// flags. Errors add nothing (nothing is withdrawn on an error).
func (ob *Builds) orphanedOwn(affected map[keys.Build]keys.Variant) {
	recs, err := ob.store.AttestationsBy(ob.self.String())
	if err != nil {
		ob.log.Warn("reconcile own builds: list own attestations", "err", err)
		return
	}
	for _, r := range recs {
		if _, ok := affected[keys.Build(r.BuildKey)]; ok {
			continue
		}
		s, err := ob.votes.Decode(r.Blob)
		if err != nil {
			continue
		}
		if lps, err := ob.store.LocalBySHA(s.Attestation.FileSHA256); err == nil && len(lps) == 0 {
			affected[keys.Build(r.BuildKey)] = keys.Variant(r.VariantKey)
		}
	}
}

// cachedBuild reports whether the content cache holds a copy of a build
// (mirror and share modes announce those too).
func (ob *Builds) cachedBuild(buildKey keys.Build) bool {
	entries, err := ob.store.Cache().List()
	if err != nil {
		// Unknown counts as held: the caller would withdraw otherwise.
		ob.log.Warn("cache list", "err", err)
		return true
	}
	for _, e := range entries {
		if keys.Build(e.Meta.BuildKey) == buildKey {
			return true
		}
	}
	return false
}

// ownsVariant reports whether an own attestation of the variant remains.
func (ob *Builds) ownsVariant(variantKey keys.Variant) bool {
	recs, err := ob.store.AttestationsByVariant(string(variantKey))
	if err != nil {
		return true // unknown counts as owned: never withdraw on an error
	}
	for _, r := range recs {
		if r.Attester == ob.self.String() {
			return true
		}
	}
	return false
}

// announceAll re-announces every stored local package (after a restart the
// DHT has forgotten us, but the files were not re-read), except the paths
// in done, announced a moment ago.
func (ob *Builds) announceAll(ctx context.Context, done map[string]bool) error {
	// One record at a time: PKGDIR may hold thousands.
	paths, err := ob.store.LocalPaths()
	if err != nil {
		return err
	}
	for _, path := range paths {
		if done[path] {
			continue
		}
		lp, ok, err := ob.store.GetLocal(path)
		if err != nil {
			return err
		}
		if !ok {
			continue // forgotten since it was listed
		}
		if err := ob.attestLocal(ctx, lp, false); errors.Is(err, errDownloaded) {
			ob.log.Debug("not re-announcing a downloaded package", "path", lp.Path)
		} else if err != nil {
			ob.log.Warn("re-announce", "path", lp.Path, "err", err)
		}
	}
	return nil
}

// attestBatch is attestLocal (publishing) of several packages, with one
// store transaction for their content claims and one for their
// attestations instead of two per package: each is a synced commit, and
// on a first start on thousands of builds those commits, not the
// signing, decided how long the start took. The claims commit before
// anything is signed, the attestations before anything is announced, as
// in attestLocal. It returns one error (or nil) per package.
func (ob *Builds) attestBatch(ctx context.Context, lps []store.LocalPackage) []error {
	errs := make([]error, len(lps))
	exs := make([]localExtra, len(lps))
	signed := make([]*trust.Signed, len(lps))
	var claims []store.OwnClaim
	var claimOf []int
	for i, lp := range lps {
		if err := json.Unmarshal(lp.Extra, &exs[i]); err != nil {
			errs[i] = fmt.Errorf("stored package %s: %w", lp.Path, err)
			continue
		}
		lps[i], exs[i] = ob.withToolchain(lp, exs[i])
		lp = lps[i]
		signed[i], errs[i] = ob.storedOwn(lp, exs[i])
		if signed[i] == nil && errs[i] == nil {
			content := trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}
			claims = append(claims, store.OwnClaim{BuildKey: lp.BuildKey, Content: content.String()})
			claimOf = append(claimOf, i)
		}
	}
	if len(claims) > 0 {
		recorded, err := ob.store.ClaimOwnContents(claims)
		for j, i := range claimOf {
			if err != nil {
				errs[i] = err
				continue
			}
			signed[i], errs[i] = ob.signOwn(lps[i], exs[i], recorded[j])
		}
	}
	var toStore []*trust.Signed
	for i := range lps {
		if errs[i] == nil {
			toStore = append(toStore, signed[i])
		}
	}
	if err := ob.votes.StoreOwnAll(toStore); err != nil {
		for i := range lps {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return errs
	}
	for i, lp := range lps {
		if errs[i] == nil {
			errs[i] = ob.announce(ctx, lp, signed[i], true)
		}
	}
	return errs
}

// attestLocal signs (or finds) this daemon's attestation for a local
// package, stores it, and provides its keys. publish gossips it.
func (ob *Builds) attestLocal(ctx context.Context, lp store.LocalPackage, publish bool) error {
	var ex localExtra
	if err := json.Unmarshal(lp.Extra, &ex); err != nil {
		return fmt.Errorf("stored package %s: %w", lp.Path, err)
	}
	lp, ex = ob.withToolchain(lp, ex)
	signed, err := ob.ownAttestation(lp, ex)
	if err != nil {
		return err
	}
	if err := ob.votes.StoreOwn(signed); err != nil {
		return err
	}
	return ob.announce(ctx, lp, signed, publish)
}

// withToolchain gives a package indexed before the toolchain facts were
// derived its facts: its file is read again, once, and the facts are
// stored with it. When the file cannot be read (or is no longer that
// file) the package is attested without them, as before.
func (ob *Builds) withToolchain(lp store.LocalPackage, ex localExtra) (store.LocalPackage, localExtra) {
	if ex.Toolchain != nil {
		return lp, ex
	}
	again, err := ob.identify(lp.Path)
	if err != nil || again.FileSHA256 != lp.FileSHA256 {
		ob.log.Debug("toolchain of a stored package not derived", "path", lp.Path, "err", err)
		return lp, ex
	}
	var fresh localExtra
	if err := json.Unmarshal(again.Extra, &fresh); err != nil || fresh.Toolchain == nil {
		return lp, ex
	}
	ex.Toolchain = fresh.Toolchain
	extra, err := json.Marshal(ex)
	if err != nil {
		return lp, ex
	}
	lp.Extra = extra
	if err := ob.store.PutLocal(lp); err != nil {
		// Stated now all the same; derived again after the next start.
		ob.log.Warn("store toolchain of a local package", "path", lp.Path, "err", err)
	}
	return lp, ex
}

// announce provides the keys of a local package whose own attestation is
// stored, and with publish gossips the attestation.
func (ob *Builds) announce(ctx context.Context, lp store.LocalPackage, signed *trust.Signed, publish bool) error {
	bk, err := keys.Build(lp.BuildKey).CID()
	if err != nil {
		return err
	}
	vk, err := keys.Variant(lp.VariantKey).CID()
	if err != nil {
		return err
	}
	if ob.mode != config.ModeConsume {
		if err := ob.net.Provide(bk, vk); err != nil {
			return fmt.Errorf("provide %s: %w", lp.CPV, err)
		}
		ob.announces.Inc()
	}
	if publish {
		if err := ob.votes.PublishOwn(ctx, signed); err != nil {
			ob.log.Debug("gossip attestation", "cpv", lp.CPV, "err", err)
		}
	}
	return nil
}

// ownAttestation returns the stored own attestation for this exact file, or
// signs a new one. Re-signing on every start would flood peers with
// equivalent attestations that differ only in time.
func (ob *Builds) ownAttestation(lp store.LocalPackage, ex localExtra) (*trust.Signed, error) {
	s, err := ob.storedOwn(lp, ex)
	if s != nil || err != nil {
		return s, err
	}
	content := trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}
	claimed, err := ob.store.ClaimOwnContent(lp.BuildKey, content.String())
	if err != nil {
		return nil, err
	}
	return ob.signOwn(lp, ex, claimed)
}

// storedOwn returns the stored own attestation for this exact file; nil,
// nil when a new one is to be signed (after ClaimOwnContent).
func (ob *Builds) storedOwn(lp store.LocalPackage, ex localExtra) (*trust.Signed, error) {
	recs, err := ob.store.AttestationsFor(lp.BuildKey)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Attester != ob.self.String() {
			continue
		}
		s, err := ob.votes.Decode(r.Blob)
		// An attestation from before the served form is signed anew, so
		// gateways can list the build before fetching it.
		if err == nil && s.Attestation.FileSHA256 == lp.FileSHA256 && (ex.Served == nil || s.Attestation.Served == *ex.Served) &&
			(ex.Needs == nil || s.Attestation.Needs == *ex.Needs) && (ex.Toolchain == nil || ex.Toolchain.matches(s.Attestation.Builder)) {
			return s, nil
		}
	}
	if ob.downloaded(lp.Path) {
		return nil, fmt.Errorf("%s: %w", lp.Path, errDownloaded)
	}
	return nil, nil
}

// signOwn signs a new own attestation of lp, given the content id this
// peer claimed for its build key (ClaimOwnContent's answer, committed
// before anything is signed).
func (ob *Builds) signOwn(lp store.LocalPackage, ex localExtra, claimed string) (*trust.Signed, error) {
	content := trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}
	if claimed != content.String() {
		return nil, fmt.Errorf("%s: %w: this peer attested content %s for build key %s before; a second content would be equivocation, so this build is kept local",
			lp.Path, errNonReproducible, claimed, lp.BuildKey)
	}
	a := trust.Attestation{
		Version:    trust.AttestationVersion,
		BuildKey:   keys.Build(lp.BuildKey),
		VariantKey: keys.Variant(lp.VariantKey),
		CPV:        lp.CPV,
		Platform:   lp.Platform,
		Descriptor: ex.Descriptor,
		Index:      ex.Index,
		Content:    content,
		FileSHA256: lp.FileSHA256,
		Size:       lp.Size,
		PieceRoot:  lp.PieceRoot,
		PieceSize:  pieces.Size,
		Format:     lp.Format,
		Builder:    trust.Builder{Portage: portageVersion()},
		Time:       time.Now().UTC().Truncate(time.Second),
	}
	if tf := ex.Toolchain; tf != nil {
		a.Builder.GCC, a.Builder.Binutils, a.Builder.Libc, a.Builder.BuildDir = tf.GCC, tf.Binutils, tf.Libc, tf.BuildDir
	}
	if ex.Served != nil {
		a.Served = *ex.Served
		if ex.Needs != nil {
			a.Needs = *ex.Needs
		}
	} else {
		a.Version = 1 // no served form to state
	}
	return trust.Sign(a, ob.key)
}

// canonicalTmpdir is portage's default PORTAGE_TMPDIR: builders who keep
// it make the same bytes of a package that compiles its build directory
// in.
const canonicalTmpdir = "/var/tmp"

var (
	portageOnce sync.Once
	portageVer  string
)

// portageVersion asks the local portage once (informational: it does
// not decide a build's bytes); "" on a machine without portage.
func portageVersion() string {
	portageOnce.Do(func() {
		if _, err := exec.LookPath("portageq"); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "python3", "-c", "import portage; print(portage.VERSION)").Output()
		if err == nil {
			portageVer = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
	})
	return portageVer
}
