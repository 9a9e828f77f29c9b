package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

func newPeersAddCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add MULTIADDR",
		Short: "Connect to a peer now and keep it as a known peer",
		Long: `Connect the running daemon to a peer now. The address must end in
/p2p/ID. The daemon remembers the peer (in known-peers.json in its state
dir) and dials it again after a restart, or whenever it has no peer left.`,
		Example: `  gentoo-p2pd peers add /ip4/192.0.2.7/tcp/4701/p2p/12D3KooW...
  gentoo-p2pd peers add /dns4/binhost.example.org/tcp/4701/p2p/12D3KooW...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var res api.PeersAddResult
			if err := c.Post(cmd.Context(), api.PathPeersAdd, api.PeersAddRequest{Addr: args[0]}, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "connected to %s\n", res.ID)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}
