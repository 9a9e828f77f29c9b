package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

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
peer delivered the build); 130 when interrupted (Ctrl-C); 1 for any other
failure.`,
		Example: `  gentoo-p2pd demo                          # watch five peers on loopback
  gentoo-p2pd init                          # config file and keys
  gentoo-p2pd daemon                        # join the network
  sudo gentoo-p2pd setup-portage --dry-run  # what portage would get
  gentoo-p2pd status`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	// The config flags go only where they mean something: all of them on
	// daemon, --config and --api-socket on the commands that talk to it.
	setUsageTemplate(root)
	root.SetVersionTemplate(versionLine() + "\n")
	root.AddCommand(
		newDaemonCmd(),
		newInitCmd(),
		newStatusCmd(),
		newPeersCmd(),
		newFindCmd(),
		newSearchCmd(),
		newAnnounceCmd(),
		newFetchCmd(),
		newCacheCmd(),
		newTrustCmd(),
		newSignerCmd(),
		newInspectCmd(),
		newSetupPortageCmd(),
		newDemoCmd(),
		newConfigCmd(),
		newVersionCmd(),
		newManCmd(),
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version, the Go version it was built with and the platform",
		Args:    cobra.NoArgs,
		Example: "  gentoo-p2pd version",
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return err
		},
	}
}

// versionLine is what `version` and --version print.
func versionLine() string {
	return fmt.Sprintf("gentoo-p2pd %s (%s, %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// loadConfig reads the configuration the way the daemon does. Client
// commands skip the portage probe: they only need the socket path.
func loadConfig(cmd *cobra.Command, probePortage bool) (*config.Config, error) {
	return config.Load(config.LoadOptions{Flags: cmd.Flags(), SkipPortageProbe: !probePortage})
}

// systemSocket is the system service's socket (a variable for tests).
var systemSocket = api.SystemSocket

// client returns an API client for the first daemon that answers: on the
// configured socket (your own daemon), else on the system service's.
func client(cmd *cobra.Command) (*api.Client, error) {
	cfg, err := loadConfig(cmd, false)
	if err != nil {
		return nil, err
	}
	paths := []string{cfg.API.Socket}
	if !explicitSocket(cmd) {
		paths = append(paths, systemSocket)
	}
	socket, err := api.FindSocket(cmd.Context(), paths)
	if err != nil {
		return nil, err
	}
	return api.NewClient(socket), nil
}

// explicitSocket reports whether the user named the socket (--api-socket
// or the environment): then no other daemon is tried.
func explicitSocket(cmd *cobra.Command) bool {
	if f := cmd.Flags().Lookup("api-socket"); f != nil && f.Changed {
		return true
	}
	return os.Getenv(config.EnvName("api.socket")) != ""
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
