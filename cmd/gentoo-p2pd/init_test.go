package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

// TestInitFirstRun: init writes a config the daemon accepts and creates the
// identity and signing keys privately; a second run keeps all of them.
func TestInitFirstRun(t *testing.T) {
	root := t.TempDir()
	t.Setenv("HOME", filepath.Join(root, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(root, "config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(root, "state"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(root, "run"))
	out, stderr, err := runCLI(t, "init", "--pkgdir", filepath.Join(root, "binpkgs"))
	if err != nil {
		t.Fatalf("init: %v\n%s", err, stderr)
	}
	cfgFile := filepath.Join(root, "config", "gentoo-p2pd", "config.toml")
	if !strings.Contains(out, cfgFile+" (written)") {
		t.Errorf("init output does not name the config it wrote:\n%s", out)
	}
	cfg, err := config.Load(config.LoadOptions{ConfigFile: cfgFile, SkipPortageProbe: true})
	if err != nil {
		t.Fatalf("the written config does not load: %v", err)
	}
	if cfg.Trust.Threshold != 3 || cfg.Mode != config.ModeShare {
		t.Errorf("written config: threshold %d mode %s", cfg.Trust.Threshold, cfg.Mode)
	}
	state := filepath.Join(root, "state", "gentoo-p2pd")
	for _, f := range []string{"identity.key", "signing-key.asc"} {
		fi, err := os.Stat(filepath.Join(state, f))
		if err != nil {
			t.Fatalf("%s not created: %v", f, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %o; keys must be private", f, fi.Mode().Perm())
		}
	}
	peerLine := func(s string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "peer id") {
				return l
			}
		}
		return ""
	}
	first := peerLine(out)
	if first == "" {
		t.Fatalf("no peer id printed:\n%s", out)
	}
	before, _ := os.ReadFile(cfgFile)
	out2, _, err := runCLI(t, "init")
	if err != nil {
		t.Fatal(err)
	}
	if peerLine(out2) != first {
		t.Errorf("second init changed the identity: %q → %q", first, peerLine(out2))
	}
	if after, _ := os.ReadFile(cfgFile); string(after) != string(before) || !strings.Contains(out2, "(exists") {
		t.Error("second init rewrote the config without --force")
	}
}
