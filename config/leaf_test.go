package config

import (
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDefaultsWithoutHome(t *testing.T) {
	t.Setenv("HOME", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	d := Defaults()
	u, err := user.Current()
	if err != nil || !filepath.IsAbs(u.HomeDir) {
		// No passwd entry either: there is no sane default, and
		// Validate must say so rather than use a relative path.
		if d.StateDir != "" || d.Validate() == nil || !strings.Contains(d.Validate().Error(), "config: state_dir: must be set") {
			t.Errorf("without any home: state_dir %q, validate %v", d.StateDir, d.Validate())
		}
		return
	}
	if want := filepath.Join(u.HomeDir, ".local/state/gentoo-p2pd"); d.StateDir != want {
		t.Errorf("state_dir = %q, want %q (from the passwd entry)", d.StateDir, want)
	}
	if d.API.Socket != filepath.Join(d.StateDir, "api.sock") {
		t.Errorf("api.socket = %q", d.API.Socket)
	}
}
