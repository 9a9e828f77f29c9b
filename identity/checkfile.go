package identity

import (
	"encoding/hex"
	"fmt"
	"io"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// CheckFile reads the binpkg at path and checks that it is cpv with the
// given image and metadata digests (a content id's two halves): what a
// fetched or cached file must be before it is served or trusted.
func CheckFile(path, cpv string, image, metadata [32]byte, lim xpak.Limits) error {
	_, err := CheckedFile(path, cpv, image, metadata, lim)
	return err
}

// CheckedFile is CheckFile that also returns the package as read, so a
// caller that goes on to use the file need not read it again.
func CheckedFile(path, cpv string, image, metadata [32]byte, lim xpak.Limits) (*xpak.Package, error) {
	pkg, err := xpak.ReadFile(path, lim)
	if err != nil {
		return nil, err
	}
	return checked(pkg, cpv, image, metadata)
}

// CheckedReader is CheckedFile over a binpkg of size bytes read from r in
// one pass (xpak.Read): a fetch runs it while the pieces stream in.
func CheckedReader(r io.ReaderAt, size int64, cpv string, image, metadata [32]byte, lim xpak.Limits) (*xpak.Package, error) {
	pkg, err := xpak.Read(r, size, lim)
	if err != nil {
		return nil, err
	}
	return checked(pkg, cpv, image, metadata)
}

func checked(pkg *xpak.Package, cpv string, image, metadata [32]byte) (*xpak.Package, error) {
	if got := pkg.Metadata.CPV(); got != cpv {
		return nil, fmt.Errorf("file is %s, the build is %s", got, cpv)
	}
	if pkg.ImageDigest != image {
		return nil, fmt.Errorf("image digest %s, attested %s", hex.EncodeToString(pkg.ImageDigest[:]), hex.EncodeToString(image[:]))
	}
	md, err := MetadataDigest(pkg.Metadata)
	if err != nil {
		return nil, err
	}
	if md != metadata {
		return nil, fmt.Errorf("metadata digest %s, attested %s", hex.EncodeToString(md[:]), hex.EncodeToString(metadata[:]))
	}
	return pkg, nil
}
