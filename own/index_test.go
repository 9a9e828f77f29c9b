package own

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// portageFixtures are the portage-written binpkgs of xpak's testdata:
// GPKG (zstd, xz, signed) and XPAK (bzip2, zstd).
func portageFixtures(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("../xpak/testdata/portage", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".gpkg.tar") || strings.HasSuffix(p, ".tbz2") || strings.HasSuffix(p, ".xpak")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("only %d fixtures", len(files))
	}
	return files
}

// TestIdentifySinglePass: what identify derives in its one pass over a
// file (the piece layer from the raw bytes xpak reads, what the image
// needs of a machine and its toolchain facts from xpak's one decode) is
// what the separate passes derive, on every portage fixture.
func TestIdentifySinglePass(t *testing.T) {
	p := newPeer(t, memnet.New(), t.TempDir(), peerOptions{})
	lim := xpak.DefaultLimits()
	var withNeeds, formats = 0, map[string]bool{}
	for _, path := range portageFixtures(t) {
		lp, err := p.ob.identify(path)
		if err != nil {
			t.Fatalf("identify %s: %v", path, err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		leaves, size, err := pieces.Layer(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lp.Leaves, leaves) || lp.PieceRoot != pieces.RootOf(leaves) || lp.Size != size {
			t.Errorf("%s: piece layer of the single pass (%d leaves, %d bytes) differs from pieces.Layer's (%d, %d)", path, len(lp.Leaves), lp.Size, len(leaves), size)
		}
		pkg, err := xpak.ReadFile(path, lim)
		if err != nil {
			t.Fatal(err)
		}
		formats[string(pkg.Format)+"/"+string(pkg.Compression)] = true
		needs, err := fit.NeedsOfFile(path, lim)
		if err != nil {
			t.Fatal(err)
		}
		img, err := scanImage(path, lim, pkg.Metadata)
		if err != nil {
			t.Fatal(err)
		}
		var ex localExtra
		if err := json.Unmarshal(lp.Extra, &ex); err != nil {
			t.Fatal(err)
		}
		var wantNeeds *trust.Needs
		if needs != (fit.Needs{}) {
			wantNeeds = &trust.Needs{Glibc: needs.Glibc, X86Level: needs.X86Level}
			withNeeds++
		}
		if fmt.Sprint(ex.Needs) != fmt.Sprint(wantNeeds) {
			t.Errorf("%s: needs of the single pass %v, of fit.NeedsOfFile %v", path, ex.Needs, wantNeeds)
		}
		if tf := p.ob.toolchainOf(img.tc.Result(), pkg.Metadata); ex.Toolchain == nil || *ex.Toolchain != tf {
			t.Errorf("%s: toolchain of the single pass %+v, of a separate scan %+v", path, ex.Toolchain, tf)
		}
		if lp.FileSHA256 != pkg.FileSHA256 || lp.ImageDigest != pkg.ImageDigest {
			t.Errorf("%s: digests differ from xpak.ReadFile's", path)
		}
		parsed := identity.Parse(pkg.Metadata) // decodes environment.bz2 itself
		md, err := parsed.MetadataDigest()
		if err != nil {
			t.Fatal(err)
		}
		desc, err := parsed.Descriptor(p.ob.md5cache)
		if err != nil {
			t.Fatal(err)
		}
		sizes, err := parsed.ServedSizes(pkg)
		if err != nil {
			t.Fatal(err)
		}
		if lp.MetadataDigest != md || lp.BuildKey != string(desc.BuildKey()) || ex.Served == nil ||
			ex.Served.MetadataTar != sizes.MetadataTar || ex.Served.ImageTar != sizes.ImageTar {
			t.Errorf("%s: metadata digest, build key or served sizes from xpak's decode of environment.bz2 differ from identity.Parse's", path)
		}
	}
	if withNeeds == 0 {
		t.Error("no fixture needs anything of a machine: the ELF scan went untested")
	}
	for _, f := range []string{"gpkg/zstd", "gpkg/xz", "xpak/bzip2", "xpak/zstd"} {
		if !formats[f] {
			t.Errorf("no %s fixture", f)
		}
	}
}

// TestIdentifyDamaged: a fixture cut short or with a byte changed fails
// to index with an error that names the file and, where xpak refuses it,
// the problem xpak names.
func TestIdentifyDamaged(t *testing.T) {
	p := newPeer(t, memnet.New(), t.TempDir(), peerOptions{})
	sentinels := []error{xpak.ErrTruncated, xpak.ErrCorrupt, xpak.ErrManifestMismatch, xpak.ErrBadXPAK,
		xpak.ErrBadGPKG, xpak.ErrUnknownFormat, xpak.ErrBadMetadata, xpak.ErrIO, xpak.ErrMissingMember}
	dir := t.TempDir()
	var refused int
	for i, path := range portageFixtures(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for j, at := range []int{len(b) / 3, len(b) / 2, len(b) * 4 / 5, len(b) - 1} {
			for _, damaged := range [][]byte{b[:at], flip(b, at)} {
				bad := filepath.Join(dir, fmt.Sprintf("%d-%d%s", i, j, filepath.Ext(path)))
				if err := os.WriteFile(bad, damaged, 0o644); err != nil {
					t.Fatal(err)
				}
				_, rerr := xpak.ReadFile(bad, xpak.DefaultLimits())
				_, err := p.ob.identify(bad)
				if rerr == nil {
					continue // xpak found nothing wrong (a changed byte of an XPAK's metadata value)
				}
				refused++
				if err == nil || !strings.Contains(err.Error(), bad) {
					t.Fatalf("%s damaged at %d: identify says %v", path, at, err)
				}
				for _, s := range sentinels {
					if errors.Is(err, s) != errors.Is(rerr, s) {
						t.Fatalf("%s damaged at %d: identify says %v, xpak.ReadFile %v", path, at, err, rerr)
					}
				}
			}
		}
	}
	if refused == 0 {
		t.Fatal("no damaged fixture refused")
	}
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x55
	return c
}
