package integration

import (
	"context"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// TestCachedCopyAnnouncedAfterRestart: a share-mode peer that fetched a
// build serves it on; after the builder left and the sharer restarted,
// a newcomer still finds the copy through the DHT and fetches it.
func TestCachedCopyAnnouncedAfterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	one := func(c *config.Config) { c.Trust.Threshold = 1 }
	// The hub holds nothing and stays, so the network outlives the builder.
	nodes := startNetwork(t, dir, []peerSpec{
		{name: "builder", sets: []string{fixtures.ReproGPKG1}, configure: one},
		{name: "hub", configure: one},
		{name: "sharer", configure: one},
	})
	builder, hub, sharer := nodes[0], nodes[1], nodes[2]
	waitCatalog(t, sharer, 2)
	first, err := sharer.Daemon.API().Fetch(ctx, api.FetchRequest{Query: "app-misc/hello-1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := builder.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := sharer.Stop(); err != nil {
		t.Fatal(err)
	}
	sharer, err = testnet.Start(ctx, testnet.NodeOptions{Name: "sharer", Dir: dir, Bootstrap: []string{hub.Addr()}, Configure: one})
	if err != nil {
		t.Fatal(err)
	}
	defer sharer.Stop()
	// The DHT may still hold the old record; the sharer itself must
	// announce (and keep reproviding) the copy again.
	bk := mustDecodeCID(t, string(first.BuildKey))
	if err := testnet.WaitFor(ctx, 30*time.Second, "the restarted sharer to provide its copy", func() bool {
		return sharer.Daemon.Node().Providing(bk)
	}); err != nil {
		t.Fatal(err)
	}
	newcomer, err := testnet.Start(ctx, testnet.NodeOptions{Name: "newcomer", Dir: dir, Bootstrap: []string{hub.Addr()}, Configure: one})
	if err != nil {
		t.Fatal(err)
	}
	defer newcomer.Stop()
	waitCatalog(t, newcomer, 2)
	var res api.FetchResult
	var fetchErr error
	if err := testnet.WaitFor(ctx, 60*time.Second, "a fetch from the restarted sharer", func() bool {
		res, fetchErr = newcomer.Daemon.API().Fetch(ctx, api.FetchRequest{Query: string(first.BuildKey)})
		return fetchErr == nil
	}); err != nil {
		t.Fatalf("%v (last error: %v)", err, fetchErr)
	}
	if res.FileSHA256 != first.FileSHA256 {
		t.Errorf("fetched %s, the sharer holds %s", res.FileSHA256, first.FileSHA256)
	}
}
