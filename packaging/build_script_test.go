package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The builder's build command refuses a job it cannot build safely before
// it starts anything: a malformed CPV or USE flag, a PKGDIR or scratch
// directory outside the builder's root, a host without portage's
// configuration. (It builds for real in integration's portage test.)
func TestBuildScriptRefusesBadJobs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"pkgdir", "jobs/1"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := t.TempDir()
	if err := os.MkdirAll(filepath.Join(conf, "etc", "portage"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := map[string]string{
		"GENTOO_P2PD_BUILD_CPV": "sys-libs/libxcrypt-4.4.33", "GENTOO_P2PD_BUILD_USE": "system -static-libs",
		"GENTOO_P2PD_BUILD_ROOT": root, "GENTOO_P2PD_BUILD_PKGDIR": filepath.Join(root, "pkgdir"),
		"GENTOO_P2PD_BUILD_WORK": filepath.Join(root, "jobs/1"), "GENTOO_P2PD_BUILD_JOBS": "2",
		"GENTOO_P2PD_BUILD_CONFIG_FROM": conf,
		// emerge's stand-in prints what it was given.
		"GENTOO_P2PD_BUILD_EMERGE": "echo EMERGE", "_GENTOO_P2PD_BUILD_NS": "root", "GENTOO_P2PD_BUILD_OVERLAY": " ",
	}
	run := func(key, value string) (string, error) {
		cmd := exec.Command("bash", "gentoo-p2pd-build")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range good {
			if k == key {
				v = value
			}
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct {
		key, value, want string
	}{
		{"GENTOO_P2PD_BUILD_CPV", "libxcrypt", "is not category/package-version"},
		{"GENTOO_P2PD_BUILD_CPV", "sys-libs/libxcrypt-4.4.33 ; rm -rf /", "is not category/package-version"},
		{"GENTOO_P2PD_BUILD_USE", "system $(id)", "no USE flag has"},
		{"GENTOO_P2PD_BUILD_USE", "system -", "bad flag"},
		{"GENTOO_P2PD_BUILD_USE", "system\n=app-misc/evil-1 foo", "no USE flag has"},
		{"GENTOO_P2PD_BUILD_USE", "system *", "no USE flag has"},
		{"GENTOO_P2PD_BUILD_JOBS", "0", "not a positive number"},
		{"GENTOO_P2PD_BUILD_PKGDIR", t.TempDir(), "is not inside the builder's root"},
		{"GENTOO_P2PD_BUILD_WORK", root, "is not inside the builder's root"},
		{"GENTOO_P2PD_BUILD_CONFIG_FROM", t.TempDir(), "no portage configuration"},
		// Overlaying a directory that holds the root would put the
		// overlays' upper layers on the overlay itself.
		{"GENTOO_P2PD_BUILD_OVERLAY", filepath.Dir(root), "lies inside"},
	} {
		out, err := run(tt.key, tt.value)
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("%s=%q: %v\n%s\nwant a refusal saying %q", tt.key, tt.value, err, out, tt.want)
		}
	}

	// A good job reaches emerge with the private config root: the
	// builder's PKGDIR, the canonical build directory, the variant's USE.
	out, err := run("", "")
	if err != nil || !strings.Contains(out, "EMERGE --ignore-default-opts --buildpkgonly --oneshot --nodeps --usepkg=n --getbinpkg=n --quiet-build=y --color=n =sys-libs/libxcrypt-4.4.33\n") {
		t.Fatalf("a good job: %v\n%s", err, out)
	}
	cr := filepath.Join(root, "jobs/1/config/etc/portage")
	mc, err := os.ReadFile(filepath.Join(cr, "make.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`PKGDIR="` + filepath.Join(root, "pkgdir") + `"`, `PORTAGE_TMPDIR="/var/tmp"`, `MAKEOPTS="-j2"`, "-binary_sharing"} {
		if !strings.Contains(string(mc), want) {
			t.Errorf("make.conf lacks %s:\n%s", want, mc)
		}
	}
	if pu, err := os.ReadFile(filepath.Join(cr, "package.use")); err != nil || string(pu) != "=sys-libs/libxcrypt-4.4.33 system -static-libs\n" {
		t.Errorf("package.use %q, %v", pu, err)
	}
}
