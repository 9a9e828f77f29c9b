package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits checks both units with systemd-analyze verify, which
// must print nothing: it reports unknown keys and bad values only as
// warnings with exit status 0. The binary path is pointed at an executable
// stand-in because verify also checks ExecStart.
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install Debian's systemd package (.ci/run does)")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "gentoo-p2pd")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	runtime := filepath.Join(dir, "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ unit, mode string }{
		{"systemd/user/gentoo-p2pd.service", "--user"},
		{"systemd/system/gentoo-p2pd.service", "--system"},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			src, err := os.ReadFile(tc.unit)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(src), "ExecStart=/usr/bin/gentoo-p2pd daemon") {
				t.Fatalf("%s: ExecStart does not run the daemon", tc.unit)
			}
			for _, hardening := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"} {
				if !strings.Contains(string(src), hardening) {
					t.Errorf("%s: missing %s", tc.unit, hardening)
				}
			}
			sub := filepath.Join(t.TempDir(), "gentoo-p2pd.service")
			body := strings.ReplaceAll(string(src), "/usr/bin/gentoo-p2pd", stub)
			if err := os.WriteFile(sub, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sa, tc.mode, "verify", sub)
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime, "SYSTEMD_LOG_LEVEL=notice")
			out, err := cmd.CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze %s verify %s: %v\n%s", tc.mode, tc.unit, err, out)
			}
		})
	}
}

// TestSystemdVerifyCatchesMistakes proves the check above can fail.
func TestSystemdVerifyCatchesMistakes(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found")
	}
	unit := filepath.Join(t.TempDir(), "broken.service")
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/bin/true\nNoNewPrivilege=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(sa, "verify", unit).CombinedOutput()
	if !strings.Contains(string(out), "NoNewPrivilege") {
		t.Fatalf("systemd-analyze did not flag a misspelt key: %s", out)
	}
}

// TestOpenRCScript parses the init script with bash -n, then runs its
// functions with OpenRC's helpers replaced by recorders.
func TestOpenRCScript(t *testing.T) {
	for _, f := range []string{"openrc/gentoo-p2pd.initd", "openrc/gentoo-p2pd.confd"} {
		if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
			t.Fatalf("bash -n %s: %v\n%s", f, err, out)
		}
	}
	script := `
set -eu
calls=()
need() { calls+=("need $*"); }
use() { calls+=("use $*"); }
after() { calls+=("after $*"); }
checkpath() { calls+=("checkpath $*"); }
RC_SVCNAME=gentoo-p2pd
GENTOO_P2PD_OPTS="--mode consume"
source openrc/gentoo-p2pd.initd
depend
start_pre
printf '%s\n' "${calls[@]}"
echo "command=$command"
echo "command_args=$command_args"
echo "command_user=$command_user"
echo "pidfile=$pidfile"
echo "socket=$GENTOO_P2PD_API_SOCKET"
echo "state=$GENTOO_P2PD_STATE_DIR"
`
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("running init script functions: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"need net",
		"checkpath --directory --mode 0700 --owner gentoo-p2pd:gentoo-p2pd /var/lib/gentoo-p2pd",
		"checkpath --directory --mode 0755 --owner gentoo-p2pd:gentoo-p2pd /run/gentoo-p2pd",
		"command=/usr/bin/gentoo-p2pd",
		"command_args=daemon --mode consume",
		"pidfile=/run/gentoo-p2pd/gentoo-p2pd.pid",
		"socket=/run/gentoo-p2pd/api.sock",
		"state=/var/lib/gentoo-p2pd",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("init script output lacks %q:\n%s", want, got)
		}
	}
}

// TestEbuild checks the ebuild's syntax and that, sourced with the eclass
// functions stubbed, it defines what a go-module ebuild must.
func TestEbuild(t *testing.T) {
	eb := "gentoo/net-p2p/gentoo-p2pd/gentoo-p2pd-9999.ebuild"
	if out, err := exec.Command("bash", "-n", eb).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", eb, err, out)
	}
	script := `
set -eu
inherited=()
inherit() { inherited+=("$@"); }
PV=9999 P=gentoo-p2pd-9999
source ` + eb + `
echo "EAPI=$EAPI"
echo "inherit=${inherited[*]}"
for f in src_unpack src_compile src_install pkg_postinst; do declare -F $f; done
[[ -n $DESCRIPTION && -n $LICENSE && -n $SLOT ]] && echo vars-ok
`
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing the ebuild: %v\n%s", err, out)
	}
	for _, want := range []string{"EAPI=8", "inherit=go-module systemd git-r3", "src_compile", "src_install", "vars-ok"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ebuild check lacks %q:\n%s", want, out)
		}
	}
}

// TestMakeInstall lays the package out in a DESTDIR the way the ebuild and
// distributions do, with a stand-in binary (the build itself is go build).
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make not found")
	}
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "gentoo-p2pd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-C", "..", "install-files", "DESTDIR="+dest, "PREFIX=/usr", "BINARY="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install-files: %v\n%s", err, out)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/bin/gentoo-p2pd":                        0o755,
		"usr/lib/systemd/user/gentoo-p2pd.service":   0o644,
		"usr/lib/systemd/system/gentoo-p2pd.service": 0o644,
		"etc/init.d/gentoo-p2pd":                     0o755,
		"etc/conf.d/gentoo-p2pd":                     0o644,
		"usr/share/doc/gentoo-p2pd/README.md":        0o644,
		"usr/share/doc/gentoo-p2pd/SECURITY.md":      0o644,
		"usr/share/doc/gentoo-p2pd/PROTOCOL.md":      0o644,
		"usr/share/doc/gentoo-p2pd/BENCHMARKS.md":    0o644,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("not installed: %s", path)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), mode)
		}
	}
}
