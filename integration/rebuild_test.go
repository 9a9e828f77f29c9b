package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestRebuildDisagreementReported: two builders reproduce layout, a third
// built it from a tampered ebuild (another pkg_postinst, the same files).
// Each honest daemon fetches the third content over the real transfer
// into quarantine, compares it with its own build and reports it in
// trust explain: the content and its attester, no image entry differing,
// the pkg_postinst function and DEFINED_PHASES differing. The disputed
// file is never cached and quarantine is empty after.
func TestRebuildDisagreementReported(t *testing.T) {
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "honest-a", sets: []string{fixtures.ReproGPKG1}},
		{name: "honest-b", sets: []string{fixtures.ReproGPKG2}},
		{name: "tampered", sets: []string{fixtures.Backdoored}},
	})
	a, b, mallory := nodes[0], nodes[1], nodes[2]
	bad := backdoorContent(t, mallory)
	malloryID := mallory.Daemon.ID()
	report := func(n *testnet.Node) (api.Explanation, bool) {
		ex, err := n.Daemon.API().Explain(context.Background(), "app-misc/layout-1.0-r1")
		return ex, err == nil && len(ex.Disagreements) > 0
	}
	for _, n := range []*testnet.Node{a, b} {
		waitFor(t, n.Name+"'s report of the tampered rebuild", func() bool { _, ok := report(n); return ok })
		ex, _ := report(n)
		if len(ex.Disagreements) != 1 {
			t.Fatalf("%s: %d reports", n.Name, len(ex.Disagreements))
		}
		d := ex.Disagreements[0]
		if d.Other != bad || !slices.Equal(d.OtherAttesters, []peer.ID{malloryID}) || d.OwnAttesters[0] != n.Daemon.ID() {
			t.Errorf("%s: report %+v", n.Name, d)
		}
		if d.EntriesDiffer != 0 || d.MetadataDiffer != 2 || d.Metadata[0] != (trust.MetadataDifference{Kind: "function", Name: "pkg_postinst", Change: "added"}) {
			t.Errorf("%s: differences %+v", n.Name, d)
		}
		for _, want := range []string{
			"rebuild disagrees: content " + bad.String() + " by " + malloryID.String(),
			"metadata: function pkg_postinst added, key DEFINED_PHASES differs",
			"a non-reproducible package or a backdoor",
		} {
			if !strings.Contains(ex.Text, want) {
				t.Errorf("%s: trust explain lacks %q:\n%s", n.Name, want, ex.Text)
			}
		}
		if ok, err := n.Daemon.Store().Cache().Has(fileOf(t, mallory)); err != nil || ok {
			t.Errorf("%s: the tampered file is in the cache (%v)", n.Name, err)
		}
		if es, err := os.ReadDir(filepath.Join(n.Daemon.Store().Dir(), materialize.QuarantineDirName)); err == nil && len(es) > 0 {
			t.Errorf("%s: quarantine holds %d files", n.Name, len(es))
		}
		if st := n.Daemon.API().Status(context.Background()); st.RebuildDisagreements != 1 {
			t.Errorf("%s: status counts %d disagreements", n.Name, st.RebuildDisagreements)
		}
		// hello was reproduced: nothing to report.
		if ex, err := n.Daemon.API().Explain(context.Background(), "app-misc/hello-1.0"); err != nil || len(ex.Disagreements) != 0 {
			t.Errorf("%s: hello reports %v (%v)", n.Name, ex.Disagreements, err)
		}
	}
	// The tampered builder's side: its build disagrees with both honest
	// ones (one content, two attesters), which lack its pkg_postinst.
	waitFor(t, "the tampered builder's report", func() bool { _, ok := report(mallory); return ok })
	ex, _ := report(mallory)
	d := ex.Disagreements[0]
	honest := []peer.ID{a.Daemon.ID(), b.Daemon.ID()}
	slices.Sort(honest)
	got := slices.Sorted(slices.Values(d.OtherAttesters))
	if len(ex.Disagreements) != 1 || d.Own != bad || !slices.Equal(got, honest) ||
		d.Metadata[0] != (trust.MetadataDifference{Kind: "function", Name: "pkg_postinst", Change: "removed"}) {
		t.Errorf("tampered builder's report %+v", ex.Disagreements)
	}
}

// fileOf is the SHA-256 of n's one PKGDIR file.
func fileOf(t *testing.T, n *testnet.Node) [32]byte {
	t.Helper()
	lps, err := n.Daemon.Store().ListLocal()
	if err != nil || len(lps) != 1 {
		t.Fatalf("%s's packages: %v %v", n.Name, lps, err)
	}
	return lps[0].FileSHA256
}
