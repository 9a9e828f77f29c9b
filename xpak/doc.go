// Package xpak reads and writes the binary packages portage builds — XPAK
// (.tbz2/.xpak) and GPKG (.gpkg.tar, GLEP 78) — and computes the image digest
// that independent honest builds agree on.
//
// Everything here streams: a package is never held in memory, every length
// read from a file is bounds-checked before use, and every expansion is
// limited (see Limits), because the input comes from strangers.
//
// The package imports nothing else of gentoo-p2pd.
package xpak
