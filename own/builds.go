package own

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/scan"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Network is what own builds need of the peer-to-peer network: providing
// and withdrawing their keys. *p2p.Node implements it; tests use an
// in-memory fake.
type Network interface {
	Provide(keys ...cid.Cid) error
	Withdraw(keys ...cid.Cid) error
	Providing(key cid.Cid) bool
}

// Announce's refusals, for callers that tell them apart (the local API's
// error codes).
var (
	ErrOutsidePKGDIR = errors.New("is not inside PKGDIR")
	ErrNoBinpkg      = errors.New("no binpkg")
)

// Options are what Builds needs.
type Options struct {
	Store *store.Store
	Votes *votes.Book
	Net   Network
	// Key signs this daemon's attestations; Self is its peer id.
	Key  crypto.PrivKey
	Self peer.ID
	// PkgDir is portage's PKGDIR, indexed and watched.
	PkgDir string
	// BuildDirs are further directories indexed, attested and announced
	// like PKGDIR: the builder's PKGDIR (build.donate). They are read on
	// every sync of PKGDIR and when the builder announces a file; one
	// that is missing withdraws nothing, nor does PKGDIR because of them.
	BuildDirs []string
	Mode      config.Mode
	// MD5Cache resolves eclass digests for build descriptors (nil: none).
	MD5Cache *identity.MD5Cache
	Files    xpak.Limits
	// ExpandNative resolves -march=native and friends the way this
	// machine's gcc does (identity.GCCNative), so a build's keys differ
	// where its code differs; nil refuses builds made with native flags.
	ExpandNative func(flag string) (string, error)
	// Downloaded holds the keys whose signature marks a binpkg as fetched
	// from a binhost (the gateway's own key, trust.pgp_keyring): such
	// files are indexed but never attested as built here.
	Downloaded openpgp.EntityList
	// VDB is portage's installed-package database ("" means
	// /var/db/pkg): the binutils, C library and gcc an attestation
	// states for a build with ELF objects are the ones installed there
	// before it was built.
	VDB      string
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Builds are this daemon's own builds: it indexes PKGDIR, attests what
// portage built here, provides and gossips it, and withdraws what left.
type Builds struct {
	store     *store.Store
	votes     *votes.Book
	net       Network
	key       crypto.PrivKey
	self      peer.ID
	pkgdir    string
	buildDirs []string
	mode      config.Mode
	md5cache  *identity.MD5Cache
	expand    func(flag string) (string, error)
	limits    xpak.Limits
	keyring   openpgp.EntityList
	vdb       string
	log       *slog.Logger
	scanner   *scan.Scanner
	pkgdirMsg atomic.Value // string: note on PKGDIR for status
	announces prometheus.Counter
}

// New makes Builds; nothing is read until Run.
func New(o Options) *Builds {
	ob := &Builds{
		store: o.Store, votes: o.Votes, net: o.Net, key: o.Key, self: o.Self,
		pkgdir: o.PkgDir, buildDirs: o.BuildDirs, mode: o.Mode, md5cache: o.MD5Cache, expand: o.ExpandNative, limits: o.Files,
		keyring: o.Downloaded, vdb: cmp.Or(o.VDB, "/var/db/pkg"), log: o.Logger,
	}
	if ob.log == nil {
		ob.log = slog.New(slog.DiscardHandler)
	}
	ob.scanner = scan.New(o.PkgDir, o.Store, indexer{ob}, ob.log.With("component", "scan"))
	ob.scanner.Extra = o.BuildDirs
	ob.announces = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gentoo_p2pd", Name: "announces_total",
		Help: "Local builds announced (build key and variant key provided).",
	})
	if o.Registry != nil {
		o.Registry.MustRegister(ob.announces)
	}
	return ob
}

// Start indexes PKGDIR, attests and announces what it holds, and
// re-announces what the store knew from before (a restart). It returns
// once that is done; Watch keeps up with later changes.
func (ob *Builds) Start(ctx context.Context) error {
	done, err := ob.syncPKGDIR(ctx)
	if err != nil {
		return err
	}
	if err := ob.announceAll(ctx, done); err != nil {
		ob.log.Warn("announce stored packages", "err", err)
	}
	return nil
}

// Watch follows PKGDIR until ctx ends.
func (ob *Builds) Watch(ctx context.Context) error {
	err := ob.scanner.Watch(ctx, func(ch scan.Changes) { ob.applyChanges(ctx, ch) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("watch PKGDIR: %w", err)
	}
	return nil
}

// Note is what status says about PKGDIR ("" when all is well).
func (ob *Builds) Note() string { s, _ := ob.pkgdirMsg.Load().(string); return s }

// Providing reports whether this daemon announces lp's build key.
func (ob *Builds) Providing(lp store.LocalPackage) bool {
	c, err := keys.Build(lp.BuildKey).CID()
	return err == nil && ob.net.Providing(c)
}

// SyncNow reads PKGDIR's changes now (instead of waiting for the watcher)
// and applies them.
func (ob *Builds) SyncNow(ctx context.Context) (scan.Changes, error) {
	ch, err := ob.scanner.Sync(ctx)
	if len(ch.Added)+len(ch.Replaced)+len(ch.Removed) > 0 || len(ch.Errors) > 0 {
		// The announcement outlives the request that asked for it.
		ob.applyChanges(context.WithoutCancel(ctx), ch)
	}
	return ch, err
}

// Announce indexes and announces one binpkg now: path is a file inside
// PKGDIR, or a category/package-version whose newest binpkg there is meant.
func (ob *Builds) Announce(ctx context.Context, path string) (store.LocalPackage, error) {
	if path == "" {
		return store.LocalPackage{}, errors.New("announce: give the path of a binpkg in PKGDIR")
	}
	if looksLikeCPV(path) {
		return ob.announceCPV(ctx, path)
	}
	abs, err := ob.inPKGDIR(path)
	if err != nil {
		return store.LocalPackage{}, err
	}
	if _, err := os.Stat(abs); err != nil {
		return store.LocalPackage{}, fmt.Errorf("announce: %w", err)
	}
	ch, err := ob.SyncNow(ctx)
	if err != nil && !(errors.Is(err, scan.ErrNoPKGDIR) && ob.inBuildDir(abs)) {
		return store.LocalPackage{}, err
	}
	lp, ok, err := ob.store.GetLocal(abs)
	if err != nil {
		return store.LocalPackage{}, err
	}
	if !ok {
		for _, e := range ch.Errors {
			if strings.Contains(e.Error(), abs) {
				return store.LocalPackage{}, e
			}
		}
		return store.LocalPackage{}, fmt.Errorf("announce: %s was not indexed (not a binpkg name portage writes?)", abs)
	}
	return lp, nil
}

// inPKGDIR returns path under PKGDIR as configured (the name the scanner
// records it by), or an error if it is not inside PKGDIR. PKGDIR is often
// a symlink to a bigger disk, so a path through the link's target (or
// through another symlink to the same directory) is inside too.
// The builder's directories (BuildDirs) count as PKGDIR.
func (ob *Builds) inPKGDIR(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	for _, dir := range append([]string{ob.pkgdir}, ob.buildDirs...) {
		dir, err := filepath.Abs(dir)
		if err != nil {
			return "", err
		}
		if _, ok := under(dir, abs); ok {
			return abs, nil
		}
		realDir, err1 := filepath.EvalSymlinks(dir)
		realParent, err2 := filepath.EvalSymlinks(filepath.Dir(abs))
		if err1 == nil && err2 == nil {
			if rel, ok := under(realDir, filepath.Join(realParent, filepath.Base(abs))); ok {
				return filepath.Join(dir, rel), nil
			}
		}
	}
	return "", fmt.Errorf("announce: %s %w %s", abs, ErrOutsidePKGDIR, ob.pkgdir)
}

// inBuildDir reports whether abs (as inPKGDIR returns it) is in one of
// the builder's directories.
func (ob *Builds) inBuildDir(abs string) bool {
	for _, dir := range ob.buildDirs {
		if dir, err := filepath.Abs(dir); err == nil {
			if _, ok := under(dir, abs); ok {
				return true
			}
		}
	}
	return false
}

// under returns p relative to dir when p is dir or below it.
func under(dir, p string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	return rel, err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// looksLikeCPV tells "app-misc/hello-1.0" from a path: two non-empty
// parts, neither "." nor "..", and no file of that name here.
func looksLikeCPV(s string) bool {
	cat, pf, ok := strings.Cut(s, "/")
	if !ok || cat == "" || pf == "" || strings.Contains(pf, "/") || cat == "." || cat == ".." {
		return false
	}
	_, err := os.Stat(s)
	return errors.Is(err, os.ErrNotExist)
}

func (ob *Builds) announceCPV(ctx context.Context, cpv string) (store.LocalPackage, error) {
	if _, err := ob.SyncNow(ctx); err != nil {
		return store.LocalPackage{}, err
	}
	lps, err := ob.store.ListLocal()
	if err != nil {
		return store.LocalPackage{}, err
	}
	var best *store.LocalPackage
	for i := range lps {
		if lps[i].CPV == cpv && (best == nil || lps[i].IndexedAt.After(best.IndexedAt)) {
			best = &lps[i]
		}
	}
	if best == nil {
		return store.LocalPackage{}, fmt.Errorf("announce: %w of %s in PKGDIR %s", ErrNoBinpkg, cpv, ob.pkgdir)
	}
	return *best, nil
}
