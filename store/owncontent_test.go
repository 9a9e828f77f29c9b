package store

import "testing"

func TestClaimOwnContent(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimOwnContent("bk", "c1"); err != nil || got != "c1" {
		t.Fatalf("first claim = %q, %v", got, err)
	}
	if got, _ := s.ClaimOwnContent("bk", "c1"); got != "c1" {
		t.Errorf("same claim again = %q", got)
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.ClaimOwnContent("bk", "c2"); got != "c1" {
		t.Errorf("a different content after reopen = %q, want the first claim c1", got)
	}
	if _, err := s.ClaimOwnContent("", "c"); err == nil {
		t.Error("empty build key accepted")
	}
}
