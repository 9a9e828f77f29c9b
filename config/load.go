package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// LoadOptions says where Load looks. The zero value loads the real
// configuration of the current user; tests override every path and the
// environment so that nothing outside t.TempDir is read.
type LoadOptions struct {
	// ConfigFile is an explicit config file; it must exist. "" searches
	// $XDG_CONFIG_HOME/gentoo-p2pd/config.toml, then
	// <Root>/etc/gentoo-p2pd/config.toml, and uses the first that exists
	// (none is fine). A changed --config flag in Flags is used when
	// ConfigFile is "".
	ConfigFile string
	// Flags are the parsed command-line flags, as registered by AddFlags.
	// Only flags the user actually set override other sources.
	Flags *pflag.FlagSet
	// Environ is the environment as "KEY=value" strings; nil means
	// os.Environ(). It supplies GENTOO_P2PD_* overrides and HOME/XDG_*.
	Environ []string
	// Home, XDGConfigHome, XDGStateHome and XDGRuntimeDir override the
	// corresponding environment variables when not empty.
	Home, XDGConfigHome, XDGStateHome, XDGRuntimeDir string
	// Root prefixes every system path (/etc/gentoo-p2pd, /etc/portage, …);
	// "" is the real root.
	Root string
	// SkipPortageProbe leaves portage keys the user did not set empty
	// instead of asking portage (PKGDIR and the repo still get portage's
	// defaults).
	SkipPortageProbe bool
	// Portageq is the portageq command to run; "" finds "portageq" in PATH.
	// Set DisablePortageq to go straight to make.conf.
	Portageq        string
	DisablePortageq bool
}

// maxConfigFile bounds the config file we read: it is small by nature, and
// a huge file is a mistake (or /dev/zero).
const maxConfigFile = 1 << 20

// Load builds the configuration from flags > environment > config file >
// defaults, fills portage settings the user did not set from portage, and
// validates the result. Every error names the key, file or variable at
// fault.
func Load(opts LoadOptions) (*Config, error) {
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	env := envMap(environ)
	d := resolveDirs(opts, env)
	def := baseDefaults(d) // keys derived from state_dir stay "" until it is final

	v := viper.New()
	for i := range keys {
		k := &keys[i]
		v.SetDefault(k.key, rawDefault(k, def))
	}

	cfgFile, err := findConfigFile(opts, d)
	if err != nil {
		return nil, err
	}
	if cfgFile != "" {
		if err := readConfigFile(v, cfgFile); err != nil {
			return nil, err
		}
	}

	envSettings := map[string]any{}
	envSet := map[string]string{}
	for i := range keys {
		k := &keys[i]
		name := EnvName(k.key)
		val, ok := env[name]
		if !ok {
			continue
		}
		if k.kind == kindOverrides {
			return nil, invalid("config: %s: %s can only be set in the config file", name, k.key)
		}
		setNested(envSettings, k.key, val)
		envSet[k.key] = name
	}
	if err := checkEnvNames(env); err != nil {
		return nil, err
	}
	if len(envSettings) > 0 {
		if err := v.MergeConfigMap(envSettings); err != nil {
			return nil, fmt.Errorf("config: environment: %w", err)
		}
	}

	flagSet := map[string]string{}
	if opts.Flags != nil {
		for i := range keys {
			k := &keys[i]
			if k.flag == "" {
				continue
			}
			f := opts.Flags.Lookup(k.flag)
			if f == nil {
				continue
			}
			if err := v.BindPFlag(k.key, f); err != nil {
				return nil, fmt.Errorf("config: flag --%s: %w", k.flag, err)
			}
			if f.Changed {
				flagSet[k.key] = "--" + k.flag
			}
		}
	}

	source := func(key string) string {
		switch {
		case flagSet[key] != "":
			return "flag " + flagSet[key]
		case envSet[key] != "":
			return "environment " + envSet[key]
		case cfgFile != "" && v.InConfig(key):
			return cfgFile
		default:
			return "default"
		}
	}

	c := &Config{File: cfgFile}
	for i := range keys {
		k := &keys[i]
		if err := decodeInto(k, v.Get(k.key), k.field(c)); err != nil {
			return nil, fmt.Errorf("config: %s: %w (from %s)", k.key, err, source(k.key))
		}
	}
	derived := map[string]bool{"api.socket": c.API.Socket == "", "cache.dir": c.Cache.Dir == ""}
	c.fillDerived(d)
	c.recordSources(flagSet, envSet, v.InConfig, cfgFile, derived)

	explicit := func(key string) bool { return source(key) != "default" }
	if err := c.fillPortage(opts, explicit); err != nil {
		return nil, err
	}
	c.recordPortageSources()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// fillPortage fills portage keys the user left unset from portage itself
// and records where each value came from. A key the user set (explicit
// says so for "portage.<name>"), even to "", is kept as it is: portage is
// probed, and can warn, only when some key is actually missing.
func (c *Config) fillPortage(opts LoadOptions, explicit func(key string) bool) error {
	p := &c.Portage
	p.Sources = map[string]string{}
	fields := portageFields(p)
	missing := false
	for name, f := range fields {
		if *f != "" || explicit("portage."+name) {
			p.Sources[name] = SourceConfig
		} else {
			missing = true
		}
	}
	if missing && !opts.SkipPortageProbe {
		ctx, cancel := context.WithTimeout(context.Background(), portageqTimeout+time.Second)
		defer cancel()
		ps, err := ProbePortage(ctx, ProbeOptions{Root: opts.Root, Portageq: opts.Portageq, DisablePortageq: opts.DisablePortageq})
		if err != nil {
			return fmt.Errorf("config: reading portage settings (set the portage.* keys to skip this): %w", err)
		}
		c.Warnings = append(c.Warnings, ps.Warnings...)
		probed := portageFields(&ps.Settings)
		for name, f := range fields {
			if *f == "" && *probed[name] != "" {
				*f = *probed[name]
				p.Sources[name] = ps.Sources[name]
			}
		}
	}
	if p.PkgDir == "" {
		p.PkgDir, p.Sources["pkgdir"] = filepath.Join(opts.Root, DefaultPKGDIR), SourceDefault
	}
	if p.Repo == "" {
		p.Repo, p.Sources["repo"] = filepath.Join(opts.Root, DefaultRepo), SourceDefault
	}
	for name := range fields {
		if p.Sources[name] == "" {
			p.Sources[name] = SourceUnset
		}
	}
	return nil
}

// portageFields maps Sources names to the fields of p.
func portageFields(p *PortageConfig) map[string]*string {
	return map[string]*string{
		"pkgdir": &p.PkgDir, "repo": &p.Repo, "chost": &p.CHOST,
		"cflags": &p.CFLAGS, "cxxflags": &p.CXXFLAGS, "fflags": &p.FFLAGS,
		"fcflags": &p.FCFLAGS, "ldflags": &p.LDFLAGS, "arch": &p.ARCH,
	}
}

// NonKeyEnv are the GENTOO_P2PD_* variables that are not config keys but
// that the project's own scripts read, so Load accepts them: the portage
// hook's GENTOO_P2PD_COMMAND, the OpenRC service's conf.d settings, and
// the variables some tests take.
var NonKeyEnv = []string{
	"GENTOO_P2PD_COMMAND",
	"GENTOO_P2PD_GROUP", "GENTOO_P2PD_LOG", "GENTOO_P2PD_OPTS", "GENTOO_P2PD_RUN_DIR", "GENTOO_P2PD_USER",
	"GENTOO_P2PD_PORTAGE_HARNESS", "GENTOO_P2PD_PORTAGE_LIB", "GENTOO_P2PD_TEST_LOG",
}

// checkEnvNames fails on a GENTOO_P2PD_* variable that names no config key
// (and is not in NonKeyEnv), as the config file fails on an unknown key: a
// misspelt variable would otherwise be silently ignored.
func checkEnvNames(env map[string]string) error {
	var unknown []string
	for name := range env {
		if strings.HasPrefix(name, envPrefix) && !isKeyEnv(name) && !slices.Contains(NonKeyEnv, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	msgs := make([]string, len(unknown))
	for i, name := range unknown {
		msgs[i] = name
		if s := suggestEnv(name); s != "" {
			msgs[i] += fmt.Sprintf(" (did you mean %s?)", s)
		}
	}
	return fmt.Errorf("config: environment: %w %s: not a config key (unset it, or see the configuration reference)", ErrUnknownKey, strings.Join(msgs, ", "))
}

// suggestEnv returns the key variable closest to name, if within 3 edits
// of either its whole name or its prefix plus the key's last part (so
// GENTOO_P2PD_TRESHOLD finds GENTOO_P2PD_TRUST_THRESHOLD).
func suggestEnv(name string) string {
	best, bestD := "", 4
	for i := range keys {
		full := EnvName(keys[i].key)
		last := keys[i].key[strings.LastIndexByte(keys[i].key, '.')+1:]
		d := min(editDistance(name, full), editDistance(name, EnvName(last)))
		if d < bestD {
			best, bestD = full, d
		}
	}
	return best
}

func isKeyEnv(name string) bool {
	for i := range keys {
		if EnvName(keys[i].key) == name {
			return true
		}
	}
	return false
}

// resolveDirs applies the XDG base directory rules: a variable that is unset,
// empty or relative is ignored in favour of the $HOME-based default.
func resolveDirs(opts LoadOptions, env map[string]string) (d dirs) {
	pick := func(override, envName, fallback string) string {
		if override != "" {
			return override
		}
		if v := env[envName]; filepath.IsAbs(v) {
			return v
		}
		return fallback
	}
	d.home = pick(opts.Home, "HOME", "")
	if d.home == "" {
		// Init systems may start the daemon without $HOME; the passwd
		// entry still knows it.
		if u, err := user.Current(); err == nil && filepath.IsAbs(u.HomeDir) {
			d.home = u.HomeDir
		}
	}
	var cfg, state string
	if d.home != "" {
		cfg = filepath.Join(d.home, ".config")
		state = filepath.Join(d.home, ".local", "state")
	}
	d.configHome = pick(opts.XDGConfigHome, "XDG_CONFIG_HOME", cfg)
	d.stateHome = pick(opts.XDGStateHome, "XDG_STATE_HOME", state)
	d.runtimeDir = pick(opts.XDGRuntimeDir, "XDG_RUNTIME_DIR", "")
	return d
}

func findConfigFile(opts LoadOptions, d dirs) (string, error) {
	explicit := opts.ConfigFile
	if explicit == "" && opts.Flags != nil {
		if f := opts.Flags.Lookup("config"); f != nil && f.Changed {
			explicit = f.Value.String()
		}
	}
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("config: %w: %w", ErrConfigFile, err)
		}
		return explicit, nil
	}
	var candidates []string
	if d.configHome != "" {
		candidates = append(candidates, filepath.Join(d.configHome, "gentoo-p2pd", "config.toml"))
	}
	candidates = append(candidates, filepath.Join(opts.Root, "/etc/gentoo-p2pd/config.toml"))
	for _, p := range candidates {
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("config: %w: %w", ErrConfigFile, err)
		}
	}
	return "", nil
}

// readConfigFile loads path into v after checking that it only sets known
// keys.
func readConfigFile(v *viper.Viper, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w: %w", ErrConfigFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return fmt.Errorf("config: %w: %s: %w", ErrConfigFile, path, err)
	}
	if len(data) > maxConfigFile {
		return fmt.Errorf("config: %w: %s: larger than %d bytes", ErrConfigFile, path, maxConfigFile)
	}
	// go-toml (viper's own parser) first: viper's error drops the line.
	var syntax map[string]any
	if err := toml.Unmarshal(data, &syntax); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("config: %w: %s:%d:%d: %s\n%s", ErrConfigFile, path, row, col, de.Error(), de.String())
		}
		return fmt.Errorf("config: %w: %s: %w", ErrConfigFile, path, err)
	}
	fv := viper.New()
	fv.SetConfigType("toml")
	if err := fv.ReadConfig(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("config: %w: %s: %w", ErrConfigFile, path, err)
	}
	var unknown []string
	for _, k := range fv.AllKeys() {
		if _, ok := keyIndex[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		msgs := make([]string, len(unknown))
		for i, k := range unknown {
			msgs[i] = strconv.Quote(k)
			if strings.HasPrefix(k, "trust.overrides.") {
				msgs[i] += " (overrides are a list: write [[trust.overrides]], with two brackets)"
			} else if s := suggestKey(k); s != "" {
				msgs[i] += fmt.Sprintf(" (did you mean %q?)", s)
			}
		}
		return fmt.Errorf("config: %s: %w %s", path, ErrUnknownKey, strings.Join(msgs, ", "))
	}
	v.SetConfigType("toml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("config: %w: %s: %w", ErrConfigFile, path, err)
	}
	return nil
}

// suggestKey returns the known key closest to a misspelt one, or "".
func suggestKey(k string) string {
	best, bestD := "", 4
	for i := range keys {
		if d := editDistance(k, keys[i].key); d < bestD {
			best, bestD = keys[i].key, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// setNested stores val at the dotted key in a nested map, as viper's config
// layer expects.
func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
}

// rawDefault is the default of k in the form a TOML file would hold it.
func rawDefault(k *keySpec, def *Config) any {
	switch p := k.field(def).(type) {
	case *string:
		return *p
	case *bool:
		return *p
	case *int:
		return *p
	case *int64:
		return *p
	case *time.Duration:
		return *p
	case *[]string:
		return slices.Clone(*p)
	case *[]TrustOverride:
		return []any{}
	default:
		panic(fmt.Sprintf("config: key %s: unhandled field type %T", k.key, p))
	}
}
