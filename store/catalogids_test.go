package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The ids pages name exactly the records the blob pages hold, in the same
// order, from any cursor, with each attestation's build key and time.
func TestPlatformIDsFollowPlatformPage(t *testing.T) {
	s := openTest(t, t.TempDir())
	recs := perSecond(4, 3)
	other := att("A", "other", "c", 2, "other")
	other.Platform = "arm64"
	if _, err := s.PutAttestations(append(recs, other)); err != nil {
		t.Fatal(err)
	}
	page, err := s.PlatformPage("amd64", 0, nil, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	mid := page[4].ID
	for _, cur := range []struct {
		since int64
		after []byte
		max   int
	}{{0, nil, 100}, {2, nil, 100}, {2, mid[:], 100}, {0, nil, 5}, {4, nil, 100}} {
		recs, err := s.PlatformPage("amd64", cur.since, cur.after, cur.max, 0)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := s.PlatformIDs("amd64", cur.since, cur.after, cur.max)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != len(recs) {
			t.Fatalf("cursor %+v: %d ids for %d records", cur, len(ids), len(recs))
		}
		for i, r := range recs {
			if ids[i].ID != r.ID || ids[i].Time != r.Time || ids[i].BuildKey != r.BuildKey {
				t.Fatalf("cursor %+v: id %d is %+v, record (%d, %x, %s)", cur, i, ids[i], r.Time, r.ID, r.BuildKey)
			}
		}
	}
	// An index written before it kept build keys (empty values) gives the
	// same entries, read from the records' metadata.
	before, err := s.PlatformIDs("amd64", 0, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range page {
			if err := tx.Bucket(bucketAttByPlatTime).Put(platTimeKey(r.Platform, r.Time, r.ID[:]), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if after, err := s.PlatformIDs("amd64", 0, nil, 100); err != nil || !slices.Equal(after, before) {
		t.Fatalf("entries of an older index: %v, %v; want %v", after, err, before)
	}
	times, held, err := s.AttestationTimes([][32]byte{page[5].ID, sum("nothing"), sum("other")})
	if err != nil || !slices.Equal(held, []bool{true, false, true}) || times[0] != page[5].Time || times[2] != 2 {
		t.Fatalf("AttestationTimes = %v, %v, %v", times, held, err)
	}
}

func TestDemandIDsFollowDemandPage(t *testing.T) {
	s := openTest(t, t.TempDir())
	lim := DemandLimits{PerAttester: 100, Total: 100}
	var recs []DemandRecord
	for i := range 6 {
		r := demandRec(fmt.Sprintf("v%d", i), "peerA", i/2)
		recs = append(recs, r)
		mustPutDemand(t, s, r, lim)
	}
	plat := recs[0].Platform
	page, err := s.DemandPage(plat, 0, nil, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := s.DemandIDs(plat, 0, nil, 100)
	if err != nil || len(ids) != len(page) || len(ids) != len(recs) {
		t.Fatalf("DemandIDs: %d ids for %d records, %v", len(ids), len(page), err)
	}
	for i, r := range page {
		if ids[i].ID != sha256.Sum256(r.Blob) || ids[i].Time != r.Time {
			t.Fatalf("id %d is %+v, record (%d, %x)", i, ids[i], r.Time, sha256.Sum256(r.Blob))
		}
		blob, ok, err := s.DemandBlobByID(ids[i].ID)
		if err != nil || !ok || !bytes.Equal(blob, r.Blob) {
			t.Fatalf("DemandBlobByID(%x) = %q, %v, %v", ids[i].ID, blob, ok, err)
		}
	}
	rest, err := s.DemandIDs(plat, ids[2].Time, ids[2].ID[:], 2)
	if err != nil || len(rest) != 2 || rest[0] != ids[3] || rest[1] != ids[4] {
		t.Fatalf("DemandIDs after the third = %+v, %v", rest, err)
	}
	if _, ok, err := s.DemandBlobByID(sum("nothing")); ok || err != nil {
		t.Fatalf("DemandBlobByID of nothing: %v, %v", ok, err)
	}
	times, held, err := s.DemandTimes([][32]byte{ids[1].ID, sum("nothing")})
	if err != nil || !slices.Equal(held, []bool{true, false}) || times[0] != ids[1].Time {
		t.Fatalf("DemandTimes = %v, %v, %v", times, held, err)
	}
}

// Endorsements are found by id from when they are stored until they are
// dropped, and a database written before the id index gets it filled on
// open.
func TestEndorsementIDIndex(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	for _, e := range []struct{ bk, blob string }{{"bk1", "e1"}, {"bk1", "e2"}, {"bk10", "e3"}} {
		if _, err := s.PutEndorsement(e.bk, []byte(e.blob)); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := s.EndorsementIDs("bk1")
	if err != nil || !sameSet(ids, [][32]byte{sum("e1"), sum("e2")}) {
		t.Fatalf("EndorsementIDs(bk1) = %x, %v", ids, err)
	}
	check := func(when string, want map[string]bool) {
		t.Helper()
		for blob, held := range want {
			got, err := s.HasEndorsements([][32]byte{sum(blob)})
			if err != nil || got[0] != held {
				t.Fatalf("%s: HasEndorsements(%s) = %v, %v; want %v", when, blob, got, err, held)
			}
			b, ok, err := s.EndorsementByID(sum(blob))
			if err != nil || ok != held || (held && string(b) != blob) {
				t.Fatalf("%s: EndorsementByID(%s) = %q, %v, %v", when, blob, b, ok, err)
			}
		}
	}
	check("stored", map[string]bool{"e1": true, "e2": true, "e3": true, "e4": false})

	// A database from before the index: the bucket is gone, and Open
	// fills it again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketEndorseIDs) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	check("after the upgrade", map[string]bool{"e1": true, "e2": true, "e3": true})

	// bk1 has no attestation: its endorsements are dropped, and so are
	// their ids.
	if err := s.DropOrphans([]string{"bk1"}, func([]byte) bool { return true }); err != nil {
		t.Fatal(err)
	}
	check("dropped", map[string]bool{"e1": false, "e2": false, "e3": true})
}

func sameSet(a, b [][32]byte) bool {
	cmp := func(x, y [32]byte) int { return bytes.Compare(x[:], y[:]) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// A bounded ids page stops before its bound, and a walk of [from, until)
// names the records such a page lists from the second before from, in
// the same order, and stops when told.
func TestPlatformIDsUntilAndWalk(t *testing.T) {
	s := openTest(t, t.TempDir())
	recs := perSecond(5, 2)
	if _, err := s.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	page, err := s.PlatformIDsUntil("amd64", 1, nil, 4, 100)
	if err != nil || len(page) != 4 || page[0].Time != 2 || page[3].Time != 3 {
		t.Fatalf("ids of (1, 4) = %+v, %v; want the four of seconds 2 and 3", page, err)
	}
	var walked []CatalogEntry
	err = s.WalkPlatformIDs("amd64", 2, 4, func(e CatalogEntry) error {
		walked = append(walked, e)
		return nil
	})
	if err != nil || !slices.Equal(walked, page) {
		t.Fatalf("walk of [2, 4) = %+v, %v; want %+v", walked, err, page)
	}
	stop := errors.New("enough")
	n := 0
	err = s.WalkPlatformIDs("amd64", 0, 100, func(CatalogEntry) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("a walk told to stop: %d records, %v", n, err)
	}
}

// perSecond is a catalog of platform amd64 by attester A: k records (each
// of its own build key) in each of seconds 1..n.
func perSecond(n int64, k int) []AttestationRecord {
	var recs []AttestationRecord
	for at := int64(1); at <= n; at++ {
		for j := range k {
			recs = append(recs, att("A", fmt.Sprintf("bk%d-%d", at, j), "c", at, fmt.Sprintf("blob-%d-%d", at, j)))
		}
	}
	return recs
}
