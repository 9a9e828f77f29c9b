package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs `make install` into an empty DESTDIR, building the
// real binary and generating the completions and man pages from it, and
// checks everything a distribution package ships is there.
func TestMakeInstall(t *testing.T) {
	if inEbuild() {
		t.Skip(ebuildTestEnv + " is set: the ebuild installs with Portage's helpers (checked by TestEbuild), not make install")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make not found")
	}
	dest := t.TempDir()
	work := t.TempDir()
	bin := filepath.Join(work, "gentoo-p2pd")
	gen := filepath.Join(work, "build")
	cmd := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BINARY="+bin, "GENDIR="+gen)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}

	// What the ebuild installs from GENDIR must be what `make generate` writes.
	for _, f := range []string{"completions/gentoo-p2pd.bash", "completions/_gentoo-p2pd", "completions/gentoo-p2pd.fish", "man/gentoo-p2pd.1"} {
		if _, err := os.Stat(filepath.Join(gen, f)); err != nil {
			t.Errorf("make generate did not write %s (the ebuild installs it)", f)
		}
	}

	files := map[string]os.FileMode{
		"usr/bin/gentoo-p2pd":                                  0o755,
		"usr/bin/gentoo-p2pd-build":                            0o755,
		"usr/lib/systemd/user/gentoo-p2pd.service":             0o644,
		"usr/lib/systemd/system/gentoo-p2pd.service":           0o644,
		"etc/init.d/gentoo-p2pd":                               0o755,
		"etc/conf.d/gentoo-p2pd":                               0o644,
		"usr/share/bash-completion/completions/gentoo-p2pd":    0o644,
		"usr/share/zsh/site-functions/_gentoo-p2pd":            0o644,
		"usr/share/fish/vendor_completions.d/gentoo-p2pd.fish": 0o644,
		"usr/share/doc/gentoo-p2pd/README.md":                  0o644,
		"usr/share/doc/gentoo-p2pd/SECURITY.md":                0o644,
		"usr/share/doc/gentoo-p2pd/PROTOCOL.md":                0o644,
		"usr/share/doc/gentoo-p2pd/ARCHITECTURE.md":            0o644,
		"usr/share/doc/gentoo-p2pd/BENCHMARKS.md":              0o644,
	}
	// One man page per visible command, plain or gzipped.
	for _, page := range []string{
		"gentoo-p2pd", "gentoo-p2pd-daemon", "gentoo-p2pd-init", "gentoo-p2pd-status",
		"gentoo-p2pd-setup-portage", "gentoo-p2pd-trust-explain", "gentoo-p2pd-signer-keygen",
	} {
		p := "usr/share/man/man1/" + page + ".1"
		if _, err := os.Stat(filepath.Join(dest, p+".gz")); err == nil {
			p += ".gz"
		}
		files[p] = 0o644
	}
	for path, mode := range files {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("not installed: %s", path)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), mode)
		}
		if fi.Size() == 0 {
			t.Errorf("%s is empty", path)
		}
	}
	// The hidden man command documents nothing about itself.
	if m, _ := filepath.Glob(filepath.Join(dest, "usr/share/man/man1/gentoo-p2pd-man.1*")); len(m) > 0 {
		t.Errorf("the hidden man command got a man page: %v", m)
	}

	// The installed binary runs, and the generated files are what they claim.
	if out, err := exec.Command(filepath.Join(dest, "usr/bin/gentoo-p2pd"), "--version").CombinedOutput(); err != nil {
		t.Errorf("installed binary --version: %v\n%s", err, out)
	}
	for path, marker := range map[string]string{
		"usr/share/bash-completion/completions/gentoo-p2pd":    "__start_gentoo-p2pd",
		"usr/share/zsh/site-functions/_gentoo-p2pd":            "#compdef gentoo-p2pd",
		"usr/share/fish/vendor_completions.d/gentoo-p2pd.fish": "complete -c gentoo-p2pd",
		"usr/share/man/man1/gentoo-p2pd-daemon.1":              ".TH \"GENTOO-P2PD\" \"1\"",
	} {
		b, err := os.ReadFile(filepath.Join(dest, path))
		if err != nil {
			continue // reported above
		}
		if !strings.Contains(string(b), marker) {
			t.Errorf("%s lacks %q", path, marker)
		}
	}
	// The completion scripts ask the binary; it offers the commands, not
	// the hidden man command.
	out, err := exec.Command(filepath.Join(dest, "usr/bin/gentoo-p2pd"), "__complete", "").CombinedOutput()
	if err != nil {
		t.Errorf("gentoo-p2pd __complete: %v\n%s", err, out)
	}
	offered := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, "\t")
		offered[name] = true
	}
	for _, want := range []string{"daemon", "setup-portage", "status", "trust"} {
		if !offered[want] {
			t.Errorf("completion does not offer %q:\n%s", want, out)
		}
	}
	if offered["man"] {
		t.Errorf("completion offers the hidden man command:\n%s", out)
	}
	bashComp := filepath.Join(dest, "usr/share/bash-completion/completions/gentoo-p2pd")
	if out, err := exec.Command("bash", "-n", bashComp).CombinedOutput(); err != nil {
		t.Errorf("bash -n on the bash completion: %v\n%s", err, out)
	}
	// man renders every page without a warning (roff errors, bad escapes).
	manCmd, err := exec.LookPath("man")
	if err != nil {
		t.Fatal("man not found: install man-db (.ci/run does); systemd-analyze also needs it for Documentation=man:")
	}
	pages, _ := filepath.Glob(filepath.Join(dest, "usr/share/man/man1/*.1"))
	for _, page := range pages {
		cmd := exec.Command(manCmd, "--warnings", "-l", page)
		cmd.Env = append(os.Environ(), "MAN_KEEP_STDERR=1", "MANPAGER=cat", "PAGER=cat")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings -l %s: %v\n%s", filepath.Base(page), err, stderr.String())
		}
	}

	// The units' Documentation= names a man page that is installed:
	// systemd-analyze verify runs man on it, here with the installed pages.
	sa := systemdAnalyze(t)
	stub := filepath.Join(work, "stub")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	runtime := filepath.Join(work, "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ unit, mode string }{
		{"usr/lib/systemd/user/gentoo-p2pd.service", "--user"},
		{"usr/lib/systemd/system/gentoo-p2pd.service", "--system"},
	} {
		src, err := os.ReadFile(filepath.Join(dest, tc.unit))
		if err != nil {
			continue // reported above
		}
		unit := filepath.Join(t.TempDir(), "gentoo-p2pd.service")
		body := strings.ReplaceAll(string(src), "/usr/bin/gentoo-p2pd", stub)
		if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sa, tc.mode, "verify", unit)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime, "SYSTEMD_LOG_LEVEL=notice",
			"MANPATH="+filepath.Join(dest, "usr/share/man"))
		if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze %s verify (with the installed man pages) %s: %v\n%s", tc.mode, tc.unit, err, out)
		}
	}
}
