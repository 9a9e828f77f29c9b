package main

import (
	"os"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

// TestREADMEConfigReference keeps README's config reference equal to the
// key table the daemon actually loads.
func TestREADMEConfigReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	begin := strings.Index(s, "<!-- config-reference:")
	end := strings.Index(s, "<!-- /config-reference -->")
	if begin < 0 || end < begin {
		t.Fatal("README.md lacks the config-reference markers")
	}
	section := s[begin:end]
	for _, line := range strings.Split(config.Reference(), "\n") {
		if strings.HasPrefix(line, "| `") && !strings.Contains(section, line) {
			t.Errorf("README config reference lacks or differs in: %s", line)
		}
	}
	for _, key := range config.Keys() {
		if !strings.Contains(section, "`"+key+"`") {
			t.Errorf("README config reference does not document %s", key)
		}
	}
}

// TestREADMECommands checks the two set-up commands CI relies on are the
// ones README promises.
func TestREADMECommands(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"go run ./cmd/gentoo-p2pd demo", "go test -race -count=1 ./..."} {
		if !strings.Contains(string(readme), cmd) {
			t.Errorf("README lacks %q", cmd)
		}
		if !strings.Contains(string(ci), cmd) {
			t.Errorf(".ci/run does not run README's %q", cmd)
		}
	}
}
