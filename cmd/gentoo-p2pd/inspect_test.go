package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errb.String(), err
}

// TestInspectJSON checks `inspect --json` against what portage recorded
// for the fixtures (Packages indexes, fixture README).
func TestInspectJSON(t *testing.T) {
	dir := t.TempDir()
	mi, err := fixtures.WritePKGDIR(fixtures.MultiInstance, filepath.Join(dir, "mi"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := fixtures.WritePKGDIR(fixtures.XPAKBzip2, filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, append([]string{"inspect", "--json"}, append(mi, x...)...)...)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, stderr)
	}
	// One JSON document: an array, in the order of the arguments.
	var all []Inspection
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("inspect --json output is not one JSON array: %v\n%s", err, out)
	}
	byPath := map[string]Inspection{}
	for i, in := range all {
		if want := append(mi, x...)[i]; in.Path != want {
			t.Errorf("element %d is %s, want %s", i, in.Path, want)
		}
		byPath[filepath.Base(in.Path)] = in
	}
	if len(byPath) != len(mi)+len(x) {
		t.Fatalf("got %d objects for %d files", len(byPath), len(mi)+len(x))
	}
	one := int64(1)
	for _, c := range []struct {
		file, format, compression, cpv, slot, use string
		buildID                                   *int64
		size                                      int64
	}{
		{"hello-1.0-2.gpkg.tar", "gpkg", "zstd", "app-misc/hello-1.0", "0", "amd64 bar foo kernel_linux", ptr(2), 0},
		{"hello-1.0-1.gpkg.tar", "gpkg", "zstd", "app-misc/hello-1.0", "0", "amd64 bar kernel_linux", &one, 0},
		{"libfoo-2.1-1.gpkg.tar", "gpkg", "zstd", "dev-libs/libfoo-2.1", "0/2.1", "amd64 kernel_linux", &one, 0},
		{"consumer-1.0-1.gpkg.tar", "gpkg", "zstd", "app-misc/consumer-1.0", "0", "amd64 kernel_linux", &one, 10240},
		{"libfoo-2.1.tbz2", "xpak", "bzip2", "dev-libs/libfoo-2.1", "0/2.1", "amd64 kernel_linux", nil, 0},
	} {
		in, ok := byPath[c.file]
		if !ok {
			t.Errorf("%s not inspected", c.file)
			continue
		}
		if in.Format != c.format || in.Compression != c.compression || in.CPV != c.cpv || in.Slot != c.slot || strings.Join(in.USE, " ") != c.use {
			t.Errorf("%s: got format=%s compression=%s cpv=%s slot=%s use=%q", c.file, in.Format, in.Compression, in.CPV, in.Slot, in.USE)
		}
		if (in.BuildID == nil) != (c.buildID == nil) || in.BuildID != nil && *in.BuildID != *c.buildID {
			t.Errorf("%s: build_id %v, want %v", c.file, in.BuildID, c.buildID)
		}
		if c.size != 0 && in.Size != c.size {
			t.Errorf("%s: size %d, want %d", c.file, in.Size, c.size)
		}
		if len(in.ImageDigest) != 64 || len(in.MetadataDigest) != 64 || len(in.FileSHA256) != 64 ||
			!strings.HasPrefix(string(in.BuildKey), "bafk") || !strings.HasPrefix(string(in.VariantKey), "bafk") || len(in.Keys) == 0 {
			t.Errorf("%s: identities missing: %+v", c.file, in)
		}
	}
	// XPAK and GPKG of one build (libfoo, no USE differences) share identities.
	g, xp := byPath["libfoo-2.1-1.gpkg.tar"], byPath["libfoo-2.1.tbz2"]
	if g.ImageDigest != xp.ImageDigest || g.MetadataDigest != xp.MetadataDigest || g.BuildKey != xp.BuildKey {
		t.Errorf("libfoo XPAK and GPKG disagree:\n gpkg %+v\n xpak %+v", g, xp)
	}
}

func ptr(v int64) *int64 { return &v }

// TestInspectBadFile: a bad file is named in the error and the exit status
// is non-zero, while the good files are still printed.
func TestInspectBadFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "truncated.tbz2")
	good, err := fixtures.Read(fixtures.XPAKBzip2, "app-misc/hello-1.0.tbz2")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, good[:len(good)-7], 0o644); err != nil {
		t.Fatal(err)
	}
	goodPath := filepath.Join(dir, "hello-1.0.tbz2")
	if err := os.WriteFile(goodPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, "inspect", goodPath, bad)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("err = %v, want exit status 1", err)
	}
	if !strings.Contains(stderr, bad) {
		t.Errorf("error does not name the file: %q", stderr)
	}
	if !strings.Contains(out, "app-misc/hello-1.0") {
		t.Errorf("the good file was not printed: %q", out)
	}
}

// TestInspectJSONOneFile: one file is an array of one, so scripts read
// every output the same way; with a bad file the array holds the good ones.
func TestInspectJSONOneFile(t *testing.T) {
	dir := t.TempDir()
	good, err := fixtures.Read(fixtures.XPAKBzip2, "app-misc/hello-1.0.tbz2")
	if err != nil {
		t.Fatal(err)
	}
	goodPath := filepath.Join(dir, "hello-1.0.tbz2")
	if err := os.WriteFile(goodPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "inspect", "--json", goodPath)
	var all []Inspection
	if err != nil || json.Unmarshal([]byte(out), &all) != nil || len(all) != 1 || all[0].CPV != "app-misc/hello-1.0" {
		t.Fatalf("inspect --json FILE: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, "inspect", "--json", goodPath, filepath.Join(dir, "missing.tbz2"))
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Errorf("a missing file: err = %v, want exit status 1", err)
	}
	if err := json.Unmarshal([]byte(out), &all); err != nil || len(all) != 1 {
		t.Errorf("with a bad file: %v\n%s", err, out)
	}
}
