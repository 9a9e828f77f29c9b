package portagehook

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// ErrIndex reports a Packages index that cannot be written or read.
var ErrIndex = errors.New("portagehook: Packages index")

// Field is one `KEY: value` line of a Packages index, under the name
// written in the file (MTIME, REPO, DESC — not portage's internal names).
type Field struct {
	Key, Value string
}

// Fields is an ordered list of index lines. ParseIndex keeps file order;
// WriteIndex imposes portage's order itself, so callers may build Fields in
// any order.
type Fields []Field

// Get returns the value of key (as written in the file) and whether it is
// present.
func (f Fields) Get(key string) (string, bool) {
	for _, x := range f {
		if x.Key == key {
			return x.Value, true
		}
	}
	return "", false
}

// Value returns the value of key, "" when absent.
func (f Fields) Value(key string) string {
	v, _ := f.Get(key)
	return v
}

// Set replaces key's value, or appends the key.
func (f *Fields) Set(key, value string) {
	for i := range *f {
		if (*f)[i].Key == key {
			(*f)[i].Value = value
			return
		}
	}
	*f = append(*f, Field{key, value})
}

// Delete removes key.
func (f *Fields) Delete(key string) {
	*f = slices.DeleteFunc(*f, func(x Field) bool { return x.Key == key })
}

// Header is the first stanza of a Packages file: what portage needs about
// the binhost as a whole (TIMESTAMP and VERSION are mandatory for a remote
// binhost: without TIMESTAMP portage drops the index, and a missing or
// non-zero VERSION makes it "not supported").
type Header struct{ Fields }

// Entry is one package stanza of a Packages file.
type Entry struct{ Fields }

// CPV is the entry's CPV.
func (e Entry) CPV() string { return e.Value("CPV") }

// BuildID is the entry's BUILD_ID, 0 when absent or not a number.
func (e Entry) BuildID() int64 {
	n, _ := strconv.ParseInt(e.Value("BUILD_ID"), 10, 64)
	return n
}

// translated are the keys portage writes under another name than it uses
// internally (bintree's _pkgindex_translated_keys); it sorts by the
// internal name, which is why MTIME and REPO end every stanza.
var translated = map[string]string{
	"DESC":  "DESCRIPTION",
	"MTIME": "_mtime_",
	"REPO":  "repository",
}

// sortKey is the name portage sorts a written key by.
func sortKey(fileKey string) string {
	if k, ok := translated[fileKey]; ok {
		return k
	}
	return fileKey
}

// defaultPkgData are values portage's writer leaves out of a package
// stanza because its reader fills them in (bintree's
// _pkgindex_default_pkg_data).
var defaultPkgData = map[string]string{
	"BDEPEND": "", "BUILD_ID": "", "BUILD_TIME": "", "DEFINED_PHASES": "",
	"DEPEND": "", "EAPI": "0", "IDEPEND": "", "IUSE": "", "KEYWORDS": "",
	"LICENSE": "", "PATH": "", "PDEPEND": "", "PROPERTIES": "",
	"PROVIDES": "", "RDEPEND": "", "REQUIRES": "", "RESTRICT": "",
	"SLOT": "0", "USE": "",
}

// inheritedKeys are left out of a package stanza when the header carries
// the same value (bintree's _pkgindex_inherited_keys, file names).
var inheritedKeys = []string{"CHOST", "REPO"}

// WriteIndex writes a Packages index exactly as portage's PackageIndex
// writes one: header keys sorted, then a blank line, then one stanza per
// package sorted by CPV (then BUILD_ID), keys in each stanza sorted by
// portage's internal names (so MTIME and REPO come last), empty values,
// default values and values inherited from the header left out, every
// stanza ended by a blank line. PACKAGES is set to len(entries); the header
// must carry TIMESTAMP, and VERSION defaults to 0.
func WriteIndex(w io.Writer, header Header, entries []Entry) error {
	h := Header{slices.Clone(header.Fields)}
	if h.Value("TIMESTAMP") == "" {
		return fmt.Errorf("%w: header has no TIMESTAMP (portage ignores such an index)", ErrIndex)
	}
	if h.Value("VERSION") == "" {
		h.Set("VERSION", "0")
	}
	h.Set("PACKAGES", strconv.Itoa(len(entries)))

	bw := bufio.NewWriter(w)
	if err := writeStanza(bw, h.Fields, nil); err != nil {
		return err
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int {
		if c := strings.Compare(a.CPV(), b.CPV()); c != 0 {
			return c
		}
		return cmpInt(a.BuildID(), b.BuildID())
	})
	for i, e := range sorted {
		if e.CPV() == "" {
			return fmt.Errorf("%w: entry %d has no CPV", ErrIndex, i)
		}
		drop := func(f Field) bool {
			if d, ok := defaultPkgData[sortKey(f.Key)]; ok && d == f.Value {
				return true
			}
			for _, k := range inheritedKeys {
				if f.Key == k {
					if hv := h.Value(k); hv != "" && hv == f.Value {
						return true
					}
				}
			}
			return false
		}
		if err := writeStanza(bw, e.Fields, drop); err != nil {
			return fmt.Errorf("%w (entry %s)", err, e.CPV())
		}
	}
	return bw.Flush()
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func writeStanza(w *bufio.Writer, fields Fields, drop func(Field) bool) error {
	fs := slices.Clone(fields)
	slices.SortStableFunc(fs, func(a, b Field) int { return strings.Compare(sortKey(a.Key), sortKey(b.Key)) })
	for i, f := range fs {
		if i > 0 && fs[i-1].Key == f.Key {
			return fmt.Errorf("%w: key %s twice", ErrIndex, f.Key)
		}
		if f.Key == "" || strings.ContainsAny(f.Key, ":\n\r") || strings.ContainsAny(f.Value, "\n\r") {
			return fmt.Errorf("%w: unwritable line %q: %q", ErrIndex, f.Key, f.Value)
		}
		if f.Value == "" || (drop != nil && drop(f)) {
			continue
		}
		w.WriteString(f.Key)
		w.WriteString(": ")
		w.WriteString(f.Value)
		w.WriteByte('\n')
	}
	return w.WriteByte('\n')
}

// ParseIndex reads a Packages index with portage's reading rules: a stanza
// ends at an empty line; a line is split at its first ':' and the value
// loses its first character (the space); lines without ':' are ignored;
// package stanzas without CPV are skipped. Keys keep their file names and
// order; defaults and inherited values are not filled in, so WriteIndex of
// a parsed portage index reproduces it byte for byte.
func ParseIndex(r io.Reader) (Header, []Entry, error) {
	br := bufio.NewReader(r)
	var h Header
	hf, _, err := readStanza(br)
	if err != nil {
		return h, nil, err
	}
	h.Fields = hf
	var entries []Entry
	for {
		f, more, err := readStanza(br)
		if err != nil {
			return h, nil, err
		}
		if len(f) == 0 && !more {
			return h, entries, nil
		}
		if len(f) == 0 {
			// portage's readBody stops at the first empty stanza.
			return h, entries, nil
		}
		e := Entry{f}
		if e.CPV() == "" {
			continue
		}
		entries = append(entries, e)
	}
}

// maxIndexLine bounds one index line; real values (DEPEND of large
// packages) stay far below it.
const maxIndexLine = 1 << 20

func readStanza(br *bufio.Reader) (Fields, bool, error) {
	var f Fields
	for {
		line, err := br.ReadString('\n')
		if len(line) > maxIndexLine {
			return nil, false, fmt.Errorf("%w: line longer than %d bytes", ErrIndex, maxIndexLine)
		}
		if err != nil && err != io.EOF {
			return nil, false, fmt.Errorf("%w: %v", ErrIndex, err)
		}
		eof := err == io.EOF
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return f, !eof, nil
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			if v != "" {
				v = v[1:]
			}
			f.Set(k, v) // portage's dict: the last value wins
		}
		if eof {
			return f, false, nil
		}
	}
}
