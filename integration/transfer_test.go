package integration

import (
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// xferBigSize is the image size of the generated package: 24 MiB is 96+
// pieces, enough that four providers each take several batches.
const xferBigSize = 24 << 20

// xferPeerRate caps each honest provider's upload to one peer, so a fetch
// takes a few seconds and a provider can be stopped in the middle of it.
const xferPeerRate = 3 << 20

// TestXferFaultyProviders runs one build held by three honest daemons and
// one provider that corrupts every piece it sends, and fetches it twice
// through the daemon's own Fetch: once with the liar among the providers,
// once while an honest provider is stopped mid-transfer.
func TestXferFaultyProviders(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	pkg := xferBigGPKG(t, dir, xferBigSize, 1, "")
	t.Logf("package %s: %d bytes, %d pieces, build key %s", pkg.CPV, pkg.Size, pieces.Count(pkg.Size), pkg.BuildKey)

	capped := func(c *config.Config) { c.Transfer.PeerUploadRate = xferPeerRate }
	var honest []*testnet.Node
	for i, name := range []string{"h0", "h1", "h2"} {
		var boot []string
		if i > 0 {
			boot = []string{honest[0].Addr()}
		}
		honest = append(honest, xferStart(t, ctx, dir, xferNodeSpec{
			Name: name, Threshold: 3, Pkgs: []xferPkg{pkg}, Configure: capped,
		}, boot...))
	}
	evil := xferStartEvil(t, ctx, pkg, xferOwnAttestation(t, honest[0], pkg.BuildKey), honest[0].Addr())
	evilID := evil.Node.ID().String()

	t.Run("corrupting provider is dropped", func(t *testing.T) {
		f := xferStart(t, ctx, dir, xferNodeSpec{Name: "fetch1", Threshold: 3}, honest[0].Addr())
		want := []string{honest[0].Daemon.ID().String(), honest[1].Daemon.ID().String(), honest[2].Daemon.ID().String(), evilID}
		xferWait(t, ctx, "fetch1 finds 3 honest providers and the liar", func() bool {
			got := xferProviders(ctx, f, pkg.BuildKey)
			for _, w := range want {
				if !got[w] {
					return false
				}
			}
			return true
		})
		res, err := f.Daemon.Fetch(ctx, api.FetchRequest{Query: pkg.BuildKey})
		if err != nil {
			t.Fatalf("fetch with a corrupting provider among four: %v", err)
		}
		xferCheckFile(t, res.Path, pkg)
		if !strings.HasPrefix(res.Path, f.Config.Cache.Dir) {
			t.Errorf("fetched file at %s, want it in the cache %s", res.Path, f.Config.Cache.Dir)
		}
		var dropped bool
		for _, b := range res.BadPeers {
			if b == evilID+": bad_piece" {
				dropped = true
			} else {
				t.Errorf("honest provider reported bad: %s", b)
			}
		}
		if !dropped {
			t.Fatalf("bad peers %v, want %s reported for bad_piece", res.BadPeers, evilID)
		}
		t.Logf("fetched %d bytes in %s from %d providers; bad peers %v", res.Size, res.Took, res.Providers, res.BadPeers)
	})
	// The liar leaves: the next fetch is about a provider vanishing.
	evil.Close()

	t.Run("provider stopped mid-transfer", func(t *testing.T) {
		f := xferStart(t, ctx, dir, xferNodeSpec{Name: "fetch2", Threshold: 3}, honest[0].Addr())
		xferWait(t, ctx, "fetch2 finds the 3 honest providers", func() bool {
			got := xferProviders(ctx, f, pkg.BuildKey)
			return got[honest[0].Daemon.ID().String()] && got[honest[1].Daemon.ID().String()] && got[honest[2].Daemon.ID().String()]
		})
		var base [3]int64
		for i, h := range honest {
			base[i] = xferServed(ctx, h)
		}
		type outcome struct {
			res api.FetchResult
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := f.Daemon.Fetch(ctx, api.FetchRequest{Query: pkg.BuildKey})
			done <- outcome{res, err}
		}()
		victim := honest[1]
		// Stop h1 once it has sent a couple of pieces and the fetch is
		// well short of complete.
		xferWait(t, ctx, "h1 sends pieces to fetch2", func() bool {
			return xferServed(ctx, victim)-base[1] >= 2*pieces.Size
		})
		var total int64
		for i, h := range honest {
			total += xferServed(ctx, h) - base[i]
		}
		if total >= pkg.Size {
			t.Fatalf("providers had sent %d of %d bytes before the stop: caps too loose to test a stop mid-transfer", total, pkg.Size)
		}
		victimSent := xferServed(ctx, victim) - base[1]
		xferStop(t, victim)
		o := <-done
		if o.err != nil {
			t.Fatalf("fetch with a provider stopped mid-transfer: %v", o.err)
		}
		xferCheckFile(t, o.res.Path, pkg)
		victimID := victim.Daemon.ID().String()
		var reported bool
		for _, b := range o.res.BadPeers {
			reported = reported || strings.HasPrefix(b, victimID+": ")
		}
		if !reported {
			t.Errorf("bad peers %v: the stopped provider %s is not reported", o.res.BadPeers, victimID)
		}
		var others int64
		for i, h := range honest {
			if h != victim {
				others += xferServed(ctx, h) - base[i]
			}
		}
		if others+victimSent < pkg.Size {
			t.Errorf("providers sent %d+%d bytes, less than the %d-byte file", others, victimSent, pkg.Size)
		}
		t.Logf("stopped h1 after it sent %d bytes (all providers: %d of %d); fetch finished in %s, bad peers %v",
			victimSent, total, pkg.Size, o.res.Took, o.res.BadPeers)
	})
}
