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
	at, err := s.FirstSeenAll([]string{key}, []time.Time{now})
	if err != nil {
		return time.Time{}, err
	}
	return at[0], nil
}

// FirstSeenAll is FirstSeen for many keys at once (now[i] for keys[i]):
// keys recorded already are read without writing, and the others are
// recorded in one transaction, so listing thousands of builds costs one
// fsync at most instead of one each.
func (s *Store) FirstSeenAll(keys []string, now []time.Time) ([]time.Time, error) {
	if len(now) != len(keys) {
		return nil, fmt.Errorf("%w: first-seen of %d keys with %d times", ErrInvalid, len(keys), len(now))
	}
	for _, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("%w: first-seen needs a key", ErrInvalid)
		}
	}
	at := make([]time.Time, len(keys))
	var missing []int
	read := func(tx *bolt.Tx, idx []int) []int {
		b := tx.Bucket(bucketFirstSeen)
		var left []int
		for _, i := range idx {
			if v := b.Get([]byte(keys[i])); len(v) == 8 {
				at[i] = time.Unix(int64(binary.BigEndian.Uint64(v)), 0).UTC()
			} else {
				left = append(left, i)
			}
		}
		return left
	}
	all := make([]int, len(keys))
	for i := range all {
		all[i] = i
	}
	if err := s.view(func(tx *bolt.Tx) error { missing = read(tx, all); return nil }); err != nil {
		return nil, err
	}
	if len(missing) == 0 {
		return at, nil
	}
	err := s.update(func(tx *bolt.Tx) error {
		// Another writer may have recorded some meanwhile: theirs stand.
		b := tx.Bucket(bucketFirstSeen)
		for _, i := range read(tx, missing) {
			at[i] = now[i].UTC().Truncate(time.Second)
			if err := b.Put([]byte(keys[i]), u64(uint64(at[i].Unix()))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return at, nil
}
