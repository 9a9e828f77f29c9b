package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
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
		res, err := f.Daemon.API().Fetch(ctx, api.FetchRequest{Query: pkg.BuildKey})
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
			res, err := f.Daemon.API().Fetch(ctx, api.FetchRequest{Query: pkg.BuildKey})
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

// xferProcEnv is an environment that keeps a gentoo-p2pd process on
// loopback, away from the user's config (procEnv), and on the fixtures'
// platform.
func xferProcEnv(home string) []string {
	p := testnet.FixturePortage
	return append(procEnv(home),
		"PATH="+os.Getenv("PATH"),
		"GENTOO_P2PD_PORTAGE_CHOST="+p.CHOST,
		"GENTOO_P2PD_PORTAGE_CFLAGS="+p.CFLAGS,
		"GENTOO_P2PD_PORTAGE_CXXFLAGS="+p.CXXFLAGS,
		"GENTOO_P2PD_PORTAGE_LDFLAGS="+p.LDFLAGS,
		"GENTOO_P2PD_PORTAGE_ARCH="+p.ARCH,
		"GENTOO_P2PD_LOG_LEVEL=debug",
	)
}

// TestXferResumeAfterSIGKILL kills a real gentoo-p2pd process with SIGKILL
// while it downloads a 32 MiB build from two capped in-process providers,
// restarts it on the same state dir, and fetches again: the verified
// pieces on disk are reused (pieces_reused in `fetch --json`) and the
// providers send far less than the file twice over.
func TestXferResumeAfterSIGKILL(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	bin := gentooP2pd(t)
	pkg := xferBigGPKG(t, dir, 32<<20, 2, "resume")
	nPieces := pieces.Count(pkg.Size)

	capped := func(c *config.Config) { c.Transfer.PeerUploadRate = xferPeerRate }
	p0 := xferStart(t, ctx, dir, xferNodeSpec{Name: "p0", Threshold: 2, Pkgs: []xferPkg{pkg}, Configure: capped})
	p1 := xferStart(t, ctx, dir, xferNodeSpec{Name: "p1", Threshold: 2, Pkgs: []xferPkg{pkg}, Configure: capped}, p0.Addr())
	providers := []*testnet.Node{p0, p1}
	served := func() int64 { return xferServed(ctx, p0) + xferServed(ctx, p1) }

	home := filepath.Join(dir, "proc")
	state := filepath.Join(home, "state-dir")
	sock := filepath.Join(home, "api.sock")
	if err := os.MkdirAll(filepath.Join(home, "pkgdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := xferProcEnv(home)
	common := []string{"--api-socket", sock}
	daemonArgs := append([]string{"daemon",
		"--state-dir", state, "--pkgdir", filepath.Join(home, "pkgdir"),
		"--portage-repo", filepath.Join(home, "no-repo"),
		"--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--dht-mode", "server",
		"--gateway-listen", "127.0.0.1:0", "--bootstrap", p0.Addr(), "--threshold", "2"}, common...)
	client := api.NewClient(sock)

	start := func(round int) *exec.Cmd {
		logPath := filepath.Join(dir, fmt.Sprintf("daemon-%d.log", round))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, daemonArgs...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("daemon round %d log (tail):\n%s", round, xferTail(b, 40))
			}
		})
		// Ready when the API answers and the DHT finds both providers.
		xferWait(t, ctx, fmt.Sprintf("daemon process (round %d) finds both providers", round), func() bool {
			var fr api.FindResult
			if err := client.Get(ctx, api.PathFind, url.Values{"q": {pkg.BuildKey}}, &fr); err != nil {
				return false
			}
			n := 0
			for _, b := range fr.Builds {
				for _, p := range b.Providers {
					if p == p0.Daemon.ID().String() || p == p1.Daemon.ID().String() {
						n++
					}
				}
			}
			return n == 2
		})
		return cmd
	}
	fetchCmd := func() *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"fetch", pkg.BuildKey, "--json"}, common...)...)
		cmd.Env = env
		return cmd
	}

	// Round 1: fetch until some verified pieces are on disk, then SIGKILL.
	d1 := start(1)
	before := served()
	f1 := fetchCmd()
	var f1out strings.Builder
	f1.Stdout, f1.Stderr = &f1out, &f1out
	if err := f1.Start(); err != nil {
		t.Fatal(err)
	}
	bits := filepath.Join(state, store.PartialDirName, xferHex(pkg.SHA256)+".bits")
	var onDisk int
	xferWait(t, ctx, "verified pieces recorded in "+bits, func() bool {
		n, err := xferBitsSet(bits)
		if err != nil {
			t.Fatal(err)
		}
		onDisk = n
		return n >= 4
	})
	if err := d1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d1.Wait()
	servedRound1 := served() - before
	if err := f1.Wait(); err == nil {
		t.Fatalf("fetch survived the daemon's SIGKILL: %s", f1out.String())
	}
	if onDisk >= nPieces {
		t.Fatalf("all %d pieces were on disk before the kill: caps too loose", nPieces)
	}
	// What the bitfield says after the kill is what a restart may reuse.
	onDisk, err := xferBitsSet(bits)
	if err != nil {
		t.Fatal(err)
	}

	// Round 2: restart on the same state dir and fetch again.
	start(2)
	f2 := fetchCmd()
	var stderr strings.Builder
	f2.Stderr = &stderr
	out, err := f2.Output()
	if err != nil {
		t.Fatalf("fetch after restart: %v\n%s", err, stderr.String())
	}
	var res api.FetchResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("fetch --json: %v\n%s", err, out)
	}
	xferCheckFile(t, res.Path, pkg)
	if res.PiecesReused <= 0 {
		t.Fatalf("pieces_reused = %d after a restart with %d verified pieces on disk", res.PiecesReused, onDisk)
	}
	if res.PiecesReused > onDisk {
		t.Errorf("pieces_reused = %d, but only %d pieces were marked verified on disk", res.PiecesReused, onDisk)
	}
	total := served() - before
	if total >= 2*pkg.Size {
		t.Errorf("providers sent %d bytes for a %d-byte file over both rounds: the restart re-downloaded", total, pkg.Size)
	}
	if _, err := os.Stat(bits); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bitfield %s still there after the fetch completed (err %v)", bits, err)
	}
	t.Logf("%d pieces; killed with %d verified on disk after providers sent %d bytes; resumed: %d reused, providers sent %d bytes in all (file %d, ratio %.2f); %d providers",
		nPieces, onDisk, servedRound1, res.PiecesReused, total, pkg.Size, float64(total)/float64(pkg.Size), len(providers))
}

// xferTail returns the last n lines of b.
func xferTail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
