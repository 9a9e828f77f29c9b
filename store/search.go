package store

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// CPVBuilds lists, for every CPV of platform's attestations that match
// accepts, the build keys attested under it, from the indexes alone (no
// record is read): what `search` looks through.
func (s *Store) CPVBuilds(platform string, match func(cpv string) bool) (map[string][]string, error) {
	ids := map[string]bool{}
	cpvOf := map[string]string{}
	out := map[string][]string{}
	err := s.view(func(tx *bolt.Tx) error {
		if err := scanIndex(tx.Bucket(bucketAttByPlat), platform, func(id []byte) error {
			ids[string(id)] = true
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAttByCPV).ForEach(func(k, _ []byte) error {
			cpv, id, ok := splitIndexKey(k)
			if !ok {
				return fmt.Errorf("%w: index key %q has no separator", ErrCorrupt, k)
			}
			if ids[string(id)] && match(cpv) {
				cpvOf[string(id)] = cpv
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketAttByBuild).ForEach(func(k, _ []byte) error {
			bk, id, ok := splitIndexKey(k)
			if !ok {
				return fmt.Errorf("%w: index key %q has no separator", ErrCorrupt, k)
			}
			if cpv, found := cpvOf[string(id)]; found && !slices.Contains(out[cpv], bk) {
				out[cpv] = append(out[cpv], bk)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, bks := range out {
		slices.Sort(bks)
	}
	return out, nil
}
