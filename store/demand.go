package store

import (
	"bytes"
	"cmp"
	"crypto/sha256"
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
// columns. Five indexes serve the bounds, the tallies and the catalog
// sync: by attester (value: the record's time, so finding an attester's
// oldest reads no record), by platform, by time (the oldest record of
// all, and pruning past the horizon), by platform and (time, id) (value:
// the primary key; the pages of DemandPage) and by id, the SHA-256 of the
// blob (value: the primary key; a synced record already held is known
// before its signature is checked). The blob is opaque here; the daemon
// verifies it before it stores it.
var (
	bucketDemand           = []byte("demand")
	bucketDemandBlob       = []byte("demand_blobs")
	bucketDemandByPeer     = []byte("demand_by_attester")
	bucketDemandByPlat     = []byte("demand_by_platform")
	bucketDemandByTime     = []byte("demand_by_time")
	bucketDemandByPlatTime = []byte("demand_by_platform_time")
	bucketDemandIDs        = []byte("demand_ids")

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
	if err := checkDemandRecord(r); err != nil {
		return false, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		added, err = putDemandTx(tx, r, lim)
		return err
	})
	return added, err
}

// PutDemands is PutDemand of several records in one transaction (one
// fsync for a catalog page of them), each bounded by lim of its attester.
// A record that is invalid or refused (ErrDemandFull) gets its error in
// refused and the others are still stored; err is a failure of the store.
func (s *Store) PutDemands(recs []DemandRecord, lim func(attester string) DemandLimits) (added []bool, refused []error, err error) {
	added, refused = make([]bool, len(recs)), make([]error, len(recs))
	err = s.update(func(tx *bolt.Tx) error {
		for i, r := range recs {
			if refused[i] = checkDemandRecord(r); refused[i] != nil {
				continue
			}
			ok, err := putDemandTx(tx, r, lim(r.Attester))
			if errors.Is(err, ErrDemandFull) {
				refused[i] = err
				continue
			}
			if err != nil {
				return err
			}
			added[i] = ok
		}
		return nil
	})
	if err != nil {
		return make([]bool, len(recs)), make([]error, len(recs)), err
	}
	return added, refused, nil
}

// checkDemandRecord rejects a record the indexes cannot hold.
func checkDemandRecord(r DemandRecord) error {
	for _, f := range []struct{ name, v string }{{"variant key", r.VariantKey}, {"attester", r.Attester}, {"platform", r.Platform}} {
		if f.v == "" {
			return fmt.Errorf("%w: demand needs a %s", ErrInvalid, f.name)
		}
		if err := checkIndexField(f.name, f.v); err != nil {
			return err
		}
	}
	if r.Time < 0 {
		return fmt.Errorf("%w: demand time %d before 1970", ErrInvalid, r.Time)
	}
	if len(r.Blob) == 0 {
		return fmt.Errorf("%w: demand needs its signed blob", ErrInvalid)
	}
	return nil
}

func putDemandTx(tx *bolt.Tx, r DemandRecord, lim DemandLimits) (added bool, err error) {
	val, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	key := demandKey(r.VariantKey, r.Attester)
	b := tx.Bucket(bucketDemand)
	if old := b.Get(key); old != nil {
		var o DemandRecord
		if err := json.Unmarshal(old, &o); err != nil {
			return false, fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, key, err)
		}
		if o.Time >= r.Time {
			return false, nil
		}
		if err := deleteDemand(tx, key, o); err != nil {
			return false, err
		}
	} else if err := makeDemandRoom(tx, r, lim); err != nil {
		return false, err
	}
	if err := tx.Bucket(bucketDemandBlob).Put(key, r.Blob); err != nil {
		return false, err
	}
	return true, putDemand(tx, key, val, r)
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
	if err := putDemandIDs(tx, key, r.Platform, r.Time, tx.Bucket(bucketDemandBlob).Get(key)); err != nil {
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
	if blob := tx.Bucket(bucketDemandBlob).Get(key); blob != nil {
		id := sha256.Sum256(blob)
		if err := tx.Bucket(bucketDemandByPlatTime).Delete(platTimeKey(r.Platform, r.Time, id[:])); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDemandIDs).Delete(id[:]); err != nil {
			return err
		}
	}
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
		id := sha256.Sum256(tx.Bucket(bucketDemandBlob).Get(k))
		for _, e := range []struct {
			bucket, key []byte
		}{
			{bucketDemandBlob, k},
			{bucketDemandByPeer, indexKey(r.Attester, []byte(r.VariantKey))},
			{bucketDemandByPlat, indexKey(r.Platform, k)},
			{bucketDemandByTime, demandTimeKey(r.Time, k)},
			{bucketDemandByPlatTime, platTimeKey(r.Platform, r.Time, id[:])},
			{bucketDemandIDs, id[:]},
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
	for _, ix := range [][]byte{bucketDemandBlob, bucketDemandByPeer, bucketDemandByPlat, bucketDemandByTime, bucketDemandByPlatTime, bucketDemandIDs} {
		if got := tx.Bucket(ix).Stats().KeyN; got != n {
			return fmt.Errorf("%w: %s has %d entries for %d demand records", ErrCorrupt, ix, got, n)
		}
	}
	if c := demandCount(tx); c != n {
		return fmt.Errorf("%w: demand count %d for %d records", ErrCorrupt, c, n)
	}
	return nil
}

// putDemandIDs adds the record under key to the sync indexes: by platform
// and (time, id), and by id.
func putDemandIDs(tx *bolt.Tx, key []byte, platform string, at int64, blob []byte) error {
	id := sha256.Sum256(blob)
	if err := tx.Bucket(bucketDemandByPlatTime).Put(platTimeKey(platform, at, id[:]), key); err != nil {
		return err
	}
	return tx.Bucket(bucketDemandIDs).Put(id[:], key)
}

// migrateDemand fills the sync indexes from the records a database written
// before them holds.
func migrateDemand(tx *bolt.Tx, fresh map[string]bool) error {
	if !fresh[string(bucketDemandByPlatTime)] && !fresh[string(bucketDemandIDs)] {
		return nil
	}
	return tx.Bucket(bucketDemand).ForEach(func(k, v []byte) error {
		var r DemandRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, k, err)
		}
		return putDemandIDs(tx, k, r.Platform, r.Time, tx.Bucket(bucketDemandBlob).Get(k))
	})
}

// DemandPage returns the demand records of platform after a cursor, in
// (time, id) order, id being the SHA-256 of the blob, blobs included: as
// PlatformPage does for attestations, after the record with time since
// and id after, or, when after is empty, after every record of second
// since; at most maxRecords records, stopping after the record that
// reaches maxBytes of blobs (0: no byte cap). It walks one index, so its
// cost is the page's.
func (s *Store) DemandPage(platform string, since int64, after []byte, maxRecords, maxBytes int) ([]DemandRecord, error) {
	if platform == "" || maxRecords <= 0 {
		return nil, nil
	}
	since = max(since, 0)
	start := platTimeKey(platform, since+1, nil)
	if len(after) > 0 {
		start = platTimeKey(platform, since, after)
	}
	var out []DemandRecord
	err := s.view(func(tx *bolt.Tx) error {
		recs, blobs := tx.Bucket(bucketDemand), tx.Bucket(bucketDemandBlob)
		prefix := append([]byte(platform), 0)
		c := tx.Bucket(bucketDemandByPlatTime).Cursor()
		total := 0
		for k, primary := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, primary = c.Next() {
			if len(after) > 0 && bytes.Equal(k, start) {
				continue // the cursor's own record
			}
			if len(out) == maxRecords || (maxBytes > 0 && total >= maxBytes) {
				return nil
			}
			v, blob := recs.Get(primary), blobs.Get(primary)
			if v == nil || blob == nil {
				return fmt.Errorf("%w: %s entry %x points at missing demand record %q", ErrCorrupt, bucketDemandByPlatTime, k, primary)
			}
			var r DemandRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, primary, err)
			}
			r.Blob = bytes.Clone(blob)
			out = append(out, r)
			total += len(blob)
		}
		return nil
	})
	return out, err
}

// DemandByID looks up the record whose blob has SHA-256 id: its signed
// time (Unix seconds), and ok false when none is held.
func (s *Store) DemandByID(id [32]byte) (at int64, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		primary := tx.Bucket(bucketDemandIDs).Get(id[:])
		if primary == nil {
			return nil
		}
		v := tx.Bucket(bucketDemand).Get(primary)
		if v == nil {
			return fmt.Errorf("%w: %s entry %x points at missing demand record %q", ErrCorrupt, bucketDemandIDs, id, primary)
		}
		var r DemandRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, primary, err)
		}
		at, ok = r.Time, true
		return nil
	})
	return at, ok, err
}

// DemandOf lists attester's demand records signed before before, oldest
// first, without their blobs (DemandBlob reads one).
func (s *Store) DemandOf(attester string, before time.Time) ([]DemandRecord, error) {
	var out []DemandRecord
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDemand)
		prefix := indexKey(attester, nil)
		c := tx.Bucket(bucketDemandByPeer).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) >= before.Unix() {
				continue
			}
			key := demandKey(string(k[len(prefix):]), attester)
			rv := b.Get(key)
			if rv == nil {
				return fmt.Errorf("%w: demand_by_attester entry %q points at a missing record", ErrCorrupt, k)
			}
			var r DemandRecord
			if err := json.Unmarshal(rv, &r); err != nil {
				return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, key, err)
			}
			out = append(out, r)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b DemandRecord) int {
		return cmp.Or(cmp.Compare(a.Time, b.Time), cmp.Compare(a.VariantKey, b.VariantKey))
	})
	return out, err
}

// DeleteDemand deletes attester's record for variant, if it is still
// signed at the given time (a newer one stays); ok reports a deletion.
func (s *Store) DeleteDemand(variant, attester string, at int64) (ok bool, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		key := demandKey(variant, attester)
		v := tx.Bucket(bucketDemand).Get(key)
		if v == nil {
			return nil
		}
		var r DemandRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: demand record %q: %v", ErrCorrupt, key, err)
		}
		if r.Time != at {
			return nil
		}
		ok = true
		return deleteDemand(tx, key, r)
	})
	return ok, err
}
