package config

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
)

// AddFlags registers the daemon's command-line flags on fs. Each flag sets
// one config key and is named after it (see flagKeys); only flags the user
// actually passes override the environment and the config file. --config
// (-c) names the config file.
func AddFlags(fs *pflag.FlagSet) {
	def := defaultsFor(dirs{})
	fs.StringP("config", "c", "", "config file (default: $XDG_CONFIG_HOME/gentoo-p2pd/config.toml, then /etc/gentoo-p2pd/config.toml)")
	for i := range keys {
		k := &keys[i]
		if k.flag == "" {
			continue
		}
		usage := fmt.Sprintf("%s [%s, %s]", k.doc, k.key, EnvName(k.key))
		switch p := k.field(def).(type) {
		case *string:
			d := *p
			if k.def != "" {
				d = ""
			}
			fs.String(k.flag, d, usage)
		case *bool:
			fs.Bool(k.flag, *p, usage)
		case *int:
			fs.Int(k.flag, *p, usage)
		case *[]string:
			fs.StringSlice(k.flag, nil, usage+" (repeat or comma-separate; default "+strconv.Quote(fmt.Sprint(*p))+")")
		default:
			panic(fmt.Sprintf("config: flag --%s: unhandled type %T", k.flag, p))
		}
	}
}
