package store

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Build-server endorsements live in bucketEndorse, keyed by
// buildKey NUL sha256(blob). Blobs are opaque here; the daemon verifies them
// before it stores them.

// PutEndorsement stores an endorsement blob for buildKey once.
func (s *Store) PutEndorsement(buildKey string, blob []byte) (added bool, err error) {
	if buildKey == "" || len(blob) == 0 {
		return false, fmt.Errorf("%w: endorsement needs a build key and a blob", ErrInvalid)
	}
	sum := sha256.Sum256(blob)
	key := append(append([]byte(buildKey), 0), sum[:]...)
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEndorse)
		if b.Get(key) != nil {
			return nil
		}
		added = true
		if err := s.votesChanged(tx, buildKey); err != nil {
			return err
		}
		if err := tx.Bucket(bucketEndorseIDs).Put(sum[:], key); err != nil {
			return err
		}
		return b.Put(key, blob)
	})
	return added, err
}

// EndorsementsFor returns the endorsement blobs stored for buildKey.
func (s *Store) EndorsementsFor(buildKey string) ([][]byte, error) {
	var out [][]byte
	prefix := append([]byte(buildKey), 0)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEndorse).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			out = append(out, bytes.Clone(v))
		}
		return nil
	})
	return out, err
}
