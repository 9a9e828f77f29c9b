package store

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// EvidenceRecord is proof that a peer signed two different content ids for
// one build key: the blob (both signed attestations, encoded by package
// trust) is self-authenticating, so it is kept and shown verbatim.
type EvidenceRecord struct {
	// ID is the SHA-256 of Blob; filled in by PutEvidence.
	ID [32]byte
	// Peer is the equivocating attester.
	Peer string
	// BuildKey is the build key it equivocated on.
	BuildKey string
	// Blob is the evidence bytes.
	Blob []byte
	// At is when the evidence was recorded.
	At time.Time
}

type evJSON struct {
	Peer     string    `json:"peer"`
	BuildKey string    `json:"build_key"`
	Blob     []byte    `json:"blob"`
	At       time.Time `json:"at"`
}

func decodeEv(id, v []byte) (EvidenceRecord, error) {
	var j evJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return EvidenceRecord{}, fmt.Errorf("%w: evidence %x: %v", ErrCorrupt, id, err)
	}
	if len(id) != 32 {
		return EvidenceRecord{}, fmt.Errorf("%w: evidence key has %d bytes", ErrCorrupt, len(id))
	}
	r := EvidenceRecord{Peer: j.Peer, BuildKey: j.BuildKey, Blob: j.Blob, At: j.At}
	copy(r.ID[:], id)
	return r, nil
}

// PutEvidence stores rec unless the same blob is stored already; added
// reports whether it was new.
func (s *Store) PutEvidence(rec EvidenceRecord) (added bool, err error) {
	if len(rec.Blob) == 0 {
		return false, fmt.Errorf("evidence: %w: empty blob", ErrInvalid)
	}
	if rec.Peer == "" {
		return false, fmt.Errorf("evidence: %w: empty peer", ErrInvalid)
	}
	for _, f := range []struct{ name, v string }{{"peer", rec.Peer}, {"build key", rec.BuildKey}} {
		if err := checkIndexField(f.name, f.v); err != nil {
			return false, fmt.Errorf("evidence: %w", err)
		}
	}
	rec.ID = sha256.Sum256(rec.Blob)
	v, err := json.Marshal(evJSON{Peer: rec.Peer, BuildKey: rec.BuildKey, Blob: rec.Blob, At: rec.At})
	if err != nil {
		return false, fmt.Errorf("encode evidence: %w", err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEv)
		if b.Get(rec.ID[:]) != nil {
			return nil
		}
		if err := b.Put(rec.ID[:], v); err != nil {
			return err
		}
		if err := putIndex(tx.Bucket(bucketEvByBuild), rec.BuildKey, rec.ID[:]); err != nil {
			return err
		}
		if err := putIndex(tx.Bucket(bucketEvByPeer), rec.Peer, rec.ID[:]); err != nil {
			return err
		}
		// Evidence without a build key may weigh on any verdict.
		if err := s.votesChanged(tx, rec.BuildKey); err != nil {
			return err
		}
		added = true
		return nil
	})
	return added, err
}

// Evidence returns every evidence record, ordered by id.
func (s *Store) Evidence() ([]EvidenceRecord, error) {
	var out []EvidenceRecord
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEv).ForEach(func(k, v []byte) error {
			r, err := decodeEv(k, v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// EvidenceFor returns the evidence recorded on buildKey, which the trust
// policy weighs together with the votes.
func (s *Store) EvidenceFor(buildKey string) ([]EvidenceRecord, error) {
	return s.evByIndex(bucketEvByBuild, buildKey)
}

// EvidenceAgainst returns the evidence recorded against peer, for `trust
// explain` and blocklisting.
func (s *Store) EvidenceAgainst(peer string) ([]EvidenceRecord, error) {
	return s.evByIndex(bucketEvByPeer, peer)
}

func (s *Store) evByIndex(index []byte, field string) ([]EvidenceRecord, error) {
	if field == "" {
		return nil, nil
	}
	var out []EvidenceRecord
	err := s.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketEv)
		return scanIndex(tx.Bucket(index), field, func(id []byte) error {
			v := pb.Get(id)
			if v == nil {
				return fmt.Errorf("%w: %s points at missing evidence %x", ErrCorrupt, index, id)
			}
			r, err := decodeEv(id, v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

func checkEvidence(tx *bolt.Tx) error {
	if err := tx.Bucket(bucketEv).ForEach(func(k, v []byte) error {
		r, err := decodeEv(k, v)
		if err != nil {
			return err
		}
		if sha256.Sum256(r.Blob) != r.ID {
			return fmt.Errorf("%w: evidence %x: blob does not hash to its id", ErrCorrupt, k)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := checkIndexAgainst(tx, bucketEvByBuild, bucketEv, func(v []byte) (string, error) {
		r, err := decodeEv(make([]byte, 32), v)
		return r.BuildKey, err
	}); err != nil {
		return err
	}
	return checkIndexAgainst(tx, bucketEvByPeer, bucketEv, func(v []byte) (string, error) {
		r, err := decodeEv(make([]byte, 32), v)
		return r.Peer, err
	})
}
