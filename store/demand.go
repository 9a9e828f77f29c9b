package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Demand records (usage votes) live in bucketDemand keyed by
// variant NUL attester, so one identity counts once per variant and its
// newer record replaces the older. The signed blob is kept apart, in
// bucketDemandBlob under the same key, so tallies read only the small
// columns. Three indexes serve the bounds and the tallies: by attester
// (value: the record's time, so finding an attester's oldest reads no
// record), by platform, and by time (the oldest record of all, and
// pruning past the horizon). The blob is opaque here; the daemon verifies
// it before it stores it.
var (
	bucketDemand       = []byte("demand")
	bucketDemandBlob   = []byte("demand_blobs")
	bucketDemandByPeer = []byte("demand_by_attester")
	bucketDemandByPlat = []byte("demand_by_platform")
	bucketDemandByTime = []byte("demand_by_time")

	keyDemandCount = []byte("demand_count")
)

// ErrDemandFull means a demand record was refused because its attester's
// share, or the store-wide bound, is full of records at least as new.
var ErrDemandFull = errors.New("demand records full")

// DemandRecord is one peer's signed demand as kept here.
type DemandRecord struct {
	VariantKey string `json:"variant_key"`
	Platform   string `json:"platform"`
	CPV        string `json:"cpv"`
	Attester   string `json:"attester"`
	Kind       string `json:"kind"`
	// Time is the signed time of the demand, Unix seconds.
	Time int64 `json:"time"`
	// ReceivedAt is when this daemon stored it.
	ReceivedAt time.Time `json:"received_at"`
	// Blob is the signed demand as received; kept apart from the
	// columns (DemandBlob), and empty in tallies.
	Blob []byte `json:"-"`
}

// DemandLimits bound the demand records: PerAttester per identity, Total
// for all of them; zero means no bound.
type DemandLimits struct {
	PerAttester, Total int
}

func demandKey(variant, attester string) []byte {
	return indexKey(variant, []byte(attester))
}

func demandTimeKey(t int64, primary []byte) []byte {
	return append(u64(uint64(t)), primary...)
}

// PutDemand stores r unless its attester already has a record for the
// variant at least as new (added false). A record new to its attester
// that would exceed lim evicts the oldest record of that attester (or,
// for the store-wide bound, of all), or is refused with ErrDemandFull
// when r is older than that.
func (s *Store) PutDemand(r DemandRecord, lim DemandLimits) (added bool, err error) {
	for name, v := range map[string]string{"variant key": r.VariantKey, "attester": r.Attester, "platform": r.Platform} {
		if v == "" {
			return false, fmt.Errorf("%w: demand needs a %s", ErrInvalid, name)
		}
		if err := checkIndexField(name, v); err != nil {
			return false, err
		}
	}
	if r.Time < 0 {
		return false, fmt.Errorf("%w: demand time %d before 1970", ErrInvalid, r.Time)
	}
	if len(r.Blob) == 0 {
		return false, fmt.Errorf("%w: demand needs its signed blob", ErrInvalid)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	key := demandKey(r.VariantKey, r.Attester)
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDemand)
		if old := b.Get(key); old != nil {
			var o DemandRecord
			if err := json.Unmarshal(old, &o); err != nil {
				return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, key, err)
			}
			if o.Time >= r.Time {
				return nil
			}
			if err := deleteDemand(tx, key, o); err != nil {
				return err
			}
		} else {
			if err := makeDemandRoom(tx, r, lim); err != nil {
				return err
			}
		}
		added = true
		if err := tx.Bucket(bucketDemandBlob).Put(key, r.Blob); err != nil {
			return err
		}
		return putDemand(tx, key, val, r)
	})
	return added, err
}

// makeDemandRoom evicts for a record new to its attester, or refuses it.
func makeDemandRoom(tx *bolt.Tx, r DemandRecord, lim DemandLimits) error {
	if lim.PerAttester > 0 {
		n, oldestVariant, oldestTime := 0, "", int64(0)
		c := tx.Bucket(bucketDemandByPeer).Cursor()
		prefix := indexKey(r.Attester, nil)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			n++
			if len(v) == 8 {
				if t := int64(binary.BigEndian.Uint64(v)); oldestVariant == "" || t < oldestTime {
					oldestVariant, oldestTime = string(k[len(prefix):]), t
				}
			}
		}
		if n >= lim.PerAttester {
			if oldestVariant == "" || oldestTime >= r.Time {
				return fmt.Errorf("%w: %s already has %d newer demand records (limits.peer_demands)", ErrDemandFull, r.Attester, n)
			}
			if err := evictDemand(tx, demandKey(oldestVariant, r.Attester)); err != nil {
				return err
			}
		}
	}
	if lim.Total > 0 && demandCount(tx) >= lim.Total {
		k, _ := tx.Bucket(bucketDemandByTime).Cursor().First()
		if len(k) < 8 || int64(binary.BigEndian.Uint64(k)) >= r.Time {
			return fmt.Errorf("%w: %d newer demand records held (limits.demands)", ErrDemandFull, demandCount(tx))
		}
		if err := evictDemand(tx, k[8:]); err != nil {
			return err
		}
	}
	return nil
}

func demandCount(tx *bolt.Tx) int {
	if v := tx.Bucket(bucketMeta).Get(keyDemandCount); len(v) == 8 {
		return int(binary.BigEndian.Uint64(v))
	}
	return 0
}

func addDemandCount(tx *bolt.Tx, delta int) error {
	return tx.Bucket(bucketMeta).Put(keyDemandCount, u64(uint64(max(0, demandCount(tx)+delta))))
}

func putDemand(tx *bolt.Tx, key, val []byte, r DemandRecord) error {
	if err := tx.Bucket(bucketDemand).Put(key, val); err != nil {
		return err
	}
	if err := tx.Bucket(bucketDemandByPeer).Put(indexKey(r.Attester, []byte(r.VariantKey)), u64(uint64(r.Time))); err != nil {
		return err
	}
	if err := tx.Bucket(bucketDemandByPlat).Put(indexKey(r.Platform, key), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bucketDemandByTime).Put(demandTimeKey(r.Time, key), nil); err != nil {
		return err
	}
	return addDemandCount(tx, 1)
}

// evictDemand deletes the record stored under key.
func evictDemand(tx *bolt.Tx, key []byte) error {
	v := tx.Bucket(bucketDemand).Get(key)
	if v == nil {
		return fmt.Errorf("%w: demand index points at missing record %q", ErrCorrupt, key)
	}
	var r DemandRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, key, err)
	}
	return deleteDemand(tx, key, r)
}

func deleteDemand(tx *bolt.Tx, key []byte, r DemandRecord) error {
	for _, d := range []struct {
		bucket, key []byte
	}{
		{bucketDemand, key},
		{bucketDemandBlob, key},
		{bucketDemandByPeer, indexKey(r.Attester, []byte(r.VariantKey))},
		{bucketDemandByPlat, indexKey(r.Platform, key)},
		{bucketDemandByTime, demandTimeKey(r.Time, key)},
	} {
		if err := tx.Bucket(d.bucket).Delete(d.key); err != nil {
			return err
		}
	}
	return addDemandCount(tx, -1)
}

// PruneDemand deletes the demand records signed before before (they no
// longer count) and returns how many.
func (s *Store) PruneDemand(before time.Time) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		var keys [][]byte
		c := tx.Bucket(bucketDemandByTime).Cursor()
		for k, _ := c.First(); len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) < before.Unix(); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k[8:]))
		}
		for _, k := range keys {
			if err := evictDemand(tx, k); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}

// DemandCount is the demand for one variant: how many distinct peers want
// it (records signed since the horizon only), and its newest record.
type DemandCount struct {
	VariantKey string
	Platform   string
	CPV        string
	Wanters    int
	// Kinds counts the wanters by how the want arose.
	Kinds map[string]int
	// LastSeen is the newest record's signed time.
	LastSeen time.Time
	// Newest is the newest record, without its blob (DemandBlob reads
	// it: it says what to build).
	Newest DemandRecord
}

// DemandByPlatform tallies the demand records of a platform signed at or
// after since, one entry per variant, most wanters first (then most
// recently wanted, then variant key).
func (s *Store) DemandByPlatform(platform string, since time.Time) ([]DemandCount, error) {
	by := map[string]*DemandCount{}
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDemand)
		return scanIndex(tx.Bucket(bucketDemandByPlat), platform, func(primary []byte) error {
			v := b.Get(primary)
			if v == nil {
				return fmt.Errorf("%w: demand_by_platform entry %q points at a missing record", ErrCorrupt, primary)
			}
			var r DemandRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, primary, err)
			}
			if r.Time < since.Unix() {
				return nil
			}
			addDemand(by, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([]DemandCount, 0, len(by))
	for _, c := range by {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b DemandCount) int {
		return cmp.Or(cmp.Compare(b.Wanters, a.Wanters), b.LastSeen.Compare(a.LastSeen), cmp.Compare(a.VariantKey, b.VariantKey))
	})
	return out, nil
}

func addDemand(by map[string]*DemandCount, r DemandRecord) {
	c := by[r.VariantKey]
	if c == nil {
		c = &DemandCount{VariantKey: r.VariantKey, Platform: r.Platform, CPV: r.CPV, Kinds: map[string]int{}}
		by[r.VariantKey] = c
	}
	c.Wanters++
	c.Kinds[r.Kind]++
	if t := time.Unix(r.Time, 0).UTC(); c.Newest.Attester == "" || t.After(c.LastSeen) {
		c.LastSeen, c.Newest = t, r
	}
}

// DemandFor tallies the demand records of one variant signed at or after
// since; Wanters is 0 when there are none.
func (s *Store) DemandFor(variant string, since time.Time) (DemandCount, error) {
	by := map[string]*DemandCount{}
	err := s.view(func(tx *bolt.Tx) error {
		prefix := indexKey(variant, nil)
		c := tx.Bucket(bucketDemand).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r DemandRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, k, err)
			}
			if r.Time >= since.Unix() {
				addDemand(by, r)
			}
		}
		return nil
	})
	if c := by[variant]; c != nil {
		return *c, err
	}
	return DemandCount{VariantKey: variant}, err
}

// DemandBlob returns the signed blob of attester's record for variant;
// ok is false when there is none.
func (s *Store) DemandBlob(variant, attester string) (blob []byte, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketDemandBlob).Get(demandKey(variant, attester)); v != nil {
			blob, ok = bytes.Clone(v), true
		}
		return nil
	})
	return blob, ok, err
}

// DemandRecords is how many demand records the store holds (the horizon
// not applied).
func (s *Store) DemandRecords() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error { n = demandCount(tx); return nil })
	return n, err
}

// DemandsBy is how many demand records one attester has stored here.
func (s *Store) DemandsBy(attester string) (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		return scanIndex(tx.Bucket(bucketDemandByPeer), attester, func([]byte) error { n++; return nil })
	})
	return n, err
}

// checkDemand verifies the demand indexes and count against the records
// (Store.Check): every record has its blob and its three index entries,
// every index entry names a record, and the count is the records'.
func checkDemand(tx *bolt.Tx) error {
	b := tx.Bucket(bucketDemand)
	n := 0
	err := b.ForEach(func(k, v []byte) error {
		n++
		var r DemandRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, k, err)
		}
		if !bytes.Equal(k, demandKey(r.VariantKey, r.Attester)) {
			return fmt.Errorf("%w: demand record %q names %s by %s", ErrCorrupt, k, r.VariantKey, r.Attester)
		}
		for _, e := range []struct {
			bucket, key []byte
		}{
			{bucketDemandBlob, k},
			{bucketDemandByPeer, indexKey(r.Attester, []byte(r.VariantKey))},
			{bucketDemandByPlat, indexKey(r.Platform, k)},
			{bucketDemandByTime, demandTimeKey(r.Time, k)},
		} {
			if tx.Bucket(e.bucket).Get(e.key) == nil {
				return fmt.Errorf("%w: demand record %q lacks its %s entry", ErrCorrupt, k, e.bucket)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ix := range [][]byte{bucketDemandBlob, bucketDemandByPeer, bucketDemandByPlat, bucketDemandByTime} {
		if got := tx.Bucket(ix).Stats().KeyN; got != n {
			return fmt.Errorf("%w: %s has %d entries for %d demand records", ErrCorrupt, ix, got, n)
		}
	}
	if c := demandCount(tx); c != n {
		return fmt.Errorf("%w: demand count %d for %d records", ErrCorrupt, c, n)
	}
	return nil
}
