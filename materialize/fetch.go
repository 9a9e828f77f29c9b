package materialize

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// ErrNotAllowed is returned when a build is asked for whose verdict does
// not allow any content: the daemon never fetches, keeps or serves it.
var ErrNotAllowed = errors.New("not allowed by the trust policy")

// ErrNoProvider is returned when a build is allowed but no reachable peer
// holds a file with its content.
var ErrNoProvider = errors.New("no reachable peer holds a file with the allowed content")

// fetchTimeout bounds one transfer shared by several callers.
const fetchTimeout = 2 * time.Hour

// fetchFailure is the most recent failed fetch, for status.
type fetchFailure struct {
	at  time.Time
	err string
}

// fetchCall lets concurrent requests for one build (portage retrying, the
// CLI and the gateway at once) share one transfer.
type fetchCall struct {
	done chan struct{}
	path string
	att  *trust.Signed
	res  transfer.Result
	err  error
}

// Materialized is a verified local copy of an allowed build.
type Materialized struct {
	Path    string
	Att     *trust.Signed // the attestation of the file at Path
	Verdict trust.Verdict
	Local   bool // an own build from PKGDIR, not fetched
	Result  transfer.Result
}

// Materialize returns a verified local container file for the allowed
// content of buildKey, fetching it from peers when neither PKGDIR nor the
// cache has one.
func (mz *Materializer) Materialize(ctx context.Context, buildKey keys.Build, progress func(transfer.Progress)) (m Materialized, err error) {
	defer func() {
		// What status shows: why the last fetch failed (a refusal by the
		// policy and a cancelled request are not failures).
		if err != nil && !errors.Is(err, ErrNotAllowed) && ctx.Err() == nil {
			mz.lastFetchFailure.Store(&fetchFailure{at: time.Now(), err: err.Error()})
		}
	}()
	ab, ok, err := mz.votes.AllowedBuild(buildKey)
	if err != nil {
		return Materialized{}, err
	}
	if !ok {
		// Ask the providers: this daemon may not have heard enough votes yet.
		if err := mz.collectAttestations(ctx, buildKey); err != nil {
			mz.log.Debug("collect attestations", "build_key", buildKey, "err", err)
		}
		if ab, ok, err = mz.votes.AllowedBuild(buildKey); err != nil {
			return Materialized{}, err
		}
		if !ok {
			v, _, _ := mz.votes.Verdict(buildKey)
			return Materialized{Verdict: v}, fmt.Errorf("build %s: %w (%s: %s)", buildKey, ErrNotAllowed, v.Decision, v.Rule)
		}
	}
	content := *ab.Verdict.Content
	// An own build or a cached copy with the allowed content.
	// An attestation names a file and claims its content; anyone can sign
	// such a claim about any file, so a local file is used only when its
	// own digests are the allowed content.
	for _, s := range ab.Atts {
		sha := s.Attestation.FileSHA256
		if lps, _ := mz.store.LocalBySHA(sha); len(lps) > 0 {
			lp := lps[0]
			if lp.ImageDigest == content.Image && lp.MetadataDigest == content.Metadata {
				return Materialized{Path: lp.Path, Att: s, Verdict: ab.Verdict, Local: true}, nil
			}
			continue
		}
		if e, ok, _ := mz.store.Cache().Get(sha); ok {
			path := e.Path
			recorded := trust.ContentID{Image: e.Meta.ImageDigest, Metadata: e.Meta.MetadataDigest}
			switch {
			case recorded == content && e.Meta.CPV == s.Attestation.CPV:
				// Verified as this content before it was committed: the
				// file is not read again.
			case recorded != (trust.ContentID{}):
				mz.log.Warn("cached file does not carry the allowed content", "sha256", hex.EncodeToString(sha[:]), "content", recorded.String())
				continue
			default:
				// Committed without its content recorded: read it.
				if err := mz.verifyContent(path, content, s.Attestation.CPV, sha); err != nil {
					mz.log.Warn("cached file does not carry the allowed content", "sha256", hex.EncodeToString(sha[:]), "err", err)
					continue
				}
			}
			if err := mz.store.Cache().Touch(sha); err != nil {
				mz.log.Debug("cache touch", "err", err) // only the eviction order suffers
			}
			return Materialized{Path: path, Att: s, Verdict: ab.Verdict}, nil
		}
	}

	mz.mu.Lock()
	if c, ok := mz.fetching[buildKey]; ok {
		mz.mu.Unlock()
		select {
		case <-c.done:
			return Materialized{Path: c.path, Att: c.att, Verdict: ab.Verdict, Result: c.res}, c.err
		case <-ctx.Done():
			return Materialized{}, ctx.Err()
		}
	}
	c := &fetchCall{done: make(chan struct{})}
	mz.fetching[buildKey] = c
	mz.mu.Unlock()
	defer func() {
		mz.mu.Lock()
		delete(mz.fetching, buildKey)
		mz.mu.Unlock()
		close(c.done)
	}()
	// Others may be waiting on this transfer: it must not die with the
	// first caller's context (an interrupted CLI, a dropped HTTP request),
	// only with the daemon or after a generous bound.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	stop := context.AfterFunc(mz.base(), cancel)
	defer stop()
	c.path, c.att, c.res, c.err = mz.fetchContent(fctx, buildKey, content, progress)
	return Materialized{Path: c.path, Att: c.att, Verdict: ab.Verdict, Result: c.res}, c.err
}

// collectAttestations asks the build key's providers for the attestations
// they hold and stores the valid ones.
func (mz *Materializer) collectAttestations(ctx context.Context, buildKey keys.Build) error {
	_, err := mz.Providers(ctx, buildKey)
	return err
}

// Providers finds the build key's providers, collects their
// attestations, and maps each container file to the peers that attest
// holding it (a peer's own attestation is its claim to hold the file).
func (mz *Materializer) Providers(ctx context.Context, buildKey keys.Build) (map[[32]byte][]peer.AddrInfo, error) {
	files, _, err := mz.findHolders(ctx, buildKey, false)
	return files, err
}

// askTimeout bounds one provider's attest/1 answer when looking for
// holders; holderGrace is how much longer the others get once one named
// a file.
const (
	askTimeout  = 5 * time.Second
	holderGrace = time.Second
)

// findHolders is Providers that also returns copies: providers of the
// build key that attest no file of it themselves — peers serving a copy
// they fetched (a mirror, or a share-mode peer's cache), or a builder
// whose stale DHT record outlived its file. Which file they hold is
// unknown until asked; pieces are verified against the attested root
// either way, and one without the file answers "not found". askAttesters
// adds the build's attesters this node can reach to the DHT's answer.
func (mz *Materializer) findHolders(ctx context.Context, buildKey keys.Build, askAttesters bool) (files map[[32]byte][]peer.AddrInfo, copies []peer.AddrInfo, err error) {
	key, err := buildKey.CID()
	if err != nil {
		return nil, nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	provs, err := mz.net.FindProviders(fctx, key, 32)
	mz.metrics.lookups.Inc()
	if askAttesters {
		// A fetch also asks the attesters this node can already reach: a
		// fresh announcement may not be in the DHT yet (or the DHT may be
		// small), and an attester is the likeliest holder.
		provs = mz.appendReachableAttesters(provs, buildKey)
	}
	if err != nil && len(provs) == 0 {
		return nil, nil, fmt.Errorf("find providers of %s: %w", buildKey, err)
	}
	// Every provider is asked at once, each for at most askTimeout: a
	// provider that never answers (a stranger that announced the key and
	// stalls) must not hold the fetch up, and once one has named a file
	// the others have holderGrace more to answer.
	type answer struct {
		blobs [][]byte
		ok    bool
	}
	answers := make([]answer, len(provs))
	actx, stop := context.WithCancel(fctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		oneHeard sync.Once
	)
	for i, p := range provs {
		if p.ID == mz.self {
			continue
		}
		mz.net.RememberAddrs(p)
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(actx, askTimeout)
			defer cancel()
			bs, err := mz.net.FetchAttestations(pctx, p.ID, key)
			if err != nil {
				mz.log.Debug("fetch attestations", "peer", p.ID.String(), "err", err)
				return
			}
			answers[i] = answer{blobs: bs, ok: true}
			if len(bs) > 0 {
				oneHeard.Do(func() { time.AfterFunc(holderGrace, stop) })
			}
		})
	}
	wg.Wait()
	files = make(map[[32]byte][]peer.AddrInfo)
	for i, p := range provs {
		if !answers[i].ok {
			continue
		}
		attested := false
		for _, b := range answers[i].blobs {
			if votes.IsEndorsement(b) {
				if _, err := mz.votes.IngestEndorsement(fctx, b, p.ID, false); err != nil {
					mz.log.Debug("endorsement not kept", "peer", p.ID.String(), "err", err) // counted by votes
				}
				continue
			}
			if _, err := mz.votes.IngestFrom(fctx, b, p.ID); err != nil {
				mz.log.Debug("attestation not kept", "peer", p.ID.String(), "err", err) // counted by votes
			}
			s, err := mz.votes.Decode(b)
			if err != nil || s.Attester != p.ID || s.Attestation.BuildKey != buildKey {
				continue
			}
			files[s.Attestation.FileSHA256] = append(files[s.Attestation.FileSHA256], p)
			attested = true
		}
		if !attested {
			copies = append(copies, p)
		}
	}
	return files, copies, nil
}

// fetchContent downloads one container file that carries content, from the
// peers that hold it, verifying pieces, the whole file, the GPKG Manifest
// and the image and metadata digests as the bytes arrive, before the file
// enters the cache.
func (mz *Materializer) fetchContent(ctx context.Context, buildKey keys.Build, content trust.ContentID, progress func(transfer.Progress)) (string, *trust.Signed, transfer.Result, error) {
	files, copies, err := mz.findHolders(ctx, buildKey, true)
	if err != nil {
		return "", nil, transfer.Result{}, err
	}
	ab, ok, err := mz.votes.AllowedBuild(buildKey) // the providers' votes may have changed it
	if err != nil {
		return "", nil, transfer.Result{}, err
	}
	if !ok || *ab.Verdict.Content != content {
		return "", nil, transfer.Result{}, fmt.Errorf("build %s: %w after collecting votes", buildKey, ErrNotAllowed)
	}
	// Candidate files: attested with the allowed content, most holders first.
	type candidate struct {
		att   *trust.Signed
		peers []peer.AddrInfo
	}
	var cands []candidate
	seen := map[[32]byte]bool{}
	for _, s := range ab.Atts {
		sha := s.Attestation.FileSHA256
		if seen[sha] || len(files[sha])+len(copies) == 0 {
			continue
		}
		seen[sha] = true
		// Attesting holders first; copies of unknown file as fallback.
		peers := append(append([]peer.AddrInfo(nil), files[sha]...), copies...)
		cands = append(cands, candidate{s, peers})
	}
	sort.SliceStable(cands, func(i, j int) bool { return len(cands[i].peers) > len(cands[j].peers) })
	if len(cands) == 0 {
		return "", nil, transfer.Result{}, fmt.Errorf("build %s: %w", buildKey, ErrNoProvider)
	}
	var lastErr error
	for _, c := range cands {
		a := c.att.Attestation
		// Every check of the content (file SHA-256, GPKG Manifest, image
		// and metadata digests) runs while the verified pieces stream in,
		// in one pass; the file is not read again after the last piece.
		var pkg *xpak.Package
		res, err := mz.fetch(ctx, transfer.Want{
			SHA256: a.FileSHA256, Size: a.Size, PieceRoot: a.PieceRoot, PieceSize: a.PieceSize,
		}, c.peers, transfer.FetchOptions{
			Dir: mz.store.PartialDir(),
			Check: func(r io.ReaderAt, size int64) ([32]byte, error) {
				p, err := identity.CheckedReader(r, size, a.CPV, a.Content.Image, a.Content.Metadata, mz.limits)
				if err != nil {
					return [32]byte{}, err
				}
				pkg = p
				return p.FileSHA256, nil
			},
			Progress: progress,
			Metrics:  mz.xferM,

			DownloadLimit: mz.download,
		})
		for _, f := range res.BadPeers {
			mz.log.Warn("dropped provider", "peer", f.Peer.String(), "reason", string(f.Kind), "err", f.Err)
		}
		if errors.Is(err, transfer.ErrDiskWrite) {
			// The disk is full or failing: another candidate would fail
			// the same way (its partial file is already removed).
			return "", nil, res, fmt.Errorf("build %s: %w", buildKey, err)
		}
		if err == nil && pkg == nil {
			// Never commit what was not checked, whatever the transfer.
			err = fmt.Errorf("%w: the content check did not run", transfer.ErrVerify)
		}
		if err != nil {
			lastErr = err
			continue
		}
		// Fetch verified the SHA-256 and fsynced the file: a rename.
		entry, err := mz.store.Cache().CommitVerified(res.Path, a.FileSHA256, store.CacheMeta{
			CPV: a.CPV, BuildKey: string(buildKey), ImageDigest: a.Content.Image, MetadataDigest: a.Content.Metadata,
		})
		if err != nil {
			return "", nil, res, err
		}
		pkg.Path = entry.Path
		mz.keepVerified(a.FileSHA256, pkg)
		// Keep the verified piece layer so serving the file never re-hashes it.
		if len(res.Leaves) > 0 {
			if err := mz.store.PutLeaves(a.FileSHA256, res.Leaves); err != nil {
				mz.log.Debug("keep piece layer", "err", err) // recomputed when the file is served
			}
		}
		mz.holdBudget(a.FileSHA256)
		// A copy this daemon serves (share and mirror modes serve allowed
		// cached builds) is worth nothing unless fetchers can find it.
		if mz.mode != config.ModeConsume {
			if err := mz.provideCopy(a); err != nil {
				mz.log.Warn("provide fetched build", "cpv", a.CPV, "err", err)
			}
		}
		if err := errors.Join(mz.store.IncCounter("builds_fetched", 1), mz.store.IncCounter("bytes_fetched", res.BytesFetched)); err != nil {
			mz.log.Warn("count fetch", "err", err) // a statistic: the file is here
		}
		return entry.Path, c.att, res, nil
	}
	return "", nil, transfer.Result{}, fmt.Errorf("build %s: fetch failed: %w", buildKey, lastErr)
}

// holdBudget keeps the cache within its disk budget right after a file
// entered it: the GC loop runs once a minute, and a mirror fetches many
// builds in between. It never evicts the file just fetched (the caller is
// about to use it) or a file that is also an own build in PKGDIR.
func (mz *Materializer) holdBudget(fresh [32]byte) {
	budget := mz.diskBudget
	if budget <= 0 {
		return
	}
	if _, err := mz.evictTo(budget, &fresh); err != nil {
		mz.log.Warn("cache gc", "err", err)
	}
}

// provideCopy announces the build and variant key of a fetched copy.
func (mz *Materializer) provideCopy(a trust.Attestation) error {
	bk, err := a.BuildKey.CID()
	if err != nil {
		return err
	}
	vk, err := a.VariantKey.CID()
	if err != nil {
		return err
	}
	return mz.net.Provide(bk, vk)
}

// verifyContent is the last gate before a fetched file counts as present:
// it must parse as a sound binpkg whose image and metadata digests are
// exactly the allowed content id.
//
// The package as read is kept (for VerifiedPackage) under the file's
// SHA-256, so the gateway's re-pack need not read the file again.
func (mz *Materializer) verifyContent(path string, want trust.ContentID, cpv string, sha [32]byte) error {
	pkg, err := identity.CheckedFile(path, cpv, want.Image, want.Metadata, mz.limits)
	if err != nil {
		return err
	}
	mz.keepVerified(sha, pkg)
	return nil
}

// keepVerified keeps the package as read when its file was verified, for
// VerifiedPackage.
func (mz *Materializer) keepVerified(sha [32]byte, pkg *xpak.Package) {
	mz.mu.Lock()
	defer mz.mu.Unlock()
	if len(mz.verified) >= maxVerified {
		clear(mz.verified) // a handful of recent files: nothing is lost but a re-read
	}
	mz.verified[sha] = pkg
}

// maxVerified bounds the packages kept for VerifiedPackage.
const maxVerified = 16

// VerifiedPackage returns, once, the package read when the file with this
// SHA-256 was last verified, or nil.
func (mz *Materializer) VerifiedPackage(sha [32]byte) *xpak.Package {
	mz.mu.Lock()
	defer mz.mu.Unlock()
	pkg := mz.verified[sha]
	delete(mz.verified, sha)
	return pkg
}

// errNotServed is a file this daemon does not hold or will not serve; it
// wraps transfer.ErrNotFound so the peer gets a "not found" answer (not an
// internal error) and nothing is logged per request.
var errNotServed = fmt.Errorf("not served: %w", transfer.ErrNotFound)

// Open is the transfer server's source: it serves container files to
// peers: own builds while they are in PKGDIR (share and mirror modes), and
// cached builds that are still Allowed (mirror mode may also carry builds
// not yet decided, never refused or disputed ones).
func (mz *Materializer) Open(sha [32]byte) (transfer.File, error) {
	if mz.mode == config.ModeConsume {
		return nil, errNotServed
	}
	if lps, _ := mz.store.LocalBySHA(sha); len(lps) > 0 {
		return mz.openFile(sha, lps[0].Path)
	}
	entry, ok, err := mz.store.Cache().Get(sha)
	if err != nil || !ok {
		return nil, errNotServed
	}
	if !mz.Servable(keys.Build(entry.Meta.BuildKey)) {
		return nil, errNotServed
	}
	if err := mz.store.Cache().Touch(sha); err != nil {
		mz.log.Debug("cache touch", "err", err) // only the eviction order suffers
	}
	return mz.openFile(sha, entry.Path)
}

// open opens a served file with its piece layer. A layer the store lacks
// is computed once and kept: otherwise every request of a peer would make
// this daemon hash the whole file again.
func (mz *Materializer) openFile(sha [32]byte, path string) (transfer.File, error) {
	leaves, _, err := mz.store.GetLeaves(sha)
	if err != nil {
		leaves = nil
	}
	f, err := transfer.OpenFile(path, leaves)
	if err != nil || leaves != nil {
		return f, err
	}
	if err := mz.store.PutLeaves(sha, f.Leaves()); err != nil {
		mz.log.Debug("keep piece layer", "file", path, "err", err)
	}
	return f, nil
}

// appendReachableAttesters adds to provs the attesters of buildKey that are
// connected or have known addresses, without duplicates.
func (mz *Materializer) appendReachableAttesters(provs []peer.AddrInfo, buildKey keys.Build) []peer.AddrInfo {
	seen := map[peer.ID]bool{mz.self: true}
	for _, p := range provs {
		seen[p.ID] = true
	}
	recs, err := mz.store.AttestationsFor(string(buildKey))
	if err != nil {
		return provs
	}
	for _, r := range recs {
		id, err := peer.Decode(r.Attester)
		if err != nil || seen[id] {
			continue
		}
		seen[id] = true
		if addrs := mz.net.KnownAddrs(id); len(addrs) > 0 {
			provs = append(provs, peer.AddrInfo{ID: id, Addrs: addrs})
		}
	}
	return provs
}

// Servable reports whether a cached copy of a build may be served to peers:
// Allowed builds, and in mirror mode builds not decided yet — never refused
// or disputed ones.
func (mz *Materializer) Servable(buildKey keys.Build) bool {
	v, _, err := mz.votes.Verdict(buildKey)
	if err != nil {
		return false
	}
	return v.Decision == trust.Allowed || mz.mode == config.ModeMirror && v.Decision == trust.Unknown
}
