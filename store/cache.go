package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrCacheMismatch means a file offered to Commit does not hash to the
// SHA-256 it was committed under.
var ErrCacheMismatch = errors.New("cache file does not match its SHA-256")

// TouchGranularity is how stale a cache entry's last access must be before
// Touch writes a new one: an access per piece request would otherwise cost
// an fsync each, and LRU needs no finer clock.
const TouchGranularity = time.Minute

// tempPrefix marks files that are still being written; Open removes any it
// finds, since they are leftovers of a crash.
const tempPrefix = ".tmp-"

// Cache is the content cache: package files fetched from peers, named by
// their SHA-256, evicted least-recently-used under a byte budget. Files
// appear under their final name only once complete and fsynced, and the
// database references them only after that.
type Cache struct {
	s   *Store
	dir string
	now func() time.Time

	mu    sync.Mutex // serialises Commit, Remove and GC, and guards usage
	usage int64
}

// CacheMeta is what the caller knows about a file it commits, kept for
// status output and for the keep decision in GC.
type CacheMeta struct {
	CPV      string
	BuildKey string
	// ImageDigest and MetadataDigest, when set, are the content the file
	// was verified to carry before it was committed (both halves of its
	// content id), so a later use can match it to an allowed content
	// without reading the file again. Zero: not recorded (older entries).
	ImageDigest    [32]byte
	MetadataDigest [32]byte
}

// CacheEntry describes one cached file.
type CacheEntry struct {
	SHA256 [32]byte
	// Path is where the file lives (Cache.Path of SHA256), ready to open.
	Path       string
	Size       int64
	Added      time.Time
	LastAccess time.Time
	Meta       CacheMeta
}

type cacheJSON struct {
	Size       int64     `json:"size"`
	Added      time.Time `json:"added"`
	LastAccess time.Time `json:"last_access"`
	CPV        string    `json:"cpv,omitempty"`
	BuildKey   string    `json:"build_key,omitempty"`
	Image      string    `json:"image_digest,omitempty"`
	Metadata   string    `json:"metadata_digest,omitempty"`
}

func decodeCache(k, v []byte) (CacheEntry, error) {
	var j cacheJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return CacheEntry{}, fmt.Errorf("%w: cache entry %x: %v", ErrCorrupt, k, err)
	}
	if len(k) != 32 {
		return CacheEntry{}, fmt.Errorf("%w: cache key has %d bytes", ErrCorrupt, len(k))
	}
	e := CacheEntry{Size: j.Size, Added: j.Added, LastAccess: j.LastAccess, Meta: CacheMeta{CPV: j.CPV, BuildKey: j.BuildKey}}
	var err error
	if e.Meta.ImageDigest, err = decodeDigest(j.Image); err == nil {
		e.Meta.MetadataDigest, err = decodeDigest(j.Metadata)
	}
	if err != nil {
		return CacheEntry{}, fmt.Errorf("%w: cache entry %x: %v", ErrCorrupt, k, err)
	}
	copy(e.SHA256[:], k)
	return e, nil
}

func encodeCache(e CacheEntry) ([]byte, error) {
	return json.Marshal(cacheJSON{
		Size: e.Size, Added: e.Added, LastAccess: e.LastAccess, CPV: e.Meta.CPV, BuildKey: e.Meta.BuildKey,
		Image: encodeDigest(e.Meta.ImageDigest), Metadata: encodeDigest(e.Meta.MetadataDigest),
	})
}

// encodeDigest is the hex of d, or "" for the zero digest (not recorded).
func encodeDigest(d [32]byte) string {
	if d == ([32]byte{}) {
		return ""
	}
	return hex.EncodeToString(d[:])
}

func decodeDigest(s string) ([32]byte, error) {
	var d [32]byte
	if s == "" {
		return d, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("digest %q is not 64 hex digits", s)
	}
	copy(d[:], b)
	return d, nil
}

// openCache reconciles the cache directory with the database after a
// possible crash: temp files and files the database does not reference are
// removed, entries whose file is gone or has the wrong size are dropped.
func openCache(s *Store, dir string) (*Cache, error) {
	c := &Cache{s: s, dir: dir, now: time.Now}
	onDisk := make(map[[32]byte]int64)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// Only the two-hex-digit fan-out directories are ours; never
			// descend elsewhere, in case CacheDir points at a shared place.
			if path != dir && !isFanout(dir, path) {
				return fs.SkipDir
			}
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, tempPrefix) && filepath.Dir(path) == dir {
			s.log.Info("removing unfinished cache file", "path", path)
			return os.Remove(path)
		}
		sha, ok := parseCacheName(dir, path)
		if !ok || !d.Type().IsRegular() {
			// Not ours: leave it alone rather than delete a user's file.
			s.log.Warn("ignoring unknown file in cache dir", "path", path)
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		onDisk[sha] = info.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile cache dir %s: %w", dir, err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCache)
		var drop [][]byte
		err := b.ForEach(func(k, v []byte) error {
			e, err := decodeCache(k, v)
			if err != nil {
				return err
			}
			size, ok := onDisk[e.SHA256]
			if !ok || size != e.Size {
				s.log.Warn("dropping cache entry whose file is missing or resized", "sha256", hex.EncodeToString(k), "want_size", e.Size)
				drop = append(drop, append([]byte(nil), k...))
				return nil
			}
			delete(onDisk, e.SHA256)
			c.usage += e.Size
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile cache index: %w", err)
	}
	// What is left on disk is unreferenced: a crash between rename and
	// commit, or between an eviction's commit and its unlink.
	for sha := range onDisk {
		p := c.Path(sha)
		s.log.Info("removing unreferenced cache file", "path", p)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove unreferenced cache file %s: %w", p, err)
		}
	}
	return c, nil
}

func isFanout(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	if err != nil || len(rel) != 2 {
		return false
	}
	_, err = hex.DecodeString(rel)
	return err == nil && strings.ToLower(rel) == rel
}

// parseCacheName accepts dir/xx/<64 hex> where xx is the first byte.
func parseCacheName(dir, path string) ([32]byte, bool) {
	var sha [32]byte
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return sha, false
	}
	sub, name := filepath.Split(rel)
	if len(name) != 64 || sub != name[:2]+string(filepath.Separator) {
		return sha, false
	}
	if n, err := hex.Decode(sha[:], []byte(name)); err != nil || n != 32 || hex.EncodeToString(sha[:]) != name {
		return sha, false
	}
	return sha, true
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Path is where the file with this SHA-256 lives once committed.
func (c *Cache) Path(sha [32]byte) string {
	h := hex.EncodeToString(sha[:])
	return filepath.Join(c.dir, h[:2], h)
}

// CreateTemp opens a new temp file inside the cache directory (so Commit's
// rename stays on one filesystem). A crash leaves it to be removed by the
// next Open.
func (c *Cache) CreateTemp() (*os.File, error) {
	f, err := os.CreateTemp(c.dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("create cache temp file in %s: %w", c.dir, err)
	}
	return f, nil
}

// Has reports whether a complete file with this SHA-256 is cached.
func (c *Cache) Has(sha [32]byte) (bool, error) {
	_, ok, err := c.Get(sha)
	return ok, err
}

// Get returns the entry for sha.
func (c *Cache) Get(sha [32]byte) (CacheEntry, bool, error) {
	var (
		e  CacheEntry
		ok bool
	)
	err := c.s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCache).Get(sha[:])
		if v == nil {
			return nil
		}
		var err error
		e, err = decodeCache(sha[:], v)
		ok = err == nil
		return err
	})
	if ok {
		e.Path = c.Path(sha)
	}
	return e, ok, err
}

// List returns every cache entry, ordered by SHA-256.
func (c *Cache) List() ([]CacheEntry, error) {
	var out []CacheEntry
	err := c.s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCache).ForEach(func(k, v []byte) error {
			e, err := decodeCache(k, v)
			if err != nil {
				return err
			}
			e.Path = c.Path(e.SHA256)
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// Commit moves the finished file at tmpPath into the cache under sha. It
// hashes the file first (ErrCacheMismatch if it does not match, and the
// temp file is left for the caller), fsyncs it, renames it into place,
// fsyncs the directory, and only then records it. Committing a sha that is
// already cached discards tmpPath and keeps the existing file.
func (c *Cache) Commit(tmpPath string, sha [32]byte, meta CacheMeta) (CacheEntry, error) {
	size, err := hashAndSync(tmpPath, sha)
	if err != nil {
		return CacheEntry{}, err
	}
	return c.place(tmpPath, sha, size, meta)
}

// CommitVerified is Commit for a file whose SHA-256 the caller has
// already verified and which it already fsynced — a transfer.Fetch result,
// checked while its bytes streamed in: it is renamed into place without
// being read again. The caller vouches for the hash; anything else uses
// Commit.
func (c *Cache) CommitVerified(path string, sha [32]byte, meta CacheMeta) (CacheEntry, error) {
	st, err := os.Stat(path)
	if err != nil {
		return CacheEntry{}, fmt.Errorf("stat verified cache file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return CacheEntry{}, fmt.Errorf("verified cache file %s is not a regular file", path)
	}
	return c.place(path, sha, st.Size(), meta)
}

// place renames a hashed and fsynced file into the cache and records it.
func (c *Cache) place(tmpPath string, sha [32]byte, size int64, meta CacheMeta) (CacheEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok, err := c.Get(sha); err != nil {
		return CacheEntry{}, err
	} else if ok {
		_ = os.Remove(tmpPath)
		return e, nil
	}
	dst := c.Path(sha)
	sub := filepath.Dir(dst)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return CacheEntry{}, fmt.Errorf("create cache dir %s: %w", sub, err)
	}
	if err := os.Rename(tmpPath, dst); err != nil {
		return CacheEntry{}, fmt.Errorf("commit cache file %s: %w", dst, err)
	}
	if err := syncDir(sub); err != nil {
		return CacheEntry{}, err
	}
	now := c.now()
	e := CacheEntry{SHA256: sha, Path: dst, Size: size, Added: now, LastAccess: now, Meta: meta}
	v, err := encodeCache(e)
	if err != nil {
		return CacheEntry{}, err
	}
	if err := c.s.update(func(tx *bolt.Tx) error {
		c.s.localChanged(tx)
		return tx.Bucket(bucketCache).Put(sha[:], v)
	}); err != nil {
		// The file is in place but unreferenced; the next Open removes it.
		return CacheEntry{}, fmt.Errorf("record cache entry %x: %w", sha, err)
	}
	c.usage += size
	return e, nil
}

func hashAndSync(path string, want [32]byte) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("open cache temp file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, fmt.Errorf("hash cache temp file %s: %w", path, err)
	}
	if got := [32]byte(h.Sum(nil)); got != want {
		return 0, fmt.Errorf("%w: %s has %x, want %x", ErrCacheMismatch, path, got, want)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("fsync cache temp file %s: %w", path, err)
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// Touch records an access to sha for LRU eviction. It writes only when the
// recorded access is older than TouchGranularity. Touching an uncached sha
// is not an error.
func (c *Cache) Touch(sha [32]byte) error {
	now := c.now()
	e, ok, err := c.Get(sha)
	if err != nil || !ok || now.Sub(e.LastAccess) < TouchGranularity {
		return err
	}
	return c.s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCache)
		v := b.Get(sha[:])
		if v == nil {
			return nil // evicted meanwhile
		}
		e, err := decodeCache(sha[:], v)
		if err != nil {
			return err
		}
		e.LastAccess = now
		nv, err := encodeCache(e)
		if err != nil {
			return err
		}
		return b.Put(sha[:], nv)
	})
}

// Usage is the total size of the cached files in bytes.
func (c *Cache) Usage() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usage
}

// Remove evicts one file regardless of budget.
func (c *Cache) Remove(sha [32]byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, n, err := c.evictLocked([]CacheEntry{{SHA256: sha}})
	return n > 0, err
}

// GC evicts least-recently-accessed files until the cache holds at most
// budget bytes, never evicting a file for which keep returns true (the
// daemon keeps what it still serves as its own build, or what a transfer
// in progress needs). It returns the bytes freed; if the kept files alone
// exceed the budget it frees what it can and reports no error.
func (c *Cache) GC(budget int64, keep func(sha [32]byte) bool) (freed int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.usage <= budget {
		return 0, nil
	}
	entries, err := c.List()
	if err != nil {
		return 0, err
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if !a.LastAccess.Equal(b.LastAccess) {
			return a.LastAccess.Before(b.LastAccess)
		}
		return string(a.SHA256[:]) < string(b.SHA256[:])
	})
	var victims []CacheEntry
	over := c.usage - budget
	for _, e := range entries {
		if over <= 0 {
			break
		}
		if keep != nil && keep(e.SHA256) {
			continue
		}
		victims = append(victims, e)
		over -= e.Size
	}
	freed, _, err = c.evictLocked(victims)
	return freed, err
}

// evictLocked drops the entries in one transaction, then unlinks their
// files: a crash in between leaves unreferenced files, which Open removes.
func (c *Cache) evictLocked(victims []CacheEntry) (freed int64, n int, err error) {
	var gone []CacheEntry
	err = c.s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCache)
		for _, v := range victims {
			raw := b.Get(v.SHA256[:])
			if raw == nil {
				continue
			}
			e, err := decodeCache(v.SHA256[:], raw)
			if err != nil {
				return err
			}
			if err := b.Delete(v.SHA256[:]); err != nil {
				return err
			}
			c.s.localChanged(tx)
			gone = append(gone, e)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("evict cache entries: %w", err)
	}
	for _, e := range gone {
		c.usage -= e.Size
		freed += e.Size
		if rerr := os.Remove(c.Path(e.SHA256)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("remove evicted cache file: %w", rerr)
		}
	}
	return freed, len(gone), err
}

func checkCache(tx *bolt.Tx) error {
	return tx.Bucket(bucketCache).ForEach(func(k, v []byte) error {
		_, err := decodeCache(k, v)
		return err
	})
}
