package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
)

// TestBashrcHookAnnouncesToDaemon runs the FEATURES="binary_sharing" bashrc
// snippet the way portage's postinst does — sourced by bash, with the real
// gentoo-p2pd binary and a live daemon — for the multi-instance layout and
// for the CPV fallback, and for a binary install.
func TestBashrcHookAnnouncesToDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	n, err := testnet.Start(ctx, testnet.NodeOptions{Name: "builder", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	bin := gentooP2pd(t)
	bashrc := filepath.Join(dir, "bashrc")
	// What setup-portage writes: the daemon's socket, then the snippet.
	body := "if [[ ${EBUILD_PHASE} == postinst ]]; then gentoo_p2pd_socket='" + n.Config.API.Socket + "'; fi\n" + portagehook.BashrcSnippet
	if err := os.WriteFile(bashrc, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	hook := func(vars ...string) string {
		t.Helper()
		script := `set -u; EBUILD_PHASE=postinst; source "$BASHRC"; post_pkg_postinst; echo "rc=$?"`
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "BASHRC=" + bashrc, "GENTOO_P2PD_COMMAND=" + bin,
			"FEATURES=buildpkg binary_sharing", "PKGDIR=" + n.PKGDIR}, vars...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hook: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "rc=0") {
			t.Fatalf("hook did not return 0:\n%s", out)
		}
		return string(out)
	}

	// A build portage just wrote in the multi-instance layout.
	files, err := fixtures.WritePKGDIR(fixtures.MultiInstance, filepath.Join(dir, "mi"))
	if err != nil {
		t.Fatal(err)
	}
	var src string
	for _, f := range files {
		if strings.HasSuffix(f, "hello-1.0-1.gpkg.tar") {
			src = f
		}
	}
	dst := filepath.Join(n.PKGDIR, "app-misc", "hello", "hello-1.0-1.gpkg.tar")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := xferCopy(src, dst); err != nil {
		t.Fatal(err)
	}
	out := hook("MERGE_TYPE=source", "CATEGORY=app-misc", "PN=hello", "PF=hello-1.0", "BUILD_ID=1")
	if !strings.Contains(out, "announced app-misc/hello-1.0") {
		t.Fatalf("the hook did not announce the build:\n%s", out)
	}
	if lp, ok, _ := n.Daemon.Store().GetLocal(dst); !ok || lp.CPV != "app-misc/hello-1.0" {
		t.Fatalf("daemon did not index %s", dst)
	}

	// An unknown layout: the hook falls back to the CPV and the daemon
	// rescans PKGDIR.
	flat := filepath.Join(n.PKGDIR, "dev-libs", "libfoo-2.1.gpkg.tar")
	os.MkdirAll(filepath.Dir(flat), 0o755)
	b, err := fixtures.Read(fixtures.MultiInstance, "dev-libs/libfoo/libfoo-2.1-1.gpkg.tar")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(flat, b, 0o644)
	out = hook("MERGE_TYPE=source", "CATEGORY=dev-libs", "PN=libfoo", "PF=libfoo-2.2") // no such file: CPV fallback, not found
	if strings.Contains(out, "announced") || !strings.Contains(out, "no binpkg of dev-libs/libfoo-2.2") {
		t.Fatalf("CPV fallback for a missing build:\n%s", out)
	}
	out = hook("MERGE_TYPE=source", "CATEGORY=dev-libs", "PN=libfoo", "PF=libfoo-2.1")
	if !strings.Contains(out, "announced dev-libs/libfoo-2.1") {
		t.Fatalf("CPV fallback did not announce:\n%s", out)
	}

	// A binary install is reported, not announced.
	out = hook("MERGE_TYPE=binary", "CATEGORY=app-misc", "PN=hello", "PF=hello-1.0")
	if !strings.Contains(out, "install recorded") {
		t.Fatalf("binary install not reported:\n%s", out)
	}
	c, _ := n.Daemon.Store().Counters()
	if c["installs"] != 1 {
		t.Errorf("installs counter = %d, want 1", c["installs"])
	}
}
