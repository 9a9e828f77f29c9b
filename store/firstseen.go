package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FirstSeen returns when key was first recorded, recording now (to the
// second) if it never was. The daemon stamps what it serves with this
// instead of a time a peer chose, so no peer can make it redo work or pick
// the mtimes portage installs.
func (s *Store) FirstSeen(key string, now time.Time) (time.Time, error) {
	if key == "" {
		return time.Time{}, fmt.Errorf("%w: first-seen needs a key", ErrInvalid)
	}
	var at time.Time
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFirstSeen)
		if v := b.Get([]byte(key)); len(v) == 8 {
			at = time.Unix(int64(binary.BigEndian.Uint64(v)), 0).UTC()
			return nil
		}
		at = now.UTC().Truncate(time.Second)
		return b.Put([]byte(key), u64(uint64(at.Unix())))
	})
	return at, err
}
