package identity

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestProtocolDocListsMatchCode keeps docs/PROTOCOL.md's key and variable
// lists equal to the code's: peers implement the document, not this
// package.
func TestProtocolDocListsMatchCode(t *testing.T) {
	b, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	block := func(after string) []string {
		_, rest, ok := strings.Cut(doc, after)
		if !ok {
			t.Fatalf("PROTOCOL.md lacks %q", after)
		}
		_, rest, _ = strings.Cut(rest, "```\n")
		body, _, _ := strings.Cut(rest, "```")
		words := strings.Fields(body)
		slices.Sort(words)
		return words
	}
	if got, want := block("**Covered metadata keys**"), CoveredKeys(); !slices.Equal(got, want) {
		t.Errorf("PROTOCOL.md covered keys\n%v\ncode\n%v", got, want)
	}
	if got, want := block("**Host-varying variables**"), HostVaryingVariables(); !slices.Equal(got, want) {
		t.Errorf("PROTOCOL.md host-varying variables\n%v\ncode\n%v", got, want)
	}
}
