package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AttestationRecord is one signed attestation as the store keeps it: the
// opaque signed blob (verified by package trust before it gets here) and
// the fields the caller extracted from it for indexing.
type AttestationRecord struct {
	// ID is the SHA-256 of Blob: the same attestation relayed by many
	// peers is stored once. Zero means "compute it".
	ID [32]byte
	// BuildKey and VariantKey are the DHT keys the attestation is about.
	BuildKey, VariantKey string
	// CPV lets `find CPV` work without decoding every blob.
	CPV string
	// Platform names the catalog (gossip topic) it belongs to.
	Platform string
	// Attester is the signing peer id, so one peer's attestations can be
	// listed (own ones withdrawn, a blocklisted peer's dropped).
	Attester string
	// Content is the content id the attester vouches for, as a string, so
	// votes can be tallied without decoding.
	Content string
	// Blob is the signed attestation bytes, relayed verbatim.
	Blob []byte
	// ReceivedAt is when this peer first stored it.
	ReceivedAt time.Time
	// From is the peer it came from (the attester itself or a relay).
	From string
	// Time is the attestation's own time (Unix seconds), the order a
	// catalog is paged in. Zero means not known yet (a record written
	// before the store indexed it; see BackfillAttestationTimes).
	Time int64
	// Addr is the IP address the attestation arrived from when its
	// attester delivered it over a direct connection; empty when it came
	// through a relay or another peer. Network distinctness counts this
	// address, recorded at arrival, never a later connection.
	Addr string
}

type attJSON struct {
	BuildKey   string    `json:"build_key,omitempty"`
	VariantKey string    `json:"variant_key,omitempty"`
	CPV        string    `json:"cpv,omitempty"`
	Platform   string    `json:"platform,omitempty"`
	Attester   string    `json:"attester,omitempty"`
	Content    string    `json:"content,omitempty"`
	Blob       []byte    `json:"blob,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	From       string    `json:"from,omitempty"`
	Time       int64     `json:"at,omitempty"`
	Addr       string    `json:"addr,omitempty"`
}

func (r *AttestationRecord) json() attJSON {
	return attJSON{
		BuildKey: r.BuildKey, VariantKey: r.VariantKey, CPV: r.CPV, Platform: r.Platform,
		Attester: r.Attester, Content: r.Content, Blob: r.Blob, ReceivedAt: r.ReceivedAt, From: r.From,
		Time: r.Time, Addr: r.Addr,
	}
}

func decodeAtt(id, v []byte) (AttestationRecord, error) {
	meta, blob, err := splitAtt(v)
	if err != nil {
		return AttestationRecord{}, fmt.Errorf("attestation %x: %w", id, err)
	}
	var j attJSON
	if err := json.Unmarshal(meta, &j); err != nil {
		return AttestationRecord{}, fmt.Errorf("%w: attestation %x: %v", ErrCorrupt, id, err)
	}
	if blob != nil {
		j.Blob = bytes.Clone(blob) // bbolt's memory is valid only inside the transaction
	}
	r := AttestationRecord{
		BuildKey: j.BuildKey, VariantKey: j.VariantKey, CPV: j.CPV, Platform: j.Platform,
		Attester: j.Attester, Content: j.Content, Blob: j.Blob, ReceivedAt: j.ReceivedAt, From: j.From,
		Time: j.Time, Addr: j.Addr,
	}
	if len(id) != 32 {
		return AttestationRecord{}, fmt.Errorf("%w: attestation key has %d bytes", ErrCorrupt, len(id))
	}
	copy(r.ID[:], id)
	return r, nil
}

// attFormatSplit starts a stored attestation written as: this byte,
// uvarint(len(meta)), the metadata JSON (attJSON without the blob), then
// the blob's raw bytes. Base64 in JSON made every blob a third larger, and
// readers that want a field or two had to scan it. Values written before
// start with '{' (all JSON, blob inside) and are still read.
const attFormatSplit = 0x01

// encodeAtt writes a record in the split format.
func encodeAtt(r *AttestationRecord) ([]byte, error) {
	j := r.json()
	j.Blob = nil
	meta, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	v := make([]byte, 0, 1+binary.MaxVarintLen64+len(meta)+len(r.Blob))
	v = append(v, attFormatSplit)
	v = binary.AppendUvarint(v, uint64(len(meta)))
	v = append(v, meta...)
	return append(v, r.Blob...), nil
}

// splitAtt returns a stored value's metadata JSON and blob; for a value in
// the old all-JSON form, meta is the whole value and blob is nil.
func splitAtt(v []byte) (meta, blob []byte, err error) {
	if len(v) > 0 && v[0] == '{' {
		return v, nil, nil
	}
	if len(v) == 0 || v[0] != attFormatSplit {
		return nil, nil, fmt.Errorf("%w: unknown record format", ErrCorrupt)
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || n > uint64(len(v)-1-k) {
		return nil, nil, fmt.Errorf("%w: bad metadata length", ErrCorrupt)
	}
	return v[1+k : 1+k+int(n)], v[1+k+int(n):], nil
}

// attMeta unmarshals the metadata fields of a stored value into dst and
// returns the blob's length, without copying (or, for new values,
// scanning) the blob.
func attMeta(v []byte, dst any) (blobLen int, err error) {
	meta, blob, err := splitAtt(v)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(meta, dst); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if blob == nil { // old form: the blob is in the JSON
		var b struct {
			Blob []byte `json:"blob"`
		}
		if err := json.Unmarshal(meta, &b); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return len(b.Blob), nil
	}
	return len(blob), nil
}

// attIndexes lists each attestation index with the field it indexes.
var attIndexes = []struct {
	bucket []byte
	name   string
	field  func(r *AttestationRecord) string
}{
	{bucketAttByBuild, "build key", func(r *AttestationRecord) string { return r.BuildKey }},
	{bucketAttByVar, "variant key", func(r *AttestationRecord) string { return r.VariantKey }},
	{bucketAttByPlat, "platform", func(r *AttestationRecord) string { return r.Platform }},
	{bucketAttByCPV, "cpv", func(r *AttestationRecord) string { return r.CPV }},
	{bucketAttByAuthor, "attester", func(r *AttestationRecord) string { return r.Attester }},
}

// PutAttestation stores rec unless an attestation with the same blob is
// already stored; added reports whether it was new, which is what decides
// whether to relay it further.
func (s *Store) PutAttestation(rec AttestationRecord) (added bool, err error) {
	got, err := s.PutAttestations([]AttestationRecord{rec})
	if err != nil {
		return false, err
	}
	return got[0], nil
}

// PutAttestations stores many attestations in one transaction (one fsync):
// a catalog sync brings thousands at once, and a transaction per record
// costs milliseconds each. added[i] reports whether recs[i] was new. One
// invalid record fails the whole batch before anything is written.
func (s *Store) PutAttestations(recs []AttestationRecord) (added []bool, err error) {
	recs = slices.Clone(recs) // IDs are filled in; the caller's slice stays as given
	vals := make([][]byte, len(recs))
	for i := range recs {
		rec := &recs[i]
		if len(rec.Blob) == 0 {
			return nil, fmt.Errorf("attestation #%d: %w: empty blob", i, ErrInvalid)
		}
		sum := sha256.Sum256(rec.Blob)
		if rec.ID == ([32]byte{}) {
			rec.ID = sum
		} else if rec.ID != sum {
			return nil, fmt.Errorf("attestation %x: %w: id is not the SHA-256 of the blob", rec.ID, ErrInvalid)
		}
		for _, ix := range attIndexes {
			if err := checkIndexField(ix.name, ix.field(rec)); err != nil {
				return nil, fmt.Errorf("attestation %x: %w", rec.ID, err)
			}
		}
		if rec.Time < 0 {
			return nil, fmt.Errorf("attestation %x: %w: negative time", rec.ID, ErrInvalid)
		}
		vals[i], err = encodeAtt(rec)
		if err != nil {
			return nil, fmt.Errorf("encode attestation %x: %w", rec.ID, err)
		}
	}
	err = s.update(func(tx *bolt.Tx) error {
		added = make([]bool, len(recs))
		b := tx.Bucket(bucketAtt)
		for i := range recs {
			rec := &recs[i]
			if b.Get(rec.ID[:]) != nil {
				continue
			}
			if err := b.Put(rec.ID[:], vals[i]); err != nil {
				return err
			}
			if err := indexAttestation(tx, rec); err != nil {
				return err
			}
			if err := s.votesChanged(tx, rec.BuildKey); err != nil {
				return err
			}
			added[i] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return added, nil
}

// HasAttestation reports whether the attestation with this id is stored,
// the cheap check before decoding a gossiped duplicate.
func (s *Store) HasAttestation(id [32]byte) (bool, error) {
	var has bool
	err := s.view(func(tx *bolt.Tx) error {
		has = tx.Bucket(bucketAtt).Get(id[:]) != nil
		return nil
	})
	return has, err
}

// GetAttestation returns the attestation with this id.
func (s *Store) GetAttestation(id [32]byte) (AttestationRecord, bool, error) {
	var (
		r     AttestationRecord
		found bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAtt).Get(id[:])
		if v == nil {
			return nil
		}
		var err error
		r, err = decodeAtt(id[:], v)
		found = err == nil
		return err
	})
	return r, found, err
}

// DeleteAttestation removes one attestation and its index entries: a local
// attestation withdrawn because its package left PKGDIR, or one from a peer
// that is now blocklisted.
func (s *Store) DeleteAttestation(id [32]byte) (bool, error) {
	var found bool
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAtt)
		v := b.Get(id[:])
		if v == nil {
			return nil
		}
		r, err := decodeAtt(id[:], v)
		if err != nil {
			return err
		}
		found = true
		if err := s.votesChanged(tx, r.BuildKey); err != nil {
			return err
		}
		return deleteAttestation(tx, &r)
	})
	return found, err
}

// AttestationsFor returns every attestation for buildKey: the votes the
// trust policy counts.
func (s *Store) AttestationsFor(buildKey string) ([]AttestationRecord, error) {
	return s.attByIndex(bucketAttByBuild, buildKey)
}

// AttestationsByVariant returns every attestation for variantKey, for a
// peer that must pick the build its installed libraries satisfy.
func (s *Store) AttestationsByVariant(variantKey string) ([]AttestationRecord, error) {
	return s.attByIndex(bucketAttByVar, variantKey)
}

// AttestationsByVariantUpTo is AttestationsByVariant stopping once about
// maxBytes of blobs are read: a variant spans any number of build keys
// (one per set of linked libraries), so answering a peer must not load
// them all.
func (s *Store) AttestationsByVariantUpTo(variantKey string, maxBytes int) ([]AttestationRecord, error) {
	return s.attByIndexUpTo(bucketAttByVar, variantKey, maxBytes)
}

// AttestationsByCPV returns every attestation for cpv (`find CPV`).
func (s *Store) AttestationsByCPV(cpv string) ([]AttestationRecord, error) {
	return s.attByIndex(bucketAttByCPV, cpv)
}

// AttestationsBy returns every attestation signed by attester.
func (s *Store) AttestationsBy(attester string) ([]AttestationRecord, error) {
	return s.attByIndex(bucketAttByAuthor, attester)
}

// Catalog returns every attestation of platform: what a newcomer on that
// platform asks for with catalog sync.
func (s *Store) Catalog(platform string) ([]AttestationRecord, error) {
	return s.attByIndex(bucketAttByPlat, platform)
}

// ListAttestations returns every stored attestation, ordered by id.
func (s *Store) ListAttestations() ([]AttestationRecord, error) {
	var out []AttestationRecord
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAtt).ForEach(func(k, v []byte) error {
			r, err := decodeAtt(k, v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// attByIndex lists the records an index maps field to, ordered by id; an
// empty field matches nothing because empty fields are never indexed.
func (s *Store) attByIndex(index []byte, field string) ([]AttestationRecord, error) {
	return s.attByIndexUpTo(index, field, 0)
}

// attByIndexUpTo is attByIndex stopping after the record that reaches
// maxBytes of blobs (0: no limit).
func (s *Store) attByIndexUpTo(index []byte, field string, maxBytes int) ([]AttestationRecord, error) {
	if field == "" {
		return nil, nil
	}
	var out []AttestationRecord
	total := 0
	err := s.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketAtt)
		return scanIndex(tx.Bucket(index), field, func(id []byte) error {
			if maxBytes > 0 && total >= maxBytes {
				return errStopScan
			}
			v := pb.Get(id)
			if v == nil {
				return fmt.Errorf("%w: %s points at missing attestation %x", ErrCorrupt, index, id)
			}
			r, err := decodeAtt(id, v)
			if err != nil {
				return err
			}
			out = append(out, r)
			total += len(r.Blob)
			return nil
		})
	})
	if errors.Is(err, errStopScan) {
		err = nil
	}
	return out, err
}

// errStopScan ends an index scan early; never returned to callers.
var errStopScan = errors.New("stop scan")

func checkAttestations(tx *bolt.Tx) error {
	if err := tx.Bucket(bucketAtt).ForEach(func(k, v []byte) error {
		r, err := decodeAtt(k, v)
		if err != nil {
			return err
		}
		if sha256.Sum256(r.Blob) != r.ID {
			return fmt.Errorf("%w: attestation %x: blob does not hash to its id", ErrCorrupt, k)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, ix := range attIndexes {
		field := ix.field
		if err := checkIndexAgainst(tx, ix.bucket, bucketAtt, func(v []byte) (string, error) {
			var j attJSON
			if _, err := attMeta(v, &j); err != nil {
				return "", fmt.Errorf("attestation: %w", err)
			}
			r := AttestationRecord{BuildKey: j.BuildKey, VariantKey: j.VariantKey, CPV: j.CPV, Platform: j.Platform, Attester: j.Attester}
			return field(&r), nil
		}); err != nil {
			return err
		}
	}
	return nil
}
