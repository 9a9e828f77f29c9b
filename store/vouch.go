package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketVouch holds signed vouches keyed by voucher NUL vouchee: one
// record per pair, the newest issued, so a revocation (a newer record)
// replaces the vouch it withdraws. The blob is opaque here; the daemon
// verifies it before it stores it.
var bucketVouch = []byte("vouches")

// ErrVouchFull means a vouch for a new vouchee was refused because its
// voucher's share, or the store-wide bound, is full.
var ErrVouchFull = errors.New("vouches full")

// VouchRecord is one signed vouch as kept here.
type VouchRecord struct {
	Voucher string `json:"voucher"`
	Vouchee string `json:"vouchee"`
	// Issued and Expires are the signed times, Unix seconds.
	Issued  int64 `json:"issued"`
	Expires int64 `json:"expires"`
	// ReceivedAt is when this daemon stored it.
	ReceivedAt time.Time `json:"received_at"`
	// Blob is the signed vouch as received.
	Blob []byte `json:"blob"`
	// Own marks a vouch this daemon signed or imported (an OpenPGP one
	// handed to it by its user): the ones it gossips again.
	Own bool `json:"own,omitempty"`
}

// VouchLimits bound the vouches: PerVoucher per identity, Total for all
// of them; zero means no bound.
type VouchLimits struct {
	PerVoucher, Total int
}

// PutVouch stores r unless a record of its (voucher, vouchee) issued at
// the same time or later is held (added false). A record for a pair new
// here is refused with ErrVouchFull past lim: a voucher's vouches for
// identities already held can always be renewed or revoked.
func (s *Store) PutVouch(r VouchRecord, lim VouchLimits) (added bool, err error) {
	for name, v := range map[string]string{"voucher": r.Voucher, "vouchee": r.Vouchee} {
		if v == "" {
			return false, fmt.Errorf("%w: vouch needs a %s", ErrInvalid, name)
		}
		if err := checkIndexField(name, v); err != nil {
			return false, err
		}
	}
	if len(r.Blob) == 0 || r.Expires < r.Issued {
		return false, fmt.Errorf("%w: vouch record by %s for %s: no blob or expires before issued", ErrInvalid, r.Voucher, r.Vouchee)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	key := indexKey(r.Voucher, []byte(r.Vouchee))
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVouch)
		if old := b.Get(key); old != nil {
			var o VouchRecord
			if err := json.Unmarshal(old, &o); err == nil && o.Issued >= r.Issued {
				return nil
			}
		} else {
			if lim.Total > 0 && b.Stats().KeyN >= lim.Total {
				return fmt.Errorf("%w: %d vouches stored, limits.vouches is %d", ErrVouchFull, b.Stats().KeyN, lim.Total)
			}
			if lim.PerVoucher > 0 {
				prefix := indexKey(r.Voucher, nil)
				n := 0
				c := b.Cursor()
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
					n++
				}
				if n >= lim.PerVoucher {
					return fmt.Errorf("%w: %s has %d vouches stored, limits.peer_vouches is %d", ErrVouchFull, r.Voucher, n, lim.PerVoucher)
				}
			}
		}
		added = true
		return b.Put(key, val)
	})
	return added, err
}

// Vouches returns every stored vouch, by voucher then vouchee.
func (s *Store) Vouches() ([]VouchRecord, error) {
	var out []VouchRecord
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVouch).ForEach(func(k, v []byte) error {
			var r VouchRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: vouch %q: %v", ErrCorrupt, k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// PruneVouches deletes the records issued before issuedBefore (Unix
// seconds) that expired by then, and returns how many. A revocation must
// outlive every vouch it may have replaced, so callers prune by the
// longest lifetime a vouch may have.
func (s *Store) PruneVouches(issuedBefore int64) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVouch)
		var doomed [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			var r VouchRecord
			if err := json.Unmarshal(v, &r); err != nil || r.Issued < issuedBefore && r.Expires <= issuedBefore {
				doomed = append(doomed, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	return n, err
}

// WeightsChanged records that attesters' weights moved (the vouch graph
// gave some identity more or less weight): every verdict may change, so
// results derived before are not reused.
func (s *Store) WeightsChanged() error {
	return s.update(func(tx *bolt.Tx) error { return s.votesChanged(tx, "") })
}

// GetVouch returns the record held for (voucher, vouchee), if any.
func (s *Store) GetVouch(voucher, vouchee string) (r VouchRecord, found bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketVouch).Get(indexKey(voucher, []byte(vouchee)))
		if v == nil {
			return nil
		}
		found = true
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: vouch by %s for %s: %v", ErrCorrupt, voucher, vouchee, err)
		}
		return nil
	})
	return r, found, err
}
