package identity

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Fixtures are read with xpak.ReadFile, as the daemon reads them. This file
// also holds an independent test-only metadata loader (the XPAK trailer of
// .tbz2/.xpak files, the metadata.tar.{zst,xz} member of .gpkg.tar files)
// that TestFixtureLoadersAgree checks xpak against, so a reader bug cannot
// silently make both sides of an identity test wrong.

const fixtures = "testdata/fixtures"

func loadFixture(t testing.TB, rel string) *xpak.Metadata {
	t.Helper()
	p, err := xpak.ReadFile(filepath.Join(fixtures, rel), xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return p.Metadata
}

func TestFixtureLoadersAgree(t *testing.T) {
	for _, rel := range allFixtures(t) {
		a, b := loadFixture(t, rel), loadFixtureIndependently(t, rel)
		if !slices.Equal(a.Keys(), b.Keys()) {
			t.Fatalf("%s: keys %v vs %v", rel, a.Keys(), b.Keys())
		}
		for _, k := range a.Keys() {
			va, _ := a.Raw(k)
			vb, _ := b.Raw(k)
			if !bytes.Equal(va, vb) {
				t.Errorf("%s: %s differs", rel, k)
			}
		}
	}
}

func loadFixtureIndependently(t testing.TB, rel string) *xpak.Metadata {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string][]byte
	if strings.HasSuffix(rel, ".gpkg.tar") {
		values, err = gpkgMetadata(raw)
	} else {
		values, err = xpakMetadata(raw)
	}
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return xpak.NewMetadata(values)
}

func xpakMetadata(b []byte) (map[string][]byte, error) {
	if len(b) < 16 || string(b[len(b)-4:]) != "STOP" {
		return nil, io.ErrUnexpectedEOF
	}
	off := int(binary.BigEndian.Uint32(b[len(b)-8:]))
	seg := b[len(b)-8-off : len(b)-8]
	if string(seg[:8]) != "XPAKPACK" {
		return nil, io.ErrUnexpectedEOF
	}
	il := int(binary.BigEndian.Uint32(seg[8:]))
	dl := int(binary.BigEndian.Uint32(seg[12:]))
	index, data := seg[16:16+il], seg[16+il:16+il+dl]
	out := map[string][]byte{}
	for i := 0; i < len(index); {
		nl := int(binary.BigEndian.Uint32(index[i:]))
		name := string(index[i+4 : i+4+nl])
		o := int(binary.BigEndian.Uint32(index[i+4+nl:]))
		l := int(binary.BigEndian.Uint32(index[i+8+nl:]))
		out[name] = data[o : o+l]
		i += 12 + nl
	}
	return out, nil
}

func gpkgMetadata(b []byte) (map[string][]byte, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, err
		}
		if !strings.Contains(h.Name, "/metadata.tar") {
			continue
		}
		var r io.Reader
		switch {
		case strings.HasSuffix(h.Name, ".zst"):
			d, err := zstd.NewReader(tr)
			if err != nil {
				return nil, err
			}
			defer d.Close()
			r = d
		case strings.HasSuffix(h.Name, ".xz"):
			if r, err = xz.NewReader(tr); err != nil {
				return nil, err
			}
		default:
			r = tr
		}
		mt := tar.NewReader(r)
		out := map[string][]byte{}
		for {
			mh, err := mt.Next()
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			if err != nil {
				return nil, err
			}
			if mh.Typeflag != tar.TypeReg {
				continue
			}
			v, err := io.ReadAll(mt)
			if err != nil {
				return nil, err
			}
			_, key, _ := strings.Cut(mh.Name, "/")
			out[key] = v
		}
	}
}
