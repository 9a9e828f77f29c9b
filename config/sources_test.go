package config

import (
	"encoding/json"
	"testing"

	"github.com/spf13/pflag"
)

// TestSources: every key says where its effective value came from: the
// config file, the environment, a flag, a built-in (or derived) default,
// or portage for the portage.* keys nobody set.
func TestSources(t *testing.T) {
	e := newFakeEnv(t)
	file := e.writeUserConfig(t, "[trust]\nthreshold = 5\n[portage]\ncflags = \"-O3\"\n")
	writeTree(t, e.root, map[string]string{"etc/portage/make.conf": "CHOST=\"x86_64-pc-linux-gnu\"\nPKGDIR=\"/srv/binpkgs\"\n"})
	e.opts.Environ = append(e.opts.Environ, "GENTOO_P2PD_MODE=mirror", "GENTOO_P2PD_PORTAGE_ARCH=arm64")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--gateway-listen=127.0.0.1:9000"}); err != nil {
		t.Fatal(err)
	}
	e.opts.Flags = fs
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Source{
		"mode":            {KindEnv, "GENTOO_P2PD_MODE"},
		"trust.threshold": {KindFile, file},
		"gateway.listen":  {KindFlag, "--gateway-listen"},
		"log.level":       {KindDefault, ""},
		"cache.dir":       {KindDefault, "derived"},
		"portage.cflags":  {KindFile, file},
		"portage.arch":    {KindEnv, "GENTOO_P2PD_PORTAGE_ARCH"},
		"portage.chost":   {KindPortage, SourceMakeConf},
		"portage.pkgdir":  {KindPortage, SourceMakeConf},
		"portage.repo":    {KindPortage, SourceDefault},
		"portage.ldflags": {KindPortage, SourceUnset},
	}
	got := map[string]Setting{}
	for _, s := range c.Settings() {
		got[s.Key] = s
	}
	if len(got) != len(Keys()) {
		t.Errorf("Settings has %d keys, want %d", len(got), len(Keys()))
	}
	for key, w := range want {
		if got[key].Source != w {
			t.Errorf("%s: source %v, want %v", key, got[key].Source, w)
		}
	}
	for key, v := range map[string]string{"mode": "mirror", "trust.threshold": "5", "gateway.listen": "127.0.0.1:9000",
		"portage.chost": "x86_64-pc-linux-gnu", "portage.pkgdir": "/srv/binpkgs", "cache.disk_budget": "10GiB", "network.bootstrap": "[]"} {
		if got[key].Value != v {
			t.Errorf("%s: value %q, want %q", key, got[key].Value, v)
		}
	}
	if s := got["mode"].Source.String(); s != "environment GENTOO_P2PD_MODE" {
		t.Errorf("source string %q", s)
	}
	if _, err := json.Marshal(c.Settings()); err != nil {
		t.Error(err)
	}
}

// TestSourcesWithoutLoad: a Config not from Load reports defaults.
func TestSourcesWithoutLoad(t *testing.T) {
	for _, s := range Defaults().Settings() {
		if s.Source.Kind != KindDefault {
			t.Errorf("%s: %v", s.Key, s.Source)
		}
	}
}
