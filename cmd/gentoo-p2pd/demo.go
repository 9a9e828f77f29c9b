package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var verbose, hold bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch a package travel between five daemons on loopback through the trust check",
		Long: `demo starts five real daemons in this process, on 127.0.0.1 only, with the
bundled portage-built packages: three peers built the same packages
independently, a fourth uploads a trojaned build, and the fifth serves
portage. It shows announce → attest → verdict → fetch through the gateway →
the Packages entry, and exits 0 when every step turned out as designed.`,
		Example: `  gentoo-p2pd demo
  gentoo-p2pd demo --hold     # then point emerge at the gateway it prints`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var log *slog.Logger
			if verbose {
				log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			return demo.Run(cmd.Context(), cmd.OutOrStdout(), demo.Options{Logger: log, Timeout: timeout, Hold: hold})
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show the daemons' logs on stderr")
	cmd.Flags().BoolVar(&hold, "hold", false, "keep the network running afterwards (point emerge at erin's gateway), until Ctrl-C")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up on a step after `DURATION`")
	return cmd
}
