package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// File and directory names inside the state directory. They are part of the
// on-disk layout an operator sees, so they are fixed here in one place.
const (
	// DBFile is the bbolt database.
	DBFile = "state.db"
	// PIDFile records the pid of the daemon holding the database lock, so a
	// second daemon on the same state dir can say who is in the way.
	PIDFile = "state.pid"
	// CacheDirName is the default content cache directory.
	CacheDirName = "cache"
	// PartialDirName holds partially transferred files kept for resume.
	PartialDirName = "partial"
)

// SchemaVersion is the layout of buckets and records this code writes. A
// database written by a newer layout is refused rather than misread; one
// written by an older layout is upgraded on open. Version 2 stores
// attestations as metadata JSON plus the raw blob and keeps per-attester
// usage and a platform-time index (a version-1 build would misread them).
// Version 3 counts, per build key, the writes of its votes in the same
// transaction as each write (VoteVersions), and keeps results derived
// from votes under those counts (Derived): a version-2 build would write
// votes without counting them, and results derived before would pass for
// current.
const SchemaVersion = 3

// Sentinel errors, for errors.Is.
var (
	// ErrInUse means another process holds the state directory's lock:
	// two daemons sharing one state dir would corrupt each other's view.
	ErrInUse = errors.New("state dir in use by another gentoo-p2pd")
	// ErrSchema means the database was written by a newer, unknown schema.
	ErrSchema = errors.New("state database has an unsupported schema version")
	// ErrCorrupt means a record could not be decoded or an index disagrees
	// with its primary record.
	ErrCorrupt = errors.New("state database is inconsistent")
	// ErrInvalid means a caller passed a record the store cannot index
	// (empty primary key, NUL bytes in an index field, mismatched id).
	ErrInvalid = errors.New("invalid record")
	// ErrClosed means the store was used after Close.
	ErrClosed = errors.New("store is closed")
)

// Options tune Open. The zero value is usable.
type Options struct {
	// CacheDir is where the content cache keeps fetched package files;
	// empty means <dir>/cache.
	CacheDir string
	// LockTimeout bounds the wait for the database lock before Open fails
	// with ErrInUse; zero means one second.
	LockTimeout time.Duration
	// Logger receives cache reconciliation notes; nil discards them.
	Logger *slog.Logger
}

// Bucket names. Index buckets hold keys of the form field NUL primary-key
// with empty values, so one field value may map to many records and a
// prefix scan lists them.
var (
	bucketMeta        = []byte("meta")
	bucketLocal       = []byte("local")
	bucketLocalBySHA  = []byte("local_by_sha")
	bucketLocalByKey  = []byte("local_by_build_key")
	bucketLeaves      = []byte("leaves")
	bucketAtt         = []byte("attestations")
	bucketAttByBuild  = []byte("att_by_build_key")
	bucketAttByVar    = []byte("att_by_variant_key")
	bucketAttByPlat   = []byte("att_by_platform")
	bucketAttByCPV    = []byte("att_by_cpv")
	bucketAttByAuthor = []byte("att_by_attester")
	bucketEv          = []byte("evidence")
	bucketEvByBuild   = []byte("ev_by_build_key")
	bucketEvByPeer    = []byte("ev_by_peer")
	bucketCounters    = []byte("counters")
	bucketCache       = []byte("cache")
	bucketEndorse     = []byte("endorsements")
	bucketOwnContent  = []byte("own_content")
	bucketFirstSeen   = []byte("first_seen")

	allBuckets = [][]byte{
		bucketMeta, bucketLocal, bucketLocalBySHA, bucketLocalByKey, bucketLeaves,
		bucketAtt, bucketAttByBuild, bucketAttByVar, bucketAttByPlat, bucketAttByCPV, bucketAttByAuthor,
		bucketEv, bucketEvByBuild, bucketEvByPeer, bucketCounters, bucketCache,
		bucketEndorse, bucketOwnContent, bucketFirstSeen, bucketAttByPlatTime, bucketAttUsage,
		bucketVoteVersions, bucketDerived, bucketStanding,
		bucketDemand, bucketDemandBlob, bucketDemandByPeer, bucketDemandByPlat, bucketDemandByTime,
		bucketDemandByPlatTime, bucketDemandIDs,
		bucketVouch, bucketEndorseIDs,
	}

	keySchema = []byte("schema")
)

// Store is the open state database. Its methods are safe for concurrent use.
type Store struct {
	dir  string
	db   *bolt.DB
	log  *slog.Logger
	pidf string

	cache *Cache
	// votes and local log committed changes for readers that keep
	// derived results (VotesGeneration, LocalGeneration).
	votes, local *changeLog
	// writing is what the write transaction running now changes of what
	// votes and local track: set and read only under bbolt's writer lock
	// (update).
	writing *txChanges

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the state database in dir, creating dir
// with mode 0700 (or tightening it to 0700): it holds the peer's private
// state. A second Open of the
// same dir, from this or another process, fails with ErrInUse naming the
// holder's pid when it is known.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("open state dir: %w: empty path", ErrInvalid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The dir may predate us with a wider mode; it holds private state.
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("stat state dir %s: %w", dir, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("tightening state dir permissions", "dir", dir, "was", fi.Mode().Perm().String())
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("chmod state dir %s 0700: %w", dir, err)
		}
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	dbPath := filepath.Join(dir, DBFile)
	pidPath := filepath.Join(dir, PIDFile)
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, inUseError(dir, pidPath)
		}
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	// The lock is ours: record who holds it. Best effort; the lock itself
	// is the guarantee, the pid only makes the error message helpful.
	_ = os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)

	// bbolt grows the file by its high-water mark plus AllocSize (16 MiB
	// by default) once past 16 MiB; a smaller step keeps a store that a
	// peer's budget bounds close to that bound on disk, for a few more
	// truncate calls as it grows.
	db.AllocSize = 4 << 20
	s := &Store{dir: dir, db: db, log: log, pidf: pidPath, votes: newChangeLog(), local: newChangeLog()}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(dir, CacheDirName)
	}
	for _, d := range []string{cacheDir, s.PartialDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	c, err := openCache(s, cacheDir)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.cache = c
	return s, nil
}

func inUseError(dir, pidPath string) error {
	b, err := os.ReadFile(pidPath)
	if err == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
			return fmt.Errorf("%w (pid %d): %s", ErrInUse, pid, dir)
		}
	}
	return fmt.Errorf("%w (pid unknown): %s", ErrInUse, dir)
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		fresh := map[string]bool{}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				fresh[string(name)] = true
			}
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, u64(SchemaVersion))
		}
		if len(v) != 8 {
			return fmt.Errorf("%w: schema version record has %d bytes", ErrCorrupt, len(v))
		}
		got := binary.BigEndian.Uint64(v)
		if got > SchemaVersion || got == 0 {
			return fmt.Errorf("%w: database has %d, this build knows %d", ErrSchema, got, SchemaVersion)
		}
		if got == 1 {
			// Version 1 had no usage or time index: build them afresh from
			// the records, whatever an interrupted upgrade left.
			for _, b := range [][]byte{bucketAttByPlatTime, bucketAttUsage} {
				if err := tx.DeleteBucket(b); err != nil {
					return fmt.Errorf("upgrade schema: %w", err)
				}
				if _, err := tx.CreateBucket(b); err != nil {
					return fmt.Errorf("upgrade schema: %w", err)
				}
				fresh[string(b)] = true
			}
		}
		// Buckets added since this database was written are filled from
		// the records it already holds.
		if err := migrateAttestations(tx, fresh); err != nil {
			return err
		}
		if err := migrateDemand(tx, fresh); err != nil {
			return err
		}
		if err := migrateEndorsements(tx, fresh); err != nil {
			return err
		}
		if got != SchemaVersion {
			return meta.Put(keySchema, u64(SchemaVersion))
		}
		return nil
	})
}

// Close releases the database and its lock. It is safe to call twice.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		_ = os.Remove(s.pidf)
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// Dir is the state directory, for files the daemon keeps beside the
// database (identity key, socket).
func (s *Store) Dir() string { return s.dir }

// PartialDir is where transfers keep partially fetched files so a restart
// resumes instead of starting over. The store never deletes its contents;
// the fetcher owns them.
func (s *Store) PartialDir() string { return filepath.Join(s.dir, PartialDirName) }

// Cache is the content cache of fetched package files.
func (s *Store) Cache() *Cache { return s.cache }

// update runs fn in one write transaction, mapping bbolt's closed-database
// error to ErrClosed.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	var c txChanges
	err := s.db.Update(func(tx *bolt.Tx) error {
		s.writing = &c
		defer func() { s.writing = nil }()
		return fn(tx)
	})
	// Committed or rolled back: what the transaction began ends, after
	// its records are visible.
	c.finish(s)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// IncCounter adds delta to the named status counter (rejected
// attestations, bytes served, bytes saved …), durably, so status survives
// restarts.
func (s *Store) IncCounter(name string, delta int64) error {
	if name == "" {
		return fmt.Errorf("counter: %w: empty name", ErrInvalid)
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounters)
		var cur int64
		if v := b.Get([]byte(name)); len(v) == 8 {
			cur = int64(binary.BigEndian.Uint64(v))
		}
		return b.Put([]byte(name), u64(uint64(cur+delta)))
	})
}

// Counters returns every status counter by name.
func (s *Store) Counters() (map[string]int64, error) {
	out := make(map[string]int64)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCounters).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: counter %q has %d bytes", ErrCorrupt, k, len(v))
			}
			out[string(k)] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	return out, err
}

// Counts is the number of records of each kind, for status output.
type Counts struct {
	Local        int   `json:"local"`
	Leaves       int   `json:"leaves"`
	Attestations int   `json:"attestations"`
	Evidence     int   `json:"evidence"`
	Demands      int   `json:"demands"`
	CacheFiles   int   `json:"cache_files"`
	CacheBytes   int64 `json:"cache_bytes"`
}

// Counts reports how many records the store holds.
func (s *Store) Counts() (Counts, error) {
	var c Counts
	err := s.view(func(tx *bolt.Tx) error {
		c.Local = tx.Bucket(bucketLocal).Stats().KeyN
		c.Leaves = tx.Bucket(bucketLeaves).Stats().KeyN
		c.Attestations = tx.Bucket(bucketAtt).Stats().KeyN
		c.Evidence = tx.Bucket(bucketEv).Stats().KeyN
		c.Demands = demandCount(tx)
		c.CacheFiles = tx.Bucket(bucketCache).Stats().KeyN
		return nil
	})
	c.CacheBytes = s.cache.Usage()
	return c, err
}

// Check verifies that every secondary index entry points at an existing
// primary record whose field matches, and that every primary record has all
// its index entries. It returns an ErrCorrupt-wrapped error naming the
// first disagreement. A crash must never make Check fail; the tests prove
// it by killing a writer mid-loop.
func (s *Store) Check() error {
	return s.view(func(tx *bolt.Tx) error {
		if err := checkLocal(tx); err != nil {
			return err
		}
		if err := checkAttestations(tx); err != nil {
			return err
		}
		if err := checkAttestationBudget(tx); err != nil {
			return err
		}
		if err := checkEvidence(tx); err != nil {
			return err
		}
		if err := checkDemand(tx); err != nil {
			return err
		}
		return checkCache(tx)
	})
}

// indexKey builds field NUL primary.
func indexKey(field string, primary []byte) []byte {
	k := make([]byte, 0, len(field)+1+len(primary))
	k = append(k, field...)
	k = append(k, 0)
	return append(k, primary...)
}

// splitIndexKey is the inverse of indexKey: fields never contain NUL (put
// rejects them), so the first NUL separates.
func splitIndexKey(k []byte) (field string, primary []byte, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(k[:i]), k[i+1:], true
}

// scanIndex calls fn with the primary key of every index entry for field.
func scanIndex(b *bolt.Bucket, field string, fn func(primary []byte) error) error {
	prefix := indexKey(field, nil)
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if err := fn(k[len(prefix):]); err != nil {
			return err
		}
	}
	return nil
}

// putIndex adds field→primary unless field is empty (records need not
// carry every field; an empty one is simply not indexed).
func putIndex(b *bolt.Bucket, field string, primary []byte) error {
	if field == "" {
		return nil
	}
	return b.Put(indexKey(field, primary), nil)
}

func delIndex(b *bolt.Bucket, field string, primary []byte) error {
	if field == "" {
		return nil
	}
	return b.Delete(indexKey(field, primary))
}

// checkIndexField rejects values that would break the NUL-separated keys.
func checkIndexField(name, v string) error {
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%w: %s contains a NUL byte", ErrInvalid, name)
	}
	return nil
}

// checkIndexAgainst verifies both directions between one index bucket and
// a primary bucket, given how to extract the indexed field of a record.
func checkIndexAgainst(tx *bolt.Tx, index, primary []byte, field func(v []byte) (string, error)) error {
	ib, pb := tx.Bucket(index), tx.Bucket(primary)
	err := ib.ForEach(func(k, _ []byte) error {
		f, pk, ok := splitIndexKey(k)
		if !ok {
			return fmt.Errorf("%w: %s key %x has no separator", ErrCorrupt, index, k)
		}
		v := pb.Get(pk)
		if v == nil {
			return fmt.Errorf("%w: %s entry %q points at missing %s record %x", ErrCorrupt, index, f, primary, pk)
		}
		got, err := field(v)
		if err != nil {
			return err
		}
		if got != f {
			return fmt.Errorf("%w: %s entry %q but %s record %x has %q", ErrCorrupt, index, f, primary, pk, got)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return pb.ForEach(func(k, v []byte) error {
		f, err := field(v)
		if err != nil {
			return err
		}
		if f == "" {
			return nil
		}
		if ib.Get(indexKey(f, k)) == nil {
			return fmt.Errorf("%w: %s record %x lacks its %s entry %q", ErrCorrupt, primary, k, index, f)
		}
		return nil
	})
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
