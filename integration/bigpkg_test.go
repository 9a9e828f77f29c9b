package integration

// Helpers of the transfer and participation-mode tests (transfer_test.go,
// modes_test.go): many-piece binpkgs built from real portage metadata,
// daemons started with caps, a corrupting provider, and counters read off
// the daemons. Every name starts with xfer so it cannot clash with the
// network/restart tests' helpers in this package.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// xferTimeout bounds every polling wait of these tests; generous because
// -race on two shared cores is slow, and a wait returns as soon as its
// condition holds.
const xferTimeout = 90 * time.Second

// xferPkg is a generated binpkg and the identities the daemons compute
// for it.
type xferPkg struct {
	Path     string // the file; copy it into PKGDIRs with xferInstall
	Name     string // file name in PKGDIR, "<PF>.gpkg.tar"
	CPV      string
	BuildKey string
	Size     int64
	SHA256   [32]byte
	Image    [32]byte // image digest
	Metadata [32]byte // metadata digest
}

// xferBigGPKG writes a GPKG of about size bytes below dir: the metadata of
// the portage-built fixture app-misc/hello-1.0 (so identity derives a real
// build key from it) and an image with one file of pseudo-random bytes
// (incompressible, so the container is as big as the content and has
// size/pieces.Size pieces). variant, when not empty, is appended to the
// stored ebuild as a comment: a different ebuild is a different build key,
// which gives tests several distinct builds of the same cpv.
func xferBigGPKG(t testing.TB, dir string, size int64, seed uint64, variant string) xferPkg {
	t.Helper()
	raw, err := fixtures.Read(fixtures.ReproGPKG1, "app-misc/hello-1.0.gpkg.tar")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "fixture-hello.gpkg.tar")
	if err := os.WriteFile(src, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	fix, err := xpak.ReadFile(src, xpak.DefaultLimits())
	if err != nil {
		t.Fatalf("fixture hello: %v", err)
	}
	meta := fix.Metadata
	if variant != "" {
		key := meta.PF() + ".ebuild"
		eb, ok := meta.Raw(key)
		if !ok {
			t.Fatalf("fixture hello has no %s", key)
		}
		meta.Set(key, append(append([]byte(nil), eb...), []byte("\n# variant "+variant+"\n")...))
	}
	name := meta.PF() + ".gpkg.tar"
	out := filepath.Join(dir, fmt.Sprintf("big-%d-%s-%s", seed, variant, name))
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8(xferSeed(seed))
	image := func(add xpak.ImageAdder) error {
		for _, d := range []string{"usr", "usr/share", "usr/share/hello-big"} {
			if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, Uname: "root", Gname: "root"}, nil); err != nil {
				return err
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "usr/share/hello-big/blob.bin", Mode: 0o644, Size: size, Uname: "root", Gname: "root"}
		return add(hdr, io.LimitReader(rng, size))
	}
	opts := xpak.GPKGOptions{Basename: meta.PF(), MTime: time.Unix(1795234524, 0), TempDir: dir}
	if err := xpak.WriteGPKG(f, opts, meta, image); err != nil {
		f.Close()
		t.Fatalf("write GPKG: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	pkg, err := xpak.ReadFile(out, xpak.DefaultLimits())
	if err != nil {
		t.Fatalf("generated GPKG does not read back: %v", err)
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	return xferPkg{
		Path: out, Name: name, CPV: desc.CPV, BuildKey: desc.BuildKey().String(),
		Size: pkg.Size, SHA256: pkg.FileSHA256, Image: pkg.ImageDigest, Metadata: md,
	}
}

func xferSeed(seed uint64) [32]byte {
	var s [32]byte
	copy(s[:], fmt.Sprintf("gentoo-p2pd xfer test %d", seed))
	return s
}

// xferInstall copies p into pkgdir/app-misc/ as portage would have written
// it.
func xferInstall(t testing.TB, p xferPkg, pkgdir string) {
	t.Helper()
	dst := filepath.Join(pkgdir, strings.SplitN(p.CPV, "/", 2)[0], p.Name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := xferCopy(p.Path, dst); err != nil {
		t.Fatal(err)
	}
}

func xferCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
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

// xferCheckFile proves a fetched file is the attested build: whole-file
// SHA-256, image digest and metadata digest as xpak computes them.
func xferCheckFile(t testing.TB, path string, p xferPkg) {
	t.Helper()
	pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
	if err != nil {
		t.Fatalf("fetched file %s: %v", path, err)
	}
	if pkg.FileSHA256 != p.SHA256 || pkg.Size != p.Size {
		t.Fatalf("fetched file %s: sha256 %x size %d, want %x size %d", path, pkg.FileSHA256[:8], pkg.Size, p.SHA256[:8], p.Size)
	}
	if pkg.ImageDigest != p.Image {
		t.Fatalf("fetched file %s: image digest %x, attested %x", path, pkg.ImageDigest[:8], p.Image[:8])
	}
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil || md != p.Metadata {
		t.Fatalf("fetched file %s: metadata digest %x (%v), attested %x", path, md[:8], err, p.Metadata[:8])
	}
}

// xferNodeSpec describes one daemon of a test network.
type xferNodeSpec struct {
	Name      string
	Mode      config.Mode
	Threshold int
	Pkgs      []xferPkg // copied into its PKGDIR before start
	Sets      []string  // fixture sets copied into its PKGDIR before start
	Configure func(*config.Config)
}

// xferStart starts one daemon bootstrapped to boot (multiaddrs), stopped
// at the end of the test.
func xferStart(t testing.TB, ctx context.Context, dir string, spec xferNodeSpec, boot ...string) *testnet.Node {
	t.Helper()
	pkgdir := filepath.Join(dir, spec.Name, "pkgdir")
	for _, p := range spec.Pkgs {
		xferInstall(t, p, pkgdir)
	}
	for _, s := range spec.Sets {
		if _, err := fixtures.WritePKGDIR(s, pkgdir); err != nil {
			t.Fatal(err)
		}
	}
	n, err := testnet.Start(ctx, testnet.NodeOptions{
		Name: spec.Name, Dir: dir, Bootstrap: boot, Mode: spec.Mode, Threshold: spec.Threshold,
		Configure: spec.Configure,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xferStop(t, n) })
	return n
}

// xferStopped remembers stopped nodes: testnet.Node.Stop may run once.
var xferStopped sync.Map // *testnet.Node -> *sync.Once

// xferStop stops n once (a test may stop a node early; cleanup stops it
// again).
func xferStop(t testing.TB, n *testnet.Node) {
	t.Helper()
	o, _ := xferStopped.LoadOrStore(n, new(sync.Once))
	o.(*sync.Once).Do(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stop %s: %v", n.Name, err)
		}
	})
}

// xferWait polls cond until it holds, failing the test after xferTimeout.
func xferWait(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	if err := testnet.WaitFor(ctx, xferTimeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// xferProviders returns the peers the daemon n finds in the DHT that hand
// out their own attestation of buildKey (Find's provider list).
func xferProviders(ctx context.Context, n *testnet.Node, buildKey string) map[string]bool {
	out := map[string]bool{}
	res, err := n.Daemon.API().Find(ctx, buildKey)
	if err != nil {
		return out
	}
	for _, b := range res.Builds {
		for _, p := range b.Providers {
			out[p] = true
		}
	}
	return out
}

// xferServed is the bytes n's transfer server sent (pieces and layers).
func xferServed(ctx context.Context, n *testnet.Node) int64 {
	return n.Daemon.API().Status(ctx).BytesServed
}

// xferEvil is a provider that lies in its pieces: a real libp2p host with
// its own key, in the DHT, that attests the build with a genuine signature
// (same file, same piece root as the honest builders) and answers piece
// requests with one flipped byte per piece — the layer it sends is
// correct, so only piece verification can catch it.
type xferEvil struct {
	Node   *p2p.Node
	Server *transfer.Server
	att    []byte
}

// xferFlipSource serves a file with one byte of every piece inverted.
type xferFlipSource struct {
	path   string
	sha    [32]byte
	leaves [][32]byte
}

func (s xferFlipSource) Open(sha [32]byte) (transfer.File, error) {
	if sha != s.sha {
		return nil, transfer.ErrNotFound
	}
	f, err := transfer.OpenFile(s.path, s.leaves)
	if err != nil {
		return nil, err
	}
	return xferFlipFile{f}, nil
}

type xferFlipFile struct{ transfer.File }

func (f xferFlipFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	// Flip the byte at offset 100 of each piece that this read covers.
	for i := range n {
		if (off+int64(i))%pieces.Size == 100 {
			p[i] ^= 0xff
		}
	}
	return n, err
}

// xferStartEvil starts the corrupting provider for p, bootstrapped to boot,
// attesting with the fields of honest (an attestation of p by an honest
// builder) under its own key.
func xferStartEvil(t testing.TB, ctx context.Context, p xferPkg, honest *trust.Signed, boot string) *xferEvil {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	a := honest.Attestation
	a.Time = time.Now().UTC().Truncate(time.Second)
	signed, err := trust.Sign(a, key)
	if err != nil {
		t.Fatal(err)
	}
	e := &xferEvil{att: signed.Marshal()}
	bk, err := cid.Decode(p.BuildKey)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := peer.AddrInfoFromString(boot)
	if err != nil {
		t.Fatal(err)
	}
	cfg := p2p.DefaultConfig()
	cfg.PrivKey = key
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Bootstrap = []peer.AddrInfo{*bi}
	cfg.MDNS, cfg.QUIC, cfg.AutoNAT, cfg.HolePunching, cfg.RelayClient = false, false, false, false, false
	cfg.DHTMode = p2p.DHTServer
	e.Node, err = p2p.New(ctx, cfg, p2p.Handlers{
		Attestations: func(_ context.Context, k cid.Cid) ([][]byte, error) {
			if k.Equals(bk) {
				return [][]byte{e.att}, nil
			}
			return nil, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	leaves, _, err := pieces.Layer(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.Server = transfer.NewServer(e.Node.Host(), xferFlipSource{path: p.Path, sha: p.SHA256, leaves: leaves},
		transfer.ServerOptions{Enabled: true})
	if err := e.Node.Provide(bk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// Close stops serving and leaves the network.
func (e *xferEvil) Close() {
	e.Server.Close()
	e.Node.Close()
}

// xferOwnAttestation returns n's own attestation of buildKey.
func xferOwnAttestation(t testing.TB, n *testnet.Node, buildKey string) *trust.Signed {
	t.Helper()
	recs, err := n.Daemon.Store().AttestationsFor(buildKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Attester != n.Daemon.ID().String() {
			continue
		}
		s, err := trust.Decode(r.Blob)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatalf("%s holds no own attestation of %s", n.Name, buildKey)
	return nil
}

// xferBitsSet counts the verified pieces recorded in a transfer bitfield
// file (<sha>.bits: 80-byte header, then one bit per piece); 0 when the
// file does not exist yet.
func xferBitsSet(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	const header = 8 + 32 + 32 + 8
	if len(b) < header {
		return 0, nil
	}
	n := 0
	for _, c := range b[header:] {
		for ; c != 0; c &= c - 1 {
			n++
		}
	}
	return n, nil
}

// xferHex is the lower-case hex of a digest, as file names use it.
func xferHex(b [32]byte) string { return hex.EncodeToString(b[:]) }

// xferSHA parses a hex SHA-256 as the API prints it.
func xferSHA(t testing.TB, s string) [32]byte {
	t.Helper()
	var out [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(out) {
		t.Fatalf("bad sha256 %q: %v", s, err)
	}
	copy(out[:], b)
	return out
}

// xferSHA256File hashes a file.
func xferSHA256File(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}
