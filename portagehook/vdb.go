package portagehook

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// ErrNotInstalled means the vdb has no entry for a category/package-version.
var ErrNotInstalled = errors.New("not installed")

// vdbSkip are vdb files that are not build metadata: the installed files'
// list (CONTENTS can be megabytes) and portage's own bookkeeping. A binpkg
// carries none of them.
var vdbSkip = map[string]bool{"CONTENTS": true, "COUNTER": true, "NEEDED": true, "NEEDED.ELF.2": true}

// InstalledMetadata reads the vdb entry vdb/CAT/PF of an installed package
// as binpkg metadata: portage writes the same keys there (CATEGORY, PF,
// USE, IUSE_EFFECTIVE, CHOST, CFLAGS, environment.bz2, <PF>.ebuild, …)
// as into a binpkg's XPAK, so identity derives the same descriptor from
// either. cpv must be category/package-version (no path); each file is
// bounded by lim.MaxMetadataValue and all of them by lim.MaxMetadataBytes.
func InstalledMetadata(vdb, cpv string, lim xpak.Limits) (*xpak.Metadata, error) {
	cat, pf, ok := strings.Cut(cpv, "/")
	if !ok || !vdbComponent(cat) || !vdbComponent(pf) {
		return nil, fmt.Errorf("vdb: %q is not category/package-version", cpv)
	}
	if _, ok := SplitPN(pf); !ok {
		return nil, fmt.Errorf("vdb: %q has no package version", cpv)
	}
	dir := filepath.Join(vdb, cat, pf)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vdb: %s %w (no %s)", cpv, ErrNotInstalled, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("vdb: %w", err)
	}
	raw := map[string][]byte{}
	var total int64
	for _, e := range entries {
		if !e.Type().IsRegular() || vdbSkip[e.Name()] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := readBounded(filepath.Join(dir, e.Name()), lim.MaxMetadataValue)
		if err != nil {
			return nil, fmt.Errorf("vdb: %s: %w", cpv, err)
		}
		if total += int64(len(b)); lim.MaxMetadataBytes > 0 && total > lim.MaxMetadataBytes {
			return nil, fmt.Errorf("vdb: %s: metadata over %d bytes", cpv, lim.MaxMetadataBytes)
		}
		raw[e.Name()] = b
	}
	return xpak.NewMetadata(raw), nil
}

// vdbComponent is a category or PF: a single path component portage could
// have written, never "." or "..".
func vdbComponent(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && !strings.HasPrefix(s, ".")
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if max <= 0 {
		max = xpak.DefaultLimits().MaxMetadataValue
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is over %d bytes", filepath.Base(path), max)
	}
	return b, nil
}
