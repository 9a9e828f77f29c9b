package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

// version is set at link time by the ebuild and `make` (-X main.version=…).
var version = "0.1.0-dev"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "gentoo-p2pd",
		Short: "Share Gentoo binary packages peer to peer, trusted by independent reproducers",
		Long: `gentoo-p2pd shares the binary packages portage builds with other Gentoo
users, and lets portage install a peer's build only when enough independent
peers attest the same content.

Start with "gentoo-p2pd demo" to watch a package travel between five peers on
loopback, or "gentoo-p2pd daemon" to join the network.

Exit status: 0 on success; 3 when nothing matches (the daemon's not_found);
4 when the trust policy does not allow the build (not_allowed); 5 when no
daemon answers or it cannot do it now (unavailable: gateway disabled, no
peer delivered the build); 1 for any other failure.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	// Every config key with a flag is accepted by every subcommand, so
	// `status --api-socket X` reaches a daemon started with the same flag.
	config.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newDaemonCmd(),
		newInitCmd(),
		newStatusCmd(),
		newPeersCmd(),
		newFindCmd(),
		newAnnounceCmd(),
		newFetchCmd(),
		newTrustCmd(),
		newSignerCmd(),
		newInspectCmd(),
		newSetupPortageCmd(),
		newDemoCmd(),
		newManCmd(),
	)
	return root
}

// loadConfig reads the configuration the way the daemon does. Client
// commands skip the portage probe: they only need the socket path.
func loadConfig(cmd *cobra.Command, probePortage bool) (*config.Config, error) {
	return config.Load(config.LoadOptions{Flags: cmd.Flags(), SkipPortageProbe: !probePortage})
}

// client returns an API client for the configured daemon socket.
func client(cmd *cobra.Command) (*api.Client, error) {
	cfg, err := loadConfig(cmd, false)
	if err != nil {
		return nil, err
	}
	return api.NewClient(cfg.API.Socket), nil
}

// newLogger builds the slog handler: JSON or text to stderr. Under systemd
// (JOURNAL_STREAM set) the time is left out because journald stamps every
// line itself.
func newLogger(cfg *config.Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" && !term.IsTerminal(int(os.Stderr.Fd())) {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// printJSON writes v the way every --json flag does: indented, one document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
