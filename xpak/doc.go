// Package xpak reads and writes the binary packages portage builds — XPAK
// (.tbz2/.xpak) and GPKG (.gpkg.tar, GLEP 78) — and computes the image digest
// that independent honest builds agree on.
//
// Read and ReadFile detect the format, then stream the file once: the
// container's SHA-256, the metadata, and image digest v1 (docs/PROTOCOL.md)
// of the decompressed image tar; ReadWith and ReadFileWith hand the same
// raw bytes and image entries to the caller's Taps. For a GPKG every member is checked against
// the Manifest's DATA line (size, BLAKE2B, SHA512) while it streams past;
// OpenPGP signatures are left to package trust (Package.Manifest and
// Package.Signatures carry what it needs). ImageDigest, WalkImage and
// WalkImageDigest expose the image walk on its own, for the gateway's
// re-packing.
//
// Everything here streams: a package is never held in memory, every length
// read from a file is bounds-checked before use, and every expansion is
// limited (see Limits), because the input comes from strangers. Hostile
// input fails with an error wrapping one of the Err* sentinels (path
// traversal, paths through symlinks, bad hardlinks, duplicate paths or
// members, device nodes, Manifest mismatches, decompression bombs…), so
// callers can tell an attack from a damaged file with errors.Is.
// Compression is recognised by magic bytes (gzip, bzip2, xz, zstd, lz4,
// uncompressed tar), never by file name.
//
// The package imports nothing else of gentoo-p2pd.
package xpak
