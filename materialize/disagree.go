package materialize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// A rebuild that disagrees: another attester of a compatible build
// environment signed another content for a build key this node attested
// itself. The disagreement loop fetches that content into quarantine,
// compares it with the own build and keeps the comparison as a report
// (trust.Disagreement) for `trust explain`.
const (
	// QuarantineDirName is the directory of the state dir a disagreeing
	// content is fetched into: never the cache, never listed for
	// portage, emptied after each comparison.
	QuarantineDirName = "quarantine"
	// MaxReports bounds the reports kept store-wide, and
	// MaxReportsPerBuild those about one build key: contents claimed by
	// counted attesters only are compared, but a build key with many
	// rivals needs no more than a few comparisons to be understood.
	MaxReports         = 256
	MaxReportsPerBuild = 4
	// maxQuarantineBytes bounds one disagreeing file (the cache budget,
	// when smaller, bounds it too).
	maxQuarantineBytes = 4 << 30
	// compareTimeout bounds fetching and comparing one content.
	compareTimeout = 30 * time.Minute
	// The loop looks for vote changes every disagreementPoll, and walks
	// the own builds at most every disagreementPass.
	disagreementPoll = time.Second
	disagreementPass = 2 * time.Second
	// A comparison that failed (no provider answered, the transfer broke)
	// is retried after retryFirst, doubling up to retryMax, at most
	// maxAttempts times until the build key's votes change again.
	retryFirst  = 30 * time.Second
	retryMax    = time.Hour
	maxAttempts = 8
	// maxRetries bounds the pending retries.
	maxRetries = 1024
	// ownKeysRefresh is how long the list of own build keys is kept while
	// the store's usage of this node's attestations stays the same.
	ownKeysRefresh = time.Minute
)

// ErrTooLarge is a disagreeing file larger than quarantine may hold.
var ErrTooLarge = errors.New("too large for quarantine")

// rival is one disagreeing content of a build key this node attested.
type rival struct {
	bk    keys.Build
	other trust.ContentID
}

// retryState is when a failed comparison may run again.
type retryState struct {
	due     time.Time
	wait    time.Duration
	tries   int
	lastErr string
	// voters is how many counted voters the rival had at the last try:
	// only more of them start the tries afresh, not any vote change on
	// the build key (which anyone's fresh key can make).
	voters int
}

// disagreements is the loop's memory: the vote generation each own build
// key was last looked at, and the comparisons waiting for a retry.
type disagreements struct {
	mu       sync.Mutex // one pass at a time; guards the fields
	lastGen  uint64
	lastPass time.Time
	checked  map[keys.Build]uint64
	retry    map[rival]*retryState
	// own are the build keys this node attested, read at ownAt when the
	// store's usage of its attestations was ownUsage: re-reading every
	// own attestation on every vote change would cost a PKGDIR's worth
	// of records each time.
	own      []keys.Build
	ownAt    time.Time
	ownUsage store.Usage
}

// disagreementLoop looks for rebuilds that disagree with this node's
// builds whenever votes change, until ctx ends.
func (mz *Materializer) disagreementLoop(ctx context.Context) {
	// What a crash left in quarantine goes: nothing there is ever used.
	if err := os.RemoveAll(filepath.Join(mz.store.Dir(), QuarantineDirName)); err != nil {
		mz.log.Warn("empty quarantine", "err", err)
	}
	t := time.NewTicker(disagreementPoll)
	defer t.Stop()
	for {
		if _, err := mz.checkDisagreements(ctx, false); err != nil && ctx.Err() == nil {
			mz.log.Warn("rebuild disagreements", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckDisagreements looks once at every build key this node attested
// itself (its PKGDIR builds and any other build it signed) whose votes
// changed since the last look, and at the comparisons due for a retry:
// for each content that counted attesters of a compatible build
// environment signed instead of this node's, it fetches that content into
// quarantine, compares it with the own build and keeps the report. It
// returns how many reports it added.
func (mz *Materializer) CheckDisagreements(ctx context.Context) (int, error) {
	return mz.checkDisagreements(ctx, true)
}

func (mz *Materializer) checkDisagreements(ctx context.Context, force bool) (int, error) {
	d := &mz.disagree
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.checked == nil {
		d.checked, d.retry = map[keys.Build]uint64{}, map[rival]*retryState{}
	}
	now := time.Now()
	gen := mz.votes.Generation()
	due := false
	for _, r := range d.retry {
		if r.tries < maxAttempts && !now.Before(r.due) {
			due = true
			break
		}
	}
	if !force && !due && (gen == d.lastGen || now.Sub(d.lastPass) < disagreementPass) {
		return 0, nil
	}
	d.lastGen, d.lastPass = gen, now
	if err := mz.refreshOwnKeys(force, now); err != nil {
		return 0, err
	}
	var todo []keys.Build
	seen := make(map[keys.Build]bool, len(d.own))
	queued := map[keys.Build]bool{}
	for _, bk := range d.own {
		seen[bk] = true
		if c, ok := d.checked[bk]; !ok || mz.votes.Changed(bk) > c {
			todo = append(todo, bk)
			queued[bk] = true
		}
	}
	for r, st := range d.retry {
		if !seen[r.bk] {
			delete(d.retry, r) // no longer an own build
			continue
		}
		if st.tries < maxAttempts && !now.Before(st.due) && !queued[r.bk] {
			todo = append(todo, r.bk)
			queued[r.bk] = true
		}
	}
	for bk := range d.checked {
		if !seen[bk] {
			delete(d.checked, bk)
		}
	}
	added := 0
	for _, bk := range todo {
		if ctx.Err() != nil {
			return added, ctx.Err()
		}
		n, err := mz.checkBuild(ctx, bk, gen, now)
		added += n
		if errors.Is(err, store.ErrReportsFull) {
			return added, nil // nothing more is kept (status shows the count)
		}
		if err != nil {
			return added, err
		}
	}
	return added, nil
}

// refreshOwnKeys re-reads the build keys this node attested when it
// stored or withdrew an attestation (one read of its usage tells), when
// the list is older than ownKeysRefresh, or when forced.
func (mz *Materializer) refreshOwnKeys(force bool, now time.Time) error {
	d := &mz.disagree
	usage, err := mz.store.AttesterUsage(mz.self.String())
	if err != nil {
		return err
	}
	if !force && d.ownAt.After(now.Add(-ownKeysRefresh)) && usage == d.ownUsage {
		return nil
	}
	recs, err := mz.store.AttestationsBy(mz.self.String())
	if err != nil {
		return err
	}
	d.own = d.own[:0]
	for _, r := range recs {
		d.own = append(d.own, keys.Build(r.BuildKey))
	}
	slices.Sort(d.own)
	d.own = slices.Compact(d.own)
	d.ownAt, d.ownUsage = now, usage
	return nil
}

// checkBuild compares the rivals of one own build key that have no
// report yet; a store error fails it, a failed comparison is retried
// later.
func (mz *Materializer) checkBuild(ctx context.Context, bk keys.Build, gen uint64, now time.Time) (int, error) {
	d := &mz.disagree
	changed := mz.votes.Changed(bk) > d.checked[bk]
	if _, ok := d.checked[bk]; !ok {
		changed = true
	}
	d.checked[bk] = gen
	v, atts, err := mz.votes.Verdict(bk)
	if err != nil {
		return 0, err
	}
	rivals, own := rivalsOf(v)
	if own == nil {
		return 0, nil
	}
	kept, err := mz.store.Reports(string(bk))
	if err != nil {
		return 0, err
	}
	added := 0
	for _, rv := range rivals {
		key := rival{bk: bk, other: rv.Content}
		if ok, err := mz.store.HasReport(string(bk), rv.Content.String()); err != nil {
			return added, err
		} else if ok {
			delete(d.retry, key)
			continue
		}
		if len(kept)+added >= MaxReportsPerBuild {
			break
		}
		st := d.retry[key]
		if st != nil && changed && len(rv.Voters) > st.voters {
			st.tries, st.due, st.wait = 0, now, 0 // the rival gained counted voters: try afresh
		}
		if st != nil && (st.tries >= maxAttempts || now.Before(st.due)) {
			continue
		}
		// A full store keeps no report: nothing is fetched for one.
		if total, err := mz.store.CountReports(); err != nil {
			return added, err
		} else if total >= MaxReports {
			return added, store.ErrReportsFull
		}
		rep, err := mz.compareRival(ctx, v, atts, *own, rv)
		if err == nil {
			var blob []byte
			if blob, err = json.Marshal(rep); err != nil {
				return added, err
			}
			ok, perr := mz.store.PutReport(string(bk), rv.Content.String(), blob, MaxReports)
			if errors.Is(perr, store.ErrReportsFull) {
				mz.log.Warn("rebuild disagrees, report not kept", "build_key", bk, "err", perr)
				return added, perr
			}
			if perr != nil {
				return added, perr
			}
			delete(d.retry, key)
			if ok {
				added++
				mz.log.Warn("rebuild disagrees", "build_key", bk, "cpv", v.CPV, "own", own.Content.String(), "other", rv.Content.String(),
					"by", rep.OtherAttesters, "entries_differ", rep.EntriesDiffer, "metadata_differ", rep.MetadataDiffer)
				if err := mz.store.IncCounter("rebuild_disagreements", 1); err != nil {
					mz.log.Debug("count report", "err", err) // a statistic: the report is kept
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return added, ctx.Err()
		}
		if st == nil {
			if len(d.retry) >= maxRetries {
				continue // tried again when its votes change
			}
			st = &retryState{}
			d.retry[key] = st
		}
		st.tries++
		st.voters = len(rv.Voters)
		st.wait = min(max(2*st.wait, retryFirst), retryMax)
		st.due, st.lastErr = time.Now().Add(st.wait), err.Error()
		mz.log.Info("rebuild disagrees, comparison failed", "build_key", bk, "other", rv.Content.String(), "attempt", st.tries, "retry_in", st.wait, "err", err)
	}
	return added, nil
}

// rivalsOf returns this node's tally in v and the other contents with
// counted voters of a build environment compatible with this node's
// (each tally's Voters cut to those), in tally order.
func rivalsOf(v trust.Verdict) (rivals []trust.ContentTally, own *trust.ContentTally) {
	var self trust.VoterInfo
	for i := range v.Tally {
		for _, vi := range v.Tally[i].Voters {
			if vi.Self {
				own, self = &v.Tally[i], vi
			}
		}
	}
	if own == nil || !self.Counted {
		return nil, nil // withdrawn, or void (this node equivocated)
	}
	for _, ct := range v.Tally {
		if ct.Content == own.Content {
			continue
		}
		var voters []trust.VoterInfo
		for _, vi := range ct.Voters {
			// Counted voters only: a fresh identity without standing costs
			// nothing to make and sways nothing, so its claim earns no
			// download.
			if vi.Counted && self.Builder.Compatible(vi.Builder) {
				voters = append(voters, vi)
			}
		}
		if len(voters) > 0 {
			ct.Voters = voters
			rivals = append(rivals, ct)
		}
	}
	return rivals, own
}

// compareRival fetches the rival content into quarantine and compares it
// with this node's build.
func (mz *Materializer) compareRival(ctx context.Context, v trust.Verdict, atts []*trust.Signed, own, rv trust.ContentTally) (trust.Disagreement, error) {
	ctx, cancel := context.WithTimeout(ctx, compareTimeout)
	defer cancel()
	ownPath, ownCPV, err := mz.ownFile(v.BuildKey, own.Content, atts)
	if err != nil {
		return trust.Disagreement{}, err
	}
	// The own file may have been replaced since it was indexed: a report
	// compares the content this node attested or nothing.
	if err := identity.CheckFile(ownPath, ownCPV, own.Content.Image, own.Content.Metadata, mz.limits); err != nil {
		return trust.Disagreement{}, fmt.Errorf("this node's build %s: %w", ownPath, err)
	}
	voters := map[peer.ID]bool{}
	for _, vi := range rv.Voters {
		voters[vi.Peer] = true
	}
	// The rival's files, as its compatible voters attested them.
	var cands []*trust.Signed
	for _, s := range atts {
		if s.Attestation.Content == rv.Content && voters[s.Attester] &&
			!slices.ContainsFunc(cands, func(c *trust.Signed) bool { return c.Attestation.FileSHA256 == s.Attestation.FileSHA256 }) {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		return trust.Disagreement{}, fmt.Errorf("build %s: no attestation of %s", v.BuildKey, rv.Content)
	}
	q := filepath.Join(mz.store.Dir(), QuarantineDirName)
	if err := os.RemoveAll(q); err != nil {
		return trust.Disagreement{}, fmt.Errorf("empty quarantine: %w", err)
	}
	if err := os.MkdirAll(q, 0o700); err != nil {
		return trust.Disagreement{}, fmt.Errorf("quarantine: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(q); err != nil {
			mz.log.Warn("empty quarantine", "dir", q, "err", err)
		}
	}()
	limit := int64(maxQuarantineBytes)
	if mz.diskBudget > 0 {
		limit = min(limit, mz.diskBudget)
	}
	files, copies, err := mz.findHolders(ctx, v.BuildKey, true)
	if err != nil {
		return trust.Disagreement{}, err
	}
	var lastErr error
	for _, s := range cands {
		a := s.Attestation
		if a.Size > limit {
			lastErr = fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, a.Size, limit)
			continue
		}
		peers := append(append([]peer.AddrInfo(nil), files[a.FileSHA256]...), copies...)
		if len(peers) == 0 {
			lastErr = ErrNoProvider
			continue
		}
		res, err := mz.fetch(ctx, transfer.Want{SHA256: a.FileSHA256, Size: a.Size, PieceRoot: a.PieceRoot, PieceSize: a.PieceSize},
			peers, transfer.FetchOptions{
				Dir: q,
				Check: func(r io.ReaderAt, size int64) ([32]byte, error) {
					p, err := identity.CheckedReader(r, size, a.CPV, a.Content.Image, a.Content.Metadata, mz.limits)
					if err != nil {
						return [32]byte{}, err
					}
					return p.FileSHA256, nil
				},
				Metrics:       mz.xferM,
				DownloadLimit: mz.download,
			})
		if err != nil {
			lastErr = err
			continue
		}
		cmp, err := identity.CompareFiles(ownPath, res.Path, mz.limits)
		if err != nil {
			return trust.Disagreement{}, fmt.Errorf("compare with %s: %w", rv.Content, err)
		}
		return mz.disagreement(v, own, rv, cmp), nil
	}
	return trust.Disagreement{}, fmt.Errorf("fetch %s: %w", rv.Content, lastErr)
}

// ownFile is the path and cpv of this node's build of bk with content:
// its PKGDIR file, or a copy in the cache.
func (mz *Materializer) ownFile(bk keys.Build, content trust.ContentID, atts []*trust.Signed) (path, cpv string, err error) {
	lps, err := mz.store.LocalByBuildKey(string(bk))
	if err != nil {
		return "", "", err
	}
	for _, lp := range lps {
		if lp.ImageDigest == content.Image && lp.MetadataDigest == content.Metadata {
			return lp.Path, lp.CPV, nil
		}
	}
	for _, s := range atts {
		if s.Attester != mz.self || s.Attestation.Content != content {
			continue
		}
		e, ok, err := mz.store.Cache().Get(s.Attestation.FileSHA256)
		if err != nil {
			return "", "", err
		}
		if ok && e.Meta.ImageDigest == content.Image && e.Meta.MetadataDigest == content.Metadata {
			return e.Path, s.Attestation.CPV, nil
		}
	}
	return "", "", fmt.Errorf("build %s: this node's file of %s is gone", bk, content)
}

// disagreement makes the report of one comparison.
func (mz *Materializer) disagreement(v trust.Verdict, own, rv trust.ContentTally, cmp identity.Comparison) trust.Disagreement {
	d := trust.Disagreement{
		BuildKey: v.BuildKey, CPV: v.CPV, Own: own.Content, Other: rv.Content, Found: time.Now().UTC(),
		OwnAttesters: ownAttesters(mz.self, own), OtherAttesters: voterIDs(rv),
		EntriesDiffer: cmp.EntriesDiffer, MetadataDiffer: cmp.MetadataDiffer,
	}
	for _, vi := range own.Voters {
		if vi.Self {
			d.Builder = vi.Builder
		}
	}
	for _, e := range cmp.Entries {
		d.Entries = append(d.Entries, trust.EntryDifference(e))
	}
	for _, m := range cmp.Metadata {
		d.Metadata = append(d.Metadata, trust.MetadataDifference(m))
	}
	return d
}

// Disagreements returns the reports kept about build key bk: rebuilds
// that disagree with this node's build of it. The attesters of both
// contents are those the votes name now (more may have rebuilt since the
// comparison); a report whose content has no such attester left keeps
// those of its comparison.
func (mz *Materializer) Disagreements(bk keys.Build) ([]trust.Disagreement, error) {
	blobs, err := mz.store.Reports(string(bk))
	if err != nil || len(blobs) == 0 {
		return nil, err
	}
	v, _, err := mz.votes.Verdict(bk)
	if err != nil {
		return nil, err
	}
	rivals, own := rivalsOf(v)
	out := make([]trust.Disagreement, 0, len(blobs))
	for _, b := range blobs {
		var d trust.Disagreement
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("report of %s: %w: %v", bk, store.ErrCorrupt, err)
		}
		if own != nil && own.Content == d.Own {
			d.OwnAttesters = ownAttesters(mz.self, *own)
		}
		for _, rv := range rivals {
			if rv.Content == d.Other {
				d.OtherAttesters = voterIDs(rv)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// ownAttesters are this node and the other counted attesters of its
// content.
func ownAttesters(self peer.ID, own trust.ContentTally) []peer.ID {
	out := []peer.ID{self}
	for _, vi := range own.Voters {
		if vi.Counted && !vi.Self {
			out = append(out, vi.Peer)
		}
	}
	return out
}

// voterIDs are the peers of a tally's voters.
func voterIDs(ct trust.ContentTally) []peer.ID {
	out := make([]peer.ID, 0, len(ct.Voters))
	for _, vi := range ct.Voters {
		out = append(out, vi.Peer)
	}
	return out
}
