//go:build portage

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPortageInstallsThroughAttackedGateway runs stock portage 3.0.82 (the
// harness in ../shared/portage-harness, no network) against a victim's
// gateway after the relabelling attack of TestHostileRelabelling: `emerge
// --getbinpkgonly app-misc/hello` with verify-signature on installs the
// honest hello under its own CPV and BUILD_ID, and nothing named by the
// attacker (sys-apps/portage-99.0) appears in portage's installed
// database. It needs root (the harness uses a private mount namespace)
// and is built only with -tags portage; .ci/run sets it up and runs it:
//
//	GENTOO_P2PD_PORTAGE_HARNESS=../shared/portage-harness ORACLE_WORK=/var/tmp/gp2p-oracle \
//	  go test -tags portage -run TestPortage ./integration/
func TestPortageInstallsThroughAttackedGateway(t *testing.T) {
	harness := os.Getenv("GENTOO_P2PD_PORTAGE_HARNESS")
	if harness == "" || os.Getenv("ORACLE_WORK") == "" {
		t.Fatal("set GENTOO_P2PD_PORTAGE_HARNESS (../shared/portage-harness) and ORACLE_WORK; .ci/run shows how")
	}
	harness, err := filepath.Abs(harness)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	victim, _, after := relabelAttack(t, ctx)
	hello, ok := after["app-misc/hello-1.0"]
	if !ok {
		t.Fatalf("victim lists %v after the attack, want hello", entryNames(after))
	}

	dir := t.TempDir()
	client := filepath.Join(dir, "client")
	// Portage calls GNU tar as gtar; Debian has only tar.
	bin := filepath.Join(os.Getenv("ORACLE_WORK"), "bin")
	if _, err := exec.LookPath("gtar"); err != nil {
		tar, err := exec.LookPath("tar")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(tar, filepath.Join(bin, "gtar")); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "LC_ALL=C.UTF-8", "HOOKLOG="+filepath.Join(dir, "hooks.log"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The playground signs its own binpkgs with a throwaway key.
	run(filepath.Join(harness, "gen_gpg_key.sh"))
	run("python3", filepath.Join(harness, "setup_playground.py"), client)

	// Portage's verify keyring trusts the gateway's key, as setup-portage
	// makes it do.
	info, err := victim.Daemon.API().GatewayInfo()
	if err != nil {
		t.Fatal(err)
	}
	keyring := filepath.Join(dir, "gnupg")
	if err := os.MkdirAll(keyring, 0o700); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "gateway.asc")
	if err := os.WriteFile(pub, []byte(info.PublicKey), 0o644); err != nil {
		t.Fatal(err)
	}
	run("gpg", "--homedir", keyring, "--batch", "--quiet", "--import", pub)
	trustIn := filepath.Join(dir, "ownertrust")
	if err := os.WriteFile(trustIn, []byte(info.Fingerprint+":6:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("gpg", "--homedir", keyring, "--batch", "--import-ownertrust", trustIn)
	// Recompute validity so the ownertrust counts (gpg may exit non-zero
	// here with nothing wrong, as the harness also allows).
	_ = exec.CommandContext(ctx, "gpg", "--homedir", keyring, "--batch", "--check-trustdb").Run()
	t.Cleanup(func() { _ = exec.Command("gpgconf", "--homedir", keyring, "--kill", "gpg-agent").Run() })
	makeConf := filepath.Join(client, "etc", "portage", "make.conf")
	mc, err := os.ReadFile(makeConf)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(mc), "\n") {
		if !strings.HasPrefix(l, "BINPKG_GPG_VERIFY_GPG_HOME=") {
			lines = append(lines, l)
		}
	}
	lines = append(lines, `BINPKG_GPG_VERIFY_GPG_HOME="`+keyring+`"`)
	if err := os.WriteFile(makeConf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out := run(filepath.Join(harness, "consume_binhost.sh"), client, victim.Daemon.GatewayURL()+"/", "true",
		"--oneshot", "--getbinpkgonly", "app-misc/hello")
	vdb := filepath.Join(client, "var", "db", "pkg")
	id, err := os.ReadFile(filepath.Join(vdb, "app-misc", "hello-1.0", "BUILD_ID"))
	if err != nil {
		t.Fatalf("portage did not install app-misc/hello-1.0: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(id)); got != hello.Value("BUILD_ID") {
		t.Errorf("installed BUILD_ID %s, the gateway listed %s", got, hello.Value("BUILD_ID"))
	}
	if _, err := os.Stat(filepath.Join(vdb, "sys-apps")); err == nil {
		t.Error("portage installed something under sys-apps: a relabelled listing reached it")
	}
}
