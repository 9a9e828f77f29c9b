package store

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const helperEnv = "GO_WANT_STORE_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		crashWriter(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func local(path, blob, buildKey string) LocalPackage {
	return LocalPackage{
		Path: path, Size: int64(len(blob)), MTimeNS: 1700000000123456789, Inode: 42,
		FileSHA256: sum(blob), Format: "gpkg", CPV: "app-misc/hello-1.0", BuildID: 2,
		BuildKey: buildKey, VariantKey: "variant-" + buildKey,
		ImageDigest: sum("image " + blob), MetadataDigest: sum("meta " + blob), PieceRoot: sum("root " + blob),
		Platform: "x86_64-pc-linux-gnu", IndexedAt: time.Unix(1700000000, 0).UTC(),
		Extra: json.RawMessage(`{"use":"bar"}`),
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	p := local("/pkgdir/app-misc/hello/hello-1.0-2.gpkg.tar", "hello", "bk1")
	if err := s.PutLocal(p); err != nil {
		t.Fatal(err)
	}
	leaves := [][32]byte{sum("a"), sum("b"), sum("c")}
	if err := s.PutLeaves(p.FileSHA256, leaves); err != nil {
		t.Fatal(err)
	}
	att := AttestationRecord{BuildKey: "bk1", VariantKey: "vk1", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "peerA", Content: "c1", Blob: []byte("signed-1"), ReceivedAt: time.Unix(5, 0).UTC(), From: "peerB"}
	if _, err := s.PutAttestation(att); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEvidence(EvidenceRecord{Peer: "peerA", BuildKey: "bk1", Blob: []byte("two sigs"), At: time.Unix(6, 0).UTC()}); err != nil {
		t.Fatal(err)
	}
	if err := s.IncCounter("rejected", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.PutLocal(p); !errors.Is(err, ErrClosed) {
		t.Fatalf("PutLocal after Close: %v, want ErrClosed", err)
	}

	s = openTest(t, dir)
	got, ok, err := s.GetLocal(p.Path)
	if err != nil || !ok {
		t.Fatalf("GetLocal after reopen: %v %v", ok, err)
	}
	if !jsonEqual(t, got, p) {
		t.Errorf("GetLocal = %+v, want %+v", got, p)
	}
	gl, ok, err := s.GetLeaves(p.FileSHA256)
	if err != nil || !ok || len(gl) != 3 || gl[2] != leaves[2] {
		t.Errorf("GetLeaves = %v %v %v", len(gl), ok, err)
	}
	atts, err := s.AttestationsFor("bk1")
	if err != nil || len(atts) != 1 || string(atts[0].Blob) != "signed-1" || atts[0].ID != sum("signed-1") || atts[0].From != "peerB" {
		t.Errorf("AttestationsFor = %+v %v", atts, err)
	}
	ev, err := s.EvidenceFor("bk1")
	if err != nil || len(ev) != 1 || ev[0].Peer != "peerA" {
		t.Errorf("EvidenceFor = %+v %v", ev, err)
	}
	c, err := s.Counters()
	if err != nil || c["rejected"] != 3 {
		t.Errorf("Counters = %v %v", c, err)
	}
	counts, err := s.Counts()
	if err != nil || counts != (Counts{Local: 1, Leaves: 1, Attestations: 1, Evidence: 1}) {
		t.Errorf("Counts = %+v %v", counts, err)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v %v, want 0700", fi.Mode().Perm(), err)
	}
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestSecondOpenFailsClearly(t *testing.T) {
	dir := t.TempDir()
	_ = openTest(t, dir)
	s2, err := Open(dir, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of the same state dir succeeded")
	}
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder (%s)", err, want)
	}
}

// TestPutLocalsBatch: a batch is recorded as the same records put one by
// one, with their leaves, and the light listings (stats, paths, count)
// agree with ListLocal.
func TestPutLocalsBatch(t *testing.T) {
	s := openTest(t, t.TempDir())
	a := local("/p/a.tbz2", "a bytes", "bk1")
	a.Size, a.MTimeNS, a.Inode = 10, 20, 30
	a.Leaves = [][32]byte{sum("leaf a1"), sum("leaf a2")}
	b := local("/p/b.tbz2", "b bytes", "bk2")
	b.Size, b.MTimeNS, b.Inode = 11, 21, 31
	a2 := a // a later record of the same path in the same batch wins
	a2.MTimeNS = 22
	if err := s.PutLocals([]LocalPackage{a, b, a2}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutLocals([]LocalPackage{local("/p/c.tbz2", "c", "bk3"), {Path: ""}}); err == nil {
		t.Error("a batch with an empty path was accepted")
	}
	list, err := s.ListLocal()
	if err != nil || len(list) != 2 || list[0].MTimeNS != 22 || list[0].Leaves != nil {
		t.Fatalf("ListLocal = %+v, %v", list, err)
	}
	leaves, ok, err := s.GetLeaves(sum("a bytes"))
	if err != nil || !ok || len(leaves) != 2 || leaves[1] != sum("leaf a2") {
		t.Errorf("leaves stored with the batch: %v %v %v", leaves, ok, err)
	}
	stats, err := s.LocalStats()
	if err != nil || len(stats) != 2 || stats["/p/a.tbz2"] != (LocalStat{10, 22, 30}) || stats["/p/b.tbz2"] != (LocalStat{11, 21, 31}) {
		t.Errorf("LocalStats = %+v, %v", stats, err)
	}
	paths, err := s.LocalPaths()
	if err != nil || strings.Join(paths, ",") != "/p/a.tbz2,/p/b.tbz2" {
		t.Errorf("LocalPaths = %v, %v", paths, err)
	}
	if n, err := s.CountLocal(); err != nil || n != 2 {
		t.Errorf("CountLocal = %d, %v", n, err)
	}
}

func TestLocalIndexes(t *testing.T) {
	s := openTest(t, t.TempDir())
	a := local("/p/a.tbz2", "same bytes", "bk1")
	b := local("/p/All/a.tbz2", "same bytes", "bk1")
	c := local("/p/c.tbz2", "other bytes", "bk2")
	for _, p := range []LocalPackage{a, b, c} {
		if err := s.PutLocal(p); err != nil {
			t.Fatal(err)
		}
	}
	paths := func(ps []LocalPackage, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Path)
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		name string
		got  func() ([]LocalPackage, error)
		want string
	}{
		{"by sha, shared", func() ([]LocalPackage, error) { return s.LocalBySHA(sum("same bytes")) }, "/p/All/a.tbz2,/p/a.tbz2"},
		{"by sha, single", func() ([]LocalPackage, error) { return s.LocalBySHA(sum("other bytes")) }, "/p/c.tbz2"},
		{"by sha, none", func() ([]LocalPackage, error) { return s.LocalBySHA(sum("nothing")) }, ""},
		{"by build key", func() ([]LocalPackage, error) { return s.LocalByBuildKey("bk1") }, "/p/All/a.tbz2,/p/a.tbz2"},
		{"by build key prefix is not a match", func() ([]LocalPackage, error) { return s.LocalByBuildKey("bk") }, ""},
		{"by empty build key", func() ([]LocalPackage, error) { return s.LocalByBuildKey("") }, ""},
		{"list", s.ListLocal, "/p/All/a.tbz2,/p/a.tbz2,/p/c.tbz2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := paths(tt.got()); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}

	// Replacing a path moves its index entries.
	a2 := local("/p/a.tbz2", "rebuilt", "bk3")
	if err := s.PutLocal(a2); err != nil {
		t.Fatal(err)
	}
	if got := paths(s.LocalBySHA(sum("same bytes"))); got != "/p/All/a.tbz2" {
		t.Errorf("after replace, old sha lists %q", got)
	}
	if got := paths(s.LocalByBuildKey("bk3")); got != "/p/a.tbz2" {
		t.Errorf("after replace, new build key lists %q", got)
	}
	old, found, err := s.DeleteLocal("/p/a.tbz2")
	if err != nil || !found || old.FileSHA256 != sum("rebuilt") {
		t.Fatalf("DeleteLocal = %v %v %v", old.Path, found, err)
	}
	if _, found, _ := s.DeleteLocal("/p/a.tbz2"); found {
		t.Error("second DeleteLocal found the record again")
	}
	if got := paths(s.LocalByBuildKey("bk3")); got != "" {
		t.Errorf("after delete, build key lists %q", got)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestInvalidRecords(t *testing.T) {
	s := openTest(t, t.TempDir())
	bad := local("/p/x.tbz2", "x", "bk\x00evil")
	tests := []struct {
		name string
		err  error
	}{
		{"empty path", s.PutLocal(LocalPackage{})},
		{"NUL in build key", s.PutLocal(bad)},
		{"bad extra JSON", s.PutLocal(LocalPackage{Path: "/p/y", Extra: json.RawMessage("{")})},
		{"empty blob", func() error { _, err := s.PutAttestation(AttestationRecord{BuildKey: "k"}); return err }()},
		{"id mismatch", func() error {
			_, err := s.PutAttestation(AttestationRecord{ID: sum("other"), Blob: []byte("b")})
			return err
		}()},
		{"NUL in cpv", func() error {
			_, err := s.PutAttestation(AttestationRecord{CPV: "a\x00b", Blob: []byte("b")})
			return err
		}()},
		{"evidence without peer", func() error { _, err := s.PutEvidence(EvidenceRecord{Blob: []byte("e")}); return err }()},
		{"empty counter name", s.IncCounter("", 1)},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tt.name, tt.err)
		}
	}
	if n, _ := s.Counts(); n.Local != 0 || n.Attestations != 0 || n.Evidence != 0 {
		t.Errorf("invalid records were stored: %+v", n)
	}
}

func TestAttestationDedupAndIndexes(t *testing.T) {
	s := openTest(t, t.TempDir())
	recs := []AttestationRecord{
		{BuildKey: "bk1", VariantKey: "vk1", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "A", Content: "c1", Blob: []byte("1")},
		{BuildKey: "bk1", VariantKey: "vk1", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "B", Content: "c1", Blob: []byte("2")},
		{BuildKey: "bk2", VariantKey: "vk1", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "A", Content: "c2", Blob: []byte("3")},
		{BuildKey: "bk3", VariantKey: "vk3", CPV: "dev-libs/libfoo-2.1", Platform: "arm64", Attester: "C", Content: "c3", Blob: []byte("4")},
	}
	for _, r := range recs {
		added, err := s.PutAttestation(r)
		if err != nil || !added {
			t.Fatalf("PutAttestation(%s) = %v %v", r.Blob, added, err)
		}
	}
	// The same blob relayed by someone else is a duplicate.
	dup := recs[0]
	dup.From = "relay"
	if added, err := s.PutAttestation(dup); err != nil || added {
		t.Errorf("duplicate PutAttestation = %v %v, want not added", added, err)
	}
	blobs := func(rs []AttestationRecord, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, string(r.Blob))
		}
		// Results come in id order; sort for a stable expectation.
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if out[j] < out[i] {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		name string
		got  func() ([]AttestationRecord, error)
		want string
	}{
		{"build key", func() ([]AttestationRecord, error) { return s.AttestationsFor("bk1") }, "1,2"},
		{"variant key", func() ([]AttestationRecord, error) { return s.AttestationsByVariant("vk1") }, "1,2,3"},
		{"cpv", func() ([]AttestationRecord, error) { return s.AttestationsByCPV("app-misc/hello-1.0") }, "1,2,3"},
		{"catalog amd64", func() ([]AttestationRecord, error) { return s.Catalog("amd64") }, "1,2,3"},
		{"catalog arm64", func() ([]AttestationRecord, error) { return s.Catalog("arm64") }, "4"},
		{"catalog unknown", func() ([]AttestationRecord, error) { return s.Catalog("amd") }, ""},
		{"attester", func() ([]AttestationRecord, error) { return s.AttestationsBy("A") }, "1,3"},
		{"all", s.ListAttestations, "1,2,3,4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := blobs(tt.got()); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if has, _ := s.HasAttestation(sum("3")); !has {
		t.Error("HasAttestation(3) = false")
	}
	if r, ok, err := s.GetAttestation(sum("1")); err != nil || !ok || r.From != "" || r.Attester != "A" {
		t.Errorf("GetAttestation kept the duplicate's fields: %+v %v %v", r, ok, err)
	}
	if found, err := s.DeleteAttestation(sum("1")); err != nil || !found {
		t.Fatalf("DeleteAttestation = %v %v", found, err)
	}
	if got := blobs(s.AttestationsFor("bk1")); got != "2" {
		t.Errorf("after delete, build key lists %q", got)
	}
	if got := blobs(s.AttestationsBy("A")); got != "3" {
		t.Errorf("after delete, attester lists %q", got)
	}
	if found, _ := s.DeleteAttestation(sum("1")); found {
		t.Error("second delete found it")
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestPutAttestationsBatch(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestation(AttestationRecord{BuildKey: "bk", Blob: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	batch := []AttestationRecord{
		{BuildKey: "bk", Blob: []byte("new1")},
		{BuildKey: "bk", Blob: []byte("old")},
		{BuildKey: "bk", Blob: []byte("new2")},
		{BuildKey: "bk", Blob: []byte("new1")}, // duplicate inside the batch
	}
	added, err := s.PutAttestations(batch)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(added) != "[true false true false]" {
		t.Errorf("added = %v", added)
	}
	if batch[0].ID != ([32]byte{}) {
		t.Error("PutAttestations modified the caller's slice")
	}
	if got := must(s.AttestationsFor("bk")); len(got) != 3 {
		t.Errorf("%d attestations stored, want 3", len(got))
	}
	// One invalid record rejects the batch before anything is written.
	_, err = s.PutAttestations([]AttestationRecord{{BuildKey: "bk2", Blob: []byte("fine")}, {BuildKey: "bk2"}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("batch with an invalid record: %v", err)
	}
	if got := must(s.AttestationsFor("bk2")); len(got) != 0 {
		t.Errorf("invalid batch stored %d records", len(got))
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestEvidence(t *testing.T) {
	s := openTest(t, t.TempDir())
	for i, r := range []EvidenceRecord{
		{Peer: "A", BuildKey: "bk1", Blob: []byte("e1")},
		{Peer: "A", BuildKey: "bk2", Blob: []byte("e2")},
		{Peer: "B", BuildKey: "bk1", Blob: []byte("e3")},
		{Peer: "B", BuildKey: "bk1", Blob: []byte("e3")},
	} {
		added, err := s.PutEvidence(r)
		if err != nil || added != (i < 3) {
			t.Fatalf("PutEvidence #%d = %v %v", i, added, err)
		}
	}
	all, err := s.Evidence()
	if err != nil || len(all) != 3 {
		t.Fatalf("Evidence = %d %v", len(all), err)
	}
	for _, tt := range []struct {
		name string
		got  []EvidenceRecord
		want int
	}{
		{"for bk1", must(s.EvidenceFor("bk1")), 2},
		{"for bk2", must(s.EvidenceFor("bk2")), 1},
		{"against A", must(s.EvidenceAgainst("A")), 2},
		{"against C", must(s.EvidenceAgainst("C")), 0},
	} {
		if len(tt.got) != tt.want {
			t.Errorf("%s: %d records, want %d", tt.name, len(tt.got), tt.want)
		}
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestCounters(t *testing.T) {
	s := openTest(t, t.TempDir())
	for _, d := range []int64{5, -2, 10} {
		if err := s.IncCounter("bytes_saved", d); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.IncCounter("rejected_attestations", 1)
	c, err := s.Counters()
	if err != nil || c["bytes_saved"] != 13 || c["rejected_attestations"] != 1 || len(c) != 2 {
		t.Errorf("Counters = %v %v", c, err)
	}
}

// TestCheckDetectsCorruption proves Check can fail: it breaks each kind of
// index by hand and expects ErrCorrupt.
func TestCheckDetectsCorruption(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(tx *bolt.Tx) error
	}{
		{"dangling local index", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLocalByKey).Put(indexKey("bk1", []byte("/p/gone")), nil)
		}},
		{"missing local index", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLocalBySHA).Delete(indexKey(hexSHA(sum("hello")), []byte("/p/a")))
		}},
		{"wrong field in attestation index", func(tx *bolt.Tx) error {
			id := sum("att")
			if err := tx.Bucket(bucketAttByPlat).Delete(indexKey("amd64", id[:])); err != nil {
				return err
			}
			return tx.Bucket(bucketAttByPlat).Put(indexKey("arm64", id[:]), nil)
		}},
		{"attestation blob does not hash to id", func(tx *bolt.Tx) error {
			id := sum("att")
			v, _ := json.Marshal(attJSON{Blob: []byte("tampered")})
			return tx.Bucket(bucketAtt).Put(id[:], v)
		}},
		{"evidence index to nowhere", func(tx *bolt.Tx) error {
			id := sum("nothing")
			return tx.Bucket(bucketEvByPeer).Put(indexKey("X", id[:]), nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, t.TempDir())
			if err := s.PutLocal(local("/p/a", "hello", "bk1")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutAttestation(AttestationRecord{BuildKey: "bk1", Platform: "amd64", Blob: []byte("att")}); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err != nil {
				t.Fatalf("healthy store: %v", err)
			}
			if err := s.db.Update(tt.break_); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check = %v, want ErrCorrupt", err)
			}
		})
	}
}

func hexSHA(b [32]byte) string { return fmt.Sprintf("%x", b) }

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s2, err := Open(dir, Options{}); !errors.Is(err, ErrSchema) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open newer schema: %v, want ErrSchema", err)
	}
}

// crashWriter runs in a child process: it writes every kind of record in a
// loop, reporting progress, until the parent kills it with SIGKILL.
func crashWriter(dir string) {
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		path := fmt.Sprintf("/pkgdir/cat/pkg-%d.gpkg.tar", i%50)
		blob := fmt.Sprintf("file %d", i)
		if i%7 == 3 {
			_, _, err = s.DeleteLocal(path)
		} else {
			err = s.PutLocal(local(path, blob, fmt.Sprintf("bk%d", i%13)))
		}
		if err == nil {
			_, err = s.PutAttestation(AttestationRecord{BuildKey: fmt.Sprintf("bk%d", i%13), VariantKey: "vk", CPV: "cat/pkg-1", Platform: "amd64", Attester: fmt.Sprintf("peer%d", i%5), Blob: []byte(blob)})
		}
		if err == nil && i%10 == 0 {
			_, err = s.DeleteAttestation(sum(fmt.Sprintf("file %d", i-5)))
		}
		if err == nil {
			_, err = s.PutEvidence(EvidenceRecord{Peer: "peer1", BuildKey: "bk1", Blob: []byte(blob)})
		}
		if err == nil {
			err = s.IncCounter("iterations", 1)
		}
		if err == nil && i%3 == 0 {
			err = commitBlob(s.Cache(), blob)
		}
		if err == nil && i%9 == 0 {
			_, err = s.Cache().GC(64, nil)
		}
		if err != nil {
			fmt.Println("write:", err)
			os.Exit(3)
		}
		fmt.Fprintf(w, "%d\n", i)
		w.Flush()
	}
}

func commitBlob(c *Cache, blob string) error {
	f, err := c.CreateTemp()
	if err != nil {
		return err
	}
	if _, err := f.WriteString(blob); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = c.Commit(f.Name(), sum(blob), CacheMeta{CPV: "cat/pkg-1"})
	return err
}

// TestCrashConsistency kills a writer process with SIGKILL at several
// points and proves that every time the store reopens with all indexes
// consistent with their primary records and the cache reconciled.
func TestCrashConsistency(t *testing.T) {
	dir := t.TempDir()
	for round, stopAfter := range []int{20, 150, 400} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		seen := -1
		deadline := time.Now().Add(60 * time.Second)
		for sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			if err != nil {
				t.Fatalf("helper: %s", sc.Text())
			}
			seen = n
			if n >= stopAfter || time.Now().After(deadline) {
				break
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if seen < stopAfter {
			t.Fatalf("round %d: helper reached only iteration %d", round, seen)
		}

		s, err := Open(dir, Options{LockTimeout: time.Second})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		if err := s.Check(); err != nil {
			t.Errorf("round %d: %v", round, err)
		}
		c, err := s.Counters()
		if err != nil || c["iterations"] < int64(stopAfter) {
			t.Errorf("round %d: iterations counter %d (%v), want ≥ %d", round, c["iterations"], err, stopAfter)
		}
		entries, err := s.Cache().List()
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, e := range entries {
			fi, err := os.Stat(s.Cache().Path(e.SHA256))
			if err != nil || fi.Size() != e.Size {
				t.Errorf("round %d: cache entry %x: file %v %v", round, e.SHA256, fi, err)
			}
			total += e.Size
		}
		if total != s.Cache().Usage() {
			t.Errorf("round %d: usage %d, entries sum %d", round, s.Cache().Usage(), total)
		}
		files := cacheFiles(t, s.Cache().Dir())
		if files != len(entries) {
			t.Errorf("round %d: %d files in cache dir, %d entries", round, files, len(entries))
		}
		s.Close()
	}
}

func cacheFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
