package xpak

import "errors"

// Sentinel errors. Every error this package returns about a package's
// bytes wraps one of these (with %w and the file, member, entry or field
// it concerns). Read and ReadFile wrap a failure of the file underneath
// (opening it, a disk read error) in ErrIO beside the OS error, so
// errors.Is tells a hostile package from a broken disk and still finds
// fs.ErrNotExist. WalkImage returns an error from its caller's reader or
// callback with context only: those are the caller's own. Decoded
// payloads are classified at one point (openPayload), so no decoder,
// archive/tar or io error reaches a caller bare.
var (
	// ErrIO: reading the file itself failed (open, stat, a read error of
	// the disk); the OS error is wrapped beside it.
	ErrIO = errors.New("xpak: reading the file failed")
	// ErrUnknownFormat: the file is neither a GPKG (tar whose first member
	// is <dir>/gpkg-1) nor an XPAK (XPAKSTOP…STOP trailer).
	ErrUnknownFormat = errors.New("xpak: not a gentoo binary package")
	// ErrTruncated: the data ends before a length read from it says it
	// should, or a compressed stream ends early.
	ErrTruncated = errors.New("xpak: truncated")
	// ErrTooLarge: a Limits bound was reached (decompression bomb, huge
	// metadata value, too many entries, oversized decoder window…).
	ErrTooLarge = errors.New("xpak: limit exceeded")
	// ErrBadXPAK: the XPAK trailer, header or index contradicts itself or
	// the file size.
	ErrBadXPAK = errors.New("xpak: malformed xpak segment")
	// ErrBadGPKG: the GPKG container breaks GLEP 78 structure rules.
	ErrBadGPKG = errors.New("xpak: malformed gpkg container")
	// ErrUnknownMember: a GPKG holds a member GLEP 78 does not define.
	ErrUnknownMember = errors.New("xpak: unknown gpkg member")
	// ErrDuplicateMember: a GPKG member name occurs twice; one copy could be
	// verified and the other installed, so this is never tolerated.
	ErrDuplicateMember = errors.New("xpak: duplicate gpkg member")
	// ErrMissingMember: a required member (metadata, image, Manifest) or a
	// member the Manifest lists is absent.
	ErrMissingMember = errors.New("xpak: missing gpkg member")
	// ErrBadManifest: the GPKG Manifest cannot be parsed.
	ErrBadManifest = errors.New("xpak: malformed gpkg Manifest")
	// ErrNotInManifest: a GPKG member has no DATA line in the Manifest.
	ErrNotInManifest = errors.New("xpak: gpkg member not in Manifest")
	// ErrManifestMismatch: a member's size or hash differs from its
	// Manifest DATA line.
	ErrManifestMismatch = errors.New("xpak: gpkg member does not match Manifest")
	// ErrUnknownCompression: the magic bytes of a payload match no supported
	// compression.
	ErrUnknownCompression = errors.New("xpak: unknown compression")
	// ErrCorrupt: a compressed payload fails to decode (bad data, bad
	// checksum).
	ErrCorrupt = errors.New("xpak: corrupt compressed data")
	// ErrBadMetadata: a metadata key or entry is malformed or repeated.
	ErrBadMetadata = errors.New("xpak: malformed metadata")
	// ErrPathTraversal: an image name is absolute or contains "..".
	ErrPathTraversal = errors.New("xpak: path traversal")
	// ErrBadName: an image name is not canonical (empty or "." component,
	// NUL byte, over-long, outside image/).
	ErrBadName = errors.New("xpak: bad image entry name")
	// ErrThroughSymlink: an image entry's path goes through a symlink the
	// image stored earlier (or a symlink replaces a directory that earlier
	// entries live in).
	ErrThroughSymlink = errors.New("xpak: image path through symlink")
	// ErrPathConflict: an image entry lives under, or replaces, a
	// non-directory entry.
	ErrPathConflict = errors.New("xpak: image path conflict")
	// ErrBadHardlink: a hardlink names anything but a regular file stored
	// earlier in the same image.
	ErrBadHardlink = errors.New("xpak: bad hardlink")
	// ErrDuplicatePath: the same image path occurs twice.
	ErrDuplicatePath = errors.New("xpak: duplicate image path")
	// ErrDeviceNode: the image holds a character or block device and
	// Limits.AllowDevices is false.
	ErrDeviceNode = errors.New("xpak: device node in image")
	// ErrUnknownType: an image entry's tar type is outside the digest's
	// list (f d l h c b p).
	ErrUnknownType = errors.New("xpak: unsupported image entry type")
)
