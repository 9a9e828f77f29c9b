package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketStanding is the standing ledger: per attester, the days on which
// its attestations agreed with a build allowed without it.
var bucketStanding = []byte("standing")

// keyStandingEpoch (in meta) is the day the standing weights in force were
// read: credits of that day and later apply from the next epoch.
var keyStandingEpoch = []byte("standing_epoch")

// MaxStandingEntries bounds the ledger. Only attesters that agreed with an
// allowed build get an entry, so reaching it takes that many identities
// copying real builds; past it new identities are not recorded (the ones
// recorded keep earning) and CreditAgreements says how many it left out.
const MaxStandingEntries = 1 << 20

// DayOf is the ledger's day of t: days since 1970-01-01 UTC.
func DayOf(t time.Time) uint32 { return uint32(t.Unix() / 86400) }

// Standing is one attester's record, in days since 1970-01-01 UTC (DayOf).
type Standing struct {
	// First and Last are the first and last days it was credited.
	First, Last uint32
	// Days counts the distinct days it was credited.
	Days uint32
}

// DaysBefore is the number of credited days before day: what counts in
// an epoch that started on day.
func (st Standing) DaysBefore(day uint32) uint32 {
	if st.Days > 0 && st.Last >= day {
		return st.Days - 1
	}
	return st.Days
}

func (st Standing) encode() []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint32(b, st.First)
	binary.BigEndian.PutUint32(b[4:], st.Last)
	binary.BigEndian.PutUint32(b[8:], st.Days)
	return b
}

func decodeStanding(b []byte) (Standing, bool) {
	if len(b) != 12 {
		return Standing{}, false
	}
	return Standing{First: binary.BigEndian.Uint32(b), Last: binary.BigEndian.Uint32(b[4:]), Days: binary.BigEndian.Uint32(b[8:])}, true
}

// CreditAgreements credits each attester (a peer ID's bytes) with day,
// once per day, in one transaction. It returns how many were new to the
// ledger and could not be recorded because it is full.
func (s *Store) CreditAgreements(ids []string, day uint32) (dropped int, err error) {
	if len(ids) == 0 {
		return 0, nil
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStanding)
		// Counting the entries walks the bucket: only when one is new.
		n := -1
		dropped = 0
		for _, id := range ids {
			if id == "" {
				return fmt.Errorf("%w: standing credit needs an attester", ErrInvalid)
			}
			st, ok := decodeStanding(b.Get([]byte(id)))
			switch {
			case ok && st.Last >= day:
				continue // credited today already
			case ok:
				st.Last, st.Days = day, st.Days+1
			default:
				if n < 0 {
					n = b.Stats().KeyN
				}
				if n >= MaxStandingEntries {
					dropped++
					continue
				}
				st, n = Standing{First: day, Last: day, Days: 1}, n+1
			}
			if err := b.Put([]byte(id), st.encode()); err != nil {
				return err
			}
		}
		return nil
	})
	return dropped, err
}

// SetStanding writes ledger entries as given: restoring a ledger, and the
// network simulator's history before its run.
func (s *Store) SetStanding(entries map[string]Standing) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStanding)
		for id, st := range entries {
			if id == "" || st.Days == 0 || st.First > st.Last {
				return fmt.Errorf("%w: standing entry %q %+v", ErrInvalid, id, st)
			}
			if err := b.Put([]byte(id), st.encode()); err != nil {
				return err
			}
		}
		// Weights read before this write are stale.
		return s.votesChanged(tx, "")
	})
}

// StandingEpoch returns the ledger for the epoch in force on day. When
// day is later than the stored epoch a new epoch starts: it is recorded
// and every verdict may change (the vote versions of all build keys
// move), so results derived from the old weights are not reused. Callers
// count Standing.DaysBefore(epoch).
func (s *Store) StandingEpoch(day uint32) (epoch uint32, ledger map[string]Standing, err error) {
	read := func(tx *bolt.Tx) error {
		ledger = map[string]Standing{}
		return tx.Bucket(bucketStanding).ForEach(func(k, v []byte) error {
			if st, ok := decodeStanding(v); ok {
				ledger[string(k)] = st
			}
			return nil
		})
	}
	current := func(tx *bolt.Tx) uint32 {
		if v := tx.Bucket(bucketMeta).Get(keyStandingEpoch); len(v) == 4 {
			return binary.BigEndian.Uint32(v)
		}
		return 0
	}
	if err := s.view(func(tx *bolt.Tx) error {
		if epoch = current(tx); epoch >= day {
			return read(tx)
		}
		return nil
	}); err != nil || epoch >= day {
		return epoch, ledger, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		if epoch = current(tx); epoch < day {
			epoch = day
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], day)
			if err := tx.Bucket(bucketMeta).Put(keyStandingEpoch, b[:]); err != nil {
				return err
			}
			if err := s.votesChanged(tx, ""); err != nil {
				return err
			}
		}
		return read(tx)
	})
	return epoch, ledger, err
}
