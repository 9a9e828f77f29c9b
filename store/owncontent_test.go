package store

import (
	"strings"
	"testing"
)

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

// TestClaimOwnContents: claims in one transaction behave as the same
// claims made one by one, a later claim of a key included.
func TestClaimOwnContents(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.ClaimOwnContent("old", "c0"); err != nil {
		t.Fatal(err)
	}
	got, err := s.ClaimOwnContents([]OwnClaim{{"old", "c9"}, {"bk", "c1"}, {"bk", "c2"}, {"other", "c3"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"c0", "c1", "c1", "c3"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("recorded %v, want %v", got, want)
	}
	if _, err := s.ClaimOwnContents([]OwnClaim{{"new", "c4"}, {"", "c5"}}); err == nil {
		t.Error("an empty build key was accepted")
	}
	if got, _ := s.ClaimOwnContent("new", "c6"); got != "c6" {
		t.Errorf("a batch with an invalid claim recorded %q for its valid one", got)
	}
}
