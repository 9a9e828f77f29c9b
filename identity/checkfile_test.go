package identity

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// CheckedReader — what a fetch runs while the pieces stream in — accepts
// the file only as the content it was attested as: every tampering with
// image digest, metadata digest, CPV or (GPKG) Manifest is refused.
func TestCheckedReaderRefusesTampering(t *testing.T) {
	lim := xpak.DefaultLimits()
	for _, name := range []string{consumerGPKG, consumerXPAK} {
		t.Run(filepath.Ext(name), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(fixtures, name))
			if err != nil {
				t.Fatal(err)
			}
			p, err := xpak.Read(bytes.NewReader(raw), int64(len(raw)), lim)
			if err != nil {
				t.Fatal(err)
			}
			cpv, image, meta := p.Metadata.CPV(), p.ImageDigest, mustDigest(t, p.Metadata)
			check := func(data []byte, cpv string, image, meta [32]byte) (*xpak.Package, error) {
				return CheckedReader(bytes.NewReader(data), int64(len(data)), cpv, image, meta, lim)
			}
			got, err := check(raw, cpv, image, meta)
			if err != nil {
				t.Fatalf("the untouched file is refused: %v", err)
			}
			if got.FileSHA256 != sha256.Sum256(raw) {
				t.Fatal("CheckedReader returned another file SHA-256 than the file's")
			}
			otherImage, otherMeta := image, meta
			otherImage[0] ^= 1
			otherMeta[0] ^= 1
			for _, tc := range []struct {
				what        string
				cpv         string
				image, meta [32]byte
				want        string
			}{
				{"image", cpv, otherImage, meta, "image digest"},
				{"metadata", cpv, image, otherMeta, "metadata digest"},
				{"cpv", "app-misc/other-1.0", image, meta, "the build is app-misc/other-1.0"},
			} {
				if _, err := check(raw, tc.cpv, tc.image, tc.meta); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: got %v, want an error about the %s", tc.what, err, tc.want)
				}
			}
			if p.Format != xpak.FormatGPKG {
				return
			}
			// One hex digit of a Manifest hash changed: the digests still
			// match, the Manifest does not.
			i := bytes.Index(raw, []byte("SHA512 "))
			if i < 0 {
				t.Fatal("no SHA512 in the GPKG's Manifest")
			}
			bad := bytes.Clone(raw)
			if d := &bad[i+len("SHA512 ")]; *d == '0' {
				*d = '1'
			} else {
				*d = '0'
			}
			if _, err := check(bad, cpv, image, meta); !errors.Is(err, xpak.ErrManifestMismatch) {
				t.Errorf("Manifest: got %v, want ErrManifestMismatch", err)
			}
		})
	}
}
