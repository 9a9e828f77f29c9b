package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// MaxListedChanges bounds the changes a Comparison lists of each kind
// (image entries, metadata records); its counts say how many there were.
// A rebuild that differs in every file must give a report a person reads,
// not a copy of two file lists.
const MaxListedChanges = 50

// Kinds of change, for EntryChange.Change and MetadataChange.Change.
const (
	ChangeAdded   = "added"   // only in the other build
	ChangeRemoved = "removed" // only in this build
	ChangeDiffers = "differs" // in both, not the same
)

// EntryChange is one image entry two builds of one build key do not
// agree on.
type EntryChange struct {
	// Name is the entry's normalised path ("usr/bin/hello").
	Name string `json:"name"`
	// Change is ChangeAdded, ChangeRemoved or ChangeDiffers.
	Change string `json:"change"`
	// Detail says, for an entry that differs, what differs ("mode 0755 →
	// 4755, content"), and for an added or removed entry what it is
	// ("file 0755 root:root, 120 bytes, sha256 1a2b3c4d5e6f7a8b").
	Detail string `json:"detail"`
}

// String renders the change on one line: "+ name: …", "- name: …" or
// "~ name: …".
func (c EntryChange) String() string {
	mark := "~"
	switch c.Change {
	case ChangeAdded:
		mark = "+"
	case ChangeRemoved:
		mark = "-"
	}
	return fmt.Sprintf("%s %s: %s", mark, c.Name, c.Detail)
}

// Kinds of metadata record, for MetadataChange.Kind: what the metadata
// digest v1 covers (docs/PROTOCOL.md).
const (
	RecordKey         = "key"         // a covered metadata key (DEFINED_PHASES, *.ebuild …)
	RecordEnvironment = "environment" // environment.bz2 as a whole: present in one build only
	RecordVariable    = "variable"    // a covered environment.bz2 variable
	RecordFunction    = "function"    // an environment.bz2 function
)

// MetadataChange is one covered metadata record two builds do not agree
// on, named without its value: a value may be megabytes, and the names
// are what a reader needs to look further ("function pkg_postinst
// differs").
type MetadataChange struct {
	// Kind is RecordKey, RecordEnvironment, RecordVariable or
	// RecordFunction.
	Kind string `json:"kind"`
	// Name is the key, variable or function name.
	Name string `json:"name"`
	// Change is ChangeAdded, ChangeRemoved or ChangeDiffers.
	Change string `json:"change"`
}

// String renders the change as a phrase: "function pkg_postinst differs".
func (c MetadataChange) String() string {
	return c.Kind + " " + c.Name + " " + c.Change
}

// Comparison is what two builds of one build key differ in: the image
// entries and the covered metadata records, each list capped at
// MaxListedChanges with the full count beside it.
type Comparison struct {
	Entries        []EntryChange    `json:"entries,omitempty"`
	EntriesDiffer  int              `json:"entries_differ"`
	Metadata       []MetadataChange `json:"metadata,omitempty"`
	MetadataDiffer int              `json:"metadata_differ"`
}

// CompareFiles compares the binpkg at path (this machine's build) with the
// one at otherPath (another builder's build of the same build key), XPAK
// or GPKG: what the other build adds, removes or changes. Both files are
// read under lim; memory is one record per image entry of each image
// (lim.MaxEntries bounds it).
func CompareFiles(path, otherPath string, lim xpak.Limits) (Comparison, error) {
	var c Comparison
	pkgs := make([]*xpak.Package, 2)
	images := make([]map[string]entryState, 2)
	for i, p := range []string{path, otherPath} {
		pkg, err := xpak.ReadFile(p, lim)
		if err != nil {
			return Comparison{}, err
		}
		pkgs[i] = pkg
		if images[i], err = imageStates(p, lim); err != nil {
			return Comparison{}, err
		}
	}
	c.Entries, c.EntriesDiffer = compareImages(images[0], images[1])
	var err error
	if c.Metadata, c.MetadataDiffer, err = CompareMetadata(pkgs[0].Metadata, pkgs[1].Metadata); err != nil {
		return Comparison{}, err
	}
	return c, nil
}

// entryState is what image digest v1 covers of one entry, with the
// content's SHA-256 instead of its bytes.
type entryState struct {
	typ  xpak.EntryType
	mode int64
	// owner and group are uname and gname, or the decimal ids when the
	// names are empty: what the image digest covers.
	owner, group string
	size         int64
	sha          [32]byte
	link         string
	dev          [2]int64
}

// imageStates walks the image of the binpkg at path.
func imageStates(path string, lim xpak.Limits) (map[string]entryState, error) {
	out := map[string]entryState{}
	h := sha256.New()
	err := xpak.WalkImageFile(path, lim, func(e xpak.ImageEntry, r io.Reader) error {
		st := entryState{typ: e.Type, mode: e.Mode, owner: ownerName(e.Uname, e.Uid), group: ownerName(e.Gname, e.Gid), size: e.Size, link: e.Linkname, dev: [2]int64{e.DevMajor, e.DevMinor}}
		if e.Type == xpak.TypeFile {
			h.Reset()
			if _, err := io.Copy(h, r); err != nil {
				return err
			}
			h.Sum(st.sha[:0])
		}
		out[e.Name] = st
		return nil
	})
	return out, err
}

// ownerName is name, or id in decimal when name is empty.
func ownerName(name string, id int) string {
	if name == "" {
		return fmt.Sprint(id)
	}
	return name
}

// compareImages lists the entries of other that this image lacks or has
// otherwise, and those only this image has, sorted by name.
func compareImages(this, other map[string]entryState) ([]EntryChange, int) {
	names := slices.Sorted(maps.Keys(this))
	for n := range other {
		if _, ok := this[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out []EntryChange
	n := 0
	for _, name := range names {
		a, inThis := this[name]
		b, inOther := other[name]
		var ch EntryChange
		switch {
		case !inThis:
			ch = EntryChange{Name: name, Change: ChangeAdded, Detail: b.describe()}
		case !inOther:
			ch = EntryChange{Name: name, Change: ChangeRemoved, Detail: a.describe()}
		case a != b:
			ch = EntryChange{Name: name, Change: ChangeDiffers, Detail: a.differences(b)}
		default:
			continue
		}
		n++
		if len(out) < MaxListedChanges {
			out = append(out, ch)
		}
	}
	return out, n
}

var typeNames = map[xpak.EntryType]string{
	xpak.TypeFile: "file", xpak.TypeDir: "directory", xpak.TypeSymlink: "symlink", xpak.TypeHardlink: "hardlink",
	xpak.TypeChar: "character device", xpak.TypeBlock: "block device", xpak.TypeFIFO: "fifo",
}

func (s entryState) typeName() string {
	if n, ok := typeNames[s.typ]; ok {
		return n
	}
	return string(s.typ)
}

// shortHash is the first 8 bytes of a SHA-256 in hex: enough to tell two
// contents apart in a report.
func shortHash(h [32]byte) string { return hex.EncodeToString(h[:8]) }

// describe renders an entry for a report.
func (s entryState) describe() string {
	d := fmt.Sprintf("%s %04o %s:%s", s.typeName(), s.mode, s.owner, s.group)
	switch s.typ {
	case xpak.TypeFile:
		d += fmt.Sprintf(", %d bytes, sha256 %s", s.size, shortHash(s.sha))
	case xpak.TypeSymlink, xpak.TypeHardlink:
		d += " → " + s.link
	case xpak.TypeChar, xpak.TypeBlock:
		d += fmt.Sprintf(" %d,%d", s.dev[0], s.dev[1])
	}
	return d
}

// differences renders what differs between this entry s and o, this
// build's value first.
func (s entryState) differences(o entryState) string {
	var d []string
	if s.typ != o.typ {
		return "was " + s.describe() + ", is " + o.describe()
	}
	if s.mode != o.mode {
		d = append(d, fmt.Sprintf("mode %04o → %04o", s.mode, o.mode))
	}
	if s.owner != o.owner || s.group != o.group {
		d = append(d, fmt.Sprintf("owner %s:%s → %s:%s", s.owner, s.group, o.owner, o.group))
	}
	if s.size != o.size {
		d = append(d, fmt.Sprintf("size %d → %d", s.size, o.size))
	}
	if s.sha != o.sha {
		d = append(d, fmt.Sprintf("content sha256 %s → %s", shortHash(s.sha), shortHash(o.sha)))
	}
	if s.link != o.link {
		d = append(d, fmt.Sprintf("target %s → %s", s.link, o.link))
	}
	if s.dev != o.dev {
		d = append(d, fmt.Sprintf("device %d,%d → %d,%d", s.dev[0], s.dev[1], o.dev[0], o.dev[1]))
	}
	return strings.Join(d, ", ")
}

// CompareMetadata lists the records the metadata digest v1 covers that
// differ between m (this build) and other: functions first (they run as
// root at install time), then covered keys, then covered variables, each
// sorted by name and capped at MaxListedChanges in all, with the full
// count. Records the digest leaves out (host-varying variables,
// uncovered keys) are not compared: they never reach portage.
func CompareMetadata(m, other *xpak.Metadata) ([]MetadataChange, int, error) {
	if m == nil || other == nil {
		return nil, 0, ErrNoMetadata
	}
	var all []MetadataChange
	envs := make([]*Environment, 2)
	for i, md := range []*xpak.Metadata{m, other} {
		env, err := Parse(md).environment()
		if err != nil {
			return nil, 0, err
		}
		if env != nil {
			envs[i] = env.WithoutHostVarying()
		}
	}
	switch {
	case envs[0] == nil && envs[1] != nil:
		all = append(all, MetadataChange{Kind: RecordEnvironment, Name: environmentKey, Change: ChangeAdded})
	case envs[0] != nil && envs[1] == nil:
		all = append(all, MetadataChange{Kind: RecordEnvironment, Name: environmentKey, Change: ChangeRemoved})
	case envs[0] != nil:
		all = append(all, diffRecords(RecordFunction, envs[0].Funcs, envs[1].Funcs)...)
	}
	all = append(all, diffRecords(RecordKey, coveredValues(m), coveredValues(other))...)
	if envs[0] != nil && envs[1] != nil {
		vars := func(e *Environment) map[string]string {
			out := make(map[string]string, len(e.Vars))
			for n, v := range e.Vars {
				out[n] = v.Text
			}
			return out
		}
		all = append(all, diffRecords(RecordVariable, vars(envs[0]), vars(envs[1]))...)
	}
	n := len(all)
	if n > MaxListedChanges {
		all = all[:MaxListedChanges]
	}
	return all, n, nil
}

// coveredValues are the covered keys of m (environment.bz2 aside) with
// the values the digest covers.
func coveredValues(m *xpak.Metadata) map[string]string {
	out := map[string]string{}
	for _, k := range m.Keys() {
		if k == environmentKey || !IsCovered(k) {
			continue
		}
		raw, _ := m.Raw(k)
		out[k] = string(CanonicalValue(k, raw))
	}
	return out
}

// diffRecords lists the names whose values differ between a and b, sorted.
func diffRecords(kind string, a, b map[string]string) []MetadataChange {
	var out []MetadataChange
	names := slices.Sorted(maps.Keys(a))
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		va, inA := a[n]
		vb, inB := b[n]
		switch {
		case !inA:
			out = append(out, MetadataChange{Kind: kind, Name: n, Change: ChangeAdded})
		case !inB:
			out = append(out, MetadataChange{Kind: kind, Name: n, Change: ChangeRemoved})
		case va != vb:
			out = append(out, MetadataChange{Kind: kind, Name: n, Change: ChangeDiffers})
		}
	}
	return out
}
