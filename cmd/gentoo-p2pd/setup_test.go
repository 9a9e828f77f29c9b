package main

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestSetupPortageNoDaemonNoKey: with no daemon answering and no signing
// key in the state dir, `setup-portage --dry-run` says to run init and
// creates nothing — no key, no state dir — under HOME/XDG or the root.
func TestSetupPortageNoDaemonNoKey(t *testing.T) {
	home := t.TempDir()
	sysroot := t.TempDir()
	t.Setenv("HOME", filepath.Join(home, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(home, "state"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, "cache"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	t.Setenv("SUDO_UID", "")
	_, stderr, err := runCLI(t, "setup-portage", "--dry-run", "--root", sysroot)
	if err == nil || !strings.Contains(err.Error(), "run `gentoo-p2pd init`") {
		t.Fatalf("setup-portage --dry-run without daemon or key = %v (stderr %s), want the init hint", err, stderr)
	}
	t.Log(err)
	for _, dir := range []string{home, sysroot} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Error(err)
				return nil
			}
			if p != dir {
				t.Errorf("setup-portage --dry-run created %s", p)
			}
			return nil
		})
	}
}

// TestSetupPortageUsesInitKey: once init made the key, the same dry run
// without a daemon succeeds with it and leaves the root untouched.
func TestSetupPortageUsesInitKey(t *testing.T) {
	home := t.TempDir()
	sysroot := t.TempDir()
	t.Setenv("HOME", filepath.Join(home, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(home, "state"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	t.Setenv("SUDO_UID", "")
	out, stderr, err := runCLI(t, "init", "--pkgdir", filepath.Join(home, "binpkgs"))
	if err != nil {
		t.Fatalf("init: %v\n%s", err, stderr)
	}
	var fpr string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "gateway" && f[1] == "key" {
			fpr = f[2]
		}
	}
	if fpr == "" {
		t.Fatalf("init printed no gateway key:\n%s", out)
	}
	out, stderr, err = runCLI(t, "setup-portage", "--dry-run", "--root", sysroot)
	if err != nil {
		t.Fatalf("setup-portage --dry-run after init: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "import key "+fpr) {
		t.Errorf("dry run does not import init's key %s:\n%s", fpr, out)
	}
	if ents, _ := filepath.Glob(filepath.Join(sysroot, "*")); len(ents) != 0 {
		t.Errorf("--dry-run wrote %v", ents)
	}
}
