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

// TestFirstSeenAll: keys recorded before keep their time, new ones get
// theirs, a repeated call writes nothing new, and an empty key or a
// length mismatch fails before anything is written.
func TestFirstSeenAll(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	if _, err := s.FirstSeen("old", t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(time.Hour)
	got, err := s.FirstSeenAll([]string{"old", "new1", "new2"}, []time.Time{later, later.Add(time.Second), later.Add(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{t0, later.Add(time.Second), later.Add(time.Second)}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("key %d: %v, want %v", i, got[i], want[i])
		}
	}
	again, err := s.FirstSeenAll([]string{"new2", "old"}, []time.Time{later.Add(time.Hour), later.Add(time.Hour)})
	if err != nil || !again[0].Equal(want[2]) || !again[1].Equal(t0) {
		t.Errorf("again = %v, %v", again, err)
	}
	if _, err := s.FirstSeenAll([]string{"a", ""}, []time.Time{t0, t0}); err == nil {
		t.Error("empty key accepted")
	}
	if _, err := s.FirstSeenAll([]string{"a"}, nil); err == nil {
		t.Error("length mismatch accepted")
	}
	if got, _ := s.FirstSeen("a", later.Add(2*time.Hour)); !got.Equal(later.Add(2 * time.Hour)) {
		t.Errorf("a was recorded by a failed call: %v", got)
	}
}
