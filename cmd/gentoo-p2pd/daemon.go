package main

import (
	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/daemon"
)

func newDaemonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the daemon (what the systemd unit and the OpenRC script start)",
		Long: `daemon joins the gentoo-p2p network: it indexes PKGDIR, attests and
announces your builds, collects other peers' attestations, and serves the
trusted ones to portage on the loopback binhost gateway. It runs until
SIGINT or SIGTERM. With no config at all it starts on built-in defaults.

Every flag below is also a config key (in brackets, with its environment
variable); a flag overrides the environment, which overrides the config
file.`,
		Example: `  gentoo-p2pd daemon
  gentoo-p2pd daemon --mode consume --log-level debug
  gentoo-p2pd daemon --bootstrap /ip4/192.0.2.10/tcp/4701/p2p/12D3KooW... --dht-mode server`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, true)
			if err != nil {
				return err
			}
			log := newLogger(cfg)
			daemon.Version = version
			d, err := daemon.New(daemon.Options{Config: cfg, Logger: log})
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	addConfigFlags(cmd.Flags())
	return cmd
}
