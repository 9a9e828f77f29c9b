package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Inspection is what `inspect --json` prints per file (in an array): the identities peers
// vote on, and the metadata fields a user checks against portage's index.
type Inspection struct {
	Path           string       `json:"path"`
	Format         string       `json:"format"`
	Compression    string       `json:"compression"`
	CPV            string       `json:"cpv"`
	BuildID        *int64       `json:"build_id"`
	Slot           string       `json:"slot"`
	USE            []string     `json:"use"`
	Keys           []string     `json:"keys"`
	ImageDigest    string       `json:"image_digest"`
	MetadataDigest string       `json:"metadata_digest"`
	BuildKey       keys.Build   `json:"build_key"`
	VariantKey     keys.Variant `json:"variant_key"`
	Platform       string       `json:"platform"`
	FileSHA256     string       `json:"file_sha256"`
	Size           int64        `json:"size"`
	ImageEntries   int          `json:"image_entries"`
	Signed         bool         `json:"signed"`
}

// inspectFile reads one binpkg and computes every identity of it.
func inspectFile(path string, lim xpak.Limits) (*Inspection, error) {
	pkg, err := xpak.ReadFile(path, lim)
	if err != nil {
		return nil, err
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: metadata digest: %w", path, err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: build descriptor: %w", path, err)
	}
	// The keys this machine's daemon would announce: native flags resolved
	// by its gcc.
	if desc, err = desc.ResolveNative(identity.GCCNative(context.Background(), identity.GCCFor(desc.CHOST))); err != nil {
		return nil, fmt.Errorf("%s: build descriptor: %w", path, err)
	}
	ins := &Inspection{
		Path:           path,
		Format:         string(pkg.Format),
		Compression:    string(pkg.Compression),
		CPV:            pkg.Metadata.CPV(),
		Slot:           pkg.Metadata.Get("SLOT"),
		USE:            pkg.Metadata.USE(),
		Keys:           pkg.Metadata.Keys(),
		ImageDigest:    hex.EncodeToString(pkg.ImageDigest[:]),
		MetadataDigest: hex.EncodeToString(md[:]),
		BuildKey:       desc.BuildKey(),
		VariantKey:     desc.VariantKey(),
		Platform:       desc.Platform(),
		FileSHA256:     hex.EncodeToString(pkg.FileSHA256[:]),
		Size:           pkg.Size,
		ImageEntries:   pkg.ImageEntries,
		Signed:         pkg.Signed,
	}
	if ins.USE == nil {
		ins.USE = []string{}
	}
	if id, ok := pkg.Metadata.BuildID(); ok {
		ins.BuildID = &id
	}
	return ins, nil
}

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Read binpkgs (XPAK or GPKG) and print their identities",
		Long: `inspect reads each binary package, checks it the way the daemon does
(container layout, Manifest hashes, hostile paths, size limits) and prints
the identities peers vote on: image digest, metadata digest, build key and
variant key. It needs no daemon.

With --json it prints one JSON document: an array with one object per
file read, in the order given (also for a single file). Files that cannot
be read are reported on stderr, left out of the array, and make the exit
status 1.`,
		Example: `  gentoo-p2pd inspect /var/cache/binpkgs/app-misc/hello/hello-1.0-1.gpkg.tar
  gentoo-p2pd inspect --json /var/cache/binpkgs/*/*/*.gpkg.tar | jq '.[].build_key'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lim := xpak.DefaultLimits()
			failed := 0
			all := []*Inspection{}
			for _, path := range args {
				ins, err := inspectFile(path, lim)
				if err != nil {
					failed++
					msg := err.Error()
					if !strings.Contains(msg, path) {
						msg = path + ": " + msg
					}
					fmt.Fprintln(cmd.ErrOrStderr(), "gentoo-p2pd inspect:", msg)
					continue
				}
				if asJSON {
					all = append(all, ins)
					continue
				}
				writeInspection(cmd.OutOrStdout(), ins)
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), all); err != nil {
					return err
				}
			}
			if failed > 0 {
				return exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON array, one object per file")
	return cmd
}

func writeInspection(w io.Writer, in *Inspection) {
	bid := "none"
	if in.BuildID != nil {
		bid = fmt.Sprint(*in.BuildID)
	}
	fmt.Fprintf(w, "%s\n", in.Path)
	fmt.Fprintf(w, "  %-16s %s (%s, %d bytes%s)\n", "package", in.CPV, in.Format, in.Size, signedText(in.Signed))
	fmt.Fprintf(w, "  %-16s %s   slot %s   build id %s\n", "compression", in.Compression, in.Slot, bid)
	fmt.Fprintf(w, "  %-16s %s\n", "USE", strings.Join(in.USE, " "))
	fmt.Fprintf(w, "  %-16s %s (%d entries)\n", "image digest", in.ImageDigest, in.ImageEntries)
	fmt.Fprintf(w, "  %-16s %s\n", "metadata digest", in.MetadataDigest)
	fmt.Fprintf(w, "  %-16s %s\n", "build key", in.BuildKey)
	fmt.Fprintf(w, "  %-16s %s\n", "variant key", in.VariantKey)
	fmt.Fprintf(w, "  %-16s %s\n", "file sha256", in.FileSHA256)
}

func signedText(s bool) string {
	if s {
		return ", OpenPGP-signed"
	}
	return ""
}
