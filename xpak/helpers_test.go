package xpak

import (
	"archive/tar"
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/blake2b"
)

// tentry describes one tar entry a test writes.
type tentry struct {
	name     string
	typ      byte
	mode     int64
	body     string
	link     string
	uname    string
	uid      int
	devMajor int64
}

// buildTar writes entries as a PAX/USTAR tar (uncompressed).
func buildTar(t testing.TB, entries []tentry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		uname := e.uname
		if uname == "" {
			uname = "root"
		}
		hdr := &tar.Header{
			Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link,
			Uname: uname, Gname: uname, Uid: e.uid, Gid: e.uid,
			ModTime: time.Unix(1795234547, 0), Devmajor: e.devMajor, Devminor: 3,
			Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdBytes compresses b into one zstd frame.
func zstdBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// unzstd decompresses a zstd stream.
func decodeZstdT(t testing.TB, b []byte) []byte {
	t.Helper()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// baseMetadata is the smallest metadata a reader accepts.
func baseMetadata() map[string][]byte {
	return map[string][]byte{
		"CATEGORY": []byte("app-misc\n"),
		"PF":       []byte("evil-1.0\n"),
		"SLOT":     []byte("0\n"),
		"USE":      []byte("amd64\n"),
	}
}

// buildXPAK appends an XPAK segment holding md to payload.
func buildXPAK(payload []byte, md map[string][]byte) []byte {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var index, data bytes.Buffer
	for _, k := range keys {
		binary.Write(&index, binary.BigEndian, uint32(len(k)))
		index.WriteString(k)
		binary.Write(&index, binary.BigEndian, uint32(data.Len()))
		binary.Write(&index, binary.BigEndian, uint32(len(md[k])))
		data.Write(md[k])
	}
	return assembleXPAK(payload, index.Bytes(), data.Bytes())
}

// assembleXPAK writes payload + an XPAK segment with the given raw index
// and data, with consistent lengths.
func assembleXPAK(payload, index, data []byte) []byte {
	var out bytes.Buffer
	out.Write(payload)
	out.WriteString("XPAKPACK")
	binary.Write(&out, binary.BigEndian, uint32(len(index)))
	binary.Write(&out, binary.BigEndian, uint32(len(data)))
	out.Write(index)
	out.Write(data)
	out.WriteString("XPAKSTOP")
	binary.Write(&out, binary.BigEndian, uint32(16+len(index)+len(data)+8))
	out.WriteString("STOP")
	return out.Bytes()
}

// metadataTar builds a zstd-compressed metadata.tar.
func metadataTar(t testing.TB, md map[string][]byte) []byte {
	t.Helper()
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var es []tentry
	for _, k := range keys {
		es = append(es, tentry{name: "metadata/" + k, body: string(md[k])})
	}
	return zstdBytes(t, buildTar(t, es))
}

// gmember is one outer member of a test GPKG.
type gmember struct {
	name string // base name, e.g. "image.tar.zst"
	data []byte
}

// manifestLine is the DATA line portage writes for m.
func manifestLine(m gmember) string {
	b := blake2b.Sum512(m.data)
	s := sha512.Sum512(m.data)
	return fmt.Sprintf("DATA %s %d BLAKE2B %s SHA512 %s\n", m.name, len(m.data), hex.EncodeToString(b[:]), hex.EncodeToString(s[:]))
}

// buildGPKG writes an outer tar dir/<member>… followed by dir/Manifest.
// manifest nil means: the correct Manifest for all members.
func buildGPKG(t testing.TB, dir string, members []gmember, manifest []byte) []byte {
	t.Helper()
	if manifest == nil {
		var b strings.Builder
		for _, m := range members {
			b.WriteString(manifestLine(m))
		}
		manifest = []byte(b.String())
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	all := append(append([]gmember(nil), members...), gmember{"Manifest", manifest})
	for _, m := range all {
		hdr := &tar.Header{Name: dir + "/" + m.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(m.data)), ModTime: time.Unix(1795234547, 0), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// standardGPKG is a valid GPKG around an uncompressed image tar.
func standardMembers(t testing.TB, imageTar []byte, md map[string][]byte) []gmember {
	return []gmember{
		{"gpkg-1", nil},
		{"metadata.tar.zst", metadataTar(t, md)},
		{"image.tar.zst", zstdBytes(t, imageTar)},
	}
}

// readBytes runs Read over an in-memory file.
func readBytes(b []byte, lim Limits) (*Package, error) {
	return Read(bytes.NewReader(b), int64(len(b)), lim)
}

// writeTemp writes b to a file in t.TempDir.
func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
