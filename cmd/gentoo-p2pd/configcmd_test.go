package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestConfigShow: the table and the JSON name each key's source.
func TestConfigShow(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("GENTOO_P2PD_MODE", "consume")
	file := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(file, []byte("[trust]\nthreshold = 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "config", "show", "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^KEY +VALUE +SOURCE$`,
		`(?m)^mode +consume +environment GENTOO_P2PD_MODE$`,
		`(?m)^trust\.threshold +4 +file ` + regexp.QuoteMeta(file) + `$`,
		`(?m)^log\.level +info +default$`,
		`(?m)^cache\.dir +` + regexp.QuoteMeta(filepath.Join(dir, ".local/state/gentoo-p2pd/cache")) + ` +default derived$`,
		`(?m)^portage\.repo +\S+ +portage \S+$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("config show lacks %s:\n%s", re, out)
		}
	}
	out, _, err = runCLI(t, "config", "show", "--config", file, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var settings []struct {
		Key    string
		Value  string
		Source struct{ Kind, Detail string }
	}
	if err := json.Unmarshal([]byte(out), &settings); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, s := range settings {
		if s.Key == "trust.threshold" && s.Value == "4" && s.Source.Kind == "file" && s.Source.Detail == file {
			found++
		}
		if s.Key == "mode" && s.Source.Kind == "environment" && s.Source.Detail == "GENTOO_P2PD_MODE" {
			found++
		}
	}
	if found != 2 {
		t.Errorf("config show --json: %s", out)
	}
}
