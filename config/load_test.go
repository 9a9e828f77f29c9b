package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// fakeEnv is an isolated environment: every path is inside t.TempDir and
// portageq is never run, so tests read nothing of the real machine.
type fakeEnv struct {
	root, home, configHome, stateHome string
	opts                              LoadOptions
}

func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	dir := t.TempDir()
	e := &fakeEnv{
		root:       filepath.Join(dir, "root"),
		home:       filepath.Join(dir, "home"),
		configHome: filepath.Join(dir, "home", ".config"),
		stateHome:  filepath.Join(dir, "home", ".local", "state"),
	}
	e.opts = LoadOptions{
		Environ:         []string{"HOME=" + e.home, "PATH=/nonexistent"},
		Root:            e.root,
		DisablePortageq: true,
	}
	return e
}

func (e *fakeEnv) writeUserConfig(t *testing.T, toml string) string {
	t.Helper()
	p := filepath.Join(e.configHome, "gentoo-p2pd", "config.toml")
	writeTree(t, "/", map[string]string{p: toml})
	return p
}

func TestLoadDefaultsWithoutFileOrPortage(t *testing.T) {
	e := newFakeEnv(t)
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultsFor(dirs{home: e.home, stateHome: e.stateHome})
	want.Portage = PortageConfig{
		PkgDir: filepath.Join(e.root, DefaultPKGDIR),
		Repo:   filepath.Join(e.root, DefaultRepo),
		Sources: map[string]string{
			"pkgdir": SourceDefault, "repo": SourceDefault, "chost": SourceUnset, "cflags": SourceUnset,
			"cxxflags": SourceUnset, "fflags": SourceUnset, "fcflags": SourceUnset, "ldflags": SourceUnset, "arch": SourceUnset,
		},
	}
	c.Warnings = nil
	c.Sources = nil // TestSources checks them
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	if c.StateDir != filepath.Join(e.home, ".local/state/gentoo-p2pd") {
		t.Errorf("state_dir = %q", c.StateDir)
	}
	if c.API.Socket != filepath.Join(c.StateDir, "api.sock") || c.Cache.Dir != filepath.Join(c.StateDir, "cache") {
		t.Errorf("derived: api.socket %q cache.dir %q", c.API.Socket, c.Cache.Dir)
	}
	if c.Cache.DiskBudget != 10<<30 || c.Limits.MaxImageBytes != 16<<30 || c.Network.ReprovideInterval != 22*time.Hour {
		t.Errorf("sizes/durations: %+v %+v %v", c.Cache, c.Limits, c.Network.ReprovideInterval)
	}
	if c.File != "" {
		t.Errorf("File = %q, want none", c.File)
	}
}

func TestDefaultsValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadXDGDirs(t *testing.T) {
	e := newFakeEnv(t)
	e.opts.Environ = append(e.opts.Environ, "XDG_STATE_HOME=/xdg/state", "XDG_RUNTIME_DIR=/run/user/1000", "XDG_CONFIG_HOME=relative/ignored")
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/xdg/state/gentoo-p2pd" || c.API.Socket != "/run/user/1000/gentoo-p2pd.sock" || c.Cache.Dir != "/xdg/state/gentoo-p2pd/cache" {
		t.Errorf("state %q socket %q cache %q", c.StateDir, c.API.Socket, c.Cache.Dir)
	}
	// A state_dir set by the user moves the derived defaults with it.
	e.opts.Environ = append(e.opts.Environ, "GENTOO_P2PD_STATE_DIR=/srv/p2pd", "XDG_RUNTIME_DIR=")
	c, err = Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.Socket != "/srv/p2pd/api.sock" || c.Cache.Dir != "/srv/p2pd/cache" {
		t.Errorf("socket %q cache %q", c.API.Socket, c.Cache.Dir)
	}
}

func TestPrecedence(t *testing.T) {
	file := `
mode = "mirror"
state_dir = "/from/file"
[trust]
threshold = 5
[gateway]
listen = "127.0.0.1:1000"
[network]
listen = ["/ip4/127.0.0.1/tcp/1"]
mdns = false
`
	type layer struct{ file, env, flag bool }
	tests := []struct {
		key     string
		env     string   // GENTOO_P2PD_… value
		flags   []string // command line
		get     func(*Config) any
		def     any
		fromFil any
		fromEnv any
		fromFlg any
	}{
		{key: "mode", env: "consume", flags: []string{"--mode=share"}, get: func(c *Config) any { return c.Mode },
			def: ModeShare, fromFil: ModeMirror, fromEnv: ModeConsume, fromFlg: ModeShare},
		{key: "trust.threshold", env: "7", flags: []string{"--threshold", "9"}, get: func(c *Config) any { return c.Trust.Threshold },
			def: 3, fromFil: 5, fromEnv: 7, fromFlg: 9},
		{key: "gateway.listen", env: "[::1]:2000", flags: []string{"--gateway-listen=localhost:3000"}, get: func(c *Config) any { return c.Gateway.Listen },
			def: "127.0.0.1:7854", fromFil: "127.0.0.1:1000", fromEnv: "[::1]:2000", fromFlg: "localhost:3000"},
		{key: "network.listen", env: "/ip4/127.0.0.1/tcp/2, /ip4/127.0.0.1/tcp/3", flags: []string{"--listen=/ip4/127.0.0.1/tcp/4", "--listen", "/ip6/::1/tcp/5"},
			get: func(c *Config) any { return c.Network.Listen },
			def: defaultsFor(dirs{}).Network.Listen, fromFil: []string{"/ip4/127.0.0.1/tcp/1"},
			fromEnv: []string{"/ip4/127.0.0.1/tcp/2", "/ip4/127.0.0.1/tcp/3"}, fromFlg: []string{"/ip4/127.0.0.1/tcp/4", "/ip6/::1/tcp/5"}},
		{key: "network.mdns", env: "true", flags: []string{"--mdns=false"}, get: func(c *Config) any { return c.Network.MDNS },
			def: true, fromFil: false, fromEnv: true, fromFlg: false},
		{key: "state_dir", env: "/from/env", flags: []string{"--state-dir=/from/flag"}, get: func(c *Config) any { return c.StateDir },
			fromFil: "/from/file", fromEnv: "/from/env", fromFlg: "/from/flag"},
	}
	for _, tt := range tests {
		for _, l := range []layer{{}, {file: true}, {env: true}, {file: true, env: true}, {flag: true}, {file: true, env: true, flag: true}, {env: true, flag: true}} {
			name := tt.key
			if l.file {
				name += "+file"
			}
			if l.env {
				name += "+env"
			}
			if l.flag {
				name += "+flag"
			}
			t.Run(name, func(t *testing.T) {
				e := newFakeEnv(t)
				if l.file {
					e.writeUserConfig(t, file)
				}
				if l.env {
					e.opts.Environ = append(e.opts.Environ, EnvName(tt.key)+"="+tt.env)
				}
				fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
				AddFlags(fs)
				if l.flag {
					if err := fs.Parse(tt.flags); err != nil {
						t.Fatal(err)
					}
				}
				e.opts.Flags = fs
				c, err := Load(e.opts)
				if err != nil {
					t.Fatal(err)
				}
				var want any
				switch {
				case l.flag:
					want = tt.fromFlg
				case l.env:
					want = tt.fromEnv
				case l.file:
					want = tt.fromFil
				default:
					want = tt.def
					if tt.def == nil {
						want = filepath.Join(e.stateHome, "gentoo-p2pd")
					}
				}
				if got := tt.get(c); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", tt.key, got, want)
				}
			})
		}
	}
}

func TestConfigFileSearch(t *testing.T) {
	e := newFakeEnv(t)
	etc := filepath.Join(e.root, "etc/gentoo-p2pd/config.toml")
	writeTree(t, "/", map[string]string{etc: "mode = \"consume\"\n"})
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != etc || c.Mode != ModeConsume {
		t.Errorf("with /etc only: file %q mode %q", c.File, c.Mode)
	}
	user := e.writeUserConfig(t, "mode = \"mirror\"\n")
	if c, err = Load(e.opts); err != nil {
		t.Fatal(err)
	}
	if c.File != user || c.Mode != ModeMirror {
		t.Errorf("user file must win: file %q mode %q", c.File, c.Mode)
	}
	explicit := filepath.Join(t.TempDir(), "x.toml")
	writeTree(t, "/", map[string]string{explicit: "mode = \"share\"\n"})
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"-c", explicit}); err != nil {
		t.Fatal(err)
	}
	e.opts.Flags = fs
	if c, err = Load(e.opts); err != nil {
		t.Fatal(err)
	}
	if c.File != explicit || c.Mode != ModeShare {
		t.Errorf("--config must win: file %q mode %q", c.File, c.Mode)
	}
	e.opts.ConfigFile = filepath.Join(t.TempDir(), "missing.toml")
	if _, err := Load(e.opts); !errors.Is(err, ErrConfigFile) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing explicit file: err = %v", err)
	}
}

func TestLoadFullFile(t *testing.T) {
	e := newFakeEnv(t)
	e.writeUserConfig(t, `
mode = "mirror"
[log]
level = "debug"
format = "json"
[portage]
pkgdir = "/srv/binpkgs"
chost = "aarch64-unknown-linux-gnu"
[network]
bootstrap = ["/ip4/127.0.0.1/tcp/4701/p2p/12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5"]
conn_low = 8
conn_high = 16
dht_mode = "server"
reprovide_interval = "90m"
[gateway]
path = "/binhost/p2p"
[metrics]
listen = "0.0.0.0:9100"
[trust]
signers = ["3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw="]
trusted_peers = ["12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5"]
[[trust.overrides]]
glob = "sys-kernel/*"
threshold = 5
require_signer = true
[[trust.overrides]]
glob = "dev-lang/rust-*"
dispute = 2
[transfer]
upload_rate = "20MB/s"
peer_upload_rate = "1MiB"
download_rate = 0
upload_stall_timeout = "12s"
[cache]
disk_budget = "1.5GiB"
[limits]
max_image_bytes = 1048576
`)
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	five, two, yes := 5, 2, true
	wantOverrides := []TrustOverride{{Glob: "sys-kernel/*", Threshold: &five, RequireSigner: &yes}, {Glob: "dev-lang/rust-*", Dispute: &two}}
	checks := []struct {
		name      string
		got, want any
	}{
		{"mode", c.Mode, ModeMirror},
		{"log", c.Log, LogConfig{Level: "debug", Format: "json"}},
		{"pkgdir", c.Portage.PkgDir, "/srv/binpkgs"},
		{"pkgdir source", c.Portage.Sources["pkgdir"], SourceConfig},
		{"chost", c.Portage.CHOST, "aarch64-unknown-linux-gnu"},
		{"conn", [2]int{c.Network.ConnLow, c.Network.ConnHigh}, [2]int{8, 16}},
		{"dht_mode", c.Network.DHTMode, "server"},
		{"reprovide", c.Network.ReprovideInterval, 90 * time.Minute},
		{"gateway.path", c.Gateway.Path, "/binhost/p2p"},
		{"metrics", c.Metrics.Listen, "0.0.0.0:9100"},
		{"signers", len(c.Trust.Signers), 2},
		{"overrides", c.Trust.Overrides, wantOverrides},
		{"upload_rate", c.Transfer.UploadRate, int64(20_000_000)},
		{"peer_upload_rate", c.Transfer.PeerUploadRate, int64(1 << 20)},
		{"download_rate", c.Transfer.DownloadRate, int64(0)},
		{"upload_stall_timeout", c.Transfer.UploadStallTimeout, 12 * time.Second},
		{"disk_budget", c.Cache.DiskBudget, int64(3 << 29)},
		{"max_image_bytes", c.Limits.MaxImageBytes, int64(1 << 20)},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   []string
		flags []string
		want  string // exact first line of the error, or a substring with "~" prefix
		is    error
	}{
		{name: "negative threshold", file: "[trust]\nthreshold = -1\n", want: "config: trust.threshold: must be ≥ 1 (0 means signer only and needs trust.signers, trust.pgp_keyring or trust.trusted_peers), got -1", is: ErrInvalidValue},
		{name: "threshold 0 without a signer", file: "[trust]\nthreshold = 0\n", want: "~config: trust.threshold: must be ≥ 1 (0 means signer only", is: ErrInvalidValue},
		{name: "mode typo", env: []string{"GENTOO_P2PD_MODE=sharee"}, want: `config: mode: must be one of consume, share, mirror, got "sharee"`, is: ErrInvalidValue},
		{name: "gateway not loopback", flags: []string{"--gateway-listen=0.0.0.0:7854"}, want: `~config: gateway.listen: must be a loopback address`, is: ErrInvalidValue},
		{name: "gateway bad port", file: "[gateway]\nlisten = \"127.0.0.1:http\"\n", want: `~config: gateway.listen: bad port`, is: ErrInvalidValue},
		{name: "gateway path", file: "[gateway]\npath = \"gentoo-p2pd\"\n", want: `config: gateway.path: must start with /, got "gentoo-p2pd"`, is: ErrInvalidValue},
		{name: "gateway path unclean", file: "[gateway]\npath = \"/a//b/\"\n", want: `~config: gateway.path: must be a clean URL path`, is: ErrInvalidValue},
		{name: "int from string", env: []string{"GENTOO_P2PD_TRUST_THRESHOLD=three"}, want: `config: trust.threshold: want an integer, got "three" (from environment GENTOO_P2PD_TRUST_THRESHOLD)`, is: ErrInvalidValue},
		{name: "wrong toml type", file: "[network]\nmdns = \"yes\"\n", want: `~config: network.mdns: want true or false, got "yes" (from `, is: ErrInvalidValue},
		{name: "float for int", file: "[network]\nconn_low = 3.5\n", want: `~config: network.conn_low: want an integer, got 3.5`, is: ErrInvalidValue},
		{name: "bad duration", file: "[network]\nreprovide_interval = \"a day\"\n", want: `~config: network.reprovide_interval: want a duration like "22h"`, is: ErrInvalidValue},
		{name: "zero duration", file: "[network]\nreprovide_interval = \"0s\"\n", want: `config: network.reprovide_interval: must be > 0, got 0s`, is: ErrInvalidValue},
		{name: "bad size unit", file: "[cache]\ndisk_budget = \"10XB\"\n", want: `~config: cache.disk_budget: size "10XB": unknown unit "XB"`, is: ErrInvalidValue},
		{name: "zero budget", env: []string{"GENTOO_P2PD_CACHE_DISK_BUDGET=0"}, want: `config: cache.disk_budget: must be > 0, got 0`, is: ErrInvalidValue},
		{name: "negative rate", file: "[transfer]\nupload_rate = -5\n", want: `config: transfer.upload_rate: must be ≥ 0 (0 = unlimited), got -5`, is: ErrInvalidValue},
		{name: "zero stall timeout", file: "[transfer]\nupload_stall_timeout = \"0s\"\n", want: `config: transfer.upload_stall_timeout: must be > 0, got 0s`, is: ErrInvalidValue},
		{name: "conn_high below conn_low", file: "[network]\nconn_low = 10\nconn_high = 5\n", want: `config: network.conn_high: must be ≥ 1 and ≥ network.conn_low (10), got 5`, is: ErrInvalidValue},
		{name: "platform_peers above conn_high", file: "[network]\nplatform_peers = 65\n", want: `config: network.platform_peers: must be ≥ 0 and ≤ network.conn_high (64), got 65`, is: ErrInvalidValue},
		{name: "platform_peers negative", file: "[network]\nplatform_peers = -1\n", want: `config: network.platform_peers: must be ≥ 0 and ≤ network.conn_high (64), got -1`, is: ErrInvalidValue},
		{name: "dht mode", flags: []string{"--dht-mode=both"}, want: `config: network.dht_mode: must be one of auto, server, client, got "both"`, is: ErrInvalidValue},
		{name: "listen not multiaddr", env: []string{"GENTOO_P2PD_NETWORK_LISTEN=0.0.0.0:4701"}, want: `~config: network.listen[0]: not a multiaddr "0.0.0.0:4701"`, is: ErrInvalidValue},
		{name: "bootstrap without peer id", file: "[network]\nbootstrap = [\"/ip4/1.2.3.4/tcp/4701\"]\n", want: `~config: network.bootstrap[0]: want a multiaddr ending in /p2p/<peer id>`, is: ErrInvalidValue},
		{name: "signer wrong length", file: "[trust]\nsigners = [\"AAAA\"]\n", want: `config: trust.signers[0]: Ed25519 public key "AAAA" decodes to 3 bytes, want 32`, is: ErrInvalidValue},
		{name: "signer garbage", file: "[trust]\nsigners = [\"not a key!\"]\n", want: `~config: trust.signers[0]: Ed25519 public key "not a key!" is neither`, is: ErrInvalidValue},
		{name: "bad peer id", file: "[trust]\nblocked_peers = [\"QmNotAPeer\"]\n", want: `~config: trust.blocked_peers[0]: not a peer ID "QmNotAPeer"`, is: ErrInvalidValue},
		{name: "trusted and blocked", file: "[trust]\ntrusted_peers = [\"12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5\"]\nblocked_peers = [\"12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5\"]\n",
			want: `config: trust.blocked_peers[0]: peer 12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5 is also in trust.trusted_peers`, is: ErrInvalidValue},
		{name: "override bad glob", file: "[[trust.overrides]]\nglob = \"sys-[\"\n", want: `~config: trust.overrides[0].glob: bad pattern "sys-["`, is: ErrInvalidValue},
		{name: "override without glob", file: "[[trust.overrides]]\nthreshold = 2\n", want: `config: trust.overrides[0].glob: must be set (e.g. "sys-kernel/*")`, is: ErrInvalidValue},
		{name: "override bad threshold", file: "[[trust.overrides]]\nglob = \"*\"\nthreshold = 0\n", want: `config: trust.overrides[0].threshold: must be ≥ 1 (0 needs a signer, keyring or trusted peer), got 0`, is: ErrInvalidValue},
		{name: "override unknown field", file: "[[trust.overrides]]\nglob = \"*\"\ntreshold = 2\n", want: `~config: trust.overrides: [0].treshold: unknown key "treshold"`, is: ErrUnknownKey},
		{name: "overrides from env", env: []string{"GENTOO_P2PD_TRUST_OVERRIDES=x"}, want: `config: GENTOO_P2PD_TRUST_OVERRIDES: trust.overrides can only be set in the config file`, is: ErrInvalidValue},
		{name: "relative state dir", flags: []string{"--state-dir=state"}, want: `~config: state_dir: must be an absolute path, got "state"`, is: ErrInvalidValue},
		{name: "socket too long", env: []string{"GENTOO_P2PD_API_SOCKET=/" + strings.Repeat("s", 120)}, want: `~config: api.socket: path is 121 bytes, longer than the 107`, is: ErrInvalidValue},
		{name: "log level", file: "[log]\nlevel = \"verbose\"\n", want: `config: log.level: must be one of debug, info, warn, error, got "verbose"`, is: ErrInvalidValue},
		{name: "unknown key with suggestion", file: "[trust]\ntreshold = 2\n", want: `~unknown key "trust.treshold" (did you mean "trust.threshold"?)`, is: ErrUnknownKey},
		{name: "unknown section", file: "[netwrok]\nlisten = []\n", want: `~unknown key "netwrok.listen" (did you mean "network.listen"?)`, is: ErrUnknownKey},
		{name: "table where a value belongs", file: "[mode]\nx = 1\n", want: `~unknown key "mode.x"`, is: ErrUnknownKey},
		{name: "overrides as a single table", file: "[trust.overrides]\nglob = \"*\"\n", want: `~unknown key "trust.overrides.glob" (overrides are a list: write [[trust.overrides]]`, is: ErrUnknownKey},
		{name: "bad toml", file: "mode = \n", want: `~config: bad config file: `, is: ErrConfigFile},
		// A syntax error names its line and column, and shows the line.
		{name: "toml syntax error line", file: "mode = \"share\"\n\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\",\nmdns = true\n",
			want: `~config.toml:5:1: toml: `, is: ErrConfigFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t)
			if tt.file != "" {
				e.writeUserConfig(t, tt.file)
			}
			e.opts.Environ = append(e.opts.Environ, tt.env...)
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			AddFlags(fs)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			e.opts.Flags = fs
			_, err := Load(e.opts)
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %q does not match %v", err, tt.is)
			}
			first, _, _ := strings.Cut(err.Error(), "\n")
			if sub, ok := strings.CutPrefix(tt.want, "~"); ok {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q does not contain %q", err, sub)
				}
			} else if first != tt.want {
				t.Errorf("error\n got %q\nwant %q", first, tt.want)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Defaults()
	c.Mode = "x"
	c.Trust.Threshold = 0
	c.Gateway.Listen = "example.org:80"
	err := c.Validate()
	var keys []string
	for _, line := range strings.Split(err.Error(), "\n") {
		k, _, _ := strings.Cut(strings.TrimPrefix(line, "config: "), ":")
		keys = append(keys, k)
	}
	if want := []string{"mode", "gateway.listen", "trust.threshold"}; !slices.Equal(keys, want) {
		t.Errorf("problems for %v, want %v:\n%v", keys, want, err)
	}
}

// TestUnknownEnvIsAnError: a misspelt GENTOO_P2PD_* variable fails Load
// like an unknown key in the config file, with a suggestion; the variables
// the project's own scripts set are accepted.
func TestUnknownEnvIsAnError(t *testing.T) {
	e := newFakeEnv(t)
	e.opts.Environ = append(e.opts.Environ, "GENTOO_P2PD_TRESHOLD=2")
	_, err := Load(e.opts)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Load with GENTOO_P2PD_TRESHOLD set: %v, want ErrUnknownKey", err)
	}
	if want := "GENTOO_P2PD_TRESHOLD (did you mean GENTOO_P2PD_TRUST_THRESHOLD?)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}

	e = newFakeEnv(t)
	for _, name := range NonKeyEnv {
		e.opts.Environ = append(e.opts.Environ, name+"=x")
	}
	if _, err := Load(e.opts); err != nil {
		t.Fatalf("Load with the scripts' own variables set: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""}, {"512", 512, ""}, {"512B", 512, ""}, {"10GiB", 10 << 30, ""}, {"10gib", 10 << 30, ""},
		{"20MB", 20_000_000, ""}, {"1.5KiB", 1536, ""}, {" 8 MiB ", 8 << 20, ""}, {"2G", 2 << 30, ""}, {"1TB", 1e12, ""},
		{"8EiB", 0, "unknown unit"}, {"", 0, "empty"}, {"GiB", 0, "want a number"}, {"1.1B", 0, "not a whole number"},
		{"1.2.3MB", 0, "want a number"}, {"-1", 0, "want a number"}, {"9999999TiB", 0, "exceeds"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalidValue) {
				t.Errorf("ParseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if back, err := ParseSize(FormatSize(got)); err != nil || back != got {
			t.Errorf("FormatSize(%d) = %q does not round-trip: %d, %v", got, FormatSize(got), back, err)
		}
	}
	if r, err := ParseRate("20MB/s"); err != nil || r != 20_000_000 {
		t.Errorf("ParseRate = %d, %v", r, err)
	}
}

func TestFlagKeys(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	for _, name := range []string{"config", "state-dir", "mode", "pkgdir", "listen", "bootstrap", "gateway-listen", "api-socket", "metrics-listen", "threshold", "log-level"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s not registered", name)
		}
	}
}

// TestStructTags checks that each key's field carries matching toml and
// mapstructure tags, so a Config marshalled to TOML reads back as the same
// keys.
func TestStructTags(t *testing.T) {
	var c Config
	paths := map[uintptr]string{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "-" {
				continue
			}
			if ms, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ","); ms != tag {
				t.Errorf("field %s: toml tag %q, mapstructure tag %q", f.Name, tag, ms)
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(v.Field(i), prefix+tag+".")
				continue
			}
			paths[v.Field(i).Addr().Pointer()] = prefix + tag
		}
	}
	walk(reflect.ValueOf(&c).Elem(), "")
	for i := range keys {
		ptr := reflect.ValueOf(keys[i].field(&c)).Pointer()
		if got := paths[ptr]; got != keys[i].key {
			t.Errorf("key %s points at the field tagged %q", keys[i].key, got)
		}
		delete(paths, ptr)
	}
	for _, p := range paths {
		t.Errorf("field %s has no key", p)
	}
}

var update = flag.Bool("update", false, "rewrite REFERENCE.md")

func TestReference(t *testing.T) {
	got := Reference()
	if *update {
		if err := os.WriteFile("REFERENCE.md", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("REFERENCE.md is stale: run go test ./config -run TestReference -update")
	}
	for i := range keys {
		if !strings.Contains(got, "| `"+keys[i].key+"` |") {
			t.Errorf("reference lacks %s", keys[i].key)
		}
	}
}

// TestThresholdZeroWithSigner: threshold 0 is "signer only", valid once a
// signer can back a build on its own.
func TestThresholdZeroWithSigner(t *testing.T) {
	cfg := Defaults()
	cfg.Trust.Threshold = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("threshold 0 without any signer was accepted")
	}
	cfg.Trust.Signers = []string{strings.Repeat("ab", 32)}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("threshold 0 with a signer: %v", err)
	}
}

// TestPortageKeysAllSetNoWarning: with every portage.* key set (some to
// "", as FFLAGS often is) portage is not probed, so a root without any
// portage configuration does not warn "no portage configuration found";
// with one key unset it is probed and does.
func TestPortageKeysAllSetNoWarning(t *testing.T) {
	const all = "[portage]\npkgdir = \"/pkgs\"\nrepo = \"/repo\"\nchost = \"x86_64-pc-linux-gnu\"\n" +
		"cflags = \"-O2\"\ncxxflags = \"-O2\"\nfflags = \"\"\nfcflags = \"\"\nldflags = \"\"\narch = \"amd64\"\n"
	noConfig := func(ws []string) bool {
		return !slices.ContainsFunc(ws, func(w string) bool { return strings.Contains(w, "no portage configuration found") })
	}

	e := newFakeEnv(t)
	e.writeUserConfig(t, all)
	c, err := Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !noConfig(c.Warnings) {
		t.Errorf("every portage key set, yet warnings %q", c.Warnings)
	}
	for name, src := range c.Portage.Sources {
		if src != SourceConfig {
			t.Errorf("portage.%s: source %q, want %q", name, src, SourceConfig)
		}
	}
	if c.Portage.FFLAGS != "" || c.Portage.CHOST != "x86_64-pc-linux-gnu" {
		t.Errorf("portage settings changed: %+v", c.Portage)
	}

	e = newFakeEnv(t)
	e.writeUserConfig(t, strings.Replace(all, "arch = \"amd64\"\n", "", 1))
	c, err = Load(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if noConfig(c.Warnings) {
		t.Errorf("portage.arch unset and no portage configuration, yet warnings %q", c.Warnings)
	}
}
