package xpak

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const fixtureRoot = "testdata/portage"

// inventoryEntry is one binpkg as INVENTORY.json (written by an
// independent reader, no portage code) describes it.
type inventoryEntry struct {
	File               string            `json:"file"`
	Size               int64             `json:"size"`
	SHA256             string            `json:"sha256"`
	Format             string            `json:"format"`
	PayloadCompression string            `json:"payload_compression"`
	MetadataKeys       []string          `json:"metadata_keys"`
	Metadata           map[string]string `json:"metadata"`
	Image              []inventoryImage  `json:"image"`
}

type inventoryImage struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Mode     string `json:"mode"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	Uname    string `json:"uname"`
	Gname    string `json:"gname"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Linkname string `json:"linkname"`
}

func loadInventory(t *testing.T) map[string]inventoryEntry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureRoot, "INVENTORY.json"))
	if err != nil {
		t.Fatal(err)
	}
	var list []inventoryEntry
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]inventoryEntry, len(list))
	for _, e := range list {
		m[filepath.Clean(strings.TrimPrefix(e.File, "./"))] = e
	}
	return m
}

// packagesEntry is one stanza of a portage Packages index.
type packagesEntry map[string]string

// loadPackages parses every PKGDIR's Packages index and keys the entries
// by file path relative to fixtureRoot.
func loadPackages(t *testing.T) map[string]packagesEntry {
	t.Helper()
	idx, err := filepath.Glob(filepath.Join(fixtureRoot, "*", "*", "Packages"))
	if err != nil || len(idx) == 0 {
		t.Fatalf("no Packages indexes: %v", err)
	}
	out := make(map[string]packagesEntry)
	for _, p := range idx {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		var stanzas []packagesEntry
		cur := packagesEntry{}
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if len(cur) > 0 {
					stanzas = append(stanzas, cur)
				}
				cur = packagesEntry{}
				continue
			}
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				k, v = strings.TrimSuffix(line, ":"), ""
			}
			cur[k] = v
		}
		if len(cur) > 0 {
			stanzas = append(stanzas, cur)
		}
		f.Close()
		if len(stanzas) < 2 {
			t.Fatalf("%s: no package stanzas", p)
		}
		header := stanzas[0]
		n, _ := strconv.Atoi(header["PACKAGES"])
		if n != len(stanzas)-1 {
			t.Fatalf("%s: PACKAGES %d but %d stanzas", p, n, len(stanzas)-1)
		}
		rel, _ := filepath.Rel(fixtureRoot, filepath.Dir(p))
		for _, s := range stanzas[1:] {
			out[filepath.Join(rel, s["PATH"])] = s
		}
	}
	return out
}

// fixtureFiles lists every binpkg under testdata/portage.
func fixtureFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(fixtureRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".gpkg.tar") || strings.HasSuffix(p, ".tbz2") || strings.HasSuffix(p, ".xpak")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// independentDigest encodes image digest v1 from INVENTORY.json's image
// entries: a second implementation over a second reader's output.
func independentDigest(t *testing.T, format string, image []inventoryImage) ([32]byte, int) {
	t.Helper()
	type rec struct{ name, line string }
	var recs []rec
	for _, e := range image {
		name := e.Name
		if format == "xpak" {
			name = strings.TrimPrefix(name, "./")
		} else {
			if name == "image" {
				continue
			}
			name = strings.TrimPrefix(name, "image/")
		}
		name = strings.TrimSuffix(name, "/")
		if name == "" || name == "." {
			continue
		}
		mode, err := strconv.ParseInt(strings.TrimPrefix(e.Mode, "0o"), 8, 64)
		if err != nil {
			t.Fatalf("mode %q: %v", e.Mode, err)
		}
		uname, gname := e.Uname, e.Gname
		if uname == "" {
			uname = strconv.Itoa(e.UID)
		}
		if gname == "" {
			gname = strconv.Itoa(e.GID)
		}
		typ := map[string]string{"file": "f", "dir": "d", "symlink": "l"}[e.Type]
		if typ == "" {
			t.Fatalf("inventory type %q not handled by the test encoder", e.Type)
		}
		size, sum, link := "0", "", ""
		switch typ {
		case "f":
			size, sum = strconv.FormatInt(e.Size, 10), e.SHA256
		case "l":
			link = e.Linkname
		}
		fields := []string{typ, name, strconv.FormatInt(mode&0o7777, 8), uname, gname, size, sum, link, "", "", ""}
		recs = append(recs, rec{name, strings.Join(fields, "\x00") + "\x00"})
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].name < recs[j].name })
	h := sha256.New()
	h.Write([]byte("gentoo-p2p image v1\n"))
	for _, r := range recs {
		h.Write([]byte(r.line))
	}
	var out [32]byte
	h.Sum(out[:0])
	return out, len(recs)
}

func TestFixtures(t *testing.T) {
	inv := loadInventory(t)
	pkgs := loadPackages(t)
	files := fixtureFiles(t)
	if len(files) != 29 {
		t.Fatalf("found %d fixture binpkgs, want 29", len(files))
	}
	read := make(map[string]*Package)
	for _, path := range files {
		rel, _ := filepath.Rel(fixtureRoot, path)
		t.Run(rel, func(t *testing.T) {
			p, err := ReadFile(path, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			read[rel] = p
			ie, ok := inv[rel]
			if !ok {
				t.Fatal("not in INVENTORY.json")
			}
			pe, ok := pkgs[rel]
			if !ok {
				t.Fatal("not in any Packages index")
			}
			if p.Path != path {
				t.Errorf("Path %q", p.Path)
			}
			// Container identity against INVENTORY.json and Packages.
			if got := hex.EncodeToString(p.FileSHA256[:]); got != ie.SHA256 {
				t.Errorf("FileSHA256 %s, inventory %s", got, ie.SHA256)
			}
			if p.Size != ie.Size || strconv.FormatInt(p.Size, 10) != pe["SIZE"] {
				t.Errorf("Size %d, inventory %d, Packages %s", p.Size, ie.Size, pe["SIZE"])
			}
			if string(p.Format) != ie.Format {
				t.Errorf("Format %s, inventory %s", p.Format, ie.Format)
			}
			if string(p.Compression) != ie.PayloadCompression {
				t.Errorf("Compression %s, inventory %s", p.Compression, ie.PayloadCompression)
			}
			// Metadata against Packages.
			if got := p.Metadata.CPV(); got != pe["CPV"] {
				t.Errorf("CPV %q, Packages %q", got, pe["CPV"])
			}
			id, hasID := p.Metadata.BuildID()
			if want, ok := pe["BUILD_ID"]; ok != hasID || (ok && strconv.FormatInt(id, 10) != want) {
				t.Errorf("BUILD_ID %d/%v, Packages %q/%v", id, hasID, want, ok)
			}
			wantSlot := pe["SLOT"]
			if wantSlot == "" {
				wantSlot = "0" // Packages omits the default slot
			}
			if got := p.Metadata.Get("SLOT"); got != wantSlot {
				t.Errorf("SLOT %q, Packages %q", got, wantSlot)
			}
			if got := strings.Join(p.Metadata.USE(), " "); got != pe["USE"] {
				t.Errorf("USE %q, Packages %q", got, pe["USE"])
			}
			// Metadata against INVENTORY.json.
			if got := p.Metadata.Keys(); strings.Join(got, ",") != strings.Join(sortedCopy(ie.MetadataKeys), ",") {
				t.Errorf("keys %v, inventory %v", got, ie.MetadataKeys)
			}
			for k, v := range ie.Metadata {
				if strings.HasPrefix(v, "<") && strings.HasSuffix(v, " bytes>") {
					raw, _ := p.Metadata.Raw(k)
					if want := "<" + strconv.Itoa(len(raw)) + " bytes>"; v != want {
						t.Errorf("%s: %d bytes, inventory %s", k, len(raw), v)
					}
					continue
				}
				if got := p.Metadata.Get(k); got != strings.TrimSpace(v) {
					t.Errorf("%s = %q, inventory %q", k, got, v)
				}
			}
			env, err := p.Metadata.Environment(DefaultLimits())
			if err != nil || !bytes.Contains(env, []byte("src_install")) {
				t.Errorf("environment.bz2: %v (%d bytes)", err, len(env))
			}
			// The digest against an independent encoding of an
			// independent reader's entries.
			want, n := independentDigest(t, ie.Format, ie.Image)
			if p.ImageDigest != want || p.ImageEntries != n {
				t.Errorf("image digest %x (%d entries), independent %x (%d)", p.ImageDigest, p.ImageEntries, want, n)
			}
			// GPKG extras.
			if p.Format == FormatGPKG {
				if len(p.Manifest) == 0 {
					t.Error("no Manifest kept")
				}
				signed := strings.Contains(rel, "signed")
				if p.Signed != signed || (len(p.Signatures) == 2) != signed {
					t.Errorf("Signed %v with %d signatures", p.Signed, len(p.Signatures))
				}
			}
		})
	}

	// The XPAK and GPKG of one (cpv, USE) — all sets, all compressions,
	// separate builds — share one image digest.
	groups := make(map[string][]string)
	for rel, p := range read {
		key := p.Metadata.CPV() + " " + p.Metadata.Get("USE")
		groups[key] = append(groups[key], rel)
	}
	crossFormat := 0
	for key, rels := range groups {
		formats := map[Format]bool{}
		first := read[rels[0]]
		for _, rel := range rels {
			formats[read[rel].Format] = true
			if read[rel].ImageDigest != first.ImageDigest {
				t.Errorf("%s: %s and %s differ in image digest", key, rels[0], rel)
			}
		}
		if len(formats) == 2 {
			crossFormat++
		}
	}
	if crossFormat < 4 {
		t.Errorf("only %d (cpv, USE) groups have both formats", crossFormat)
	}
	// USE=foo changes the image, so hello's two builds must differ.
	a, b := read["gpkg/zstd-multi-instance/app-misc/hello/hello-1.0-1.gpkg.tar"], read["gpkg/zstd-multi-instance/app-misc/hello/hello-1.0-2.gpkg.tar"]
	if a == nil || b == nil || a.ImageDigest == b.ImageDigest {
		t.Error("hello USE=-foo and USE=foo share an image digest")
	}
	// Repro pairs: different bytes, same image.
	for _, set := range []string{"gpkg", "xpak"} {
		for rel, p1 := range read {
			rest, ok := strings.CutPrefix(rel, "repro/"+set+"-1/")
			if !ok {
				continue
			}
			p2 := read["repro/"+set+"-2/"+rest]
			if p2 == nil {
				t.Errorf("%s has no repro pair", rel)
				continue
			}
			if p1.FileSHA256 == p2.FileSHA256 {
				t.Errorf("%s: repro pair has identical bytes", rel)
			}
			if p1.ImageDigest != p2.ImageDigest {
				t.Errorf("%s: repro pair image digests differ", rel)
			}
		}
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// TestImageDigestStandalone recomputes each fixture's digest from its raw
// image payload through the exported ImageDigest.
func TestImageDigestStandalone(t *testing.T) {
	for _, path := range fixtureFiles(t) {
		p, err := ReadFile(path, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		payload := imagePayload(t, path)
		sum, n, err := ImageDigest(bytes.NewReader(payload), p.Format, DefaultLimits())
		if err != nil || sum != p.ImageDigest || n != p.ImageEntries {
			t.Errorf("%s: ImageDigest %x/%d/%v, Read %x/%d", path, sum, n, err, p.ImageDigest, p.ImageEntries)
		}
		var walked []ImageEntry
		err = WalkImage(bytes.NewReader(payload), p.Format, DefaultLimits(), func(e ImageEntry, r io.Reader) error {
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				return err
			}
			if n != e.Size {
				t.Errorf("%s: %s content %d bytes, Size %d", path, e.Name, n, e.Size)
			}
			if strings.HasPrefix(e.Name, "./") || strings.HasPrefix(e.Name, "image/") || strings.HasSuffix(e.Name, "/") {
				t.Errorf("%s: entry name %q not normalised", path, e.Name)
			}
			walked = append(walked, e)
			return nil
		})
		if err != nil || len(walked) != p.ImageEntries {
			t.Errorf("%s: WalkImage %d entries, %v", path, len(walked), err)
		}
	}
}

// imagePayload extracts the compressed image payload of a fixture: the
// bytes before XPAKPACK, or the GPKG's image.tar.* member.
func imagePayload(t testing.TB, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gpkg.tar") {
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			hdr, err := tr.Next()
			if err != nil {
				t.Fatalf("%s: no image member: %v", path, err)
			}
			if strings.Contains(hdr.Name, "/image.tar") && !strings.HasSuffix(hdr.Name, ".sig") {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
	}
	xpakLen := int(binary.BigEndian.Uint32(raw[len(raw)-8:]))
	return raw[:len(raw)-8-xpakLen]
}
