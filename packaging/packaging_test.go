package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ebuildTestEnv names the variable the ebuild's src_test sets. Under it,
// and only under it, the checks that need tools a Gentoo user need not
// have (systemd-analyze on an OpenRC system) or that redo what the ebuild
// does differently (make install) are skipped, each saying why. The
// project's CI does not set it and runs everything.
const ebuildTestEnv = "GENTOO_P2PD_EBUILD_TEST"

func inEbuild() bool { return os.Getenv(ebuildTestEnv) != "" }

// systemdAnalyze finds systemd-analyze: its absence fails the test, except
// inside the ebuild's src_test where it is skipped with the reason.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err == nil {
		return sa
	}
	if inEbuild() {
		t.Skip("systemd-analyze not found and " + ebuildTestEnv + " is set (the ebuild's src_test, e.g. on OpenRC): " +
			"unit verification is left to the project's CI")
	}
	t.Fatal("systemd-analyze not found: install Debian's systemd package (.ci/run does)")
	return ""
}

// unitDocumentation is the units' Documentation= line. Gentoo installs the
// docs under /usr/share/doc/${PF}/ (version in the name, compressed), and
// `make install` under $(PREFIX)/share/doc/gentoo-p2pd/, so no file:// path
// is stable: the units point at the man page both install and upstream.
const unitDocumentation = "Documentation=man:gentoo-p2pd(1) https://github.com/gentoo-p2p/gentoo-p2pd#readme"

// TestSystemdUnits checks both units with systemd-analyze verify, which
// must print nothing: it reports unknown keys and bad values only as
// warnings with exit status 0. The binary path is pointed at an executable
// stand-in because verify also checks ExecStart.
func TestSystemdUnits(t *testing.T) {
	sa := systemdAnalyze(t)
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
			// --man=no: the man page named by Documentation= exists only
			// once installed; TestMakeInstall verifies it there.
			cmd := exec.Command(sa, tc.mode, "verify", "--man=no", sub)
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
	sa := systemdAnalyze(t)
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

// TestUnitContents checks what the units say without systemd-analyze, so
// it also runs in the ebuild: the daemon, the hardening, and documentation
// that exists wherever the package was installed from.
func TestUnitContents(t *testing.T) {
	for _, unit := range []string{"systemd/user/gentoo-p2pd.service", "systemd/system/gentoo-p2pd.service"} {
		src, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		body := string(src)
		for _, want := range []string{
			"ExecStart=/usr/bin/gentoo-p2pd daemon\n",
			unitDocumentation + "\n",
			"NoNewPrivileges=yes\n", "ProtectSystem=strict\n", "PrivateTmp=yes\n",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", unit, strings.TrimSpace(want))
			}
		}
		if strings.Contains(body, "file://") || strings.Contains(body, "/usr/share/doc/") {
			t.Errorf("%s points at a doc path: Gentoo installs docs under /usr/share/doc/${PF}", unit)
		}
	}
	sys, err := os.ReadFile("systemd/system/gentoo-p2pd.service")
	if err != nil {
		t.Fatal(err)
	}
	// The system unit runs as the account acct-user/gentoo-p2pd creates.
	for _, want := range []string{"User=gentoo-p2pd\n", "Group=gentoo-p2pd\n", "StateDirectory=gentoo-p2pd\n"} {
		if !strings.Contains(string(sys), want) {
			t.Errorf("system unit lacks %q", strings.TrimSpace(want))
		}
	}
}

const (
	ebuildPath    = "gentoo/net-p2p/gentoo-p2pd/gentoo-p2pd-9999.ebuild"
	acctUserPath  = "gentoo/acct-user/gentoo-p2pd/gentoo-p2pd-0.ebuild"
	acctGroupPath = "gentoo/acct-group/gentoo-p2pd/gentoo-p2pd-0.ebuild"
)

// runBash runs script with bash and returns its output, failing the test
// on a non-zero exit.
func runBash(t *testing.T, what, script string) string {
	t.Helper()
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	return string(out)
}

// TestEbuildsParse runs bash -n on every ebuild shipped.
func TestEbuildsParse(t *testing.T) {
	ebuilds, err := filepath.Glob("gentoo/*/*/*.ebuild")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{ebuildPath, acctUserPath, acctGroupPath} {
		found := false
		for _, eb := range ebuilds {
			found = found || eb == want
		}
		if !found {
			t.Errorf("%s is not shipped", want)
		}
	}
	for _, eb := range ebuilds {
		if out, err := exec.Command("bash", "-n", eb).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", eb, err, out)
		}
		meta := filepath.Join(filepath.Dir(eb), "metadata.xml")
		if _, err := os.Stat(meta); err != nil {
			t.Errorf("%s: no metadata.xml beside it", eb)
		}
	}
}

// TestEbuild sources the ebuild with the eclass functions and the install
// helpers replaced by recorders, then runs its phases: it must inherit what
// it uses, depend on the account packages shipped beside it, and install
// every file exactly once.
func TestEbuild(t *testing.T) {
	script := `
set -eu
inherited=()
inherit() { inherited+=("$@"); }
PV=9999 P=gentoo-p2pd-9999 PF=gentoo-p2pd-9999 EROOT=
source ` + ebuildPath + `
echo "EAPI=$EAPI"
echo "inherit=${inherited[*]}"
echo "IUSE=${IUSE-}"
echo "RDEPEND=" $RDEPEND
for f in src_unpack src_compile src_test src_install pkg_postinst; do declare -F $f >/dev/null && echo "phase $f"; done
[[ -n $DESCRIPTION && -n $LICENSE && -n $SLOT ]] && echo vars-ok
for f in ego emake dobin systemd_dounit systemd_douserunit newinitd newconfd newbashcomp insinto doins doman dodoc keepdir elog; do
	eval "$f() { echo \"call $f \$*\"; }"
done
src_compile
src_test
src_install
`
	out := runBash(t, "running the ebuild's phases", script)
	want := []string{
		"EAPI=8",
		"inherit=bash-completion-r1 go-module systemd git-r3",
		"IUSE=",
		"phase src_unpack", "phase src_compile", "phase src_test", "phase src_install", "phase pkg_postinst",
		"vars-ok",
		"call ego build -trimpath -ldflags -X main.version=9999 -o gentoo-p2pd ./cmd/gentoo-p2pd",
		"call emake BINARY=gentoo-p2pd GENDIR=build generate",
		"call ego test -short ./...",
		"call dobin gentoo-p2pd",
		"call dobin packaging/gentoo-p2pd-build",
		"call systemd_dounit packaging/systemd/system/gentoo-p2pd.service",
		"call systemd_douserunit packaging/systemd/user/gentoo-p2pd.service",
		"call newinitd packaging/openrc/gentoo-p2pd.initd gentoo-p2pd",
		"call newconfd packaging/openrc/gentoo-p2pd.confd gentoo-p2pd",
		"call newbashcomp build/completions/gentoo-p2pd.bash gentoo-p2pd",
		"call insinto /usr/share/zsh/site-functions",
		"call doins build/completions/_gentoo-p2pd",
		"call insinto /usr/share/fish/vendor_completions.d",
		"call doins build/completions/gentoo-p2pd.fish",
		"call doman build/man/*.1",
		"call dodoc README.md BENCHMARKS.md docs/*.md",
	}
	for _, w := range want {
		if !strings.Contains(out, w+"\n") {
			t.Errorf("ebuild check lacks %q:\n%s", w, out)
		}
	}
	// Each unit and service file is installed once, by the Gentoo helper
	// (not also by `make install-files`).
	for _, f := range []string{
		"packaging/systemd/system/gentoo-p2pd.service", "packaging/systemd/user/gentoo-p2pd.service",
		"packaging/openrc/gentoo-p2pd.initd", "packaging/openrc/gentoo-p2pd.confd",
	} {
		if n := strings.Count(out, " "+f+" ") + strings.Count(out, " "+f+"\n"); n != 1 {
			t.Errorf("ebuild installs %s %d times, want once", f, n)
		}
	}
	if strings.Contains(out, "install-files") || strings.Contains(out, "emake DESTDIR") {
		t.Errorf("ebuild installs with make as well as with the helpers:\n%s", out)
	}
	// The src_test skips are keyed on the variable the ebuild sets.
	src, err := os.ReadFile(ebuildPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), ebuildTestEnv+"=1 ego test") {
		t.Errorf("ebuild's src_test does not set %s", ebuildTestEnv)
	}
	// Every acct-* dependency is an ebuild shipped here.
	var rdepend string
	for _, line := range strings.Split(out, "\n") {
		if r, ok := strings.CutPrefix(line, "RDEPEND="); ok {
			rdepend = r
		}
	}
	accts := 0
	for _, atom := range strings.Fields(rdepend) {
		if !strings.HasPrefix(atom, "acct-") {
			continue
		}
		accts++
		matches, _ := filepath.Glob(filepath.Join("gentoo", atom, filepath.Base(atom)+"-*.ebuild"))
		if len(matches) == 0 {
			t.Errorf("ebuild depends on %s, which packaging/gentoo does not ship", atom)
		}
	}
	if accts != 2 {
		t.Errorf("ebuild depends on %d acct-* packages, want acct-user and acct-group: RDEPEND=%s", accts, rdepend)
	}
}

// TestAcctEbuilds checks the account ebuilds the way the acct-user and
// acct-group eclasses read them, and that the account is the one the
// services run as.
func TestAcctEbuilds(t *testing.T) {
	out := runBash(t, "sourcing the acct ebuilds", `
set -eu
inherit() { echo "inherit $*"; }
acct-user_add_deps() { echo "add_deps"; }
source `+acctGroupPath+`
echo "group id=$ACCT_GROUP_ID"
[[ -n $DESCRIPTION ]] && echo group-desc-ok
source `+acctUserPath+`
echo "user id=$ACCT_USER_ID home=$ACCT_USER_HOME perms=$ACCT_USER_HOME_PERMS groups=${ACCT_USER_GROUPS[*]}"
[[ -n $DESCRIPTION ]] && echo user-desc-ok
`)
	for _, want := range []string{
		"inherit acct-group", "group id=-1", "group-desc-ok",
		"inherit acct-user", "add_deps",
		"user id=-1 home=/var/lib/gentoo-p2pd perms=0700 groups=gentoo-p2pd", "user-desc-ok",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("acct ebuild check lacks %q:\n%s", want, out)
		}
	}
	initd, err := os.ReadFile("openrc/gentoo-p2pd.initd")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`GENTOO_P2PD_USER:=gentoo-p2pd}`, `GENTOO_P2PD_GROUP:=gentoo-p2pd}`, `GENTOO_P2PD_STATE_DIR:=/var/lib/gentoo-p2pd}`,
	} {
		if !strings.Contains(string(initd), want) {
			t.Errorf("OpenRC script does not default to the acct-user account: lacks %q", want)
		}
	}
}
