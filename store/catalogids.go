package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// What catalog sync by ids (catalog/3) needs: pages of record ids in
// (time, id) order without reading a blob, whether records named by id
// are held, and a record's blob by its id.

// bucketEndorseIDs maps an endorsement's id (SHA-256 of its blob) to its
// key in bucketEndorse (build key NUL id).
var bucketEndorseIDs = []byte("endorsement_ids")

// CatalogEntry is one record of an ids page: its time (Unix seconds), its
// id (the SHA-256 of its blob) and, for an attestation, its build key,
// whose endorsements ride with it.
type CatalogEntry struct {
	Time     int64
	ID       [32]byte
	BuildKey string
}

// PlatformIDs is PlatformPage without the blobs: the ids of platform's
// attestations after the cursor, in (time, id) order, at most
// maxRecords. It reads each record's metadata for its build key, never
// its blob.
func (s *Store) PlatformIDs(platform string, since int64, after []byte, maxRecords int) ([]CatalogEntry, error) {
	return s.PlatformIDsUntil(platform, since, after, 0, maxRecords)
}

// PlatformIDsUntil is PlatformIDs of the attestations dated before until
// (no bound when until is 0).
func (s *Store) PlatformIDsUntil(platform string, since int64, after []byte, until int64, maxRecords int) ([]CatalogEntry, error) {
	var out []CatalogEntry
	err := s.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketAtt)
		return walkPlatTime(tx.Bucket(bucketAttByPlatTime), platform, since, after, until, maxRecords, func(at int64, id, bk []byte) error {
			e, err := catalogEntry(pb, at, id, bk)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// DemandIDs is DemandPage without the blobs: the ids of platform's demand
// records after the cursor, in (time, id) order, at most maxRecords, read
// from the index alone.
func (s *Store) DemandIDs(platform string, since int64, after []byte, maxRecords int) ([]CatalogEntry, error) {
	return s.DemandIDsUntil(platform, since, after, 0, maxRecords)
}

// DemandIDsUntil is DemandIDs of the records dated before until (no
// bound when until is 0).
func (s *Store) DemandIDsUntil(platform string, since int64, after []byte, until int64, maxRecords int) ([]CatalogEntry, error) {
	var out []CatalogEntry
	err := s.view(func(tx *bolt.Tx) error {
		return walkPlatTime(tx.Bucket(bucketDemandByPlatTime), platform, since, after, until, maxRecords, func(at int64, id, _ []byte) error {
			e := CatalogEntry{Time: at}
			copy(e.ID[:], id)
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// walkPlatTime calls fn for the entries of a (platform, time, id) index
// after the cursor, in order, at most maxRecords: after the entry (since,
// after), or after every entry of second since when after is empty; and
// dated before until unless until is 0.
func walkPlatTime(b *bolt.Bucket, platform string, since int64, after []byte, until int64, maxRecords int, fn func(at int64, id, value []byte) error) error {
	if platform == "" || maxRecords <= 0 {
		return nil
	}
	since = max(since, 0)
	start := platTimeKey(platform, since+1, nil)
	if len(after) > 0 {
		start = platTimeKey(platform, since, after)
	}
	prefix := append([]byte(platform), 0)
	n := 0
	c := b.Cursor()
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix) && n < maxRecords; k, v = c.Next() {
		if len(after) > 0 && bytes.Equal(k, start) {
			continue // the cursor's own record
		}
		rest := k[len(prefix):]
		if len(rest) != 8+32 {
			return fmt.Errorf("%w: index key %x has a bad length", ErrCorrupt, k)
		}
		at := int64(binary.BigEndian.Uint64(rest[:8]))
		if until > 0 && at >= until {
			return nil
		}
		if err := fn(at, rest[8:], v); err != nil {
			return err
		}
		n++
	}
	return nil
}

// AttestationTimes reports for each id whether that attestation is held
// and its time (0 when held but dated before the store indexed times).
func (s *Store) AttestationTimes(ids [][32]byte) (times []int64, held []bool, err error) {
	times, held = make([]int64, len(ids)), make([]bool, len(ids))
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAtt)
		for i, id := range ids {
			v := b.Get(id[:])
			if v == nil {
				continue
			}
			var meta struct {
				Time int64 `json:"at"`
			}
			if _, err := attMeta(v, &meta); err != nil {
				return fmt.Errorf("attestation %x: %w", id, err)
			}
			times[i], held[i] = meta.Time, true
		}
		return nil
	})
	return times, held, err
}

// DemandTimes reports for each id whether that demand record is held and
// its signed time.
func (s *Store) DemandTimes(ids [][32]byte) (times []int64, held []bool, err error) {
	times, held = make([]int64, len(ids)), make([]bool, len(ids))
	for i, id := range ids {
		if times[i], held[i], err = s.DemandByID(id); err != nil {
			return nil, nil, err
		}
	}
	return times, held, nil
}

// EndorsementIDs lists the ids (SHA-256 of the blob) of the endorsements
// held for buildKey, in the order EndorsementsFor returns them.
func (s *Store) EndorsementIDs(buildKey string) ([][32]byte, error) {
	var out [][32]byte
	prefix := append([]byte(buildKey), 0)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEndorse).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+32 {
				return fmt.Errorf("%w: endorsement key %x has a bad length", ErrCorrupt, k)
			}
			var id [32]byte
			copy(id[:], k[len(prefix):])
			out = append(out, id)
		}
		return nil
	})
	return out, err
}

// HasEndorsements reports for each id whether that endorsement is held.
func (s *Store) HasEndorsements(ids [][32]byte) ([]bool, error) {
	held := make([]bool, len(ids))
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEndorseIDs)
		for i, id := range ids {
			held[i] = b.Get(id[:]) != nil
		}
		return nil
	})
	return held, err
}

// EndorsementByID returns the endorsement blob with this id.
func (s *Store) EndorsementByID(id [32]byte) (blob []byte, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		key := tx.Bucket(bucketEndorseIDs).Get(id[:])
		if key == nil {
			return nil
		}
		v := tx.Bucket(bucketEndorse).Get(key)
		if v == nil {
			return fmt.Errorf("%w: %s entry %x points at missing endorsement", ErrCorrupt, bucketEndorseIDs, id)
		}
		blob, ok = bytes.Clone(v), true
		return nil
	})
	return blob, ok, err
}

// DemandBlobByID returns the demand record blob with this id.
func (s *Store) DemandBlobByID(id [32]byte) (blob []byte, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		primary := tx.Bucket(bucketDemandIDs).Get(id[:])
		if primary == nil {
			return nil
		}
		v := tx.Bucket(bucketDemandBlob).Get(primary)
		if v == nil {
			return fmt.Errorf("%w: %s entry %x points at missing demand record %q", ErrCorrupt, bucketDemandIDs, id, primary)
		}
		blob, ok = bytes.Clone(v), true
		return nil
	})
	return blob, ok, err
}

// migrateEndorsements fills the endorsement id index from the
// endorsements a database written before it holds.
func migrateEndorsements(tx *bolt.Tx, fresh map[string]bool) error {
	if !fresh[string(bucketEndorseIDs)] {
		return nil
	}
	ids := tx.Bucket(bucketEndorseIDs)
	return tx.Bucket(bucketEndorse).ForEach(func(k, _ []byte) error {
		if len(k) < 33 {
			return fmt.Errorf("%w: endorsement key %x has a bad length", ErrCorrupt, k)
		}
		return ids.Put(k[len(k)-32:], bytes.Clone(k))
	})
}

// WalkPlatformIDs calls fn, in (time, id) order, for each of platform's
// attestations dated in [from, until) (from 1 on: no page lists time 0),
// with its build key, until fn returns an error, which it returns. It is
// one read transaction: fn must not use the store.
func (s *Store) WalkPlatformIDs(platform string, from, until int64, fn func(CatalogEntry) error) error {
	return s.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketAtt)
		return walkPlatTime(tx.Bucket(bucketAttByPlatTime), platform, from-1, nil, until, math.MaxInt, func(at int64, id, bk []byte) error {
			e, err := catalogEntry(pb, at, id, bk)
			if err != nil {
				return err
			}
			return fn(e)
		})
	})
}

// WalkDemandIDs is WalkPlatformIDs for platform's demand records, read
// from the index alone (no build key).
func (s *Store) WalkDemandIDs(platform string, from, until int64, fn func(CatalogEntry) error) error {
	return s.view(func(tx *bolt.Tx) error {
		return walkPlatTime(tx.Bucket(bucketDemandByPlatTime), platform, from-1, nil, until, math.MaxInt, func(at int64, id, _ []byte) error {
			e := CatalogEntry{Time: at}
			copy(e.ID[:], id)
			return fn(e)
		})
	})
}

// catalogEntry is the catalog entry of the attestation id, listed at time
// at in the platform-time index with build key bk (the index value;
// entries written before it held one are empty, and the build key is read
// from the record's metadata).
func catalogEntry(pb *bolt.Bucket, at int64, id, bk []byte) (CatalogEntry, error) {
	if len(bk) > 0 {
		e := CatalogEntry{Time: at, BuildKey: string(bk)}
		copy(e.ID[:], id)
		return e, nil
	}
	v := pb.Get(id)
	if v == nil {
		return CatalogEntry{}, fmt.Errorf("%w: %s points at missing attestation %x", ErrCorrupt, bucketAttByPlatTime, id)
	}
	var meta struct {
		BuildKey string `json:"build_key"`
	}
	if _, err := attMeta(v, &meta); err != nil {
		return CatalogEntry{}, fmt.Errorf("attestation %x: %w", id, err)
	}
	e := CatalogEntry{Time: at, BuildKey: meta.BuildKey}
	copy(e.ID[:], id)
	return e, nil
}
