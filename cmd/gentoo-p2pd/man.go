package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCmd writes one man page per command (gentoo-p2pd.1,
// gentoo-p2pd-daemon.1, ...) into DIR. It is hidden: `make install` and
// the ebuild call it on the built binary, users read the result with man.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "man DIR",
		Short:   "Write the man pages (section 1) into DIR",
		Hidden:  true,
		Example: "  gentoo-p2pd man build/man",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{
				Title:   "GENTOO-P2PD",
				Section: "1",
				Source:  "gentoo-p2pd " + version,
				Manual:  "gentoo-p2pd manual",
			}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("writing man pages to %s: %w", dir, err)
			}
			return nil
		},
	}
}
