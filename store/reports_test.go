package store

import (
	"errors"
	"testing"
)

func TestReports(t *testing.T) {
	s := openTest(t, t.TempDir())
	if n, err := s.CountReports(); err != nil || n != 0 {
		t.Fatalf("empty store: %d reports, %v", n, err)
	}
	if rs, err := s.Reports("bk1"); err != nil || len(rs) != 0 {
		t.Fatalf("empty store: %d reports, %v", len(rs), err)
	}
	added, err := s.PutReport("bk1", "c2", []byte(`{"a":1}`), 2)
	if err != nil || !added {
		t.Fatalf("first report: %v %v", added, err)
	}
	// The first comparison stands.
	if added, err := s.PutReport("bk1", "c2", []byte(`{"a":2}`), 2); err != nil || added {
		t.Fatalf("second report of the same pair: %v %v", added, err)
	}
	if _, err := s.PutReport("bk10", "c1", []byte(`{"b":1}`), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutReport("bk1", "c3", []byte(`{"c":1}`), 2); !errors.Is(err, ErrReportsFull) {
		t.Fatalf("third report past a bound of 2: %v", err)
	}
	// bk1's reports only, not bk10's (a prefix of the key).
	rs, err := s.Reports("bk1")
	if err != nil || len(rs) != 1 || string(rs[0]) != `{"a":1}` {
		t.Fatalf("reports of bk1: %q %v", rs, err)
	}
	if ok, err := s.HasReport("bk10", "c1"); err != nil || !ok {
		t.Fatalf("HasReport: %v %v", ok, err)
	}
	if ok, _ := s.HasReport("bk1", "c3"); ok {
		t.Fatal("a refused report is kept")
	}
	if n, _ := s.CountReports(); n != 2 {
		t.Fatalf("%d reports, want 2", n)
	}
	if _, err := s.PutReport("", "c", []byte("x"), 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty build key: %v", err)
	}
}
