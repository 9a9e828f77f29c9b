package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SourceKind is the kind of place a key's effective value came from.
type SourceKind string

// The kinds of Source, in the order Load applies them (later wins), with
// portage last: it only fills portage.* keys nobody set.
const (
	KindDefault SourceKind = "default"     // built in (Detail is empty, or "derived" for values computed from other keys)
	KindFile    SourceKind = "file"        // the config file (Detail is its path)
	KindEnv     SourceKind = "environment" // Detail is the variable's name
	KindFlag    SourceKind = "flag"        // Detail is the flag, "--pkgdir"
	KindPortage SourceKind = "portage"     // probed (Detail: portageq, make.conf, profile, repos.conf, default, unset)
)

// Source says where the effective value of one key came from.
type Source struct {
	Kind   SourceKind `json:"kind"`
	Detail string     `json:"detail,omitempty"`
}

// String is the source as one short phrase: "default", "file
// /etc/gentoo-p2pd/config.toml", "environment GENTOO_P2PD_MODE", "flag
// --mode", "portage make.conf".
func (s Source) String() string {
	if s.Detail == "" {
		return string(s.Kind)
	}
	return string(s.Kind) + " " + s.Detail
}

// Setting is one key's effective value and where it came from, as
// `gentoo-p2pd config show` prints it.
type Setting struct {
	Key string `json:"key"`
	// Value is the value as the config file would spell it (sizes as
	// "10GiB", durations as "22h", lists as TOML arrays); Raw is the
	// decoded value for machines.
	Value  string `json:"value"`
	Raw    any    `json:"raw"`
	Source Source `json:"source"`
}

// Settings lists every key in reference order with its effective value
// and source. Sources are known for a Config returned by Load; for any
// other Config (Defaults) every key reports KindDefault.
func (c *Config) Settings() []Setting {
	out := make([]Setting, 0, len(keys))
	for i := range keys {
		k := &keys[i]
		src, ok := c.Sources[k.key]
		if !ok {
			src = Source{Kind: KindDefault}
		}
		out = append(out, Setting{Key: k.key, Value: renderValue(k, c), Raw: rawValue(k, c), Source: src})
	}
	return out
}

// recordSources fills c.Sources once Load has decoded every key: source
// names the user-set layers ("flag --x", "environment X", the file path or
// "default"); derived keys left at "default" whose value Load computed say
// so; portage keys take Portage.Sources.
func (c *Config) recordSources(flagSet, envSet map[string]string, inFile func(string) bool, cfgFile string, derived map[string]bool) {
	c.Sources = make(map[string]Source, len(keys))
	for i := range keys {
		key := keys[i].key
		var s Source
		switch {
		case flagSet[key] != "":
			s = Source{Kind: KindFlag, Detail: flagSet[key]}
		case envSet[key] != "":
			s = Source{Kind: KindEnv, Detail: envSet[key]}
		case cfgFile != "" && inFile(key):
			s = Source{Kind: KindFile, Detail: cfgFile}
		case derived[key]:
			s = Source{Kind: KindDefault, Detail: "derived"}
		default:
			s = Source{Kind: KindDefault}
		}
		c.Sources[key] = s
	}
}

// recordPortageSources replaces the source of every portage.* key the user
// did not set with what the probe (or portage's defaults) supplied.
func (c *Config) recordPortageSources() {
	for name, src := range c.Portage.Sources {
		key := "portage." + name
		if src == SourceConfig {
			continue
		}
		if cur, ok := c.Sources[key]; ok && cur.Kind != KindDefault {
			continue
		}
		c.Sources[key] = Source{Kind: KindPortage, Detail: src}
	}
}

// renderValue spells k's value in c as the config file would.
func renderValue(k *keySpec, c *Config) string {
	switch p := k.field(c).(type) {
	case *string:
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		if *p == 0 {
			return "0"
		}
		s := FormatSize(*p)
		if k.kind == kindRate {
			s += "/s"
		}
		return s
	case *time.Duration:
		return formatDuration(*p)
	case *[]string:
		q := make([]string, len(*p))
		for i, s := range *p {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case *[]TrustOverride:
		parts := make([]string, len(*p))
		for i, o := range *p {
			parts[i] = fmt.Sprintf("{glob = %q", o.Glob)
			if o.Threshold != nil {
				parts[i] += fmt.Sprintf(", threshold = %d", *o.Threshold)
			}
			if o.Dispute != nil {
				parts[i] += fmt.Sprintf(", dispute = %d", *o.Dispute)
			}
			if o.RequireSigner != nil {
				parts[i] += fmt.Sprintf(", require_signer = %t", *o.RequireSigner)
			}
			parts[i] += "}"
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return fmt.Sprint(p)
	}
}

// rawValue is k's decoded value in c.
func rawValue(k *keySpec, c *Config) any {
	switch p := k.field(c).(type) {
	case *string:
		return *p
	case *bool:
		return *p
	case *int:
		return *p
	case *int64:
		return *p
	case *time.Duration:
		return formatDuration(*p)
	case *[]string:
		if *p == nil {
			return []string{}
		}
		return *p
	case *[]TrustOverride:
		out := make([]map[string]any, len(*p))
		for i, o := range *p {
			m := map[string]any{"glob": o.Glob}
			if o.Threshold != nil {
				m["threshold"] = *o.Threshold
			}
			if o.Dispute != nil {
				m["dispute"] = *o.Dispute
			}
			if o.RequireSigner != nil {
				m["require_signer"] = *o.RequireSigner
			}
			out[i] = m
		}
		return out
	default:
		return fmt.Sprint(p)
	}
}
