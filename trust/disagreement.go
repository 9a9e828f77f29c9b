package trust

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

// Disagreement is this node's report that a build it made itself was
// built again, in a compatible build environment, by other attesters who
// got another content: either the package does not build reproducibly,
// or one side's build was tampered with (a backdoor). It says what the two
// builds differ in, so a person can tell which: the image entries and the
// covered metadata records (a changed pkg_postinst changes no file, only
// the metadata). The daemon computes it after fetching the other content
// into quarantine; `trust explain` shows it.
type Disagreement struct {
	BuildKey keys.Build `json:"build_key"`
	CPV      string     `json:"cpv,omitempty"`
	// Own is the content this node built; OwnAttesters are the counted
	// attesters of it, this node first.
	Own          ContentID `json:"own"`
	OwnAttesters []peer.ID `json:"own_attesters"`
	// Other is the disagreeing content; OtherAttesters its attesters of a
	// build environment compatible with this node's.
	Other          ContentID `json:"other"`
	OtherAttesters []peer.ID `json:"other_attesters"`
	// Builder is the build environment this node stated.
	Builder Builder `json:"builder"`
	// Found is when the comparison was made.
	Found time.Time `json:"found"`
	// Entries are the image entries that differ (the first
	// MaxListedChanges, sorted by name), EntriesDiffer how many do.
	Entries       []EntryDifference `json:"entries,omitempty"`
	EntriesDiffer int               `json:"entries_differ"`
	// Metadata are the covered metadata records that differ, by name
	// (functions first), MetadataDiffer how many do.
	Metadata       []MetadataDifference `json:"metadata,omitempty"`
	MetadataDiffer int                  `json:"metadata_differ"`
}

// EntryDifference is one image entry the two builds do not agree on.
type EntryDifference struct {
	// Name is the entry's path in the image ("usr/bin/hello").
	Name string `json:"name"`
	// Change is "added" (only in the other build), "removed" (only in this
	// node's) or "differs".
	Change string `json:"change"`
	// Detail is what differs ("mode 0755 → 4755, content sha256 … → …"),
	// or what an added or removed entry is.
	Detail string `json:"detail"`
}

// String renders the entry on one line: "+ name: …" for an added entry,
// "- name: …" for a removed one, "~ name: …" for one that differs.
func (e EntryDifference) String() string {
	mark := "~"
	switch e.Change {
	case "added":
		mark = "+"
	case "removed":
		mark = "-"
	}
	return fmt.Sprintf("%s %s: %s", mark, printable(e.Name), printable(e.Detail))
}

// MetadataDifference is one covered metadata record the two builds do not
// agree on, by name: its value may be megabytes.
type MetadataDifference struct {
	// Kind is "key", "environment", "variable" or "function".
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Change is "added", "removed" or "differs".
	Change string `json:"change"`
}

// String renders the record as a phrase: "function pkg_postinst differs".
func (m MetadataDifference) String() string {
	return printable(m.Kind) + " " + printable(m.Name) + " " + printable(m.Change)
}

// printable is s as it is when every rune prints, else Go-quoted: names
// come from a stranger's tar and metadata, and a newline or a terminal
// escape in them must not forge a line of `trust explain` or drive the
// user's terminal.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// Explain renders the report for `trust explain`: the two contents and
// their attesters, what differs in the image and in the metadata, and
// what it means.
func (d Disagreement) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rebuild disagrees: content %s by %s\n", d.Other, joinPeers(d.OtherAttesters))
	fmt.Fprintf(&b, "  this node built %s", d.Own)
	if len(d.OwnAttesters) > 1 {
		fmt.Fprintf(&b, " (with %s)", joinPeers(d.OwnAttesters[1:]))
	}
	if c := d.Builder.Class(); c != "" {
		fmt.Fprintf(&b, " [%s]", c)
	}
	fmt.Fprintf(&b, ", compared %s\n", d.Found.UTC().Format(time.RFC3339))
	switch d.EntriesDiffer {
	case 0:
		b.WriteString("  image: the same entries\n")
	default:
		fmt.Fprintf(&b, "  image: %d %s differ\n", d.EntriesDiffer, plural(d.EntriesDiffer, "entry", "entries"))
		for _, e := range d.Entries {
			fmt.Fprintf(&b, "    %s\n", e)
		}
		if more := d.EntriesDiffer - len(d.Entries); more > 0 {
			fmt.Fprintf(&b, "    … and %d more\n", more)
		}
	}
	switch d.MetadataDiffer {
	case 0:
		b.WriteString("  metadata: the same covered records\n")
	default:
		parts := make([]string, len(d.Metadata))
		for i, m := range d.Metadata {
			parts[i] = m.String()
		}
		if more := d.MetadataDiffer - len(d.Metadata); more > 0 {
			parts = append(parts, fmt.Sprintf("and %d more", more))
		}
		fmt.Fprintf(&b, "  metadata: %s\n", strings.Join(parts, ", "))
	}
	b.WriteString("  meaning: the same build in a compatible build environment gave another content: " +
		"a non-reproducible package or a backdoor; it is not allowed while disputed (see the decision above).\n")
	return b.String()
}

func joinPeers(ids []peer.ID) string {
	if len(ids) == 0 {
		return "nobody"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
