package main

import (
	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/daemon"
)

func newDaemonCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Run the daemon (what the systemd unit and the OpenRC script start)",
		Long: `daemon joins the gentoo-p2p network: it indexes PKGDIR, attests and
announces your builds, collects other peers' attestations, and serves the
trusted ones to portage on the loopback binhost gateway. It runs until
SIGINT or SIGTERM. With no config at all it starts on built-in defaults.`,
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
}
