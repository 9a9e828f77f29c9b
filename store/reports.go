package store

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketReports holds this node's reports of rebuilds that disagree with
// its own builds, keyed build key NUL content id; values are opaque
// (package trust's Disagreement as JSON). The bucket is created with the
// first report, so a database without one needs no schema change.
var bucketReports = []byte("reports")

// ErrReportsFull means the store holds as many reports as its caller
// allows: a flood of contents claimed for this node's builds must not
// grow the database without end.
var ErrReportsFull = errors.New("report limit reached")

func reportKey(buildKey, content string) []byte {
	return append(append([]byte(buildKey), 0), content...)
}

// PutReport keeps a report about build key buildKey and the disagreeing
// content, unless one is kept already (the first comparison stands). It
// refuses a new report once max are kept (ErrReportsFull); max <= 0 means
// no bound.
func (s *Store) PutReport(buildKey, content string, blob []byte, max int) (added bool, err error) {
	if buildKey == "" || content == "" || len(blob) == 0 {
		return false, fmt.Errorf("%w: a report needs a build key, a content id and a body", ErrInvalid)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketReports)
		if err != nil {
			return err
		}
		k := reportKey(buildKey, content)
		if b.Get(k) != nil {
			return nil
		}
		if max > 0 && b.Stats().KeyN >= max {
			return fmt.Errorf("%w: %d kept", ErrReportsFull, max)
		}
		added = true
		return b.Put(k, blob)
	})
	return added, err
}

// HasReport reports whether a report about buildKey and content is kept.
func (s *Store) HasReport(buildKey, content string) (bool, error) {
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketReports); b != nil {
			ok = b.Get(reportKey(buildKey, content)) != nil
		}
		return nil
	})
	return ok, err
}

// Reports returns the reports kept about buildKey, in content id order.
func (s *Store) Reports(buildKey string) ([][]byte, error) {
	var out [][]byte
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReports)
		if b == nil {
			return nil
		}
		prefix := reportKey(buildKey, "")
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			out = append(out, bytes.Clone(v))
		}
		return nil
	})
	return out, err
}

// CountReports is the number of reports kept, for status.
func (s *Store) CountReports() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketReports); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}
