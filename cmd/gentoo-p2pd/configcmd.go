package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the configuration the daemon would run with",
		Example: `  gentoo-p2pd config show
  gentoo-p2pd config show --config FILE --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	setUsageTemplate(cmd)
	cmd.AddCommand(newConfigShowCmd())
	return cmd
}

func newConfigShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print every config key's effective value and where it came from",
		Long: `show loads the configuration as "gentoo-p2pd daemon" would, without a
running daemon, and prints every key with its effective value and its source:
"default" (built in; "default derived" when computed from state_dir or
XDG_RUNTIME_DIR), "file PATH", "environment GENTOO_P2PD_…", or, for the
portage.* keys nobody set, "portage portageq|make.conf|profile|repos.conf"
(portage's own default: "portage default"; nothing found: "portage unset").

It reads the config file (--config FILE, else the first that exists of
$XDG_CONFIG_HOME/gentoo-p2pd/config.toml and /etc/gentoo-p2pd/config.toml)
and the GENTOO_P2PD_* environment. The daemon's other flags are not taken:
a value given as a flag of "gentoo-p2pd daemon" overrides what this shows.
Loading warnings (portageq failing, …) go to stderr.`,
		Example: `  gentoo-p2pd config show
  gentoo-p2pd config show --config /etc/gentoo-p2pd/config.toml
  GENTOO_P2PD_MODE=mirror gentoo-p2pd config show
  gentoo-p2pd config show --json | jq '.[] | select(.source.kind != "default")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, true)
			if err != nil {
				return err
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			settings := cfg.Settings()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), settings)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
			for _, s := range settings {
				v := s.Value
				if v == "" {
					v = `""`
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Key, v, s.Source)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of {key, value, raw, source: {kind, detail}}")
	addConfigFlags(cmd.Flags(), "config")
	return cmd
}
