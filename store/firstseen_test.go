package store

import (
	"testing"
	"time"
)

func TestFirstSeen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 21, 8, 0, 0, 500, time.UTC)
	got, err := s.FirstSeen("k", t0)
	if err != nil || !got.Equal(t0.Truncate(time.Second)) {
		t.Fatalf("first call = %v, %v", got, err)
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.FirstSeen("k", t0.Add(time.Hour)); !got.Equal(t0.Truncate(time.Second)) {
		t.Errorf("after reopen = %v, want the first time", got)
	}
	if _, err := s.FirstSeen("", t0); err == nil {
		t.Error("empty key accepted")
	}
}
