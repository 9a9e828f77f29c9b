package store

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// LocalPackage is one binpkg found in PKGDIR and what indexing it yielded.
// The (Size, MTimeNS, Inode) triple lets the scanner skip re-hashing files
// that did not change across restarts.
type LocalPackage struct {
	// Path is the absolute path of the file; the primary key.
	Path string
	// Size, MTimeNS and Inode are the file's stat when it was indexed.
	Size    int64
	MTimeNS int64
	Inode   uint64
	// FileSHA256 is the SHA-256 of the container bytes (what fetch serves).
	FileSHA256 [32]byte
	// Format is the container format ("xpak" or "gpkg").
	Format string
	// CPV is category/package-version, e.g. "app-misc/hello-1.0".
	CPV string
	// BuildID is portage's BUILD_ID (0 when the package has none).
	BuildID int64
	// BuildKey and VariantKey are the package's DHT keys as strings
	// (CIDs); the store treats them as opaque.
	BuildKey, VariantKey string
	// ImageDigest and MetadataDigest form the content id peers vote on.
	ImageDigest, MetadataDigest [32]byte
	// PieceRoot is the Merkle root of the file's pieces; the leaves are
	// stored separately (PutLeaves) because they are large and only the
	// fetch server needs them.
	PieceRoot [32]byte
	// Platform names the catalog the package belongs to (CHOST + flags).
	Platform string
	// IndexedAt is when the file was indexed.
	IndexedAt time.Time
	// Extra is daemon-defined JSON stored verbatim, so the daemon can keep
	// more per-package facts without a schema change here.
	Extra json.RawMessage
	// Leaves, when set, are the file's piece leaves: PutLocal and
	// PutLocals store them (as PutLeaves does) in the record's own
	// transaction. They are not part of the record: reads leave Leaves
	// nil (GetLeaves has them).
	Leaves [][32]byte
}

type localJSON struct {
	Path           string          `json:"path"`
	Size           int64           `json:"size"`
	MTimeNS        int64           `json:"mtime_ns"`
	Inode          uint64          `json:"inode"`
	FileSHA256     string          `json:"file_sha256"`
	Format         string          `json:"format,omitempty"`
	CPV            string          `json:"cpv,omitempty"`
	BuildID        int64           `json:"build_id,omitempty"`
	BuildKey       string          `json:"build_key,omitempty"`
	VariantKey     string          `json:"variant_key,omitempty"`
	ImageDigest    string          `json:"image_digest"`
	MetadataDigest string          `json:"metadata_digest"`
	PieceRoot      string          `json:"piece_root"`
	Platform       string          `json:"platform,omitempty"`
	IndexedAt      time.Time       `json:"indexed_at"`
	Extra          json.RawMessage `json:"extra,omitempty"`
}

func encodeLocal(p LocalPackage) ([]byte, error) {
	return json.Marshal(localJSON{
		Path: p.Path, Size: p.Size, MTimeNS: p.MTimeNS, Inode: p.Inode,
		FileSHA256: hex.EncodeToString(p.FileSHA256[:]), Format: p.Format, CPV: p.CPV,
		BuildID: p.BuildID, BuildKey: p.BuildKey, VariantKey: p.VariantKey,
		ImageDigest:    hex.EncodeToString(p.ImageDigest[:]),
		MetadataDigest: hex.EncodeToString(p.MetadataDigest[:]),
		PieceRoot:      hex.EncodeToString(p.PieceRoot[:]),
		Platform:       p.Platform, IndexedAt: p.IndexedAt, Extra: p.Extra,
	})
}

func decodeLocal(v []byte) (LocalPackage, error) {
	var j localJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return LocalPackage{}, fmt.Errorf("%w: local record: %v", ErrCorrupt, err)
	}
	p := LocalPackage{
		Path: j.Path, Size: j.Size, MTimeNS: j.MTimeNS, Inode: j.Inode, Format: j.Format,
		CPV: j.CPV, BuildID: j.BuildID, BuildKey: j.BuildKey, VariantKey: j.VariantKey,
		Platform: j.Platform, IndexedAt: j.IndexedAt, Extra: j.Extra,
	}
	for _, f := range []struct {
		name string
		hex  string
		dst  *[32]byte
	}{
		{"file_sha256", j.FileSHA256, &p.FileSHA256},
		{"image_digest", j.ImageDigest, &p.ImageDigest},
		{"metadata_digest", j.MetadataDigest, &p.MetadataDigest},
		{"piece_root", j.PieceRoot, &p.PieceRoot},
	} {
		if err := decodeHash32(f.hex, f.dst); err != nil {
			return LocalPackage{}, fmt.Errorf("%w: local record %s: %s: %v", ErrCorrupt, j.Path, f.name, err)
		}
	}
	return p, nil
}

func decodeHash32(s string, dst *[32]byte) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != 32 {
		return fmt.Errorf("%d bytes, want 32", len(b))
	}
	copy(dst[:], b)
	return nil
}

func validateLocal(p LocalPackage) error {
	if p.Path == "" {
		return fmt.Errorf("local package: %w: empty path", ErrInvalid)
	}
	if err := checkIndexField("build key", p.BuildKey); err != nil {
		return fmt.Errorf("local package %s: %w", p.Path, err)
	}
	if p.Extra != nil && !json.Valid(p.Extra) {
		return fmt.Errorf("local package %s: %w: Extra is not valid JSON", p.Path, ErrInvalid)
	}
	return nil
}

// PutLocal records (or replaces) the package at p.Path together with its
// indexes, in one transaction.
func (s *Store) PutLocal(p LocalPackage) error {
	return s.PutLocals([]LocalPackage{p})
}

// PutLocals records (or replaces) several packages in one transaction:
// indexing a PKGDIR of thousands of builds would otherwise pay one
// synced commit per build. Nothing is recorded if one is invalid.
func (s *Store) PutLocals(ps []LocalPackage) error {
	if len(ps) == 0 {
		return nil
	}
	vs := make([][]byte, len(ps))
	for i, p := range ps {
		if err := validateLocal(p); err != nil {
			return err
		}
		v, err := encodeLocal(p)
		if err != nil {
			return fmt.Errorf("encode local package %s: %w", p.Path, err)
		}
		vs[i] = v
	}
	return s.update(func(tx *bolt.Tx) error {
		s.localChanged(tx)
		for i, p := range ps {
			if _, _, err := deleteLocalTx(tx, p.Path); err != nil {
				return err
			}
			pk := []byte(p.Path)
			if err := tx.Bucket(bucketLocal).Put(pk, vs[i]); err != nil {
				return err
			}
			if err := putIndex(tx.Bucket(bucketLocalBySHA), hex.EncodeToString(p.FileSHA256[:]), pk); err != nil {
				return err
			}
			if err := putIndex(tx.Bucket(bucketLocalByKey), p.BuildKey, pk); err != nil {
				return err
			}
			if p.Leaves != nil {
				if err := tx.Bucket(bucketLeaves).Put(p.FileSHA256[:], leavesValue(p.Leaves)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// LocalStat is the stat a local package was indexed at.
type LocalStat struct {
	Size    int64
	MTimeNS int64
	Inode   uint64
}

// LocalStats returns the indexed stat of every local package by path:
// what a PKGDIR scan compares the disk with, without holding every
// record's digests and daemon data in memory.
func (s *Store) LocalStats() (map[string]LocalStat, error) {
	out := make(map[string]LocalStat)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLocal).ForEach(func(k, v []byte) error {
			var j struct {
				Size    int64  `json:"size"`
				MTimeNS int64  `json:"mtime_ns"`
				Inode   uint64 `json:"inode"`
			}
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("%w: local record %q: %v", ErrCorrupt, k, err)
			}
			out[string(k)] = LocalStat(j)
			return nil
		})
	})
	return out, err
}

// LocalPaths returns the path of every local package, ordered: for
// walking thousands of records one at a time (GetLocal) instead of
// holding them all.
func (s *Store) LocalPaths() ([]string, error) {
	var out []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLocal).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// CountLocal is how many local packages are recorded.
func (s *Store) CountLocal() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketLocal).Stats().KeyN
		return nil
	})
	return n, err
}

// deleteLocalTx removes the record at path and its index entries.
func deleteLocalTx(tx *bolt.Tx, path string) (LocalPackage, bool, error) {
	b := tx.Bucket(bucketLocal)
	pk := []byte(path)
	v := b.Get(pk)
	if v == nil {
		return LocalPackage{}, false, nil
	}
	old, err := decodeLocal(v)
	if err != nil {
		return LocalPackage{}, false, err
	}
	if err := delIndex(tx.Bucket(bucketLocalBySHA), hex.EncodeToString(old.FileSHA256[:]), pk); err != nil {
		return LocalPackage{}, false, err
	}
	if err := delIndex(tx.Bucket(bucketLocalByKey), old.BuildKey, pk); err != nil {
		return LocalPackage{}, false, err
	}
	return old, true, b.Delete(pk)
}

// DeleteLocal forgets the package at path (it left PKGDIR) and returns what
// was recorded, so the caller can withdraw what it announced for it.
func (s *Store) DeleteLocal(path string) (LocalPackage, bool, error) {
	var (
		old   LocalPackage
		found bool
	)
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		old, found, err = deleteLocalTx(tx, path)
		if found {
			s.localChanged(tx)
		}
		return err
	})
	return old, found, err
}

// GetLocal returns the package recorded at path.
func (s *Store) GetLocal(path string) (LocalPackage, bool, error) {
	var (
		p     LocalPackage
		found bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLocal).Get([]byte(path))
		if v == nil {
			return nil
		}
		var err error
		p, err = decodeLocal(v)
		found = err == nil
		return err
	})
	return p, found, err
}

// ListLocal returns every local package, ordered by path.
func (s *Store) ListLocal() ([]LocalPackage, error) {
	var out []LocalPackage
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLocal).ForEach(func(_, v []byte) error {
			p, err := decodeLocal(v)
			if err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// LocalBySHA returns the local packages whose container SHA-256 is sha —
// what the fetch server looks up. Several paths may hold the same bytes.
func (s *Store) LocalBySHA(sha [32]byte) ([]LocalPackage, error) {
	return s.localByIndex(bucketLocalBySHA, hex.EncodeToString(sha[:]))
}

// LocalByBuildKey returns the local packages built for buildKey, what an
// attest request or a provide needs.
func (s *Store) LocalByBuildKey(buildKey string) ([]LocalPackage, error) {
	if buildKey == "" {
		return nil, nil
	}
	return s.localByIndex(bucketLocalByKey, buildKey)
}

func (s *Store) localByIndex(index []byte, field string) ([]LocalPackage, error) {
	var out []LocalPackage
	err := s.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketLocal)
		return scanIndex(tx.Bucket(index), field, func(pk []byte) error {
			v := pb.Get(pk)
			if v == nil {
				return fmt.Errorf("%w: %s points at missing local record %q", ErrCorrupt, index, pk)
			}
			p, err := decodeLocal(v)
			if err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

func checkLocal(tx *bolt.Tx) error {
	if err := tx.Bucket(bucketLocal).ForEach(func(k, v []byte) error {
		p, err := decodeLocal(v)
		if err != nil {
			return err
		}
		if p.Path != string(k) {
			return fmt.Errorf("%w: local record under %q has path %q", ErrCorrupt, k, p.Path)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := checkIndexAgainst(tx, bucketLocalBySHA, bucketLocal, func(v []byte) (string, error) {
		p, err := decodeLocal(v)
		return hex.EncodeToString(p.FileSHA256[:]), err
	}); err != nil {
		return err
	}
	return checkIndexAgainst(tx, bucketLocalByKey, bucketLocal, func(v []byte) (string, error) {
		p, err := decodeLocal(v)
		return p.BuildKey, err
	})
}

// PutLeaves stores the piece-layer leaves of the file whose SHA-256 is sha,
// so the fetch server can prove each piece against the attested root.
func (s *Store) PutLeaves(sha [32]byte, leaves [][32]byte) error {
	v := leavesValue(leaves)
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeaves).Put(sha[:], v)
	})
}

func leavesValue(leaves [][32]byte) []byte {
	v := make([]byte, 0, 32*len(leaves))
	for _, l := range leaves {
		v = append(v, l[:]...)
	}
	return v
}

// GetLeaves returns the leaves stored for sha.
func (s *Store) GetLeaves(sha [32]byte) ([][32]byte, bool, error) {
	var (
		out   [][32]byte
		found bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLeaves).Get(sha[:])
		if v == nil {
			return nil
		}
		if len(v)%32 != 0 {
			return fmt.Errorf("%w: leaves of %x have %d bytes, not a multiple of 32", ErrCorrupt, sha, len(v))
		}
		found = true
		out = make([][32]byte, len(v)/32)
		for i := range out {
			copy(out[i][:], v[i*32:])
		}
		return nil
	})
	return out, found, err
}

// DeleteLeaves drops the leaves stored for sha once no local or cached file
// has those bytes any more.
func (s *Store) DeleteLeaves(sha [32]byte) error {
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeaves).Delete(sha[:])
	})
}

// PruneLeaves deletes the leaves of every file that is neither in PKGDIR
// (a local package) nor in the content cache any more, so the database
// does not grow with every build that ever passed through. It returns how
// many leaf layers it dropped.
func (s *Store) PruneLeaves() (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		byLocal, cache := tx.Bucket(bucketLocalBySHA), tx.Bucket(bucketCache)
		var drop [][]byte
		err := tx.Bucket(bucketLeaves).ForEach(func(sha, _ []byte) error {
			if cache.Get(sha) != nil {
				return nil
			}
			prefix := indexKey(hex.EncodeToString(sha), nil)
			if k, _ := byLocal.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
				return nil
			}
			drop = append(drop, append([]byte(nil), sha...))
			return nil
		})
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketLeaves)
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(drop)
		return nil
	})
	return n, err
}
