package binhost

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// followDaemon is what a daemon runs for its gateway over one state
// directory: store, votes, listings and gateway behind HTTP.
type followDaemon struct {
	peer    *jobtest.Peer
	ls      *Listings
	srv     *httptest.Server
	machine *fit.Machine
}

// TestIndexFollowsChanges: the listings and the gateway keep what they
// computed, and every change shows in the very next index request: a vote
// that makes a build Allowed, a withdrawn vote, an equivocating voter, the
// machine, a restart (what was derived is read back, and only what changed
// meanwhile is evaluated), and a policy that blocks a voter (nothing saved
// under the old policy is used).
func TestIndexFollowsChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pgp := filepath.Join(t.TempDir(), "gateway.asc")
	if _, err := portagehook.LoadOrCreateSigningKey(pgp, "follow gateway"); err != nil {
		t.Fatal(err)
	}
	selfKey, _ := jobtest.NewKey(t)
	voterKeys := make([]crypto.PrivKey, 3)
	voters := make([]peer.ID, 3)
	for i := range voterKeys {
		voterKeys[i], voters[i] = jobtest.NewKey(t)
	}
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	cpv := func(i int) string {
		return benchAttestation(t, voterKeys[0], benchPlatform.Platform(), i, at).Attestation.CPV
	}

	var st *store.Store
	start := func(blocked ...peer.ID) *followDaemon {
		t.Helper()
		if st != nil {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if st, err = store.Open(dir, store.Options{}); err != nil {
			t.Fatal(err)
		}
		policy := jobtest.LabPolicy()
		policy.Threshold, policy.BlockedPeers = 2, blocked
		p := jobtest.NewPeer(t, memnet.New(), jobtest.WithStore(st), jobtest.WithKey(selfKey), jobtest.WithPolicy(policy), jobtest.WithPlatform(benchPlatform.Platform()))
		d := &followDaemon{peer: p, machine: jobtest.Machine()}
		d.ls = New(Options{Store: st, Votes: p.Book, Platform: p.Platform, Prefetch: config.PrefetchNone,
			Machine: func() (*fit.Machine, error) { return d.machine, nil }})
		key, err := portagehook.LoadSigningKey(pgp)
		if err != nil {
			t.Fatal(err)
		}
		gw := portagehook.NewGateway(d.ls, portagehook.GatewayOptions{
			CacheDir: filepath.Join(dir, "gateway"), Signer: portagehook.NewSigner(key, time.Now()),
			Covered: identity.IsCovered, Canonical: identity.ServedValue, Limits: xpak.DefaultLimits(),
		})
		d.srv = httptest.NewServer(gw)
		t.Cleanup(func() { d.srv.Close(); _ = gw.Close() })
		return d
	}
	t.Cleanup(func() { _ = st.Close() })
	vote := func(d *followDaemon, build, voter int) *trust.Signed {
		t.Helper()
		s := benchAttestation(t, voterKeys[voter], benchPlatform.Platform(), build, at.Add(time.Duration(voter)*time.Second))
		if added, err := d.peer.Book.IngestFrom(ctx, s.Marshal(), voters[voter]); !added || err != nil {
			t.Fatalf("vote of %d for build %d: %v, %v", voter, build, added, err)
		}
		return s
	}
	index := func(d *followDaemon, want ...int) {
		t.Helper()
		resp, err := http.Get(d.srv.URL + "/gentoo-p2pd/Packages")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, entries, err := portagehook.ParseIndex(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var got, wantCPVs []string
		for _, e := range entries {
			got = append(got, e.CPV())
		}
		for _, i := range want {
			wantCPVs = append(wantCPVs, cpv(i))
		}
		slices.Sort(got)
		slices.Sort(wantCPVs)
		if !slices.Equal(got, wantCPVs) {
			t.Fatalf("index lists %v, want %v", got, wantCPVs)
		}
	}

	d := start()
	vote(d, 0, 0)
	withdrawn := vote(d, 0, 1)
	vote(d, 1, 0)
	vote(d, 1, 1)
	vote(d, 2, 0)
	index(d, 0, 1)
	first, err := d.ls.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.ls.Entries(ctx)
	if err != nil || len(again) != len(first) || again[0].Metadata != first[0].Metadata || d.ls.evaluatedLast() != 0 {
		t.Fatalf("nothing changed, and the listings were computed again (evaluated %d, %v)", d.ls.evaluatedLast(), err)
	}
	index(d, 0, 1)

	vote(d, 2, 1) // the second vote: allowed
	index(d, 0, 1, 2)
	if d.ls.evaluatedLast() != 1 {
		t.Errorf("one build key's votes changed, %d evaluated", d.ls.evaluatedLast())
	}

	if _, err := st.DeleteAttestation(withdrawn.ID()); err != nil { // as own withdraws
		t.Fatal(err)
	}
	index(d, 1, 2)

	// Voter 1 signs another content for build 1: equivocation evidence,
	// and its votes on build 1 no longer count.
	other := benchAttestation(t, voterKeys[1], benchPlatform.Platform(), 1, at)
	other.Attestation.Content.Image[0] ^= 0xff
	other, err = trust.Sign(other.Attestation, voterKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	_, _ = d.peer.Book.IngestFrom(ctx, other.Marshal(), voters[1]) // refused: it equivocates
	index(d, 2)

	// The machine: an older glibc than the builds need, then back.
	old := jobtest.Machine()
	old.Glibc = "GLIBC_2.30"
	d.machine = old
	index(d)
	d.machine = jobtest.Machine()
	index(d, 2)

	// A restart reads back what was derived: nothing is evaluated.
	d = start()
	index(d, 2)
	if d.ls.evaluatedLast() != 0 {
		t.Errorf("after a restart with nothing changed, %d build keys evaluated", d.ls.evaluatedLast())
	}
	// A vote while the listings were not running is evaluated, alone.
	d = start()
	vote(d, 3, 0)
	late := vote(d, 3, 2)
	index(d, 2, 3)
	if d.ls.evaluatedLast() != 1 {
		t.Errorf("after a restart with one build key changed, %d build keys evaluated", d.ls.evaluatedLast())
	}
	// A build key that stops being a candidate while the listings are not
	// running: what was saved for it goes with the first index.
	bk3 := late.Attestation.BuildKey
	if saved, err := st.Derived([]string{savedKey(bk3)}); err != nil || saved[0] == nil {
		t.Fatalf("nothing saved for build 3: %v", err)
	}
	d = start()
	if _, err := st.DeleteAttestation(late.ID()); err != nil {
		t.Fatal(err)
	}
	index(d, 2)
	if saved, err := st.Derived([]string{savedKey(bk3)}); err != nil || saved[0] != nil {
		t.Errorf("build 3 is no candidate, and what was saved for it stays (%v)", err)
	}
	vote(d, 3, 2)
	index(d, 2, 3)
	// Another policy: voter 1 blocked. Nothing derived under the old one
	// is used, and build 2 (voters 0 and 1) is no longer allowed.
	d = start(voters[1])
	index(d, 3)
	if d.ls.evaluatedLast() < 3 {
		t.Errorf("after a policy change, only %d build keys evaluated", d.ls.evaluatedLast())
	}
}

// evaluatedLast is ls.evaluated, read under the lock the gateway's
// requests take.
func (ls *Listings) evaluatedLast() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.evaluated
}
