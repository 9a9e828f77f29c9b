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

// OwnClaim is one content claim of ClaimOwnContents.
type OwnClaim struct {
	BuildKey, Content string
}

// ClaimOwnContents is ClaimOwnContent of several claims in one
// transaction, applied in order (a later claim of a build key sees an
// earlier one). It returns the content recorded for each claim; nothing is
// recorded if a claim is invalid.
func (s *Store) ClaimOwnContents(claims []OwnClaim) (recorded []string, err error) {
	for _, c := range claims {
		if c.BuildKey == "" || c.Content == "" {
			return nil, fmt.Errorf("%w: own content needs a build key and a content id", ErrInvalid)
		}
	}
	err = s.update(func(tx *bolt.Tx) error {
		recorded = make([]string, len(claims))
		b := tx.Bucket(bucketOwnContent)
		for i, c := range claims {
			if v := b.Get([]byte(c.BuildKey)); v != nil {
				recorded[i] = string(v)
				continue
			}
			recorded[i] = c.Content
			if err := b.Put([]byte(c.BuildKey), []byte(c.Content)); err != nil {
				return err
			}
		}
		return nil
	})
	return recorded, err
}
