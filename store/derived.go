package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Results derived from votes (the gateway's listings) are kept across
// restarts, so the first index after a start reads them instead of
// decoding and verifying every vote again. Each is kept with the vote
// version its build key had before its votes were read; it is still
// right while that version has not moved.
var (
	// bucketVoteVersions counts, per build key, the committed writes of
	// its attestations, endorsements and evidence (voteVersionsAny: of
	// evidence without a build key).
	bucketVoteVersions = []byte("vote_versions")
	// bucketDerived holds the callers' derived blobs by key.
	bucketDerived = []byte("derived")
)

// voteVersionsAny is the count of writes that may concern any build key.
const voteVersionsAny = "\x00any"

func bumpVoteVersions(tx *bolt.Tx, bks []string) error {
	b := tx.Bucket(bucketVoteVersions)
	for _, bk := range bks {
		k := []byte(bk)
		if bk == "" {
			k = []byte(voteVersionsAny)
		}
		var n uint64
		if v := b.Get(k); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		if err := b.Put(k, u64(n+1)); err != nil {
			return err
		}
	}
	return nil
}

// VoteVersions returns, for each build key, a count that grows with every
// committed write of its attestations, endorsements or evidence (and of
// evidence that names no build key). It is persisted with the writes it
// counts, so a result derived from a build key's votes, saved with the
// version read before them, is still right — after a restart too — while
// the version is the same.
func (s *Store) VoteVersions(bks []string) ([]uint64, error) {
	out := make([]uint64, len(bks))
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVoteVersions)
		var anyN uint64
		if v := b.Get([]byte(voteVersionsAny)); len(v) == 8 {
			anyN = binary.BigEndian.Uint64(v)
		}
		for i, bk := range bks {
			out[i] = anyN
			if bk == "" {
				continue
			}
			if v := b.Get([]byte(bk)); len(v) == 8 {
				out[i] += binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	return out, err
}

// Derived returns the blobs PutDerived kept under keys (nil where none).
func (s *Store) Derived(keys []string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDerived)
		for i, k := range keys {
			if k == "" {
				continue
			}
			if v := b.Get([]byte(k)); v != nil {
				out[i] = append([]byte(nil), v...)
			}
		}
		return nil
	})
	return out, err
}

// PutDerived keeps blobs derived from votes, by key, and drops the keys in
// drop, in one transaction. The store never reads them; the caller checks
// whatever they were derived from (VoteVersions) before using them.
func (s *Store) PutDerived(vals map[string][]byte, drop []string) error {
	for k := range vals {
		if k == "" {
			return fmt.Errorf("%w: derived blob without a key", ErrInvalid)
		}
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDerived)
		for _, k := range drop {
			if k == "" {
				continue
			}
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
		for k, v := range vals {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// DerivedKeys lists the keys of the derived blobs kept under prefix.
func (s *Store) DerivedKeys(prefix string) ([]string, error) {
	var out []string
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDerived).Cursor()
		p := []byte(prefix)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			out = append(out, string(k))
		}
		return nil
	})
	return out, err
}
