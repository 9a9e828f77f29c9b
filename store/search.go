package store

import (
	"bytes"
	"context"
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

// MatchingCPVs lists up to limit distinct CPVs of platform's attestations
// that match accepts, in index order, visiting at most maxScan entries of
// the CPV index and checking each candidate's platform by one lookup:
// what a peer's about request may cost, whatever the store holds. It
// stops early with ctx's error.
func (s *Store) MatchingCPVs(ctx context.Context, platform string, match func(cpv string) bool, limit, maxScan int) ([]string, error) {
	var out []string
	err := s.view(func(tx *bolt.Tx) error {
		byPlat := tx.Bucket(bucketAttByPlat).Cursor()
		c := tx.Bucket(bucketAttByCPV).Cursor()
		var last string
		lastMatched := false
		visited := 0
		for k, _ := c.First(); k != nil && len(out) < limit && visited < maxScan; k, _ = c.Next() {
			if visited++; visited%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			cpv, id, ok := splitIndexKey(k)
			if !ok {
				return fmt.Errorf("%w: index key %q has no separator", ErrCorrupt, k)
			}
			if cpv != last {
				last, lastMatched = cpv, match(cpv)
			}
			if !lastMatched || len(out) > 0 && out[len(out)-1] == cpv {
				continue
			}
			want := indexKey(platform, id)
			if got, _ := byPlat.Seek(want); bytes.Equal(got, want) {
				out = append(out, cpv)
			}
		}
		return ctx.Err()
	})
	return out, err
}
