package identity

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxMD5CacheEntry caps one md5-cache file; real entries are a few KiB.
const maxMD5CacheEntry = 1 << 20

// MD5Cache reads a repository's metadata/md5-cache, which records, per
// ebuild, the MD5 of the ebuild file (_md5_) and of every eclass it inherits
// (_eclasses_). It is the cheapest exact record of "which tree snapshot" an
// ebuild came from, so builders on different snapshots get different build
// keys instead of conflicting votes. Entries are read on demand; a nil
// *MD5Cache is valid and has no entries.
type MD5Cache struct {
	dir      string // <repo>/metadata/md5-cache
	repoName string // profiles/repo_name, "" when unreadable
}

// MD5CacheEntry is the part of one md5-cache record the build key uses.
type MD5CacheEntry struct {
	// EbuildMD5 is _md5_: lowercase hex MD5 of the ebuild file.
	EbuildMD5 string
	// Eclasses is _eclasses_: eclass name → lowercase hex MD5.
	Eclasses map[string]string
}

// ErrBadMD5Cache means an md5-cache record exists but cannot be used.
var ErrBadMD5Cache = errors.New("identity: bad md5-cache entry")

// LoadMD5Cache opens repoDir's metadata/md5-cache. It returns nil when the
// repository has none (a git-synced tree without egencache), in which case
// descriptors fall back to eclass names only (see docs/PROTOCOL.md).
func LoadMD5Cache(repoDir string) *MD5Cache {
	dir := filepath.Join(repoDir, "metadata", "md5-cache")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil
	}
	c := &MD5Cache{dir: dir}
	if b, err := os.ReadFile(filepath.Join(repoDir, "profiles", "repo_name")); err == nil {
		c.repoName = strings.TrimSpace(string(b))
	}
	return c
}

// RepoName is the repository name from profiles/repo_name ("" if unknown);
// a cache is only used for packages whose `repository` key matches it.
func (c *MD5Cache) RepoName() string {
	if c == nil {
		return ""
	}
	return c.repoName
}

// Entry returns the md5-cache record of cpv ("cat/pf"). ok is false when the
// cache is nil, cpv is not a valid category/PF pair, or there is no record;
// err is set when a record exists but is malformed or unreadable.
func (c *MD5Cache) Entry(cpv string) (e MD5CacheEntry, ok bool, err error) {
	if c == nil {
		return MD5CacheEntry{}, false, nil
	}
	cat, pf, found := strings.Cut(cpv, "/")
	if !found || !validPkgComponent(cat) || !validPkgComponent(pf) {
		return MD5CacheEntry{}, false, nil
	}
	path := filepath.Join(c.dir, cat, pf)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return MD5CacheEntry{}, false, nil
	}
	if err != nil {
		return MD5CacheEntry{}, false, fmt.Errorf("%w: %v", ErrBadMD5Cache, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMD5CacheEntry+1))
	if err != nil {
		return MD5CacheEntry{}, false, fmt.Errorf("%w: %s: %v", ErrBadMD5Cache, path, err)
	}
	if len(b) > maxMD5CacheEntry {
		return MD5CacheEntry{}, false, fmt.Errorf("%w: %s: larger than %d bytes", ErrBadMD5Cache, path, maxMD5CacheEntry)
	}
	e, err = parseMD5CacheEntry(b)
	if err != nil {
		return MD5CacheEntry{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return e, true, nil
}

func parseMD5CacheEntry(b []byte) (MD5CacheEntry, error) {
	e := MD5CacheEntry{Eclasses: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), maxMD5CacheEntry)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "_md5_":
			if !isLowerHex(v, 32) {
				return e, fmt.Errorf("%w: _md5_ %q is not 32 hex digits", ErrBadMD5Cache, v)
			}
			e.EbuildMD5 = v
		case "_eclasses_":
			f := strings.Split(v, "\t")
			if v == "" {
				f = nil
			}
			if len(f)%2 != 0 {
				return e, fmt.Errorf("%w: _eclasses_ has an odd number of fields", ErrBadMD5Cache)
			}
			for i := 0; i < len(f); i += 2 {
				if !validPkgComponent(f[i]) || !isLowerHex(f[i+1], 32) {
					return e, fmt.Errorf("%w: _eclasses_ pair %q %q", ErrBadMD5Cache, f[i], f[i+1])
				}
				e.Eclasses[f[i]] = f[i+1]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return e, fmt.Errorf("%w: %v", ErrBadMD5Cache, err)
	}
	if e.EbuildMD5 == "" {
		return e, fmt.Errorf("%w: no _md5_", ErrBadMD5Cache)
	}
	return e, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && (s[i] < 'a' || s[i] > 'f') {
			return false
		}
	}
	return true
}

// validPkgComponent accepts a PMS category, package-with-version or eclass
// name: [A-Za-z0-9_][A-Za-z0-9+_.-]*, never "." or "..". It keeps names from
// a stranger's metadata from escaping the md5-cache directory.
func validPkgComponent(s string) bool {
	if s == "" || s == "." || s == ".." || s[0] == '-' || s[0] == '.' || s[0] == '+' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '_' && c != '+' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}
