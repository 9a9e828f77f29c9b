package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var demandEpoch = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func demandRec(variant, attester string, minute int) DemandRecord {
	return DemandRecord{
		VariantKey: variant, Platform: "x86_64-pc-linux-gnu-0123456789abcdef", CPV: "app-misc/" + variant + "-1.0",
		Attester: attester, Kind: "source", Time: demandEpoch.Add(time.Duration(minute) * time.Minute).Unix(),
		ReceivedAt: demandEpoch, Blob: []byte(fmt.Sprintf("blob %s %s %d", variant, attester, minute)),
	}
}

func mustPutDemand(t *testing.T, s *Store, r DemandRecord, lim DemandLimits) bool {
	t.Helper()
	added, err := s.PutDemand(r, lim)
	if err != nil {
		t.Fatalf("PutDemand(%s by %s): %v", r.VariantKey, r.Attester, err)
	}
	return added
}

func TestDemandOneVotePerIdentityAndVariant(t *testing.T) {
	s := openTest(t, t.TempDir())
	lim := DemandLimits{PerAttester: 10, Total: 100}
	if !mustPutDemand(t, s, demandRec("hello", "peerA", 1), lim) {
		t.Fatal("first record not added")
	}
	// The same identity again, older or newer: still one wanter, the
	// newer record kept.
	if mustPutDemand(t, s, demandRec("hello", "peerA", 0), lim) {
		t.Fatal("an older record replaced a newer one")
	}
	if !mustPutDemand(t, s, demandRec("hello", "peerA", 5), lim) {
		t.Fatal("a newer record did not replace the older one")
	}
	mustPutDemand(t, s, demandRec("hello", "peerB", 2), lim)
	mustPutDemand(t, s, demandRec("layout", "peerB", 3), lim)

	got, err := s.DemandFor("hello", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Wanters != 2 || got.LastSeen != demandEpoch.Add(5*time.Minute) || got.Newest.Attester != "peerA" {
		t.Fatalf("hello: %+v", got)
	}
	if blob, ok, err := s.DemandBlob("hello", "peerA"); err != nil || !ok || string(blob) != "blob hello peerA 5" {
		t.Fatalf("newest blob %q, %v, %v", blob, ok, err)
	}
	tally, err := s.DemandByPlatform("x86_64-pc-linux-gnu-0123456789abcdef", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tally) != 2 || tally[0].VariantKey != "hello" || tally[0].Wanters != 2 || tally[1].VariantKey != "layout" || tally[1].Wanters != 1 {
		t.Fatalf("tally %+v", tally)
	}
	if other, _ := s.DemandByPlatform("aarch64-unknown-linux-gnu-0000000000000000", time.Time{}); len(other) != 0 {
		t.Fatalf("other platform: %+v", other)
	}
	// Past the horizon a record no longer counts, and pruning removes it.
	since := demandEpoch.Add(4 * time.Minute)
	if got, _ := s.DemandFor("hello", since); got.Wanters != 1 {
		t.Fatalf("hello since minute 4: %d wanters", got.Wanters)
	}
	n, err := s.PruneDemand(since)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want 2", n, err)
	}
	if c, _ := s.Counts(); c.Demands != 1 {
		t.Fatalf("%d records after pruning, want 1", c.Demands)
	}
	if _, ok, _ := s.DemandBlob("hello", "peerB"); ok {
		t.Fatal("a pruned record's blob is still held")
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestDemandBoundPerIdentity(t *testing.T) {
	s := openTest(t, t.TempDir())
	lim := DemandLimits{PerAttester: 3, Total: 100}
	for i := range 3 {
		mustPutDemand(t, s, demandRec(fmt.Sprintf("v%d", i), "sybil", 10+i), lim)
	}
	// A fourth variant evicts the attester's oldest, not anyone else's.
	mustPutDemand(t, s, demandRec("honest", "peerA", 0), lim)
	if !mustPutDemand(t, s, demandRec("v3", "sybil", 20), lim) {
		t.Fatal("newer record refused")
	}
	if n, _ := s.DemandsBy("sybil"); n != 3 {
		t.Fatalf("sybil holds %d records, cap 3", n)
	}
	if got, _ := s.DemandFor("v0", time.Time{}); got.Wanters != 0 {
		t.Fatal("the oldest record was not evicted")
	}
	if got, _ := s.DemandFor("honest", time.Time{}); got.Wanters != 1 {
		t.Fatal("another attester's record was evicted")
	}
	// A record older than all the attester holds is refused.
	if _, err := s.PutDemand(demandRec("v9", "sybil", 1), lim); !errors.Is(err, ErrDemandFull) {
		t.Fatalf("old record over the cap: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestDemandBoundTotal(t *testing.T) {
	s := openTest(t, t.TempDir())
	lim := DemandLimits{PerAttester: 10, Total: 4}
	for i := range 4 {
		mustPutDemand(t, s, demandRec("hello", fmt.Sprintf("peer%d", i), 10+i), lim)
	}
	// Past the total the oldest record of all goes.
	mustPutDemand(t, s, demandRec("layout", "peer9", 30), lim)
	if c, _ := s.Counts(); c.Demands != 4 {
		t.Fatalf("%d records, cap 4", c.Demands)
	}
	if got, _ := s.DemandFor("hello", time.Time{}); got.Wanters != 3 || got.Kinds["source"] != 3 {
		t.Fatalf("hello: %+v", got)
	}
	if n, _ := s.DemandsBy("peer0"); n != 0 {
		t.Fatal("the oldest record (peer0's) was not evicted")
	}
	if _, err := s.PutDemand(demandRec("layout", "peer8", 0), lim); !errors.Is(err, ErrDemandFull) {
		t.Fatalf("record older than all held: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// The count survives a reopen.
	dir := s.Dir()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if n, err := s.DemandRecords(); err != nil || n != 4 {
		t.Fatalf("after reopen: %d, %v", n, err)
	}
}

func TestPutDemandRejectsInvalid(t *testing.T) {
	s := openTest(t, t.TempDir())
	for name, r := range map[string]DemandRecord{
		"no variant":   {Attester: "a", Platform: "p"},
		"no attester":  {VariantKey: "v", Platform: "p"},
		"no blob":      {VariantKey: "v", Attester: "a", Platform: "p"},
		"NUL in field": {VariantKey: "v\x00w", Attester: "a", Platform: "p", Blob: []byte("x")},
	} {
		if _, err := s.PutDemand(r, DemandLimits{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCheckFindsABrokenDemandIndex(t *testing.T) {
	s := openTest(t, t.TempDir())
	r := demandRec("hello", "peerA", 1)
	mustPutDemand(t, s, r, DemandLimits{})
	if err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDemandByTime).Delete(demandTimeKey(r.Time, demandKey("hello", "peerA")))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "demand_by_time") {
		t.Fatalf("Check = %v, want the missing demand_by_time entry", err)
	}
}

// A catalog sync pages through a platform's demand in (time, id) order
// from a cursor, bounded in records and bytes; a record is known by the
// SHA-256 of its blob; replaced and deleted records leave every index.
func TestDemandPageByTimeAndID(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	plat := demandRec("x", "y", 0).Platform
	var want []DemandRecord
	for i := range 7 {
		r := demandRec(fmt.Sprintf("v%d", i), "peerA", i/2) // two records a minute
		mustPutDemand(t, s, r, DemandLimits{})
		want = append(want, r)
	}
	other := demandRec("elsewhere", "peerA", 1)
	other.Platform = "aarch64-unknown-linux-gnu-0000000000000000"
	mustPutDemand(t, s, other, DemandLimits{})
	var got []DemandRecord
	var since int64
	var after []byte
	for range 10 {
		page, err := s.DemandPage(plat, since, after, 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 3 {
			t.Fatalf("page of %d records, cap 3", len(page))
		}
		got = append(got, page...)
		last := page[len(page)-1]
		id := sha256.Sum256(last.Blob)
		since, after = last.Time, id[:]
	}
	if len(got) != len(want) {
		t.Fatalf("paged %d records, want %d", len(got), len(want))
	}
	for i := 1; i < len(got); i++ {
		a, b := sha256.Sum256(got[i-1].Blob), sha256.Sum256(got[i].Blob)
		if got[i-1].Time > got[i].Time || got[i-1].Time == got[i].Time && bytes.Compare(a[:], b[:]) >= 0 {
			t.Fatalf("records %d and %d out of (time, id) order", i-1, i)
		}
	}
	// A byte cap stops after the record that reaches it.
	if page, _ := s.DemandPage(plat, 0, nil, 100, 1); len(page) != 1 {
		t.Fatalf("byte-capped page of %d records, want 1", len(page))
	}
	// From a second on: only later records.
	if page, _ := s.DemandPage(plat, want[5].Time, nil, 100, 0); len(page) != 1 || page[0].VariantKey != "v6" {
		t.Fatalf("page after minute 2: %+v", page)
	}
	at, ok, err := s.DemandByID(sha256.Sum256(want[2].Blob))
	if err != nil || !ok || at != want[2].Time {
		t.Fatalf("DemandByID = %d, %v, %v", at, ok, err)
	}
	// Replaced, then deleted: unknown by its id, gone from the pages.
	newer := demandRec("v2", "peerA", 30)
	mustPutDemand(t, s, newer, DemandLimits{})
	if _, ok, _ := s.DemandByID(sha256.Sum256(want[2].Blob)); ok {
		t.Fatal("a replaced record is still known by its id")
	}
	if ok, err := s.DeleteDemand("v2", "peerA", want[2].Time); err != nil || ok {
		t.Fatalf("deleting with a stale time: %v, %v; want the newer record kept", ok, err)
	}
	if ok, err := s.DeleteDemand("v2", "peerA", newer.Time); err != nil || !ok {
		t.Fatalf("DeleteDemand = %v, %v", ok, err)
	}
	if page, _ := s.DemandPage(plat, 0, nil, 100, 0); len(page) != 6 {
		t.Fatalf("%d records after the deletion, want 6", len(page))
	}
	old, err := s.DemandOf("peerA", time.Unix(want[4].Time, 0))
	if err != nil || len(old) != 4 || old[0].VariantKey != "v0" || len(old[0].Blob) != 0 {
		t.Fatalf("DemandOf before minute 2: %+v, %v", old, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// A database written before the sync indexes gets them on open.
	if err := s.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDemandByPlatTime, bucketDemandIDs} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if err := s.Check(); err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
	if page, _ := s.DemandPage(plat, 0, nil, 100, 0); len(page) != 6 {
		t.Fatalf("%d records paged after the upgrade, want 6", len(page))
	}
}

// PutDemands stores a page in one transaction: a record refused by its
// bound or invalid does not stop the others.
func TestPutDemandsRefusesOneKeepsTheRest(t *testing.T) {
	s := openTest(t, t.TempDir())
	bad := demandRec("bad", "peerB", 1)
	bad.Platform = ""
	recs := []DemandRecord{demandRec("a", "peerA", 3), demandRec("b", "peerA", 1), bad, demandRec("c", "peerB", 2)}
	added, refused, err := s.PutDemands(recs, func(string) DemandLimits { return DemandLimits{PerAttester: 1} })
	if err != nil {
		t.Fatal(err)
	}
	if !added[0] || added[1] || !errors.Is(refused[1], ErrDemandFull) || !errors.Is(refused[2], ErrInvalid) || !added[3] || refused[3] != nil {
		t.Fatalf("added %v, refused %v", added, refused)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
