package main

import (
	"regexp"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

// Which configuration flags each kind of command takes. Every config key
// with a flag belongs to the daemon; the client commands only need to find
// its socket.
var (
	clientFlags = []string{"config", "api-socket"}
	initFlags   = []string{"config", "state-dir", "pkgdir", "mode", "threshold", "mdns", "rendezvous"}
	setupFlags  = []string{"config", "api-socket", "state-dir", "gateway-listen"}
)

// flagPlaceholders names the value of each config flag in help
// ("--mode MODE"), and says how its text starts: choices read "one of …".
// The config docs (shared with README's reference) quote values with
// backquotes, which pflag would otherwise take as the placeholder.
var flagPlaceholders = map[string]struct{ name, lead string }{
	"config":         {"FILE", ""},
	"mode":           {"MODE", "one of "},
	"state-dir":      {"DIR", ""},
	"log-level":      {"LEVEL", "one of "},
	"log-format":     {"FORMAT", "one of "},
	"pkgdir":         {"DIR", ""},
	"portage-repo":   {"DIR", ""},
	"listen":         {"MULTIADDR", ""},
	"bootstrap":      {"MULTIADDR", ""},
	"dht-mode":       {"MODE", "one of "},
	"api-socket":     {"PATH", ""},
	"gateway-listen": {"HOST:PORT", ""},
	"metrics-listen": {"HOST:PORT", ""},
	"threshold":      {"N", ""},
	"cache-dir":      {"DIR", ""},
}

// addConfigFlags registers the named config flags on fs; no names: all of
// them (the daemon's).
func addConfigFlags(fs *pflag.FlagSet, names ...string) {
	all := pflag.NewFlagSet("config", pflag.ContinueOnError)
	config.AddFlags(all)
	if len(names) == 0 {
		all.VisitAll(func(f *pflag.Flag) { fs.AddFlag(f) })
		return
	}
	for _, n := range names {
		f := all.Lookup(n)
		if f == nil {
			panic("config has no flag --" + n) // a programming error
		}
		if n == "api-socket" {
			// On a client command the flag picks the daemon to talk to.
			f.Usage = "the daemon's socket; default: the configured one, `$XDG_RUNTIME_DIR/gentoo-p2pd.sock` or `<state_dir>/api.sock`, then the system service's " +
				api.SystemSocket + " [api.socket, " + config.EnvName("api.socket") + "]"
		}
		fs.AddFlag(f)
	}
}

// placeholderMark ends a placeholder that flagUsages removes again from
// the text: pflag prints a backquoted word both as the placeholder and in
// the text.
const placeholderMark = "\x00"

var placeholderInText = regexp.MustCompile(`[^\s\x00]*\x00`)

// flagUsages is pflag's FlagUsages with the placeholders of
// flagPlaceholders and the config docs' backquotes removed.
func flagUsages(fs *pflag.FlagSet) string {
	show := pflag.NewFlagSet("help", pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		c := *f
		if p, ok := flagPlaceholders[f.Name]; ok {
			c.Usage = "`" + p.name + "`" + placeholderMark + p.lead + strings.ReplaceAll(f.Usage, "`", "")
		}
		show.AddFlag(&c)
	})
	return placeholderInText.ReplaceAllString(show.FlagUsages(), "")
}

func init() {
	cobra.AddTemplateFuncs(template.FuncMap{"flagUsages": flagUsages})
}

// setUsageTemplate makes cmd's help print flags through flagUsages.
func setUsageTemplate(cmd *cobra.Command) {
	t := strings.NewReplacer(
		".LocalFlags.FlagUsages", "flagUsages .LocalFlags",
		".InheritedFlags.FlagUsages", "flagUsages .InheritedFlags",
	).Replace(cmd.UsageTemplate())
	cmd.SetUsageTemplate(t)
}
