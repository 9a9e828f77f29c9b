package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ClaimOwnContent records the content id this peer attests for a build key,
// the first time it attests one, and returns the content recorded before
// (equal to content when the claim is new or the same). The record outlives
// the package and its attestation: signing a different content for the
// same build key later — a non-reproducible rebuild — would be
// equivocation, which voids every vote of this peer for that key.
func (s *Store) ClaimOwnContent(buildKey, content string) (recorded string, err error) {
	if buildKey == "" || content == "" {
		return "", fmt.Errorf("%w: own content needs a build key and a content id", ErrInvalid)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOwnContent)
		if v := b.Get([]byte(buildKey)); v != nil {
			recorded = string(v)
			return nil
		}
		recorded = content
		return b.Put([]byte(buildKey), []byte(content))
	})
	return recorded, err
}
