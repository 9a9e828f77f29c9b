package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func att(attester, bk, content string, at int64, blob string) AttestationRecord {
	return AttestationRecord{BuildKey: bk, VariantKey: "v" + bk, CPV: "cat/pkg-1", Platform: "amd64",
		Attester: attester, Content: content, Blob: []byte(blob), Time: at, ReceivedAt: time.Unix(at, 0).UTC()}
}

func TestAttesterUsageFollowsPutsAndDeletes(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestations([]AttestationRecord{
		att("A", "bk1", "c1", 10, "aaaa"), att("A", "bk2", "c2", 11, "bbbbbb"), att("B", "bk1", "c1", 12, "cc"),
		att("A", "bk1", "c1", 10, "aaaa"), // a duplicate counts once
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		who  string
		want Usage
	}{{"A", Usage{2, 10}}, {"B", Usage{1, 2}}, {"nobody", Usage{}}} {
		if u, err := s.AttesterUsage(tt.who); err != nil || u != tt.want {
			t.Fatalf("usage of %s = %+v, %v; want %+v", tt.who, u, err, tt.want)
		}
	}
	n, err := s.DeleteAttestations([][32]byte{sum("aaaa"), sum("cc"), sum("never stored")})
	if err != nil || n != 2 {
		t.Fatalf("DeleteAttestations = %d, %v; want 2", n, err)
	}
	if u, _ := s.AttesterUsage("A"); u != (Usage{1, 6}) {
		t.Fatalf("A after delete: %+v", u)
	}
	if u, _ := s.AttesterUsage("B"); u != (Usage{}) {
		t.Fatalf("B after delete: %+v", u)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestAttesterRecordsMarksBacked(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestations([]AttestationRecord{
		att("A", "bk1", "c1", 10, "a1"), // B agrees
		att("A", "bk2", "c2", 11, "a2"), // B disagrees
		att("A", "bk3", "c3", 12, "a3"), // alone
		att("B", "bk1", "c1", 13, "b1"),
		att("B", "bk2", "cX", 14, "b2"),
	}); err != nil {
		t.Fatal(err)
	}
	infos, err := s.AttesterRecords("A")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, in := range infos {
		got[in.BuildKey] = in.Backed
		if in.Size != 2 {
			t.Fatalf("%s: size %d", in.BuildKey, in.Size)
		}
	}
	want := map[string]bool{"bk1": true, "bk2": false, "bk3": false}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("backed = %v, want %v", got, want)
	}
}

func TestPlatformPageWalksByTimeAndIDWithoutSkipping(t *testing.T) {
	s := openTest(t, t.TempDir())
	var recs []AttestationRecord
	// Seconds 1..6, two records each, plus another platform that never shows.
	for at := int64(1); at <= 6; at++ {
		for j := range 2 {
			recs = append(recs, att("A", fmt.Sprintf("bk%d-%d", at, j), "c", at, fmt.Sprintf("blob-%d-%d", at, j)))
		}
		o := att("A", "other"+strconv.FormatInt(at, 10), "c", at, "other-"+strconv.FormatInt(at, 10))
		o.Platform = "arm64"
		recs = append(recs, o)
	}
	if _, err := s.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	times := func(page []AttestationRecord) string {
		out := ""
		for _, r := range page {
			if r.Platform != "amd64" {
				t.Fatalf("page has platform %q", r.Platform)
			}
			out += strconv.FormatInt(r.Time, 10)
		}
		return out
	}
	for _, tt := range []struct {
		since      int64
		maxRecords int
		maxBytes   int
		want       string
	}{
		{0, 100, 1 << 20, "112233445566"},
		{0, 5, 1 << 20, "11223"}, // a page may end inside a second
		{2, 100, 1 << 20, "33445566"},
		{0, 100, 20, "112"}, // 8-byte blobs: the 3rd reaches 20 bytes and ends the page
		{6, 100, 1 << 20, ""},
	} {
		page, err := s.PlatformPage("amd64", tt.since, nil, tt.maxRecords, tt.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := times(page); got != tt.want {
			t.Errorf("PlatformPage(since %d, %d records, %d bytes) = %q, want %q", tt.since, tt.maxRecords, tt.maxBytes, got, tt.want)
		}
	}
	// Paging one record at a time from each page's last (time, id) visits
	// every record once, in order, even within one second.
	var walked []AttestationRecord
	var since int64
	var after []byte
	for range 20 {
		page, err := s.PlatformPage("amd64", since, after, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		walked = append(walked, page...)
		last := page[len(page)-1]
		since, after = last.Time, last.ID[:]
	}
	if got := times(walked); got != "112233445566" {
		t.Fatalf("record-by-record walk = %q", got)
	}
	seen := map[[32]byte]bool{}
	for _, r := range walked {
		if seen[r.ID] {
			t.Fatalf("record %x visited twice", r.ID)
		}
		seen[r.ID] = true
	}
}

func TestSetAttestationAddrOnlyFillsAnEmptyAddr(t *testing.T) {
	s := openTest(t, t.TempDir())
	r := att("A", "bk", "c", 5, "x")
	if _, err := s.PutAttestation(r); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		set  bool
	}{{"", false}, {"192.0.2.7", true}, {"198.51.100.1", false}} {
		set, err := s.SetAttestationAddr(sum("x"), tt.addr)
		if err != nil || set != tt.set {
			t.Fatalf("SetAttestationAddr(%q) = %v, %v; want %v", tt.addr, set, err, tt.set)
		}
	}
	got, _, _ := s.GetAttestation(sum("x"))
	if got.Addr != "192.0.2.7" {
		t.Fatalf("addr %q", got.Addr)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// A database written before usage and time paging existed is migrated on
// open, and the daemon backfills the times it could not know.
func TestOldDatabaseIsMigratedAndBackfilled(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := []AttestationRecord{att("A", "bk1", "c", 0, "7"), att("A", "bk2", "c", 0, "9"), att("B", "bk3", "c", 0, "x")}
	if _, err := s.PutAttestations(old); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		// Values as the old store wrote them: all JSON, blob in base64.
		for _, r := range old {
			v, err := json.Marshal(r.json())
			if err != nil {
				return err
			}
			id := sum(string(r.Blob))
			if err := tx.Bucket(bucketAtt).Put(id[:], v); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketAttByPlatTime, bucketAttUsage} {
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
		t.Fatalf("migrated store: %v", err)
	}
	if u, _ := s.AttesterUsage("A"); u != (Usage{2, 2}) {
		t.Fatalf("migrated usage %+v", u)
	}
	if infos, err := s.AttesterRecords("A"); err != nil || len(infos) != 2 || infos[0].Size != 1 {
		t.Fatalf("old-format records: %+v, %v", infos, err)
	}
	if got, _, err := s.GetAttestation(sum("7")); err != nil || string(got.Blob) != "7" || got.Attester != "A" {
		t.Fatalf("old-format record read as %+v, %v", got, err)
	}
	n, err := s.BackfillAttestationTimes(func(blob []byte) (int64, error) {
		if string(blob) == "x" {
			return 0, errors.New("undecodable")
		}
		return strconv.ParseInt(string(blob), 10, 64)
	})
	if err != nil || n != 2 {
		t.Fatalf("backfill = %d, %v", n, err)
	}
	page, err := s.PlatformPage("amd64", 0, nil, 10, 1<<20)
	if err != nil || len(page) != 2 || page[0].Time != 7 || page[1].Time != 9 {
		t.Fatalf("page after backfill: %+v, %v", page, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestCountForBuildKey(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestations([]AttestationRecord{
		att("A", "bk", "c1", 1, "a1"), att("A", "bk", "c2", 2, "a2"), att("B", "bk", "c1", 3, "b1"), att("A", "other", "c", 4, "a3"),
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		bk, who     string
		total, mine int
	}{{"bk", "A", 3, 2}, {"bk", "B", 3, 1}, {"bk", "C", 3, 0}, {"none", "A", 0, 0}, {"other", "", 1, 0}} {
		total, mine, err := s.CountForBuildKey(tt.bk, tt.who)
		if err != nil || total != tt.total || mine != tt.mine {
			t.Errorf("CountForBuildKey(%s, %s) = %d, %d, %v; want %d, %d", tt.bk, tt.who, total, mine, err, tt.total, tt.mine)
		}
	}
}

func TestDropOrphans(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestations([]AttestationRecord{att("A", "bk", "c", 1, "a"), att("B", "bk", "c", 2, "b"), att("A", "bk2", "c", 3, "x")}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"foreign-1", "mine-1"} {
		if _, err := s.PutEndorsement("bk", []byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutEndorsement("bk2", []byte("foreign-2")); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []EvidenceRecord{{Peer: "A", BuildKey: "bk", Blob: []byte("ev-a")}, {Peer: "B", BuildKey: "bk", Blob: []byte("ev-b")}} {
		if _, err := s.PutEvidence(ev); err != nil {
			t.Fatal(err)
		}
	}
	foreign := func(b []byte) bool { return strings.HasPrefix(string(b), "foreign") }
	if _, err := s.DeleteAttestations([][32]byte{sum("a")}); err != nil {
		t.Fatal(err)
	}
	if err := s.DropOrphans([]string{"bk"}, foreign); err != nil {
		t.Fatal(err)
	}
	if es, _ := s.EndorsementsFor("bk"); len(es) != 2 {
		t.Fatalf("endorsements dropped while B still attests: %d left", len(es))
	}
	if ev, _ := s.EvidenceFor("bk"); len(ev) != 1 || ev[0].Peer != "B" {
		t.Fatalf("evidence after A's last record on bk left: %+v, want B's only", ev)
	}
	if _, err := s.DeleteAttestation(sum("b")); err != nil {
		t.Fatal(err)
	}
	if err := s.DropOrphans([]string{"bk"}, foreign); err != nil {
		t.Fatal(err)
	}
	if es, _ := s.EndorsementsFor("bk"); len(es) != 1 || string(es[0]) != "mine-1" {
		t.Fatalf("after the last attestation: %q, want only the kept one", es)
	}
	if ev, _ := s.EvidenceFor("bk"); len(ev) != 0 {
		t.Fatalf("%d evidence records outlived every attestation", len(ev))
	}
	if es, _ := s.EndorsementsFor("bk2"); len(es) != 1 {
		t.Fatalf("another build key's endorsements were touched: %d left", len(es))
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestTotalUsageAndLargestAttesters(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestations([]AttestationRecord{
		att("A", "bk1", "c", 1, "aa"), att("B", "bk2", "c", 2, "bbbbbb"), att("B", "bk3", "c", 3, "bbbbbbb"), att("C", "bk4", "c", 4, "cccc"),
	}); err != nil {
		t.Fatal(err)
	}
	if u, err := s.TotalUsage(); err != nil || u != (Usage{4, 19}) {
		t.Fatalf("TotalUsage = %+v, %v", u, err)
	}
	if got, err := s.LargestAttesters(2); err != nil || fmt.Sprint(got) != "[B C]" {
		t.Fatalf("LargestAttesters(2) = %v, %v", got, err)
	}
	if _, err := s.DeleteAttestations([][32]byte{sum("bbbbbb")}); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.TotalUsage(); u != (Usage{3, 13}) {
		t.Fatalf("TotalUsage after delete = %+v", u)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestAttestationsByVariantUpTo(t *testing.T) {
	s := openTest(t, t.TempDir())
	var recs []AttestationRecord
	for i := range 10 {
		r := att("A", fmt.Sprintf("bk%d", i), "c", int64(i+1), fmt.Sprintf("%08d", i)) // 8-byte blobs
		r.VariantKey = "v"
		recs = append(recs, r)
	}
	if _, err := s.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ max, want int }{{1000, 10}, {20, 3}, {8, 1}} {
		got, err := s.AttestationsByVariantUpTo("v", tt.max)
		if err != nil || len(got) != tt.want {
			t.Errorf("AttestationsByVariantUpTo(v, %d) = %d records, %v; want %d", tt.max, len(got), err, tt.want)
		}
	}
}

func TestContentsByBuildKey(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestations([]AttestationRecord{att("A", "bk1", "c1", 1, "a"), att("B", "bk1", "c2", 2, "b"), att("C", "bk2", "c1", 3, "c")}); err != nil {
		t.Fatal(err)
	}
	n, contents, err := s.ContentsByBuildKey()
	if err != nil || n != 3 || len(contents) != 2 || len(contents["bk1"]) != 2 || !contents["bk2"]["c1"] {
		t.Fatalf("ContentsByBuildKey = %d, %v, %v", n, contents, err)
	}
}
