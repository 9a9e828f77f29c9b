package scan

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// fixture sets copied from shared/fixtures/portage, one per layout portage
// writes.
const (
	fxGPKGMulti = "testdata/gpkg/zstd-multi-instance"
	fxGPKGCat   = "testdata/gpkg/xz"
	fxXPAKMulti = "testdata/xpak/zstd-multi-instance"
	fxXPAKCat   = "testdata/xpak/bzip2"
)

// copyTree copies src into dst (created), preserving nothing but content.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return copyFile(path, target)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		rel  string
		ok   bool
		want Name
	}{
		{"hello-1.0.tbz2", true, Name{Layout: LayoutFlat, PF: "hello-1.0", Format: "xpak"}},
		{"All/hello-1.0.tbz2", true, Name{Layout: LayoutAll, PF: "hello-1.0", Format: "xpak"}},
		{"app-misc/hello-1.0.tbz2", true, Name{Layout: LayoutCategory, Category: "app-misc", PF: "hello-1.0", Format: "xpak"}},
		{"app-misc/layout-1.0-r1.gpkg.tar", true, Name{Layout: LayoutCategory, Category: "app-misc", PF: "layout-1.0-r1", Format: "gpkg"}},
		{"app-misc/hello/hello-1.0-2.gpkg.tar", true, Name{Layout: LayoutMultiInstance, Category: "app-misc", PN: "hello", PF: "hello-1.0", BuildID: 2, Format: "gpkg"}},
		{"app-misc/layout/layout-1.0-r1-17.xpak", true, Name{Layout: LayoutMultiInstance, Category: "app-misc", PN: "layout", PF: "layout-1.0-r1", BuildID: 17, Format: "xpak"}},
		{"Packages", false, Name{}},
		{"Packages.gz", false, Name{}},
		{"app-misc/hello/hello-1.0-2.gpkg.tar.12345", false, Name{}}, // portage's in-progress temp
		{"app-misc/hello/hello-1.0-2.xpak.partial", false, Name{}},
		{"app-misc/.hello-1.0.tbz2", false, Name{}},
		{".cache/x/hello-1.0-1.xpak", false, Name{}},
		{"app-misc/hello-1.0.xpak", false, Name{}},             // .xpak only with a build id
		{"app-misc/hello/hello-1.0.xpak", false, Name{}},       // no build id
		{"app-misc/hello/hello-1.0-0.xpak", false, Name{}},     // build ids start at 1
		{"app-misc/hello/other-1.0-1.xpak", false, Name{}},     // PF must belong to PN
		{"app-misc/hello/hello-1.0-1.tbz2", false, Name{}},     // .tbz2 is never multi-instance
		{"a/b/c/hello-1.0-1.gpkg.tar", false, Name{}},          // too deep
		{"All/hello-1.0.gpkg.tar", false, Name{}},              // All/ predates gpkg
		{"hello-1.0.gpkg.tar", false, Name{}},                  // flat layout is tbz2 only
		{"app-misc/.tbz2", false, Name{}},                      // hidden
		{"app-misc/hello/-1.xpak", false, Name{}},              // empty PF
		{"../outside/hello-1.0.tbz2", false, Name{}},           // not below PKGDIR
		{"app-misc/hello/hello-1.0-x.gpkg.tar", false, Name{}}, // build id not numeric
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			got, ok := ParseName(tt.rel)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ParseName(%q) = %+v, %v; want %+v, %v", tt.rel, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func rels(fs []FileInfo) string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Rel+"="+string(f.Layout))
	}
	return strings.Join(out, "\n")
}

func TestScanFixtureLayouts(t *testing.T) {
	tests := []struct {
		fixture string
		want    []string
	}{
		{fxGPKGMulti, []string{
			"app-misc/consumer/consumer-1.0-1.gpkg.tar=multi-instance",
			"app-misc/hello/hello-1.0-1.gpkg.tar=multi-instance",
			"app-misc/hello/hello-1.0-2.gpkg.tar=multi-instance",
			"app-misc/layout/layout-1.0-r1-1.gpkg.tar=multi-instance",
			"dev-libs/libfoo/libfoo-2.1-1.gpkg.tar=multi-instance",
		}},
		{fxXPAKMulti, []string{
			"app-misc/consumer/consumer-1.0-1.xpak=multi-instance",
			"app-misc/hello/hello-1.0-1.xpak=multi-instance",
			"app-misc/layout/layout-1.0-r1-1.xpak=multi-instance",
			"dev-libs/libfoo/libfoo-2.1-1.xpak=multi-instance",
		}},
		{fxGPKGCat, []string{
			"app-misc/consumer-1.0.gpkg.tar=category",
			"app-misc/hello-1.0.gpkg.tar=category",
			"app-misc/layout-1.0-r1.gpkg.tar=category",
			"dev-libs/libfoo-2.1.gpkg.tar=category",
		}},
		{fxXPAKCat, []string{
			"app-misc/consumer-1.0.tbz2=category",
			"app-misc/hello-1.0.tbz2=category",
			"app-misc/layout-1.0-r1.tbz2=category",
			"dev-libs/libfoo-2.1.tbz2=category",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			got, err := Scan(tt.fixture)
			if err != nil {
				t.Fatal(err)
			}
			if rels(got) != strings.Join(tt.want, "\n") {
				t.Errorf("Scan(%s) =\n%s\nwant\n%s", tt.fixture, rels(got), strings.Join(tt.want, "\n"))
			}
			for _, f := range got {
				fi, err := os.Stat(f.Path)
				if err != nil || fi.Size() != f.Size || fi.ModTime().UnixNano() != f.MTimeNS || f.Inode == 0 {
					t.Errorf("%s: FileInfo %+v disagrees with stat %v %v", f.Rel, f, fi, err)
				}
				if !filepath.IsAbs(f.Path) {
					t.Errorf("%s: path %q is not absolute", f.Rel, f.Path)
				}
			}
		})
	}
}

// TestScanMixedPKGDIR builds one PKGDIR holding every layout at once plus
// everything a scan must ignore.
func TestScanMixedPKGDIR(t *testing.T) {
	base := t.TempDir()
	pkgdir := filepath.Join(base, "binpkgs")
	outside := filepath.Join(base, "outside")
	copyTree(t, fxGPKGMulti, pkgdir)
	must(t, copyFile(fxXPAKCat+"/app-misc/hello-1.0.tbz2", pkgdir+"/hello-1.0.tbz2"))
	must(t, copyFile(fxXPAKCat+"/dev-libs/libfoo-2.1.tbz2", pkgdir+"/All/libfoo-2.1.tbz2"))
	must(t, os.Symlink("../All/libfoo-2.1.tbz2", pkgdir+"/dev-libs/libfoo-2.1.tbz2"))
	must(t, copyFile(fxGPKGCat+"/app-misc/layout-1.0-r1.gpkg.tar", pkgdir+"/app-misc/layout-1.0-r1.gpkg.tar"))
	must(t, copyFile(fxXPAKMulti+"/app-misc/consumer/consumer-1.0-1.xpak", pkgdir+"/app-misc/consumer/consumer-1.0-2.xpak"))
	// To be ignored:
	must(t, copyFile(fxXPAKCat+"/app-misc/consumer-1.0.tbz2", outside+"/consumer-1.0.tbz2"))
	must(t, os.Symlink(outside+"/consumer-1.0.tbz2", pkgdir+"/app-misc/consumer-1.0.tbz2")) // leaves PKGDIR
	must(t, os.Symlink(outside, pkgdir+"/sys-apps"))                                        // dir symlink leaving PKGDIR
	write(t, pkgdir+"/app-misc/hello/hello-1.0-3.gpkg.tar", "")                             // portage's empty placeholder
	write(t, pkgdir+"/app-misc/hello/hello-1.0-3.gpkg.tar.4242", "half written")            // portage's temp file
	write(t, pkgdir+"/app-misc/hello/hello-1.0-4.xpak.partial", "downloading")
	write(t, pkgdir+"/.hidden/x/x-1-1.xpak", "hidden dir")
	write(t, pkgdir+"/app-misc/.x-1.tbz2", "hidden file")
	write(t, pkgdir+"/a/b/c/deep-1-1.gpkg.tar", "too deep")
	write(t, pkgdir+"/notes.txt", "not a package")

	got, err := Scan(pkgdir)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"All/libfoo-2.1.tbz2=all",
		"app-misc/consumer/consumer-1.0-1.gpkg.tar=multi-instance",
		"app-misc/consumer/consumer-1.0-2.xpak=multi-instance",
		"app-misc/hello/hello-1.0-1.gpkg.tar=multi-instance",
		"app-misc/hello/hello-1.0-2.gpkg.tar=multi-instance",
		"app-misc/layout-1.0-r1.gpkg.tar=category",
		"app-misc/layout/layout-1.0-r1-1.gpkg.tar=multi-instance",
		"dev-libs/libfoo/libfoo-2.1-1.gpkg.tar=multi-instance",
		"hello-1.0.tbz2=flat",
	}, "\n")
	if rels(got) != want {
		t.Errorf("Scan =\n%s\nwant\n%s", rels(got), want)
	}

	// Through a symlinked PKGDIR, paths are reported under the link.
	link := filepath.Join(base, "pkgdir-link")
	must(t, os.Symlink(pkgdir, link))
	viaLink, err := Scan(link)
	if err != nil {
		t.Fatal(err)
	}
	if len(viaLink) != len(got) || !strings.HasPrefix(viaLink[0].Path, link+string(filepath.Separator)) {
		t.Errorf("Scan via symlink: %d files, first %q", len(viaLink), viaLink[0].Path)
	}
}

func TestScanMissingPKGDIR(t *testing.T) {
	base := t.TempDir()
	must(t, os.Symlink(filepath.Join(base, "nowhere"), filepath.Join(base, "dangling")))
	write(t, filepath.Join(base, "file"), "x")
	tests := []struct {
		pkgdir string
		noDir  bool
	}{
		{filepath.Join(base, "absent"), true},
		{filepath.Join(base, "dangling"), true},
		{filepath.Join(base, "file"), false},
	}
	for _, tt := range tests {
		got, err := Scan(tt.pkgdir)
		if err == nil || got != nil {
			t.Errorf("Scan(%s) = %v, %v; want an error", tt.pkgdir, got, err)
			continue
		}
		if errors.Is(err, ErrNoPKGDIR) != tt.noDir {
			t.Errorf("Scan(%s): %v; ErrNoPKGDIR expected %v", tt.pkgdir, err, tt.noDir)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeIndexer checks the container's framing the way a real reader would
// reject a truncated file (GPKG: a ustar header; XPAK: the STOP trailer),
// hashes the file, and counts calls per path.
type fakeIndexer struct {
	mu    sync.Mutex
	calls map[string]int
}

func newFakeIndexer() *fakeIndexer { return &fakeIndexer{calls: make(map[string]int)} }

func (f *fakeIndexer) Index(path string) (store.LocalPackage, error) {
	f.mu.Lock()
	f.calls[path]++
	f.mu.Unlock()
	data, err := os.ReadFile(path)
	if err != nil {
		return store.LocalPackage{}, err
	}
	format := "xpak"
	if strings.HasSuffix(path, ".gpkg.tar") {
		format = "gpkg"
		if len(data) < 512 || !bytes.Equal(data[257:262], []byte("ustar")) {
			return store.LocalPackage{}, fmt.Errorf("not a tar archive")
		}
	} else if !bytes.HasSuffix(data, []byte("STOP")) {
		return store.LocalPackage{}, fmt.Errorf("no XPAK trailer")
	}
	return store.LocalPackage{
		FileSHA256: sha256.Sum256(data),
		Format:     format,
		CPV:        filepath.Base(filepath.Dir(path)),
		BuildKey:   "bk-" + filepath.Base(path),
		Platform:   "x86_64-pc-linux-gnu",
	}, nil
}

func (f *fakeIndexer) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

func (f *fakeIndexer) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[path]
}
