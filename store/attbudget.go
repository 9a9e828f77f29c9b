package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets that make per-identity cost and catalog paging cheap:
//
//   - att_by_platform_time: platform NUL be64(time) id → build key (empty
//     in entries written before it was kept), so a catalog page is one
//     cursor walk however large the catalog is, and a walk of ids reads no
//     record;
//   - att_usage: attester → be64(records) be64(blob bytes), what one
//     identity makes this peer store, without listing its records.
var (
	bucketAttByPlatTime = []byte("att_by_platform_time")
	bucketAttUsage      = []byte("att_usage")
)

// indexAttestation writes every secondary entry of a new record and adds it
// to its attester's usage.
func indexAttestation(tx *bolt.Tx, rec *AttestationRecord) error {
	for _, ix := range attIndexes {
		if err := putIndex(tx.Bucket(ix.bucket), ix.field(rec), rec.ID[:]); err != nil {
			return err
		}
	}
	if rec.Platform != "" {
		// The value is the build key, so a catalog walk (catalog/3's
		// fingerprints and pages) reads no record metadata.
		if err := tx.Bucket(bucketAttByPlatTime).Put(platTimeKey(rec.Platform, rec.Time, rec.ID[:]), []byte(rec.BuildKey)); err != nil {
			return err
		}
	}
	return addUsage(tx, rec.Attester, 1, int64(len(rec.Blob)))
}

// deleteAttestation removes a stored record, its index entries and its
// share of its attester's usage.
func deleteAttestation(tx *bolt.Tx, r *AttestationRecord) error {
	for _, ix := range attIndexes {
		if err := delIndex(tx.Bucket(ix.bucket), ix.field(r), r.ID[:]); err != nil {
			return err
		}
	}
	if r.Platform != "" {
		if err := tx.Bucket(bucketAttByPlatTime).Delete(platTimeKey(r.Platform, r.Time, r.ID[:])); err != nil {
			return err
		}
	}
	if err := addUsage(tx, r.Attester, -1, -int64(len(r.Blob))); err != nil {
		return err
	}
	return tx.Bucket(bucketAtt).Delete(r.ID[:])
}

// DropOrphans removes what was kept for attestations that are gone, for
// each build key in buildKeys: the endorsements of a build key with no
// attestation left that drop says may go (the store cannot tell whose
// signer a blob is), and the evidence against a peer that has no
// attestation left for that build key. An attester rolling its budget
// over must not leave either behind for ever.
func (s *Store) DropOrphans(buildKeys []string, drop func(endorsement []byte) bool) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := s.votesChanged(tx, slices.DeleteFunc(slices.Clone(buildKeys), func(bk string) bool { return bk == "" })...); err != nil {
			return err
		}
		byBuild, byAuthor := tx.Bucket(bucketAttByBuild), tx.Bucket(bucketAttByAuthor)
		for _, bk := range buildKeys {
			if bk == "" {
				continue
			}
			prefix := indexKey(bk, nil)
			var ids [][]byte // the attestations left for bk
			c := byBuild.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				ids = append(ids, bytes.Clone(k[len(prefix):]))
			}
			if len(ids) == 0 {
				c := tx.Bucket(bucketEndorse).Cursor()
				var gone [][]byte
				for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
					if drop(v) {
						gone = append(gone, bytes.Clone(k))
					}
				}
				for _, k := range gone {
					if err := tx.Bucket(bucketEndorse).Delete(k); err != nil {
						return err
					}
					if err := tx.Bucket(bucketEndorseIDs).Delete(k[len(k)-32:]); err != nil {
						return err
					}
				}
			}
			// Evidence on bk against peers with no attestation left for it.
			var evGone []EvidenceRecord
			if err := scanIndex(tx.Bucket(bucketEvByBuild), bk, func(id []byte) error {
				v := tx.Bucket(bucketEv).Get(id)
				if v == nil {
					return fmt.Errorf("%w: evidence index points at missing evidence %x", ErrCorrupt, id)
				}
				r, err := decodeEv(id, v)
				if err != nil {
					return err
				}
				for _, aid := range ids {
					if byAuthor.Get(indexKey(r.Peer, aid)) != nil {
						return nil
					}
				}
				evGone = append(evGone, r)
				return nil
			}); err != nil {
				return err
			}
			for _, r := range evGone {
				if err := delIndex(tx.Bucket(bucketEvByBuild), r.BuildKey, r.ID[:]); err != nil {
					return err
				}
				if err := delIndex(tx.Bucket(bucketEvByPeer), r.Peer, r.ID[:]); err != nil {
					return err
				}
				if err := tx.Bucket(bucketEv).Delete(r.ID[:]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func platTimeKey(platform string, at int64, id []byte) []byte {
	k := make([]byte, 0, len(platform)+1+8+len(id))
	k = append(k, platform...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(at))
	return append(k, id...)
}

// Usage is what one attester makes this peer store.
type Usage struct {
	Records int64
	Bytes   int64
}

func addUsage(tx *bolt.Tx, attester string, records, nbytes int64) error {
	if attester == "" {
		return nil
	}
	b := tx.Bucket(bucketAttUsage)
	u, err := decodeUsage(b.Get([]byte(attester)))
	if err != nil {
		return err
	}
	u.Records += records
	u.Bytes += nbytes
	if u.Records < 0 || u.Bytes < 0 {
		return fmt.Errorf("%w: usage of %s went negative", ErrCorrupt, attester)
	}
	meta := tx.Bucket(bucketMeta)
	total, err := decodeUsage(meta.Get(keyAttTotal))
	if err != nil {
		return err
	}
	total.Records += records
	total.Bytes += nbytes
	if total.Records < 0 || total.Bytes < 0 {
		return fmt.Errorf("%w: total usage went negative", ErrCorrupt)
	}
	if err := meta.Put(keyAttTotal, encodeUsage(total)); err != nil {
		return err
	}
	if u.Records == 0 {
		return b.Delete([]byte(attester))
	}
	return b.Put([]byte(attester), encodeUsage(u))
}

// keyAttTotal in the meta bucket is the usage of every attester together,
// kept with each change so the store-wide bound costs one read.
var keyAttTotal = []byte("att_total")

// TotalUsage is what all attesters together make this peer store.
func (s *Store) TotalUsage() (Usage, error) {
	var u Usage
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		u, err = decodeUsage(tx.Bucket(bucketMeta).Get(keyAttTotal))
		return err
	})
	return u, err
}

// LargestAttesters lists up to n attesters by the bytes they make this
// peer store, largest first: where a store-wide bound evicts first.
func (s *Store) LargestAttesters(n int) ([]string, error) {
	type holder struct {
		name  string
		bytes int64
	}
	var all []holder
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAttUsage).ForEach(func(k, v []byte) error {
			u, err := decodeUsage(v)
			if err != nil {
				return err
			}
			all = append(all, holder{string(k), u.Bytes})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b holder) int { return cmp.Or(cmp.Compare(b.bytes, a.bytes), strings.Compare(a.name, b.name)) })
	out := make([]string, 0, min(n, len(all)))
	for _, h := range all[:min(n, len(all))] {
		out = append(out, h.name)
	}
	return out, nil
}

func encodeUsage(u Usage) []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(u.Records))
	return binary.BigEndian.AppendUint64(v, uint64(u.Bytes))
}

func decodeUsage(v []byte) (Usage, error) {
	if v == nil {
		return Usage{}, nil
	}
	if len(v) != 16 {
		return Usage{}, fmt.Errorf("%w: usage record has %d bytes", ErrCorrupt, len(v))
	}
	return Usage{Records: int64(binary.BigEndian.Uint64(v[:8])), Bytes: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

// AttesterUsage reports how many records and blob bytes attester has made
// this peer store.
func (s *Store) AttesterUsage(attester string) (Usage, error) {
	var u Usage
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		u, err = decodeUsage(tx.Bucket(bucketAttUsage).Get([]byte(attester)))
		return err
	})
	return u, err
}

// PlatformPage returns the attestations of platform after a cursor, in
// (time, id) order: after the record with time since and id after, or,
// when after is empty, after every record of second since. It returns at
// most maxRecords records and stops after the record that reaches
// maxBytes of blobs (0: no byte cap). The next page starts after the last
// record returned, so no record is ever skipped however many share a
// second. It walks one index, so its cost is the page's, not the
// catalog's.
func (s *Store) PlatformPage(platform string, since int64, after []byte, maxRecords, maxBytes int) ([]AttestationRecord, error) {
	if platform == "" || maxRecords <= 0 {
		return nil, nil
	}
	if since < 0 {
		since = 0
	}
	start := platTimeKey(platform, since+1, nil)
	if len(after) > 0 {
		start = platTimeKey(platform, since, after)
	}
	var out []AttestationRecord
	err := s.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketAtt)
		prefix := append([]byte(platform), 0)
		c := tx.Bucket(bucketAttByPlatTime).Cursor()
		total := 0
		for k, _ := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(after) > 0 && bytes.Equal(k, start) {
				continue // the cursor's own record
			}
			if len(out) == maxRecords || (maxBytes > 0 && total >= maxBytes) {
				return nil
			}
			rest := k[len(prefix):]
			if len(rest) != 8+32 {
				return fmt.Errorf("%w: %s key %x has a bad length", ErrCorrupt, bucketAttByPlatTime, k)
			}
			v := pb.Get(rest[8:])
			if v == nil {
				return fmt.Errorf("%w: %s points at missing attestation %x", ErrCorrupt, bucketAttByPlatTime, rest[8:])
			}
			r, err := decodeAtt(rest[8:], v)
			if err != nil {
				return err
			}
			out = append(out, r)
			total += len(r.Blob)
		}
		return nil
	})
	return out, err
}

// AttestationInfo is a stored attestation without its blob: what deciding
// which of an attester's records to evict needs.
type AttestationInfo struct {
	ID         [32]byte
	Attester   string
	BuildKey   string
	CPV        string
	Content    string
	Size       int
	ReceivedAt time.Time
	// Backed reports that another attester vouches for the same content
	// of the same build key.
	Backed bool
}

// AttesterRecords lists every record attester made this peer store, with
// whether another attester backs each.
func (s *Store) AttesterRecords(attester string) ([]AttestationInfo, error) {
	if attester == "" {
		return nil, nil
	}
	var out []AttestationInfo
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		if out, err = infosByIndex(tx, bucketAttByAuthor, attester); err != nil {
			return err
		}
		for i := range out {
			others, err := infosByIndex(tx, bucketAttByBuild, out[i].BuildKey)
			if err != nil {
				return err
			}
			for _, o := range others {
				if o.Attester != attester && o.Content == out[i].Content {
					out[i].Backed = true
					break
				}
			}
		}
		return nil
	})
	return out, err
}

// InfosFor lists the attestations of buildKey without their blobs (Backed
// is not filled in): what deciding which one a full build key drops needs.
func (s *Store) InfosFor(buildKey string) ([]AttestationInfo, error) {
	var out []AttestationInfo
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		out, err = infosByIndex(tx, bucketAttByBuild, buildKey)
		return err
	})
	return out, err
}

// infosByIndex lists the records an index maps field to, from their
// metadata alone: no blob is copied (or, in the split format, scanned).
func infosByIndex(tx *bolt.Tx, index []byte, field string) ([]AttestationInfo, error) {
	type meta struct {
		BuildKey   string    `json:"build_key"`
		CPV        string    `json:"cpv"`
		Attester   string    `json:"attester"`
		Content    string    `json:"content"`
		ReceivedAt time.Time `json:"received_at"`
	}
	var out []AttestationInfo
	pb := tx.Bucket(bucketAtt)
	err := scanIndex(tx.Bucket(index), field, func(id []byte) error {
		v := pb.Get(id)
		if v == nil {
			return fmt.Errorf("%w: %s points at missing attestation %x", ErrCorrupt, index, id)
		}
		var m meta
		size, err := attMeta(v, &m)
		if err != nil {
			return fmt.Errorf("attestation %x: %w", id, err)
		}
		info := AttestationInfo{Attester: m.Attester, BuildKey: m.BuildKey, CPV: m.CPV, Content: m.Content, Size: size, ReceivedAt: m.ReceivedAt}
		copy(info.ID[:], id)
		out = append(out, info)
		return nil
	})
	return out, err
}

// DeleteAttestations removes several records in one transaction (one
// fsync): an eviction frees room in a batch. It returns how many existed.
func (s *Store) DeleteAttestations(ids [][32]byte) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketAtt)
		for _, id := range ids {
			v := b.Get(id[:])
			if v == nil {
				continue
			}
			r, err := decodeAtt(id[:], v)
			if err != nil {
				return err
			}
			if err := deleteAttestation(tx, &r); err != nil {
				return err
			}
			if err := s.votesChanged(tx, r.BuildKey); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// SetAttestationAddr records the address a stored attestation arrived from
// directly, if none is recorded yet: a record first relayed by another peer
// gains its attester's address when the attester itself delivers it.
func (s *Store) SetAttestationAddr(id [32]byte, addr string) (bool, error) {
	if addr == "" {
		return false, nil
	}
	set := false
	err := s.update(func(tx *bolt.Tx) error {
		set = false
		b := tx.Bucket(bucketAtt)
		v := b.Get(id[:])
		if v == nil {
			return nil
		}
		r, err := decodeAtt(id[:], v)
		if err != nil || r.Addr != "" {
			return err
		}
		r.Addr = addr
		nv, err := encodeAtt(&r)
		if err != nil {
			return err
		}
		set = true
		if err := s.votesChanged(tx, r.BuildKey); err != nil {
			return err
		}
		return b.Put(id[:], nv)
	})
	return set, err
}

// BackfillAttestationTimes gives records written before the store kept
// attestation times their time, computed by timeOf from the blob (the store
// cannot decode attestations itself). A record timeOf fails on keeps time
// zero. It returns how many records it updated.
func (s *Store) BackfillAttestationTimes(timeOf func(blob []byte) (int64, error)) (int, error) {
	var todo []AttestationRecord
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAtt).ForEach(func(k, v []byte) error {
			r, err := decodeAtt(k, v)
			if err != nil {
				return err
			}
			if r.Time == 0 {
				todo = append(todo, r)
			}
			return nil
		})
	})
	if err != nil || len(todo) == 0 {
		return 0, err
	}
	n := 0
	err = s.update(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketAtt)
		pt := tx.Bucket(bucketAttByPlatTime)
		for i := range todo {
			r := &todo[i]
			at, err := timeOf(r.Blob)
			if err != nil || at <= 0 {
				continue
			}
			if r.Platform != "" {
				if err := pt.Delete(platTimeKey(r.Platform, 0, r.ID[:])); err != nil {
					return err
				}
				if err := pt.Put(platTimeKey(r.Platform, at, r.ID[:]), nil); err != nil {
					return err
				}
			}
			r.Time = at
			v, err := encodeAtt(r)
			if err != nil {
				return err
			}
			if err := b.Put(r.ID[:], v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// migrateAttestations fills the buckets a database written before they
// existed lacks: usage per attester and the platform-time index (with time
// zero until BackfillAttestationTimes).
func migrateAttestations(tx *bolt.Tx, fresh map[string]bool) error {
	if tx.Bucket(bucketMeta).Get(keyAttTotal) == nil && !fresh[string(bucketAttUsage)] {
		// Usage kept without a total: add it up once.
		var total Usage
		if err := tx.Bucket(bucketAttUsage).ForEach(func(_, v []byte) error {
			u, err := decodeUsage(v)
			total.Records += u.Records
			total.Bytes += u.Bytes
			return err
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyAttTotal, encodeUsage(total)); err != nil {
			return err
		}
	}
	if !fresh[string(bucketAttByPlatTime)] && !fresh[string(bucketAttUsage)] {
		return nil
	}
	if fresh[string(bucketAttUsage)] {
		if err := tx.Bucket(bucketMeta).Delete(keyAttTotal); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketAtt).ForEach(func(k, v []byte) error {
		r, err := decodeAtt(k, v)
		if err != nil {
			return err
		}
		if fresh[string(bucketAttByPlatTime)] && r.Platform != "" {
			if err := tx.Bucket(bucketAttByPlatTime).Put(platTimeKey(r.Platform, r.Time, k), []byte(r.BuildKey)); err != nil {
				return err
			}
		}
		if fresh[string(bucketAttUsage)] {
			return addUsage(tx, r.Attester, 1, int64(len(r.Blob)))
		}
		return nil
	})
}

// checkAttestationBudget verifies the usage bucket and the platform-time
// index against the records.
func checkAttestationBudget(tx *bolt.Tx) error {
	want := map[string]Usage{}
	wantPT := map[string]bool{}
	if err := tx.Bucket(bucketAtt).ForEach(func(k, v []byte) error {
		r, err := decodeAtt(k, v)
		if err != nil {
			return err
		}
		if r.Attester != "" {
			u := want[r.Attester]
			u.Records++
			u.Bytes += int64(len(r.Blob))
			want[r.Attester] = u
		}
		if r.Platform != "" {
			wantPT[string(platTimeKey(r.Platform, r.Time, k))] = true
		}
		return nil
	}); err != nil {
		return err
	}
	got := 0
	if err := tx.Bucket(bucketAttUsage).ForEach(func(k, v []byte) error {
		u, err := decodeUsage(v)
		if err != nil {
			return err
		}
		if want[string(k)] != u {
			return fmt.Errorf("%w: usage of %s is %+v, records add up to %+v", ErrCorrupt, k, u, want[string(k)])
		}
		got++
		return nil
	}); err != nil {
		return err
	}
	if got != len(want) {
		return fmt.Errorf("%w: usage lists %d attesters, records name %d", ErrCorrupt, got, len(want))
	}
	var sum Usage
	for _, u := range want {
		sum.Records += u.Records
		sum.Bytes += u.Bytes
	}
	total, err := decodeUsage(tx.Bucket(bucketMeta).Get(keyAttTotal))
	if err != nil {
		return err
	}
	if total != sum {
		return fmt.Errorf("%w: total usage %+v, attesters add up to %+v", ErrCorrupt, total, sum)
	}
	n := 0
	if err := tx.Bucket(bucketAttByPlatTime).ForEach(func(k, _ []byte) error {
		if !wantPT[string(k)] {
			return fmt.Errorf("%w: %s entry %x has no record", ErrCorrupt, bucketAttByPlatTime, k)
		}
		n++
		return nil
	}); err != nil {
		return err
	}
	if n != len(wantPT) {
		return fmt.Errorf("%w: %s has %d entries for %d records", ErrCorrupt, bucketAttByPlatTime, n, len(wantPT))
	}
	return nil
}

// BuildKeyVoters lists the build keys of platform ("" = every platform),
// each with its distinct attesters, without decoding any blob: enough to
// skip build keys that no policy could allow before evaluating votes.
func (s *Store) BuildKeyVoters(platform string) (map[string][]string, error) {
	// From the indexes alone (no record is read): the build key and the
	// attester of every record of the platform.
	type voter struct{ buildKey, attester string }
	byID := map[string]*voter{}
	out := map[string][]string{}
	err := s.view(func(tx *bolt.Tx) error {
		if platform == "" {
			if err := tx.Bucket(bucketAtt).ForEach(func(id, _ []byte) error {
				byID[string(id)] = &voter{}
				return nil
			}); err != nil {
				return err
			}
		} else if err := scanIndex(tx.Bucket(bucketAttByPlat), platform, func(id []byte) error {
			byID[string(id)] = &voter{}
			return nil
		}); err != nil {
			return err
		}
		fill := func(b *bolt.Bucket, set func(v *voter, field string)) error {
			return b.ForEach(func(k, _ []byte) error {
				field, id, ok := splitIndexKey(k)
				if !ok {
					return fmt.Errorf("%w: index key %q has no separator", ErrCorrupt, k)
				}
				if v := byID[string(id)]; v != nil {
					set(v, field)
				}
				return nil
			})
		}
		if err := fill(tx.Bucket(bucketAttByBuild), func(v *voter, f string) { v.buildKey = f }); err != nil {
			return err
		}
		return fill(tx.Bucket(bucketAttByAuthor), func(v *voter, f string) { v.attester = f })
	})
	if err != nil {
		return nil, err
	}
	for _, v := range byID {
		if v.buildKey != "" && !slices.Contains(out[v.buildKey], v.attester) {
			out[v.buildKey] = append(out[v.buildKey], v.attester)
		}
	}
	for _, as := range out {
		slices.Sort(as)
	}
	return out, nil
}

// CountForBuildKey counts the attestations stored for buildKey, and those
// of them signed by attester, from the indexes alone (no record is read):
// the per-build-key caps are checked on every ingest, and a build key
// full of large records must not make each check expensive.
func (s *Store) CountForBuildKey(buildKey, attester string) (total, byAttester int, err error) {
	if buildKey == "" {
		return 0, 0, nil
	}
	err = s.view(func(tx *bolt.Tx) error {
		byAuthor := tx.Bucket(bucketAttByAuthor)
		return scanIndex(tx.Bucket(bucketAttByBuild), buildKey, func(id []byte) error {
			total++
			if attester != "" && byAuthor.Get(indexKey(attester, id)) != nil {
				byAttester++
			}
			return nil
		})
	})
	return total, byAttester, err
}

// ContentsByBuildKey lists, for every build key, the content ids attested
// for it, and counts the records, without reading any blob: what status
// needs to count builds and find the ones that could be disputed.
func (s *Store) ContentsByBuildKey() (records int, contents map[string]map[string]bool, err error) {
	type meta struct {
		BuildKey string `json:"build_key"`
		Content  string `json:"content"`
	}
	contents = map[string]map[string]bool{}
	err = s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAtt).ForEach(func(k, v []byte) error {
			var m meta
			if _, err := attMeta(v, &m); err != nil {
				return fmt.Errorf("attestation %x: %w", k, err)
			}
			records++
			if contents[m.BuildKey] == nil {
				contents[m.BuildKey] = map[string]bool{}
			}
			contents[m.BuildKey][m.Content] = true
			return nil
		})
	})
	return records, contents, err
}
