package materialize

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// attestAs signs b as the builder key's holder built it in environment
// env.
func attestAs(t *testing.T, key crypto.PrivKey, b jobtest.Binpkg, env trust.Builder, at time.Time) *trust.Signed {
	t.Helper()
	a := jobtest.Attest(t, key, b, at).Attestation
	a.Builder = env
	s, err := trust.Sign(a, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// builtHere makes b an own build of s: in PKGDIR, attested by s in env.
func (s *self) builtHere(b jobtest.Binpkg, env trust.Builder) {
	s.w.t.Helper()
	s.local(b)
	if err := s.Book.StoreOwn(attestAs(s.w.t, s.Key, b, env, at(0))); err != nil {
		s.w.t.Fatal(err)
	}
}

// A rebuild of an own build in the same build environment with a trojaned
// pkg_postinst is fetched into quarantine, compared, and reported once:
// the report names the metadata records that differ and both sides; the
// fetched file is gone after, never in the cache.
func TestDisagreementReported(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	env := trust.Builder{GCC: "13.2.1", Binutils: "2.42", Libc: "glibc-2.40"}
	s := w.self(selfOpts{})
	s.builtHere(w.layout1, env)
	e := w.remote()
	bad := attestAs(t, e.Key, w.evil, env, at(1))
	e.says(bad.Marshal())
	e.provides(w.evil)
	e.holds(w.evil)
	s.learn(bad)

	n, err := s.mz.CheckDisagreements(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("CheckDisagreements: %d reports, %v; want 1", n, err)
	}
	ds, err := s.mz.Disagreements(w.layout1.BuildKey())
	if err != nil || len(ds) != 1 {
		t.Fatalf("reports: %v %v", ds, err)
	}
	d := ds[0]
	if d.Own != w.layout1.Content() || d.Other != w.evil.Content() || !slices.Equal(d.OtherAttesters, []peer.ID{e.ID}) ||
		len(d.OwnAttesters) != 1 || d.OwnAttesters[0] != s.ID || d.Builder != env {
		t.Fatalf("report %+v", d)
	}
	want := []trust.MetadataDifference{
		{Kind: "function", Name: "pkg_postinst", Change: "added"},
		{Kind: "key", Name: "DEFINED_PHASES", Change: "differs"},
	}
	if !slices.Equal(d.Metadata, want) || d.MetadataDiffer != 2 || d.EntriesDiffer != 0 {
		t.Fatalf("differences: entries %v (%d), metadata %v (%d)", d.Entries, d.EntriesDiffer, d.Metadata, d.MetadataDiffer)
	}
	if s.cached(w.evil) {
		t.Error("the disputed content entered the cache")
	}
	if entries, err := os.ReadDir(filepath.Join(s.Store.Dir(), QuarantineDirName)); err == nil && len(entries) > 0 {
		t.Errorf("quarantine holds %d files after the comparison", len(entries))
	}
	if n, _ := s.Store.CountReports(); n != 1 {
		t.Errorf("%d reports stored", n)
	}
	// Once per pair: the next look fetches nothing.
	calls := w.fetch.Calls()
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 0 || w.fetch.Calls() != calls {
		t.Fatalf("second look: %d reports, %v, %d transfers", n, err, w.fetch.Calls()-calls)
	}
	// A later rebuilder of the rival content is named without another
	// comparison.
	f := w.remote()
	s.learn(attestAs(t, f.Key, w.evil, env, at(3)))
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 0 || w.fetch.Calls() != calls {
		t.Fatalf("after another rival vote: %d reports, %v, %d transfers", n, err, w.fetch.Calls()-calls)
	}
	ds, err = s.mz.Disagreements(w.layout1.BuildKey())
	if err != nil || len(ds) != 1 || !slices.Equal(ds[0].OtherAttesters, []peer.ID{e.ID, f.ID}) {
		t.Fatalf("reports after another rival vote: %+v %v", ds, err)
	}
}

// Other contents that are not rebuilds in this node's environment (an
// attester who stated another compiler) or whose voters do not count
// (a blocked peer) are not fetched.
func TestDisagreementOnlyCompatibleCountedRebuilds(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	env := trust.Builder{GCC: "13.2.1"}
	other, blocked := w.remote(), w.remote()
	s := w.self(selfOpts{policyHook: func(p *trust.Policy) { p.BlockedPeers = append(p.BlockedPeers, blocked.ID) }})
	s.builtHere(w.layout1, env)
	for _, r := range []*remote{other, blocked} {
		r.provides(w.evil)
		r.holds(w.evil)
	}
	s.learn(attestAs(t, other.Key, w.evil, trust.Builder{GCC: "12.3.1"}, at(1)), attestAs(t, blocked.Key, w.evil, env, at(2)))
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 0 || w.fetch.Calls() != 0 {
		t.Fatalf("%d reports, %v, %d transfers; want none", n, err, w.fetch.Calls())
	}
}

// A disagreeing content nobody serves is retried later, not reported; once
// it is served (and its votes change), the report is made.
func TestDisagreementRetried(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{})
	s.builtHere(w.layout1, trust.Builder{})
	e := w.remote()
	bad := attestAs(t, e.Key, w.evil, trust.Builder{}, at(1))
	e.says(bad.Marshal())
	e.provides(w.evil)
	s.learn(bad)
	w.fetch.SetFail(errors.New("connection refused"))
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 0 {
		t.Fatalf("with no provider: %d reports, %v", n, err)
	}
	if ds, _ := s.mz.Disagreements(w.layout1.BuildKey()); len(ds) != 0 {
		t.Fatalf("reported without a comparison: %v", ds)
	}
	st := s.mz.disagree.retry[rival{bk: w.layout1.BuildKey(), other: w.evil.Content()}]
	if st == nil || st.tries != 1 || st.wait != retryFirst {
		t.Fatalf("retry state %+v", st)
	}
	// Not due yet: the next look leaves it.
	calls := w.fetch.Calls()
	if _, err := s.mz.CheckDisagreements(t.Context()); err != nil || w.fetch.Calls() != calls {
		t.Fatalf("retried before due: %v, %d transfers", err, w.fetch.Calls()-calls)
	}
	// A second attester of the rival content changes the votes: tried afresh.
	w.fetch.SetFail(nil)
	e.holds(w.evil)
	f := w.remote()
	s.learn(attestAs(t, f.Key, w.evil, trust.Builder{}, at(2)))
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 1 {
		t.Fatalf("after the votes changed: %d reports, %v", n, err)
	}
	ds, _ := s.mz.Disagreements(w.layout1.BuildKey())
	if len(ds) != 1 || len(ds[0].OtherAttesters) != 2 {
		t.Fatalf("reports %+v", ds)
	}
}

// The loop Run starts reports a disagreement as the own build and the
// votes arrive, with no call from outside.
func TestDisagreementLoop(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{})
	e := w.remote()
	bad := attestAs(t, e.Key, w.evil, trust.Builder{}, at(1))
	e.says(bad.Marshal())
	e.provides(w.evil)
	e.holds(w.evil)
	done := make(chan struct{})
	go func() { s.mz.Run(t.Context()); close(done) }()
	t.Cleanup(func() { <-done })
	// The own build is attested after the loop started, then the rival
	// vote arrives.
	s.builtHere(w.layout1, trust.Builder{})
	s.learn(bad)
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ds, err := s.mz.Disagreements(w.layout1.BuildKey())
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no report 30 s after the rival vote arrived")
		}
		<-tick.C
	}
}

// An own file replaced since it was indexed (another content at the
// indexed path) is not compared: no transfer, no report, a retry later.
func TestDisagreementOwnFileReplaced(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{})
	s.builtHere(w.layout1, trust.Builder{})
	if err := os.WriteFile(filepath.Join(s.pkgdir, filepath.Base(w.layout1.Local.Path)), w.evil.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	e := w.remote()
	bad := attestAs(t, e.Key, w.evil, trust.Builder{}, at(1))
	e.says(bad.Marshal())
	e.provides(w.evil)
	e.holds(w.evil)
	s.learn(bad)
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 0 || w.fetch.Calls() != 0 {
		t.Fatalf("%d reports, %v, %d transfers; want none", n, err, w.fetch.Calls())
	}
	if st := s.mz.disagree.retry[rival{bk: w.layout1.BuildKey(), other: w.evil.Content()}]; st == nil || st.tries != 1 {
		t.Fatalf("retry state %+v", st)
	}
}

// With MaxReports kept, a new rival is not fetched: no report could be
// kept.
func TestDisagreementReportsFull(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := w.self(selfOpts{})
	for i := range MaxReports {
		if _, err := s.Store.PutReport("bk-"+strconv.Itoa(i), "c", []byte("{}"), MaxReports); err != nil {
			t.Fatal(err)
		}
	}
	s.builtHere(w.layout1, trust.Builder{})
	e := w.remote()
	bad := attestAs(t, e.Key, w.evil, trust.Builder{}, at(1))
	e.says(bad.Marshal())
	e.provides(w.evil)
	e.holds(w.evil)
	s.learn(bad)
	if n, err := s.mz.CheckDisagreements(t.Context()); err != nil || n != 0 || w.fetch.Calls() != 0 {
		t.Fatalf("%d reports, %v, %d transfers; want none", n, err, w.fetch.Calls())
	}
}
