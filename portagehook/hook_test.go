package portagehook

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeDaemons are gentoo-p2pd stand-ins: each logs its arguments, then
// behaves as a running daemon, a stopped one, or a hung one.
var fakeDaemons = map[string]string{
	"up":   "#!/bin/sh\necho \"gentoo-p2pd $*\" >>\"$HOOK_LOG\"\necho announced\n",
	"down": "#!/bin/sh\necho \"gentoo-p2pd $*\" >>\"$HOOK_LOG\"\necho 'gentoo-p2pd: daemon not running: dial unix /run/gentoo-p2pd.sock: no such file or directory' >&2\nexit 1\n",
	"hung": "#!/bin/sh\necho \"gentoo-p2pd $*\" >>\"$HOOK_LOG\"\nexec sleep 60\n",
}

func TestBashrcHook(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is required for the hook test")
	}
	snippet, _ := filepath.Abs("bashrc.sh")
	script, _ := filepath.Abs("hook_test.sh")
	for _, tc := range []struct {
		name       string
		daemon     string // "" = not installed
		features   string
		mergeType  string
		binpkg     string // created under PKGDIR
		userStatus string
		wantRC     string
		wantLog    []string // "%P" is replaced by PKGDIR
	}{
		{"source multi-instance gpkg", "up", "buildpkg binary_sharing", "source", "app-misc/hello/hello-1.0-3.gpkg.tar", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s %P/app-misc/hello/hello-1.0-3.gpkg.tar"}},
		{"source classic tbz2", "up", "buildpkg binary_sharing", "source", "app-misc/hello-1.0.tbz2", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s %P/app-misc/hello-1.0.tbz2"}},
		{"source, unknown layout", "up", "buildpkg binary_sharing", "source", "", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s app-misc/hello-1.0"}},
		{"source without buildpkg", "up", "binary_sharing", "source", "", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s app-misc/hello-1.0"}},
		{"binary install", "up", "getbinpkg binary_sharing", "binary", "", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s --installed app-misc/hello-1.0"}},
		{"feature off", "up", "buildpkg getbinpkg", "source", "app-misc/hello/hello-1.0-3.gpkg.tar", "", "0", nil},
		{"daemon down", "down", "buildpkg binary_sharing", "source", "app-misc/hello/hello-1.0-3.gpkg.tar", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s %P/app-misc/hello/hello-1.0-3.gpkg.tar"}},
		{"daemon hung", "hung", "buildpkg binary_sharing", "source", "app-misc/hello/hello-1.0-3.gpkg.tar", "", "0",
			[]string{"gentoo-p2pd announce --timeout 2s %P/app-misc/hello/hello-1.0-3.gpkg.tar"}},
		{"not installed", "", "buildpkg binary_sharing", "source", "app-misc/hello/hello-1.0-3.gpkg.tar", "", "0", nil},
		{"user hook kept", "up", "buildpkg binary_sharing", "binary", "", "0", "0",
			[]string{"user-hook", "gentoo-p2pd announce --timeout 2s --installed app-misc/hello-1.0"}},
		{"user hook status kept", "down", "buildpkg binary_sharing", "binary", "", "3", "3",
			[]string{"user-hook", "gentoo-p2pd announce --timeout 2s --installed app-misc/hello-1.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			pkgdir := filepath.Join(dir, "pkgdir")
			logf := filepath.Join(dir, "log")
			for _, d := range []string{bin, pkgdir} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tc.daemon != "" {
				if err := os.WriteFile(filepath.Join(bin, "gentoo-p2pd"), []byte(fakeDaemons[tc.daemon]), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tc.binpkg != "" {
				p := filepath.Join(pkgdir, tc.binpkg)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("binpkg"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(bash, script)
			cmd.Env = []string{
				"PATH=" + bin + ":/usr/bin:/bin",
				"HOOK_SNIPPET=" + snippet, "HOOK_LOG=" + logf, "HOOK_USER_STATUS=" + tc.userStatus,
				"FEATURES=" + tc.features, "MERGE_TYPE=" + tc.mergeType, "PKGDIR=" + pkgdir,
				"CATEGORY=app-misc", "PN=hello", "PF=hello-1.0", "BUILD_ID=3",
			}
			start := time.Now()
			out, err := cmd.Output()
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("hook_test.sh: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != "rc="+tc.wantRC {
				t.Errorf("post_pkg_postinst: %q on stdout, want rc=%s only (daemon output must go to stderr)", got, tc.wantRC)
			}
			// A bound on a hang (timeout 3s, kill 1s later), not a
			// performance measurement.
			if elapsed > 10*time.Second {
				t.Errorf("hook took %v: a hung daemon must not stall the merge", elapsed)
			}
			raw, _ := os.ReadFile(logf)
			var got []string
			if s := strings.TrimSpace(string(raw)); s != "" {
				got = strings.Split(s, "\n")
			}
			var want []string
			for _, w := range tc.wantLog {
				want = append(want, strings.ReplaceAll(w, "%P", pkgdir))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestBashrcSnippetEmbedded(t *testing.T) {
	raw, err := os.ReadFile("bashrc.sh")
	if err != nil {
		t.Fatal(err)
	}
	if BashrcSnippet != string(raw) {
		t.Fatal("BashrcSnippet differs from bashrc.sh")
	}
	if out, err := exec.Command("bash", "-n", "bashrc.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
}
