package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/daemon"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
)

func newSetupPortageCmd() *cobra.Command {
	var o portagehook.SetupOptions
	var keyFile string
	cmd := &cobra.Command{
		Use:   "setup-portage",
		Short: "Connect portage to the gateway: binrepos.conf, keyring, bashrc hook (run as root)",
		Long: `setup-portage writes /etc/portage/binrepos.conf/gentoo-p2pd.conf with
verify-signature = true, imports the daemon's OpenPGP signing key into
portage's keyring (/etc/portage/gnupg) with the trust portage requires, and
installs the FEATURES="binary_sharing" hook into /etc/portage/bashrc. It is
idempotent; --undo removes exactly what it added; --dry-run shows every
change and writes nothing.

The gateway URL and key come from the running daemon (under sudo, the
invoking user's daemon is found through SUDO_UID), or from --key and the
configured gateway address.

The daemon is looked for on --api-socket alone when given; otherwise, under
sudo, on /run/user/$SUDO_UID/gentoo-p2pd.sock, then the system service's
/run/gentoo-p2pd/api.sock, then root's own socket.`,
		Example: `  sudo gentoo-p2pd setup-portage --dry-run
  sudo gentoo-p2pd setup-portage
  sudo gentoo-p2pd setup-portage --undo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Out = cmd.OutOrStdout()
			if o.Root == "" {
				o.Root = "/"
			}
			if !o.Undo {
				info, socket, err := gatewayInfo(cmd, keyFile)
				if err != nil {
					return err
				}
				o.GatewayURL, o.PublicKeyArmored, o.Socket = info.URL, []byte(info.PublicKey), socket
			}
			if !o.DryRun && os.Geteuid() != 0 && o.Root == "/" {
				return errors.New("setup-portage changes /etc/portage: run it as root (try --dry-run first)")
			}
			return portagehook.SetupPortage(o)
		},
	}
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "print every change, write nothing")
	cmd.Flags().BoolVar(&o.Undo, "undo", false, "remove what setup-portage added")
	cmd.Flags().StringVar(&o.Root, "root", "/", "system root `DIR` to configure (for images and tests)")
	cmd.Flags().StringVar(&keyFile, "key", "", "armored public key `FILE` instead of asking the daemon")
	addConfigFlags(cmd.Flags(), setupFlags...)
	return cmd
}

// gatewayInfo asks the running daemon, falling back to the state dir. It
// also returns the daemon's socket, for the bashrc hook.
func gatewayInfo(cmd *cobra.Command, keyFile string) (api.GatewayInfo, string, error) {
	cfg, err := loadConfig(cmd, false)
	if err != nil {
		return api.GatewayInfo{}, "", err
	}
	if keyFile != "" {
		pub, err := os.ReadFile(keyFile)
		if err != nil {
			return api.GatewayInfo{}, "", err
		}
		return api.GatewayInfo{URL: "http://" + cfg.Gateway.Listen + cfg.Gateway.Path, PublicKey: string(pub)}, cfg.API.Socket, nil
	}
	paths := setupSockets(cmd, cfg.API.Socket)
	socket := paths[0]
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	var info api.GatewayInfo
	found, err := api.FindSocket(ctx, paths)
	if err == nil {
		socket = found
		err = api.NewClient(socket).Get(ctx, api.PathGateway, nil, &info)
	}
	if err == nil {
		return info, socket, nil
	}
	if !errors.Is(err, api.ErrNotRunning) {
		return info, "", err
	}
	// No daemon: use the key in the state dir (created by `init`). Only
	// load it: creating one here would leave a key (and state dir) the
	// daemon's user never made, e.g. root's on a sudo run or on --dry-run.
	key, kerr := portagehook.LoadSigningKey(filepath.Join(cfg.StateDir, daemon.SigningKeyFile))
	if kerr != nil {
		return info, "", fmt.Errorf("%w; and no signing key in %s: %w (run `gentoo-p2pd init` as the daemon's user, or pass --key)", err, cfg.StateDir, kerr)
	}
	pub, perr := portagehook.ExportPublic(key)
	if perr != nil {
		return info, "", perr
	}
	return api.GatewayInfo{URL: "http://" + cfg.Gateway.Listen + strings.TrimSuffix(cfg.Gateway.Path, "/"), PublicKey: string(pub)}, socket, nil
}

// setupSockets lists the sockets setup-portage asks, in order: the one
// named by --api-socket or the environment alone; under sudo the invoking
// user's daemon (/run/user/$SUDO_UID), then the system service's, then
// root's own; else the configured one, then the system service's.
func setupSockets(cmd *cobra.Command, configured string) []string {
	if explicitSocket(cmd) {
		return []string{configured}
	}
	if uid := os.Getenv("SUDO_UID"); uid != "" {
		return []string{filepath.Join("/run/user", uid, "gentoo-p2pd.sock"), systemSocket, configured}
	}
	return []string{configured, systemSocket}
}

func newInitCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a config file and the daemon's identity and signing keys",
		Long: `init writes a starting config file (unless one exists; --force rewrites
it) with the values in effect now, so flags given here end up in it, and
creates the daemon's peer identity and gateway signing key in the state dir.`,
		Example: `  gentoo-p2pd init
  gentoo-p2pd init --mode consume --threshold 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, true)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			path := cfg.File
			if path == "" {
				dir := os.Getenv("XDG_CONFIG_HOME")
				if dir == "" {
					home, _ := os.UserHomeDir()
					dir = filepath.Join(home, ".config")
				}
				path = filepath.Join(dir, "gentoo-p2pd", "config.toml")
			}
			if _, err := os.Stat(path); err == nil && !force {
				fmt.Fprintf(w, "config      %s (exists; --force rewrites it)\n", path)
			} else {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(path, []byte(initialConfig(cfg)), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(w, "config      %s (written)\n", path)
			}
			if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
				return err
			}
			key, err := p2p.LoadOrCreateKey(filepath.Join(cfg.StateDir, daemon.IdentityKeyFile))
			if err != nil {
				return err
			}
			id, err := peerID(key)
			if err != nil {
				return err
			}
			sk, err := daemon.SigningKey(cfg.StateDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "state dir   %s\npeer id     %s\ngateway key %s\n", cfg.StateDir, id, portagehook.Fingerprint(sk))
			fmt.Fprintf(w, "PKGDIR      %s (from %s)\n", cfg.Portage.PkgDir, cfg.Portage.Sources["pkgdir"])
			fmt.Fprintln(w, "\nnext: systemctl --user enable --now gentoo-p2pd   (or: gentoo-p2pd daemon)")
			fmt.Fprintln(w, "      sudo gentoo-p2pd setup-portage --dry-run")
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "rewrite an existing config file")
	addConfigFlags(cmd.Flags(), initFlags...)
	return cmd
}

// initialConfig is a starting config: the keys people change, commented,
// with the values in effect now.
func initialConfig(cfg *config.Config) string {
	return fmt.Sprintf(`# gentoo-p2pd configuration. Every key: README.md "Configuration".
# Values here override built-in defaults; flags and GENTOO_P2PD_* override these.

# consume (fetch only), share (serve your own builds), mirror (also keep and
# serve trusted builds of others, up to cache.disk_budget).
mode = %q

[trust]
# Distinct peers that must attest the same content before portage sees it.
threshold = %d
# Votes for a competing content that make a dispute (nothing is installed).
dispute = %d
# Build-server Ed25519 public keys (hex or base64) whose endorsement suffices.
signers = []
# Peers you trust like a signer (your own build host), and peers to ignore.
trusted_peers = []
blocked_peers = []

[network]
# Peers to join through: "/ip4/192.0.2.10/tcp/4701/p2p/12D3KooW…".
bootstrap = []
# Find peers on the local network without bootstrap servers.
mdns = %t
# Find peers over the internet without bootstrap servers: advertise and look
# up gentoo-p2pd's namespace on the public libp2p (IPFS) DHT, as a client.
rendezvous = %t

[cache]
disk_budget = %q
`, cfg.Mode, cfg.Trust.Threshold, cfg.Trust.Dispute, cfg.Network.MDNS, cfg.Network.Rendezvous, config.FormatSize(cfg.Cache.DiskBudget))
}
