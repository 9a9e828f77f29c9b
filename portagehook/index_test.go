package portagehook

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestIndexGolden parses every Packages file portage wrote for the fixtures
// and writes it again: the output must be byte-identical, which proves the
// header rule, the stanza key order (MTIME and REPO last) and the package
// order.
func TestIndexGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/Packages/*.Packages")
	if err != nil || len(files) != 5 {
		t.Fatalf("fixtures: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			h, entries, err := ParseIndex(bytes.NewReader(want))
			if err != nil {
				t.Fatal(err)
			}
			if h.Value("PACKAGES") != strconv.Itoa(len(entries)) || h.Value("VERSION") != "0" || h.Value("TIMESTAMP") == "" {
				t.Fatalf("header %v does not describe %d entries", h, len(entries))
			}
			// Shuffle stanza and key order: the writer must restore portage's.
			for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
				entries[i], entries[j] = entries[j], entries[i]
			}
			for _, e := range entries {
				for i, j := 0, len(e.Fields)-1; i < j; i, j = i+1, j-1 {
					e.Fields[i], e.Fields[j] = e.Fields[j], e.Fields[i]
				}
			}
			var got bytes.Buffer
			if err := WriteIndex(&got, h, entries); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("re-written index differs\n--- got\n%s\n--- want\n%s", got.Bytes(), want)
			}
		})
	}
}

func TestIndexPortageRules(t *testing.T) {
	in := "VERSION: 0\nTIMESTAMP: 5\nCHOST: x86_64-pc-linux-gnu\nno colon here\n\n" +
		"CPV: a/b-1\nSLOT: 0\nEAPI: 8\nCHOST: x86_64-pc-linux-gnu\nDESC: colons: kept\nEMPTY:\nBUILD_ID: 2\nBUILD_ID: 3\n\n" +
		"SLOT: 1\n\n" + // no CPV: skipped
		"CPV: a/a-1\nBUILD_ID: 1\n\n"
	h, entries, err := ParseIndex(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2 (a stanza without CPV is skipped)", len(entries))
	}
	if v := entries[0].Value("DESC"); v != "colons: kept" {
		t.Errorf("DESC %q: split at the first colon only", v)
	}
	if v, ok := entries[0].Get("EMPTY"); !ok || v != "" {
		t.Errorf("EMPTY = %q %v", v, ok)
	}
	if entries[0].BuildID() != 3 {
		t.Errorf("BUILD_ID %d: the last value wins", entries[0].BuildID())
	}
	var out bytes.Buffer
	if err := WriteIndex(&out, h, entries); err != nil {
		t.Fatal(err)
	}
	want := "CHOST: x86_64-pc-linux-gnu\nPACKAGES: 2\nTIMESTAMP: 5\nVERSION: 0\n\n" +
		"BUILD_ID: 1\nCPV: a/a-1\n\n" +
		"BUILD_ID: 3\nCPV: a/b-1\nDESC: colons: kept\nEAPI: 8\n\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if err := WriteIndex(&out, Header{}, nil); !errors.Is(err, ErrIndex) {
		t.Errorf("index without TIMESTAMP: %v", err)
	}
	bad := []Entry{{Fields{{"CPV", "a/b-1"}, {"DESCRIPTION", "two\nlines"}}}}
	if err := WriteIndex(&out, Header{Fields{{"TIMESTAMP", "1"}}}, bad); !errors.Is(err, ErrIndex) {
		t.Errorf("value with a newline: %v", err)
	}
}

func FuzzParseIndex(f *testing.F) {
	files, _ := filepath.Glob("testdata/Packages/*.Packages")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, entries, err := ParseIndex(bytes.NewReader(b))
		if err != nil {
			return
		}
		if _, ok := h.Get("TIMESTAMP"); !ok {
			return
		}
		var out bytes.Buffer
		if err := WriteIndex(&out, h, entries); err != nil {
			return
		}
		h2, e2, err := ParseIndex(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("re-parse of written index: %v", err)
		}
		var out2 bytes.Buffer
		if err := WriteIndex(&out2, h2, e2); err != nil {
			t.Fatalf("re-write: %v", err)
		}
		if !bytes.Equal(out.Bytes(), out2.Bytes()) {
			t.Fatalf("write is not stable:\n%s\n---\n%s", out.Bytes(), out2.Bytes())
		}
	})
}
