package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// TestDemandReachesALateBuilder: a user's daemon records demand (the
// bashrc hook's announce) before any other daemon is up; a builder that
// comes online afterwards never saw that gossip, and still learns the
// demand — from the catalog sync, over real libp2p streams — with the
// user's identity as the wanter, as its builder's Wanted reads it.
func TestDemandReachesALateBuilder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	files, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, filepath.Join(dir, "user", "pkgdir"))
	if err != nil {
		t.Fatal(err)
	}
	user, err := testnet.Start(ctx, testnet.NodeOptions{Name: "user", Dir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer user.Stop()
	res, err := user.Daemon.API().Announce(ctx, api.AnnounceRequest{Path: files[0]})
	if err != nil {
		t.Fatal(err)
	}
	if !res.DemandRecorded || res.VariantKey == "" {
		t.Fatalf("announce recorded no demand: %+v", res)
	}
	builder, err := testnet.Start(ctx, testnet.NodeOptions{Name: "builder", Dir: dir, Bootstrap: []string{user.Addr()}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer builder.Stop()
	if err := testnet.WaitFor(ctx, 60*time.Second, "the user's demand at the builder", func() bool {
		c, err := builder.Daemon.Store().DemandFor(string(res.VariantKey), time.Now().Add(-30*24*time.Hour))
		return err == nil && c.Wanters == 1 && c.Newest.Attester == user.Daemon.ID().String()
	}); err != nil {
		t.Fatal(err)
	}
	if n := builder.Daemon.API().Status(ctx).Demands; n != 1 {
		t.Errorf("the builder's status counts %d demand records, want the user's 1", n)
	}
}
