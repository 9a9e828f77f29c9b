package store

import (
	"bytes"
	"testing"
)

func TestEndorsements(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	added, err := s.PutEndorsement("bk1", []byte("e1"))
	if err != nil || !added {
		t.Fatalf("first put: added=%v err=%v", added, err)
	}
	if added, _ := s.PutEndorsement("bk1", []byte("e1")); added {
		t.Error("the same endorsement was stored twice")
	}
	if _, err := s.PutEndorsement("bk1", []byte("e2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEndorsement("bk10", []byte("other key sharing a prefix")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEndorsement("", []byte("x")); err == nil {
		t.Error("empty build key accepted")
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.EndorsementsFor("bk1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !(bytes.Equal(got[0], []byte("e1")) || bytes.Equal(got[1], []byte("e1"))) {
		t.Errorf("EndorsementsFor(bk1) after reopen = %q", got)
	}
	if got, _ := s.EndorsementsFor("bk2"); len(got) != 0 {
		t.Errorf("EndorsementsFor(bk2) = %q", got)
	}
}
