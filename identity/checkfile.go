package identity

import (
	"encoding/hex"
	"fmt"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// CheckFile reads the binpkg at path and checks that it is cpv with the
// given image and metadata digests (a content id's two halves): what a
// fetched or cached file must be before it is served or trusted.
func CheckFile(path, cpv string, image, metadata [32]byte, lim xpak.Limits) error {
	pkg, err := xpak.ReadFile(path, lim)
	if err != nil {
		return err
	}
	if got := pkg.Metadata.CPV(); got != cpv {
		return fmt.Errorf("file is %s, the build is %s", got, cpv)
	}
	if pkg.ImageDigest != image {
		return fmt.Errorf("image digest %s, attested %s", hex.EncodeToString(pkg.ImageDigest[:]), hex.EncodeToString(image[:]))
	}
	md, err := MetadataDigest(pkg.Metadata)
	if err != nil {
		return err
	}
	if md != metadata {
		return fmt.Errorf("metadata digest %s, attested %s", hex.EncodeToString(md[:]), hex.EncodeToString(metadata[:]))
	}
	return nil
}
