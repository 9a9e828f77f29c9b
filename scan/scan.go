// Package scan finds the binary packages in PKGDIR, in every layout portage
// writes, keeps the store's index of them in step with the disk without
// re-hashing unchanged files, and watches PKGDIR so a fresh build is shared
// seconds after portage writes it.
//
// The daemon only ever reads PKGDIR: nothing here writes to it.
package scan

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoPKGDIR means PKGDIR does not exist (yet): portage creates it on the
// first --buildpkg, so the daemon warns and waits rather than failing.
var ErrNoPKGDIR = errors.New("PKGDIR does not exist")

// Layout names where in PKGDIR a binpkg was found, following the layouts
// portage has written over the years.
type Layout string

const (
	// LayoutFlat is PKGDIR/PF.tbz2, the oldest layout.
	LayoutFlat Layout = "flat"
	// LayoutAll is PKGDIR/All/PF.tbz2 (with CAT/PF.tbz2 symlinks into it).
	LayoutAll Layout = "all"
	// LayoutCategory is PKGDIR/CAT/PF.tbz2 or PKGDIR/CAT/PF.gpkg.tar, what
	// portage writes without FEATURES=binpkg-multi-instance.
	LayoutCategory Layout = "category"
	// LayoutMultiInstance is PKGDIR/CAT/PN/PF-BUILDID.xpak or
	// PKGDIR/CAT/PN/PF-BUILDID.gpkg.tar (FEATURES=binpkg-multi-instance,
	// the default since portage 2.3).
	LayoutMultiInstance Layout = "multi-instance"
)

// Container file extensions portage writes.
const (
	extTbz2 = ".tbz2"
	extXpak = ".xpak"
	extGPKG = ".gpkg.tar"
)

// FileInfo is one binpkg file found on disk, with the stat triple that
// tells the scanner whether it changed since it was last indexed.
type FileInfo struct {
	// Path is PKGDIR (as configured, made absolute) joined with the file's
	// path below it.
	Path string
	// Rel is the path below PKGDIR, slash-separated.
	Rel     string
	Size    int64
	MTimeNS int64
	Inode   uint64
	Layout  Layout
}

// Name is what a binpkg's path inside PKGDIR says about it. Portage itself
// trusts the package's metadata (CATEGORY, PF, BUILD_ID) over the name, and
// so should callers: the name only classifies the layout.
type Name struct {
	Layout Layout
	// Category is empty for the flat and All/ layouts.
	Category string
	// PN is set only for the multi-instance layout (its directory).
	PN string
	// PF is package-version[-revision], e.g. "layout-1.0-r1".
	PF string
	// BuildID is the multi-instance build id; 0 elsewhere.
	BuildID int64
	// Format is "xpak" for .tbz2/.xpak and "gpkg" for .gpkg.tar.
	Format string
}

// ParseName classifies rel, a slash-separated path below PKGDIR, as one of
// the layouts portage writes. It reports false for anything else: the
// Packages index, portage's in-progress files (<name>.<pid>, *.partial),
// hidden files, and files at a depth no layout uses.
func ParseName(rel string) (Name, bool) {
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.HasPrefix(p, ".") {
			return Name{}, false
		}
	}
	base := parts[len(parts)-1]
	var n Name
	var stem string
	switch {
	case strings.HasSuffix(base, extGPKG):
		n.Format, stem = "gpkg", strings.TrimSuffix(base, extGPKG)
	case strings.HasSuffix(base, extXpak):
		n.Format, stem = "xpak", strings.TrimSuffix(base, extXpak)
	case strings.HasSuffix(base, extTbz2):
		n.Format, stem = "xpak", strings.TrimSuffix(base, extTbz2)
	default:
		return Name{}, false
	}
	if stem == "" {
		return Name{}, false
	}
	isTbz2 := strings.HasSuffix(base, extTbz2)
	switch len(parts) {
	case 1:
		if !isTbz2 {
			return Name{}, false
		}
		n.Layout, n.PF = LayoutFlat, stem
	case 2:
		if strings.HasSuffix(base, extXpak) {
			return Name{}, false // .xpak exists only in the multi-instance layout
		}
		if parts[0] == "All" {
			if !isTbz2 {
				return Name{}, false
			}
			n.Layout, n.PF = LayoutAll, stem
		} else {
			n.Layout, n.Category, n.PF = LayoutCategory, parts[0], stem
		}
	case 3:
		if isTbz2 {
			return Name{}, false
		}
		i := strings.LastIndexByte(stem, '-')
		if i <= 0 {
			return Name{}, false
		}
		id, err := strconv.ParseInt(stem[i+1:], 10, 64)
		if err != nil || id <= 0 {
			return Name{}, false
		}
		pf := stem[:i]
		if !strings.HasPrefix(pf, parts[1]+"-") {
			return Name{}, false
		}
		n.Layout, n.Category, n.PN, n.PF, n.BuildID = LayoutMultiInstance, parts[0], parts[1], pf, id
	default:
		return Name{}, false
	}
	return n, true
}

// Scan lists the binpkgs in pkgdir, sorted by path. It skips symlinks (a
// symlink inside PKGDIR, like the old CAT/PF.tbz2 → ../All/PF.tbz2, points
// at a file the walk finds anyway; one leaving PKGDIR is not PKGDIR's to
// share), hidden entries, empty files (portage reserves a multi-instance
// name with an empty file before writing it) and everything ParseName
// rejects. A file that vanishes during the walk is skipped; any other
// error fails the whole scan, so a caller never mistakes an unreadable
// directory for deleted packages.
func Scan(pkgdir string) ([]FileInfo, error) {
	abs, root, err := resolve(pkgdir)
	if err != nil {
		return nil, err
	}
	var out []FileInfo
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != root {
				return nil // raced with a rename or delete
			}
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if strings.Count(rel, "/") >= 2 {
				return fs.SkipDir // no layout has files deeper than CAT/PN/
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		n, ok := ParseName(rel)
		if !ok {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if info.Size() == 0 {
			return nil
		}
		out = append(out, FileInfo{
			Path:    filepath.Join(abs, filepath.FromSlash(rel)),
			Rel:     rel,
			Size:    info.Size(),
			MTimeNS: info.ModTime().UnixNano(),
			Inode:   inode(info),
			Layout:  n.Layout,
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan PKGDIR %s: %w", pkgdir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// resolve returns pkgdir made absolute (the name paths are reported under)
// and its symlink-free location (what is walked and watched: PKGDIR is
// often a symlink to a bigger disk).
func resolve(pkgdir string) (abs, root string, err error) {
	abs, err = filepath.Abs(pkgdir)
	if err != nil {
		return "", "", fmt.Errorf("PKGDIR %s: %w", pkgdir, err)
	}
	root, err = filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("%w: %s", ErrNoPKGDIR, pkgdir)
		}
		return "", "", fmt.Errorf("PKGDIR %s: %w", pkgdir, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return "", "", fmt.Errorf("PKGDIR %s: %w", pkgdir, err)
	}
	if !fi.IsDir() {
		return "", "", fmt.Errorf("PKGDIR %s: %w", pkgdir, syscall.ENOTDIR)
	}
	return abs, root, nil
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// statFile re-stats one file, for the before/after check around indexing.
func statFile(path string) (size, mtimeNS int64, ino uint64, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, 0, 0, err
	}
	return fi.Size(), fi.ModTime().UnixNano(), inode(fi), nil
}
