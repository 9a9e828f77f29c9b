package xpak

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxGPKGMembers bounds the members ImagePayload looks through: GLEP 78
// defines six.
const maxGPKGMembers = 64

// ImagePayload returns the compressed image payload of the binpkg of size
// bytes in r, ready for WalkImage, and the format to pass it: the bytes
// before XPAKPACK of an XPAK, the image.tar.* member of a GPKG. It is for a
// second pass over a package already read with Read or ReadFile (the
// container's checks and the Manifest are theirs, not repeated here);
// WalkImage still validates every image entry.
func ImagePayload(r io.ReaderAt, size int64) (io.Reader, Format, error) {
	if size >= xpakTrailerLen {
		var trailer [xpakTrailerLen]byte
		if _, err := r.ReadAt(trailer[:], size-xpakTrailerLen); err != nil {
			return nil, "", readError("trailer", err)
		}
		if bytes.Equal(trailer[:8], []byte("XPAKSTOP")) && bytes.Equal(trailer[12:], []byte("STOP")) {
			xpakLen := int64(binary.BigEndian.Uint32(trailer[8:12]))
			n := size - 8 - xpakLen
			if xpakLen < xpakHeaderLen+8 || n <= 0 {
				return nil, "", fmt.Errorf("%w: trailer length %d leaves no image payload in %d bytes", ErrBadXPAK, xpakLen, size)
			}
			return io.NewSectionReader(r, 0, n), FormatXPAK, nil
		}
	}
	tr := tar.NewReader(io.NewSectionReader(r, 0, size))
	for i := 0; i < maxGPKGMembers; i++ {
		hdr, err := tr.Next()
		switch {
		case err != nil && i == 0:
			return nil, "", fmt.Errorf("%w: no XPAK trailer and no tar header (%d bytes)", ErrUnknownFormat, size)
		case err == io.EOF:
			return nil, "", fmt.Errorf("%w: no image member", ErrMissingMember)
		case err != nil:
			return nil, "", fmt.Errorf("%w: %v", ErrBadGPKG, err)
		}
		_, base, _ := strings.Cut(hdr.Name, "/")
		if i == 0 && base != "gpkg-1" {
			return nil, "", fmt.Errorf("%w: first member is %q, not <dir>/gpkg-1", ErrUnknownFormat, hdr.Name)
		}
		if classifyMember(base) == memberImage {
			return tr, FormatGPKG, nil
		}
	}
	return nil, "", fmt.Errorf("%w: no image member", ErrMissingMember)
}

// WalkImageFile is WalkImage over the image of the binpkg (GPKG or XPAK)
// at path; errors after opening name the path.
func WalkImageFile(path string, lim Limits, fn func(ImageEntry, io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	payload, format, err := ImagePayload(f, st.Size())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := WalkImage(payload, format, lim, fn); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
