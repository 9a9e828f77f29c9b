package store

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestVotesChanged: every committed write of what a verdict reads moves
// the generation and marks its build key, and only its build key; reads
// and duplicates move nothing; evidence without a build key marks every
// build key; local packages and cache entries move LocalGeneration only.
func TestVotesChanged(t *testing.T) {
	s := openTest(t, t.TempDir())
	rec := func(bk, blob string) AttestationRecord {
		return AttestationRecord{BuildKey: bk, VariantKey: "vk", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "A", Content: "c", Blob: []byte(blob)}
	}
	type snap struct{ gen, bk1, bk2 uint64 }
	now := func() snap {
		return snap{s.VotesGeneration(), s.VotesChanged("bk1"), s.VotesChanged("bk2")}
	}
	before := now()
	if before.bk1 > before.gen || before.bk2 > before.gen {
		t.Fatalf("fresh store: %+v", before)
	}
	versions := func() []uint64 {
		t.Helper()
		v, err := s.VoteVersions([]string{"bk1", "bk2"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	step := func(name string, write func() error, bk1, bk2 bool) {
		t.Helper()
		was, local, wasV := now(), s.LocalGeneration(), versions()
		if err := write(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, gotV := now(), versions()
		if gotV[0] < wasV[0] || gotV[1] < wasV[1] || (gotV[0] > wasV[0]) != bk1 || (gotV[1] > wasV[1]) != bk2 {
			t.Errorf("%s: vote versions %v → %v, want bk1 moved %v, bk2 moved %v", name, wasV, gotV, bk1, bk2)
		}
		if moved := got.gen > was.gen; moved != (bk1 || bk2) {
			t.Errorf("%s: generation %d → %d", name, was.gen, got.gen)
		}
		if moved := got.bk1 > was.bk1; moved != bk1 {
			t.Errorf("%s: bk1 changed %d → %d, want moved %v", name, was.bk1, got.bk1, bk1)
		}
		if moved := got.bk2 > was.bk2; moved != bk2 {
			t.Errorf("%s: bk2 changed %d → %d, want moved %v", name, was.bk2, got.bk2, bk2)
		}
		if got.bk1 > got.gen || got.bk2 > got.gen {
			t.Errorf("%s: a build key changed after the generation: %+v", name, got)
		}
		if s.LocalGeneration() != local {
			t.Errorf("%s: local generation moved", name)
		}
	}
	r1 := rec("bk1", "one")
	step("put bk1", func() error { _, err := s.PutAttestation(r1); return err }, true, false)
	step("put bk1 again", func() error { _, err := s.PutAttestation(r1); return err }, false, false)
	step("read", func() error { _, err := s.AttestationsFor("bk1"); return err }, false, false)
	step("put bk2", func() error { _, err := s.PutAttestations([]AttestationRecord{rec("bk2", "two")}); return err }, false, true)
	step("address of bk1", func() error { _, err := s.SetAttestationAddr(sum("one"), "192.0.2.1"); return err }, true, false)
	step("endorse bk2", func() error { _, err := s.PutEndorsement("bk2", []byte("e")); return err }, false, true)
	step("evidence on bk1", func() error {
		_, err := s.PutEvidence(EvidenceRecord{Peer: "A", BuildKey: "bk1", Blob: []byte("ev")})
		return err
	}, true, false)
	step("evidence on no build key", func() error { _, err := s.PutEvidence(EvidenceRecord{Peer: "A", Blob: []byte("ev2")}); return err }, true, true)
	step("delete bk1", func() error { _, err := s.DeleteAttestation(sum("one")); return err }, true, false)
	step("delete bk2", func() error { _, err := s.DeleteAttestations([][32]byte{sum("two")}); return err }, false, true)
	step("orphans of bk1", func() error { return s.DropOrphans([]string{"bk1"}, func([]byte) bool { return true }) }, true, false)
	step("counter", func() error { return s.IncCounter("x", 1) }, false, false)
	step("first seen", func() error { _, err := s.FirstSeen("k", time.Now()); return err }, false, false)

	for _, w := range []struct {
		name  string
		write func() error
	}{
		{"put local", func() error { return s.PutLocal(local("/pkgdir/a.gpkg.tar", "blob", "bk1")) }},
		{"cache a blob", func() error { return commitBlob(s.Cache(), "cached") }},
		{"remove the blob", func() error { _, err := s.Cache().Remove(sum("cached")); return err }},
		{"delete local", func() error { _, _, err := s.DeleteLocal("/pkgdir/a.gpkg.tar"); return err }},
	} {
		was, votes := s.LocalGeneration(), s.VotesGeneration()
		if err := w.write(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got := s.LocalGeneration(); got <= was {
			t.Errorf("%s: local generation %d → %d", w.name, was, got)
		}
		if got := s.VotesGeneration(); got != votes {
			t.Errorf("%s: votes generation moved %d → %d", w.name, votes, got)
		}
	}
}

// TestChangesWhileWriting: while a write transaction that changes votes
// runs — and so in the moment bbolt has made its records visible and the
// log has not yet moved — every read of the generation is a new one and
// the build key written reads as changed, so a result derived then is
// never taken for current afterwards; other build keys stay as they were.
// Once the write is over the generation is stable again and the key's
// change is later than every generation read before.
func TestChangesWhileWriting(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.PutAttestation(AttestationRecord{BuildKey: "other", Platform: "amd64", Attester: "A", Blob: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	before, other := s.VotesGeneration(), s.VotesChanged("other")
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.update(func(tx *bolt.Tx) error {
			if err := s.votesChanged(tx, "bk"); err != nil {
				return err
			}
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	var seen []uint64
	for range 3 {
		seen = append(seen, s.VotesGeneration())
	}
	if seen[0] <= before || seen[1] <= seen[0] || seen[2] <= seen[1] {
		t.Errorf("generations read during the write %v (before %d): want each new", seen, before)
	}
	if got := s.VotesChanged("bk"); got != math.MaxUint64 {
		t.Errorf("the key being written changed at %d, want now (MaxUint64)", got)
	}
	if got := s.VotesChanged("other"); got != other {
		t.Errorf("another key changed at %d during the write, was %d", got, other)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after := s.VotesGeneration()
	if again := s.VotesGeneration(); again != after {
		t.Errorf("generation %d then %d with no write", after, again)
	}
	if got := s.VotesChanged("bk"); got <= seen[2] || got > after {
		t.Errorf("bk changed at %d: want after %d (read during the write) and at most %d", got, seen[2], after)
	}

	// A rolled-back write ends too: the log reads stable afterwards.
	err := s.update(func(tx *bolt.Tx) error {
		if err := s.votesChanged(tx, ""); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("the failing write committed")
	}
	g := s.VotesGeneration()
	if s.VotesGeneration() != g || s.VotesChanged("other") > g || s.VotesChanged("bk") > g {
		t.Errorf("after a rollback: generation %d, other %d, bk %d", g, s.VotesChanged("other"), s.VotesChanged("bk"))
	}
}

// TestChangeLogForgets: past maxChangeKeys the log forgets its keys, and
// a forgotten key counts as changed when it was forgotten: never earlier
// than it really changed.
func TestChangeLogForgets(t *testing.T) {
	c := newChangeLog()
	c.note([]string{"a"})
	at := c.changed("a")
	for i := range maxChangeKeys + 1 {
		c.note([]string{strconv.Itoa(i)})
	}
	if len(c.byKey) > maxChangeKeys {
		t.Errorf("%d keys kept", len(c.byKey))
	}
	if c.changed("a") <= at || c.changed("a") > c.generation() {
		t.Errorf("forgotten key a changed at %d (noted at %d, generation %d)", c.changed("a"), at, c.generation())
	}
}

// TestBuildKeyVoters: each build key of a platform with its distinct
// attesters, read from the indexes; other platforms' records are left out.
func TestBuildKeyVoters(t *testing.T) {
	s := openTest(t, t.TempDir())
	recs := []AttestationRecord{
		{BuildKey: "bk1", Platform: "amd64", Attester: "A", Blob: []byte("1")},
		{BuildKey: "bk1", Platform: "amd64", Attester: "B", Blob: []byte("2")},
		{BuildKey: "bk1", Platform: "amd64", Attester: "A", Blob: []byte("3")},
		{BuildKey: "bk2", Platform: "amd64", Attester: "C", Blob: []byte("4")},
		{BuildKey: "bk3", Platform: "arm64", Attester: "A", Blob: []byte("5")},
	}
	if _, err := s.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		platform string
		want     map[string][]string
	}{
		{"amd64", map[string][]string{"bk1": {"A", "B"}, "bk2": {"C"}}},
		{"arm64", map[string][]string{"bk3": {"A"}}},
		{"", map[string][]string{"bk1": {"A", "B"}, "bk2": {"C"}, "bk3": {"A"}}},
		{"riscv", map[string][]string{}},
	} {
		got, err := s.BuildKeyVoters(tt.platform)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("BuildKeyVoters(%q) = %v, %v; want %v", tt.platform, got, err, tt.want)
		}
	}
}

// TestVoteVersionsAndDerivedPersist: vote versions and derived blobs are
// what they were after a reopen, and PutDerived drops what it is told to.
func TestVoteVersionsAndDerivedPersist(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutAttestation(AttestationRecord{BuildKey: "bk1", Platform: "amd64", Attester: "A", Blob: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEvidence(EvidenceRecord{Peer: "A", Blob: []byte("e")}); err != nil {
		t.Fatal(err)
	}
	before, err := s.VoteVersions([]string{"bk1", "bk2", ""})
	if err != nil || before[0] != 2 || before[1] != 1 || before[2] != 1 {
		t.Fatalf("versions %v, %v; want bk1 2 (its write and the evidence on any), bk2 1, any 1", before, err)
	}
	if err := s.PutDerived(map[string][]byte{"x": []byte("one"), "y": []byte("two")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDerived(map[string][]byte{"z": []byte("three")}, []string{"y"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDerived(map[string][]byte{"": nil}, nil); err == nil {
		t.Error("a derived blob without a key was kept")
	}
	s.Close()
	s = openTest(t, dir)
	after, err := s.VoteVersions([]string{"bk1", "bk2", ""})
	if err != nil || !reflect.DeepEqual(after, before) {
		t.Errorf("after reopen: versions %v, %v; want %v", after, err, before)
	}
	if keys, err := s.DerivedKeys(""); err != nil || !reflect.DeepEqual(keys, []string{"x", "z"}) {
		t.Errorf("derived keys %q, %v", keys, err)
	}
	if keys, err := s.DerivedKeys("z"); err != nil || !reflect.DeepEqual(keys, []string{"z"}) {
		t.Errorf("derived keys under z: %q, %v", keys, err)
	}
	got, err := s.Derived([]string{"x", "y", "z", ""})
	if err != nil || string(got[0]) != "one" || got[1] != nil || string(got[2]) != "three" || got[3] != nil {
		t.Errorf("after reopen: derived %q, %v", got, err)
	}
}
