package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/publicdht"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// TestWalkthrough runs testdata/walkthrough.sh, the first hour of a new
// user as a script: five real daemon processes on 127.0.0.1 with no
// bootstrap flags find each other through a stand-in public DHT (real
// kad-dht servers on loopback, /ipfs/kad/1.0.0); `search hello` lists the
// build three of them made with its votes and holders, and once a fourth
// fetched it and serves it on, counts that copy; `find` on a machine
// whose CFLAGS differ says so, names the platforms and exits 3, and that
// machine's status says why its gateway lists nothing.
func TestWalkthrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	public, err := publicdht.Start(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := public.Close(); err != nil {
			t.Error(err)
		}
	})
	work := t.TempDir()
	fp := testnet.FixturePortage
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"BIN=" + gentooP2pd(t), "WORK=" + work,
		"GENTOO_P2PD_NETWORK_RENDEZVOUS_PEERS=" + strings.Join(public.Addrs(), ","),
		"FIXTURE_CHOST=" + fp.CHOST, "FIXTURE_CFLAGS=" + fp.CFLAGS,
		"FIXTURE_CXXFLAGS=" + fp.CXXFLAGS, "FIXTURE_LDFLAGS=" + fp.LDFLAGS,
	}
	for name, set := range map[string]string{"alice": fixtures.ReproGPKG1, "bob": fixtures.ReproGPKG2, "carol": fixtures.ReproXPAK1} {
		dir := filepath.Join(work, name, "binpkgs")
		if _, err := fixtures.WritePKGDIR(set, dir); err != nil {
			t.Fatal(err)
		}
		env = append(env, "PKGDIR_"+name+"="+dir)
	}
	cmd := exec.CommandContext(ctx, "bash", "testdata/walkthrough.sh")
	cmd.Env = env
	// The script kills its daemons on exit; if it is killed itself, the
	// whole process group goes, so no daemon outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	transcript := string(out)
	t.Logf("walkthrough:\n%s", transcript)
	if err != nil {
		for _, n := range []string{"alice", "bob", "carol", "erin", "oscar"} {
			if b, rerr := os.ReadFile(filepath.Join(work, n+".log")); rerr == nil {
				t.Logf("%s's log (tail):\n%s", n, lastBytes(string(b), 3000))
			}
		}
		t.Fatalf("walkthrough.sh: %v", err)
	}
	for _, want := range []string{
		// status says how peers were found.
		"public DHT rendezvous (advertised;",
		// search lists the build: weight 3 of a threshold of 3, 3 builders.
		"app-misc/hello-1.0  allowed  3/3     3",
		// erin's copy counted: bob, carol and erin hold it, one fetched it
		// (a fetch is no demand: nobody reported an install).
		"app-misc/hello-1.0  allowed  3/3     3         0       3        1        built here",
		// find on the other platform says why.
		"nothing known about app-misc/hello-1.0 for this machine's platform",
		`CFLAGS differs: here "-O3 -pipe", there "` + fp.CFLAGS + `"`,
		"4 connected peers of other platforms hold it",
		"exit status 3",
		// and oscar's status says why the gateway lists nothing.
		"0 builds listed for portage",
		"nothing listed: no peer has attested a build of this machine's platform x86_64-pc-linux-gnu-",
	} {
		if !strings.Contains(transcript, want) {
			t.Errorf("the walkthrough does not show %q", want)
		}
	}
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
