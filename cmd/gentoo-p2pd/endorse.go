package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Build servers (a fleet's binhost, a distribution's builders) sign what
// they built with an Ed25519 key; users who list its public key in
// trust.signers install those builds at any threshold.

func newSignerCmd() *cobra.Command {
	signer := &cobra.Command{
		Use:   "signer",
		Short: "Build-server signing keys and endorsements",
		Example: `  gentoo-p2pd signer keygen /etc/gentoo-p2pd/signer.key
  gentoo-p2pd signer endorse --key /etc/gentoo-p2pd/signer.key /var/cache/binpkgs/app-misc/hello/*.gpkg.tar`,
	}
	keygen := &cobra.Command{
		Use:     "keygen FILE",
		Short:   "Create an Ed25519 signer key (mode 0600) and print its public key for trust.signers",
		Example: "  gentoo-p2pd signer keygen /etc/gentoo-p2pd/signer.key",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(f, hex.EncodeToString(priv.Seed()))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				// O_EXCL made the file ours: a partial key must not stay
				// behind to be used, or to block the next keygen.
				if rerr := os.Remove(args[0]); rerr != nil {
					return fmt.Errorf("%w (and removing the partial key file: %w)", err, rerr)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signer key written to %s\npublic key (for trust.signers): %s\n", args[0], hex.EncodeToString(pub))
			return nil
		},
	}
	var keyFile string
	var asJSON bool
	endorse := &cobra.Command{
		Use:     "endorse --key FILE BINPKG...",
		Short:   "Endorse the content of binpkgs this build server made, and publish the endorsements",
		Example: "  gentoo-p2pd signer endorse --key /etc/gentoo-p2pd/signer.key /var/cache/binpkgs/app-misc/hello/*.gpkg.tar",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			priv, err := readSignerKey(keyFile)
			if err != nil {
				return err
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var out []votes.Endorsement
			for _, path := range args {
				e, err := endorseFile(path, priv)
				if err != nil {
					return err
				}
				var res api.EndorseResult
				if err := c.Post(cmd.Context(), api.PathEndorse, api.EndorseRequest{Blob: e.Marshal()}, &res); err != nil {
					return err
				}
				out = append(out, e)
				if !asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: endorsed build %s content %s\n", path, e.BuildKey, e.Content)
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			return nil
		},
	}
	endorse.Flags().StringVar(&keyFile, "key", "", "signer key `FILE` from \"signer keygen\" (required)")
	endorse.Flags().BoolVar(&asJSON, "json", false, "print the endorsements as JSON")
	addConfigFlags(endorse.Flags(), clientFlags...)
	if err := endorse.MarkFlagRequired("key"); err != nil {
		panic(err) // only if the flag above is not defined: a programming error
	}
	signer.AddCommand(keygen, endorse)
	return signer
}

func readSignerKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New(path + ": not a signer key (want the hex seed `signer keygen` writes)")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// endorseFile reads a binpkg and signs its identities.
func endorseFile(path string, priv ed25519.PrivateKey) (votes.Endorsement, error) {
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		return votes.Endorsement{}, err
	}
	return votes.EndorsePackage(pkg, priv)
}
