package trust

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestDisagreementExplain(t *testing.T) {
	self, other := testPeer(t, 1), testPeer(t, 2)
	d := Disagreement{
		BuildKey: "bafkreibuild", CPV: "app-misc/layout-1.0-r1",
		Own: ContentID{Image: [32]byte{1}, Metadata: [32]byte{2}}, OwnAttesters: []peer.ID{self},
		Other: ContentID{Image: [32]byte{1}, Metadata: [32]byte{3}}, OtherAttesters: []peer.ID{other},
		Builder: Builder{GCC: "13.2.1"}, Found: time.Unix(1700000000, 0),
		Entries:        []EntryDifference{{Name: "usr/bin/x", Change: "added", Detail: "file 0755 root:root, 5 bytes, sha256 00"}},
		EntriesDiffer:  3,
		Metadata:       []MetadataDifference{{Kind: "function", Name: "pkg_postinst", Change: "differs"}},
		MetadataDiffer: 1,
	}
	text := d.Explain()
	for _, want := range []string{
		"rebuild disagrees: content " + d.Other.String() + " by " + other.String() + "\n",
		"this node built " + d.Own.String() + " [gcc 13.2.1]",
		"image: 3 entries differ\n    + usr/bin/x: file 0755",
		"… and 2 more",
		"metadata: function pkg_postinst differs\n",
		"a non-reproducible package or a backdoor; it is not allowed while disputed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	// The JSON form round-trips (the store keeps it, the CLI prints it).
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Disagreement
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Explain() != text {
		t.Errorf("round trip changed the report:\n%s", back.Explain())
	}
	same := Disagreement{Found: d.Found}.Explain()
	if !strings.Contains(same, "image: the same entries") || !strings.Contains(same, "metadata: the same covered records") {
		t.Errorf("no differences rendered as\n%s", same)
	}
}

// A stranger's entry names and metadata names are quoted when they hold
// what does not print: a newline cannot forge a line of the report.
func TestDisagreementQuotesUnprintableNames(t *testing.T) {
	d := Disagreement{EntriesDiffer: 1, MetadataDiffer: 1,
		Entries:  []EntryDifference{{Name: "usr/bin/x\n  image: the same entries", Change: "added", Detail: "file\x1b[2J"}},
		Metadata: []MetadataDifference{{Kind: "function", Name: "pkg_postinst\n  metadata: the same covered records", Change: "added"}},
	}
	text := d.Explain()
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == "image: the same entries" || strings.TrimSpace(l) == "metadata: the same covered records" {
			t.Fatalf("a forged line:\n%s", text)
		}
	}
	if strings.Contains(text, "\x1b") {
		t.Fatalf("a terminal escape reached the report:\n%q", text)
	}
	if !strings.Contains(text, `"usr/bin/x\n  image: the same entries"`) {
		t.Fatalf("the name is not shown quoted:\n%s", text)
	}
}
