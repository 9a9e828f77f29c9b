package materialize

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// t0 is a base time for attestations: earlier ones sort first among a
// build's attestations, so the order candidates are tried in is known.
var t0 = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)

func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }

// An allowed build nobody here holds is collected from the providers'
// votes, fetched, verified, committed to the cache, and announced (share
// mode) or kept to itself (consume mode); the next request is served from
// the cache without another transfer.
func TestMaterializeFetchesFromPeers(t *testing.T) {
	t.Parallel()
	for _, mode := range []config.Mode{config.ModeShare, config.ModeConsume} {
		t.Run(string(mode), func(t *testing.T) {
			w := newWorld(t)
			a, b := w.remote(), w.remote()
			a.builds(w.hello1, at(0))
			b.builds(w.hello2, at(1))
			s := w.self(selfOpts{mode: mode, threshold: 2})
			bk := w.hello1.BuildKey()

			var progress []transfer.Progress
			m, err := s.mz.Materialize(t.Context(), bk, func(p transfer.Progress) { progress = append(progress, p) })
			if err != nil {
				t.Fatal(err)
			}
			if m.Verdict.Decision != trust.Allowed || *m.Verdict.Content != w.hello1.Content() || m.Local {
				t.Fatalf("verdict %s content %v local %v; want allowed %v, fetched", m.Verdict.Decision, m.Verdict.Content, m.Local, w.hello1.Content())
			}
			// a attested first: its file is the first candidate.
			if m.Att.Attester != a.ID || m.Att.Attestation.FileSHA256 != w.hello1.Local.FileSHA256 {
				t.Fatalf("fetched the file attested by %s, want a's (%s)", m.Att.Attester, a.ID)
			}
			if want := s.Store.Cache().Path(w.hello1.Local.FileSHA256); m.Path != want {
				t.Fatalf("path %s, want the cache's %s", m.Path, want)
			}
			got, err := os.ReadFile(m.Path)
			if err != nil || !bytes.Equal(got, w.hello1.Data) {
				t.Fatalf("cached file differs from a's (%v)", err)
			}
			if w.fetch.Calls() != 1 || m.Result.PeerPieces[a.ID] != 1 || len(progress) == 0 {
				t.Fatalf("%d transfers, pieces from a %d, %d progress reports; want 1, 1, some", w.fetch.Calls(), m.Result.PeerPieces[a.ID], len(progress))
			}
			if _, ok, _ := s.Store.GetLeaves(w.hello1.Local.FileSHA256); !ok {
				t.Error("the verified piece layer was not kept for serving")
			}
			if e, _, _ := s.Store.Cache().Get(w.hello1.Local.FileSHA256); e.Meta.ImageDigest != w.hello1.Local.ImageDigest || e.Meta.MetadataDigest != w.hello1.Local.MetadataDigest {
				t.Error("the verified content was not recorded with the cache entry")
			}
			if c, _ := s.Store.Counters(); c["builds_fetched"] != 1 || c["bytes_fetched"] != w.hello1.Local.Size {
				t.Errorf("counters %v; want one build of %d bytes fetched", c, w.hello1.Local.Size)
			}
			bp, vp := s.providing(w.hello1)
			if want := mode != config.ModeConsume; bp != want || vp != want {
				t.Errorf("providing build %v variant %v after the fetch; want %v", bp, vp, want)
			}
			if msg, when := s.mz.LastFailure(); msg != "" || !when.IsZero() {
				t.Errorf("LastFailure %q at %v after a good fetch", msg, when)
			}

			again, err := s.mz.Materialize(t.Context(), bk, nil)
			if err != nil || again.Path != m.Path || again.Local || w.fetch.Calls() != 1 {
				t.Fatalf("second request: %v, path %s, %d transfers; want the cached copy without a transfer", err, again.Path, w.fetch.Calls())
			}
		})
	}
}

// Providers maps each attested file to the providers attesting it.
// TestMaterializeSharesTheDownloadLimit: Options.DownloadRate reaches
// the transfer as the Materializer's one transfer.Limit, which every fetch
// gets (the cap is on all fetches together); no rate means no limit.
func TestMaterializeSharesTheDownloadLimit(t *testing.T) {
	t.Parallel()
	for _, rate := range []int64{0, 4 << 20} {
		w := newWorld(t)
		a := w.remote()
		a.builds(w.hello1, at(0))
		var limits []*transfer.Limit
		s := w.self(selfOpts{mode: config.ModeShare, threshold: 1, downloadRate: rate,
			seenOpts: func(o transfer.FetchOptions) { limits = append(limits, o.DownloadLimit) }})
		if _, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil); err != nil {
			t.Fatal(err)
		}
		if len(limits) != 1 {
			t.Fatalf("rate %d: %d transfers, want 1", rate, len(limits))
		}
		if rate == 0 && limits[0] != nil {
			t.Fatalf("no download rate, but the transfer got limit %v", limits[0])
		}
		if rate != 0 && (limits[0] == nil || limits[0] != s.mz.download) {
			t.Fatalf("download rate %d: transfer got limit %v, want the materializer's shared %v", rate, limits[0], s.mz.download)
		}
	}
}

func TestProviders(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b, c := w.remote(), w.remote(), w.remote()
	a.builds(w.hello1, at(0))
	b.builds(w.hello2, at(1))
	c.provides(w.hello1) // a copy: attests nothing itself
	s := w.self(selfOpts{})
	files, err := s.mz.Providers(t.Context(), w.hello1.BuildKey())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || len(files[w.hello1.Local.FileSHA256]) != 1 || files[w.hello1.Local.FileSHA256][0].ID != a.ID ||
		len(files[w.hello2.Local.FileSHA256]) != 1 || files[w.hello2.Local.FileSHA256][0].ID != b.ID {
		t.Fatalf("providers %v; want hello1 → a, hello2 → b", files)
	}
	if _, err := s.mz.Providers(t.Context(), "not-a-build-key"); err == nil {
		t.Error("Providers of a malformed build key: no error")
	}
}

// A build without enough votes, or with competing contents, is
// ErrNotAllowed with its verdict, and nothing is transferred. A refusal is
// not a fetch failure.
func TestMaterializeNotAllowed(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, e := w.remote(), w.remote()
	a.builds(w.hello1, at(0))
	a.builds(w.layout1, at(0))
	e.builds(w.evil, at(1)) // another content for layout's build key
	s := w.self(selfOpts{threshold: 1})
	s2 := w.self(selfOpts{threshold: 2})
	for _, tc := range []struct {
		name string
		s    *self
		bk   keys.Build
		want trust.Decision
	}{
		{"one vote of two", s2, w.hello1.BuildKey(), trust.Unknown},
		{"disputed", s, w.layout1.BuildKey(), trust.Disputed},
		{"malformed build key", s, "not-a-build-key", trust.Refused},
	} {
		m, err := tc.s.mz.Materialize(t.Context(), tc.bk, nil)
		if !errors.Is(err, ErrNotAllowed) || m.Verdict.Decision != tc.want || m.Path != "" {
			t.Errorf("%s: %v, verdict %s, path %q; want ErrNotAllowed, %s", tc.name, err, m.Verdict.Decision, m.Path, tc.want)
		}
	}
	if w.fetch.Calls() != 0 {
		t.Errorf("%d transfers of builds not allowed", w.fetch.Calls())
	}
	if s.cached(w.evil) || s.cached(w.layout1) {
		t.Error("a disputed build entered the cache")
	}
	if msg, _ := s.mz.LastFailure(); msg != "" {
		t.Errorf("a refusal by the policy is recorded as a failed fetch: %q", msg)
	}
}

// An own build in PKGDIR with the allowed content is used as it is.
func TestMaterializeUsesOwnBuild(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	a.builds(w.hello1, at(0))
	b.builds(w.hello2, at(1))
	s := w.self(selfOpts{})
	path := s.local(w.hello2) // the same file b attests
	m, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Local || m.Path != path || m.Att.Attester != b.ID || w.fetch.Calls() != 0 {
		t.Fatalf("local %v path %s attester %s, %d transfers; want PKGDIR's %s, b's attestation, no transfer", m.Local, m.Path, m.Att.Attester, w.fetch.Calls(), path)
	}
	if s.cached(w.hello2) {
		t.Error("an own build was copied into the cache")
	}
}

// A cached copy of the allowed content is used without a transfer: one
// whose content was recorded when it was committed without reading it,
// an older entry after reading it.
func TestMaterializeUsesCachedCopy(t *testing.T) {
	t.Parallel()
	for _, record := range []bool{true, false} {
		t.Run(fmt.Sprintf("recorded=%v", record), func(t *testing.T) {
			w := newWorld(t)
			a, b := w.remote(), w.remote()
			sa := a.builds(w.layout1, at(0))
			sb := b.builds(w.layout2, at(1))
			s := w.self(selfOpts{})
			s.learn(sa, sb)
			e := s.cacheWith(w.layout2, record)
			m, err := s.mz.Materialize(t.Context(), w.layout1.BuildKey(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Local || m.Path != e.Path || m.Att.Attester != b.ID || w.fetch.Calls() != 0 {
				t.Fatalf("local %v path %s attester %s, %d transfers; want the cached %s, b's attestation, no transfer", m.Local, m.Path, m.Att.Attester, w.fetch.Calls(), e.Path)
			}
			// Only a file that was read again is kept for VerifiedPackage.
			if got := s.mz.VerifiedPackage(w.layout2.Local.FileSHA256) != nil; got == record {
				t.Errorf("package kept from a re-read: %v, with the content recorded: %v", got, record)
			}
		})
	}
}

// Anyone can sign an attestation naming any file under the allowed
// content: a PKGDIR file or a cached file with that SHA-256 is used only
// if its own digests are the allowed content.
func TestMaterializeIgnoresLocalFilesWithOtherContent(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"pkgdir", "cache", "cache, content not recorded"} {
		t.Run(where, func(t *testing.T) {
			w := newWorld(t)
			a, b, e := w.remote(), w.remote(), w.remote()
			sa := a.builds(w.layout1, at(1))
			sb := b.builds(w.layout2, at(2))
			lie := jobtest.AttestFile(t, e.Key, w.layout1, w.evil, at(0)) // honest content, trojaned file
			s := w.self(selfOpts{})
			s.learn(lie, sa, sb)
			switch where {
			case "pkgdir":
				s.local(w.evil)
			case "cache":
				s.cache(w.evil)
			default:
				s.cacheWith(w.evil, false)
			}
			m, err := s.mz.Materialize(t.Context(), w.layout1.BuildKey(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Local || m.Att.Attester != a.ID || w.fetch.Calls() != 1 {
				t.Fatalf("local %v attester %s, %d transfers; want a's file fetched", m.Local, m.Att.Attester, w.fetch.Calls())
			}
			got, _ := os.ReadFile(m.Path)
			if !bytes.Equal(got, w.layout1.Data) {
				t.Fatal("served file is not layout1")
			}
		})
	}
}

// A peer serving the file its attestation names, whose content is not the
// attested one, is caught by the final check; the next candidate is
// fetched and the bad file never reaches the cache.
func TestMaterializeRejectsWrongContent(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, e := w.remote(), w.remote()
	lie := jobtest.AttestFile(t, e.Key, w.layout1, w.evil, at(0)) // oldest: tried first
	e.says(lie.Marshal())
	e.provides(w.layout1)
	e.holds(w.evil)
	a.builds(w.layout1, at(1))
	s := w.self(selfOpts{threshold: 2})
	m, err := s.mz.Materialize(t.Context(), w.layout1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.fetch.Calls() != 2 || w.fetch.Wants()[0] != w.evil.Local.FileSHA256 {
		t.Fatalf("%d transfers, first of %x; want the trojaned file tried first, then another", w.fetch.Calls(), w.fetch.Wants()[0][:4])
	}
	if m.Att.Attester != a.ID {
		t.Fatalf("attestation of %s used, want a's", m.Att.Attester)
	}
	if got, _ := os.ReadFile(m.Path); !bytes.Equal(got, w.layout1.Data) {
		t.Fatal("the file materialized is not layout1")
	}
	if s.cached(w.evil) {
		t.Error("the trojaned file entered the cache")
	}
	if left, _ := os.ReadDir(s.Store.PartialDir()); len(left) != 0 {
		t.Errorf("partial files left: %v", left)
	}
}

// When every candidate fails the error says so, nothing is cached, and
// LastFailure reports it for status.
func TestMaterializeAllCandidatesFail(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, e := w.remote(), w.remote()
	lie := jobtest.AttestFile(t, e.Key, w.layout1, w.evil, at(0))
	e.says(lie.Marshal())
	e.provides(w.layout1)
	e.holds(w.evil)
	sa := jobtest.Attest(t, a.Key, w.layout1, at(1))
	a.says(sa.Marshal())
	a.provides(w.layout1)
	w.fetch.HoldAs(a.ID, w.layout1.Local.FileSHA256, w.layout2.Data) // other bytes than attested
	s := w.self(selfOpts{})
	before := time.Now()
	_, err := s.mz.Materialize(t.Context(), w.layout1.BuildKey(), nil)
	if err == nil || !errors.Is(err, transfer.ErrNoProviders) || errors.Is(err, ErrNotAllowed) {
		t.Fatalf("err %v; want the last candidate's ErrNoProviders", err)
	}
	if w.fetch.Calls() != 2 || s.cached(w.layout1) || s.cached(w.evil) || s.cached(w.layout2) {
		t.Fatalf("%d transfers; want both candidates tried and nothing cached", w.fetch.Calls())
	}
	msg, when := s.mz.LastFailure()
	if msg != err.Error() || when.Before(before) {
		t.Errorf("LastFailure %q at %v; want %q, now", msg, when, err)
	}
}

// A local write failure stops the fetch: every other candidate would fail
// the same way. Once the disk is fixed the build is fetched.
func TestMaterializeStopsOnDiskWrite(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	a.builds(w.hello1, at(0))
	b.builds(w.hello2, at(1))
	s := w.self(selfOpts{})
	w.fetch.SetFail(fmt.Errorf("%w: writing piece 0: %w", transfer.ErrDiskWrite, syscall.ENOSPC))
	_, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if !errors.Is(err, transfer.ErrDiskWrite) || !errors.Is(err, syscall.ENOSPC) || w.fetch.Calls() != 1 {
		t.Fatalf("err %v after %d transfers; want ErrDiskWrite (ENOSPC) after one", err, w.fetch.Calls())
	}
	if msg, _ := s.mz.LastFailure(); !strings.Contains(msg, syscall.ENOSPC.Error()) {
		t.Errorf("LastFailure %q does not name the full disk", msg)
	}
	w.fetch.SetFail(nil)
	if _, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil); err != nil || !s.cached(w.hello1) {
		t.Fatalf("after the disk was fixed: %v, cached %v", err, s.cached(w.hello1))
	}
}

// Concurrent requests for one build share one transfer, which outlives
// the caller that started it; a waiter that gives up gets its context's
// error without disturbing the others.
func TestMaterializeSharesOneFetch(t *testing.T) {
	// Not parallel: it counts goroutines waiting in Materialize.
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	sa := a.builds(w.hello1, at(0))
	sb := b.builds(w.hello2, at(1))
	s := w.self(selfOpts{})
	s.learn(sa, sb)
	gate := make(chan struct{})
	started := make(chan context.Context, 1)
	w.fetch.Gate(gate, started)
	bk := w.hello1.BuildKey()

	type result struct {
		m   Materialized
		err error
	}
	const waiters = 4
	results := make(chan result, waiters+1)
	firstCtx, cancelFirst := context.WithCancel(t.Context())
	defer cancelFirst()
	call := func(ctx context.Context) {
		m, err := s.mz.Materialize(ctx, bk, nil)
		results <- result{m, err}
	}
	go call(firstCtx)
	fctx := <-started
	for range waiters {
		go call(t.Context())
	}
	quitter := make(chan error, 1)
	quitCtx, quit := context.WithCancel(t.Context())
	go func() {
		_, err := s.mz.Materialize(quitCtx, bk, nil)
		quitter <- err
	}()
	waitFor(t, "the callers to wait for the transfer", func() bool { return waitingCallers() == waiters+1 })
	quit()
	if err := <-quitter; !errors.Is(err, context.Canceled) {
		t.Fatalf("a waiter whose context ended: %v, want context.Canceled", err)
	}
	cancelFirst()
	if fctx.Err() != nil {
		t.Fatal("the shared transfer ended with the context of the caller that started it")
	}
	close(gate)
	var path string
	for range waiters + 1 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if path == "" {
			path = r.m.Path
		}
		if r.m.Path != path || r.m.Result.PeerPieces[a.ID] != 1 {
			t.Fatalf("a caller got %s (pieces from a: %d); want the shared transfer's %s", r.m.Path, r.m.Result.PeerPieces[a.ID], path)
		}
	}
	if n := w.fetch.Calls(); n != 1 {
		t.Fatalf("%d transfers for %d concurrent requests, want 1", n, waiters+2)
	}
	if msg, _ := s.mz.LastFailure(); msg != "" {
		t.Errorf("a caller that gave up is recorded as a failed fetch: %q", msg)
	}
}

// Fetches end with Run's context, whoever asked for them.
func TestMaterializeEndsWithRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	sa := a.builds(w.hello1, at(0))
	sb := b.builds(w.hello2, at(1))
	s := w.self(selfOpts{})
	s.learn(sa, sb)
	started := make(chan context.Context, 1)
	w.fetch.Gate(make(chan struct{}), started)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan struct{})
	go func() { s.mz.Run(ctx); close(ran) }()
	waitFor(t, "Run to start", func() bool { return s.mz.running.Load() != nil })
	errc := make(chan error, 1)
	go func() {
		_, err := s.mz.Materialize(context.Background(), w.hello1.BuildKey(), nil)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a fetch when Run ended: %v, want context.Canceled", err)
	}
	<-ran
	if s.cached(w.hello1) {
		t.Error("a cancelled fetch was cached")
	}
}

// An allowed build is fetched from a copy (a provider that attests no file
// itself) when its attesters are gone; candidates the copy lacks are
// skipped. An endorsement the copy serves is ingested too.
func TestMaterializeFromCopies(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b, c := w.remote(), w.remote(), w.remote()
	sa := jobtest.Attest(t, a.Key, w.hello1, at(0))
	sb := jobtest.Attest(t, b.Key, w.hello2, at(1))
	a.Node.SetOnline(false)
	b.Node.SetOnline(false)
	_, signer := jobtest.NewSigner(t)
	c.says(votes.NewEndorsement(w.hello1.BuildKey(), w.hello1.Local.Platform, w.hello1.Content(), signer).Marshal())
	c.provides(w.hello1)
	c.holds(w.hello2) // not hello1, whose attestation is older
	s := w.self(selfOpts{})
	s.learn(sa, sb)
	m, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Att.Attester != b.ID || m.Result.PeerPieces[c.ID] != 1 || w.fetch.Calls() != 2 {
		t.Fatalf("attester %s, pieces from c %d, %d transfers; want hello2 from c after hello1 was not held", m.Att.Attester, m.Result.PeerPieces[c.ID], w.fetch.Calls())
	}
	if es, _ := s.Store.EndorsementsFor(w.hello1.Local.BuildKey); len(es) != 1 {
		t.Errorf("%d endorsements stored, want the one c served", len(es))
	}
}

// Attesters this daemon can reach are asked even when the DHT does not
// list them yet.
func TestMaterializeAsksReachableAttesters(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	sa := jobtest.Attest(t, a.Key, w.hello1, at(0))
	sb := jobtest.Attest(t, b.Key, w.hello2, at(1))
	a.says(sa.Marshal())
	b.says(sb.Marshal())
	a.holds(w.hello1)
	b.holds(w.hello2)
	s := w.self(selfOpts{})
	s.learn(sa, sb)
	m, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Att.Attester != a.ID || m.Result.PeerPieces[a.ID] != 1 {
		t.Fatalf("attester %s; want hello1 from a, which no DHT record names", m.Att.Attester)
	}
}

// Without a reachable holder, or offline, a fetch fails with a reason.
func TestMaterializeNoHolder(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	sa := jobtest.Attest(t, a.Key, w.hello1, at(0))
	sb := jobtest.Attest(t, b.Key, w.hello2, at(1))
	a.Node.SetOnline(false)
	b.Node.SetOnline(false)
	s := w.self(selfOpts{})
	s.learn(sa, sb)
	_, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err == nil || !strings.Contains(err.Error(), "no reachable peer holds") {
		t.Fatalf("err %v; want no reachable holder", err)
	}
	if msg, _ := s.mz.LastFailure(); msg != err.Error() {
		t.Errorf("LastFailure %q, want %q", msg, err)
	}
	s.Node.SetOnline(false)
	_, err = s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err == nil || !strings.Contains(err.Error(), "find providers") {
		t.Fatalf("offline: %v; want the provider lookup's error", err)
	}
	if w.fetch.Calls() != 0 {
		t.Errorf("%d transfers without a holder", w.fetch.Calls())
	}
}

// A competing content learned from the providers while preparing the
// fetch stops it: the build is no longer allowed.
func TestMaterializeRechecksVerdictAfterCollecting(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b, e := w.remote(), w.remote(), w.remote()
	sa := a.builds(w.layout1, at(0))
	sb := b.builds(w.layout2, at(1))
	e.builds(w.evil, at(2))
	s := w.self(selfOpts{})
	s.learn(sa, sb)
	_, err := s.mz.Materialize(t.Context(), w.layout1.BuildKey(), nil)
	if !errors.Is(err, ErrNotAllowed) || w.fetch.Calls() != 0 {
		t.Fatalf("err %v after %d transfers; want ErrNotAllowed before any", err, w.fetch.Calls())
	}
	if v, _, _ := s.Book.Verdict(w.layout1.BuildKey()); v.Decision != trust.Disputed {
		t.Fatalf("verdict %s, want disputed", v.Decision)
	}
}

// A signer's endorsement served by a provider backs a build that
// needs signer backing.
func TestMaterializeSignerEndorsement(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.remote()
	pub, signer := jobtest.NewSigner(t)
	a.builds(w.hello1, at(0))
	a.says(votes.NewEndorsement(w.hello1.BuildKey(), w.hello1.Local.Platform, w.hello1.Content(), signer).Marshal())
	s := w.self(selfOpts{threshold: 5, policyHook: func(p *trust.Policy) { p.Signers = []ed25519.PublicKey{pub} }})
	m, err := s.mz.Materialize(t.Context(), w.hello1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Verdict.Decision != trust.Allowed || !s.cached(w.hello1) {
		t.Fatalf("verdict %s, cached %v; want allowed by the signer and fetched", m.Verdict.Decision, s.cached(w.hello1))
	}
}

// A file whose pieces, size and SHA-256 are exactly as attested, and whose
// image and metadata digests are the allowed content, but whose GPKG
// Manifest does not match its members, is refused by the check that runs
// while it downloads: it never enters the cache, and an honest file is
// fetched instead.
func TestMaterializeRefusesTamperedManifest(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, e := w.remote(), w.remote()
	bad := w.layout1
	bad.Data = bytes.Clone(w.layout1.Data)
	i := bytes.Index(bad.Data, []byte("SHA512 "))
	if i < 0 {
		t.Fatal("no Manifest hash in the fixture")
	}
	if d := &bad.Data[i+len("SHA512 ")]; *d == '0' {
		*d = '1'
	} else {
		*d = '0'
	}
	root, size, err := pieces.Root(bytes.NewReader(bad.Data))
	if err != nil {
		t.Fatal(err)
	}
	bad.Local.FileSHA256, bad.Local.Size, bad.Local.PieceRoot = sha256.Sum256(bad.Data), size, root
	e.says(jobtest.AttestFile(t, e.Key, w.layout1, bad, at(0)).Marshal()) // oldest: tried first
	e.provides(w.layout1)
	e.holds(bad)
	a.builds(w.layout1, at(1))
	s := w.self(selfOpts{threshold: 2})
	m, err := s.mz.Materialize(t.Context(), w.layout1.BuildKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.fetch.Calls() != 2 || w.fetch.Wants()[0] != bad.Local.FileSHA256 {
		t.Fatalf("%d transfers; want the tampered file tried first, then another", w.fetch.Calls())
	}
	if got, _ := os.ReadFile(m.Path); !bytes.Equal(got, w.layout1.Data) {
		t.Fatal("the file materialized is not layout1")
	}
	if s.cached(bad) {
		t.Error("the tampered file entered the cache")
	}
}
