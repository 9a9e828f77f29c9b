package jobtest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// The two packages of the repro fixture sets: their CPVs, and their files
// relative to a PKGDIR.
const (
	HelloCPV   = "app-misc/hello-1.0"
	LayoutCPV  = "app-misc/layout-1.0-r1"
	HelloFile  = "app-misc/hello-1.0.gpkg.tar"
	LayoutFile = "app-misc/layout-1.0-r1.gpkg.tar"
)

var (
	platformOnce sync.Once
	platformOf   string
)

// FixturePlatform is the platform the portage fixtures were built for
// (CHOST and flags of their metadata).
func FixturePlatform(t testing.TB) string {
	t.Helper()
	platformOnce.Do(func() {
		path := filepath.Join(t.TempDir(), filepath.Base(HelloFile))
		CopyFixture(t, fixtures.ReproGPKG1, HelloFile, path)
		platformOf = Identify(t, path).Local.Platform
	})
	if platformOf == "" {
		t.Fatal("fixture platform unknown")
	}
	return platformOf
}

// WriteSet copies a fixture set into dir and returns its binpkgs by path
// relative to dir (e.g. HelloFile).
func WriteSet(t testing.TB, set, dir string) map[string]string {
	t.Helper()
	paths, err := fixtures.WritePKGDIR(set, dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range paths {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.ToSlash(rel)] = p
	}
	return out
}

// CopyFixture writes one fixture binpkg to dst, creating its directory.
func CopyFixture(t testing.TB, set, name, dst string) {
	t.Helper()
	b, err := fixtures.Read(set, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write beside and rename, as portage does: a new inode, so a scanner
	// sees a changed file even within one mtime tick.
	tmp := filepath.Join(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// Binpkg is one binpkg on disk with its identities, as own's indexer
// computes them.
type Binpkg struct {
	Local      store.LocalPackage // the record own would index
	Pkg        *xpak.Package
	Data       []byte            // the file
	Descriptor json.RawMessage   // its build descriptor
	Index      map[string]string // the index fields an attestation claims
	Served     trust.ServedSizes // its served form's tar sizes
	Needs      trust.Needs       // what its content needs of a machine
}

// Content is the content id of b.
func (b Binpkg) Content() trust.ContentID {
	return trust.ContentID{Image: b.Local.ImageDigest, Metadata: b.Local.MetadataDigest}
}

// BuildKey is the build key of b.
func (b Binpkg) BuildKey() keys.Build { return keys.Build(b.Local.BuildKey) }

// VariantKey is the variant key of b.
func (b Binpkg) VariantKey() keys.Variant { return keys.Variant(b.Local.VariantKey) }

// Identify reads the binpkg at path and computes its identities and piece
// layer.
func Identify(t testing.TB, path string) Binpkg {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	leaves, size, err := pieces.Layer(bytes.NewReader(data))
	if err != nil || size != pkg.Size {
		t.Fatalf("piece layer of %s: %v (size %d, want %d)", path, err, size, pkg.Size)
	}
	descJSON, err := json.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	index := map[string]string{}
	for _, k := range votes.IndexKeys() {
		if v := strings.Join(strings.Fields(pkg.Metadata.Get(k)), " "); v != "" {
			index[k] = v
		}
	}
	sizes, err := identity.ServedSizes(pkg)
	if err != nil {
		t.Fatal(err)
	}
	needs, err := fit.NeedsOfFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	buildID, _ := pkg.Metadata.BuildID()
	return Binpkg{
		Local: store.LocalPackage{
			Path: path, Size: pkg.Size, FileSHA256: pkg.FileSHA256, Format: string(pkg.Format),
			CPV: pkg.Metadata.CPV(), BuildID: buildID,
			BuildKey: string(desc.BuildKey()), VariantKey: string(desc.VariantKey()),
			ImageDigest: pkg.ImageDigest, MetadataDigest: md,
			PieceRoot: pieces.RootOf(leaves), Platform: desc.Platform(),
			IndexedAt: time.Now().UTC(), Extra: json.RawMessage(`{}`),
		},
		Pkg: pkg, Data: data, Descriptor: descJSON, Index: index,
		Served: trust.ServedSizes{MetadataTar: sizes.MetadataTar, ImageTar: sizes.ImageTar},
		Needs:  trust.Needs{Glibc: needs.Glibc, X86Level: needs.X86Level},
	}
}
