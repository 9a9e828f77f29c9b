package binhost

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// BenchmarkPackages10k measures the gateway's index as portage feels it:
// an HTTP GET of Packages.gz from the gateway, over loopback, with a real
// store holding 10,000 Allowed builds of this platform, each attested by
// three peers (the default threshold), every one with served sizes (so
// every build is listed before any of its bytes is here).
//
//   - warm: nothing changed since the last request;
//   - one-vote-changed: one build's votes changed since (a fourth vote);
//   - cold: the first request after a restart (the store, votes, listings
//     and gateway opened afresh on the state directory a daemon served
//     from before);
//   - first: the first request ever (nothing recorded yet of these builds:
//     a fresh copy of the store as the attestations left it).
//
// The machine function returns a new *fit.Machine on every call, as the
// daemon's does once its 5 s cache expires.
//
//	go test -run '^$' -bench 'Packages10k/(warm|one|cold)' -benchtime 10x -count 2 ./binhost/
//	go test -run '^$' -bench 'Packages10k/first' -benchtime 3x ./binhost/
func BenchmarkPackages10k(b *testing.B) {
	fx := newIndexFixture(b, 10000, 3)
	b.Run("warm", func(b *testing.B) {
		gw := fx.open(b, fx.dir)
		defer gw.close()
		gw.get(b) // the first request after start, not timed
		b.ResetTimer()
		for range b.N {
			gw.get(b)
		}
	})
	b.Run("one-vote-changed", func(b *testing.B) {
		gw := fx.open(b, fx.dir)
		defer gw.close()
		gw.get(b)
		late, lateID := jobtest.NewKey(b)
		b.ResetTimer()
		for i := range b.N {
			// A fourth voter's vote for one build arrives (not timed).
			b.StopTimer()
			s := benchAttestation(b, late, fx.platform, i%fx.n, time.Now().Add(-time.Minute))
			a := s.Attestation
			if _, err := gw.st.PutAttestation(store.AttestationRecord{
				BuildKey: string(a.BuildKey), VariantKey: string(a.VariantKey), CPV: a.CPV, Platform: a.Platform,
				Attester: lateID.String(), Content: a.Content.String(), Blob: s.Marshal(), ReceivedAt: time.Now().UTC(),
				From: lateID.String(), Time: a.Time.Unix(),
			}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			gw.get(b)
		}
	})
	b.Run("cold", func(b *testing.B) {
		// The daemon ran before on this state: not timed.
		gw := fx.open(b, fx.dir)
		gw.get(b)
		gw.close()
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			gw := fx.open(b, fx.dir)
			b.StartTimer()
			gw.get(b)
			b.StopTimer()
			gw.close()
			b.StartTimer()
		}
	})
	b.Run("first", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			dir := b.TempDir()
			copyFile(b, filepath.Join(fx.pristine, store.DBFile), filepath.Join(dir, store.DBFile))
			gw := fx.open(b, dir)
			b.StartTimer()
			gw.get(b)
			b.StopTimer()
			gw.close()
			b.StartTimer()
		}
	})
}

// benchPlatform is the platform of the benchmark's builds and gateway.
var benchPlatform = identity.Descriptor{CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -pipe", CXXFLAGS: "-O2 -pipe", LDFLAGS: "-Wl,-O1 -Wl,--as-needed"}

// indexFixture is a state directory whose store holds n builds of the
// fixture platform, each attested by the same voters.
type indexFixture struct {
	n int
	// dir is the state directory the warm and cold runs share; pristine
	// holds a copy of its store before any index was served.
	dir, pristine string
	policy        trust.Policy
	platform      string
	self          peer.ID // the daemon's identity, the same after a restart
	pgp           string  // the gateway's signing key file
}

func newIndexFixture(b *testing.B, n, voters int) *indexFixture {
	b.Helper()
	cfg := config.Defaults()
	cfg.Trust.FreshWeight = 100 // a closed network: every attester counts
	policy, err := votes.PolicyFromConfig(cfg.Trust)
	if err != nil {
		b.Fatal(err)
	}
	if voters < policy.Threshold {
		b.Fatalf("%d voters cannot reach threshold %d", voters, policy.Threshold)
	}
	fx := &indexFixture{n: n, dir: b.TempDir(), pristine: b.TempDir(), policy: policy, platform: benchPlatform.Platform()}
	st, err := store.Open(fx.dir, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	_, fx.self = jobtest.NewKey(b)
	keys := make([]crypto.PrivKey, voters)
	ids := make([]peer.ID, voters)
	for i := range keys {
		keys[i], ids[i] = jobtest.NewKey(b)
	}
	base := time.Now().Add(-30 * 24 * time.Hour).UTC().Truncate(time.Second)
	var recs []store.AttestationRecord
	for i := range n {
		for v, k := range keys {
			s := benchAttestation(b, k, fx.platform, i, base.Add(time.Duration(i*voters+v)*time.Second))
			a := s.Attestation
			recs = append(recs, store.AttestationRecord{
				ID: s.ID(), BuildKey: string(a.BuildKey), VariantKey: string(a.VariantKey), CPV: a.CPV,
				Platform: a.Platform, Attester: ids[v].String(), Content: a.Content.String(), Blob: s.Marshal(),
				ReceivedAt: time.Now().UTC(), From: ids[v].String(), Time: a.Time.Unix(),
			})
		}
		if len(recs) >= 3000 || i == n-1 {
			if _, err := st.PutAttestations(recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	copyFile(b, filepath.Join(fx.dir, store.DBFile), filepath.Join(fx.pristine, store.DBFile))
	fx.pgp = filepath.Join(b.TempDir(), "gateway.asc")
	if _, err := portagehook.LoadOrCreateSigningKey(fx.pgp, "bench gateway"); err != nil {
		b.Fatal(err)
	}
	return fx
}

// benchAttestation is one voter's attestation of build i: a small
// library with the index claims an ordinary ebuild has.
func benchAttestation(b testing.TB, k crypto.PrivKey, platform string, i int, at time.Time) *trust.Signed {
	b.Helper()
	cat := fmt.Sprintf("bench-cat%d", i%50)
	pn := fmt.Sprintf("libbench%d", i)
	cpv := cat + "/" + pn + "-1.2.3"
	soname := fmt.Sprintf("libbench%d.so.1", i)
	desc := identity.Descriptor{
		CPV: cpv, EbuildDigest: fmt.Sprintf("%064x", i),
		Eclasses: map[string]string{"toolchain-funcs": fmt.Sprintf("%064x", 1), "multilib": fmt.Sprintf("%064x", 2), "flag-o-matic": fmt.Sprintf("%064x", 3)},
		USE:      []string{"abi_x86_64", "amd64", "elibc_glibc", "kernel_linux", "ssl"},
		CHOST:    benchPlatform.CHOST, CFLAGS: benchPlatform.CFLAGS, CXXFLAGS: benchPlatform.CXXFLAGS, LDFLAGS: benchPlatform.LDFLAGS,
		Requires: map[string][]string{"x86_64": {"libc.so.6"}},
	}
	if desc.Platform() != platform {
		b.Fatalf("bench descriptor platform %q, want %q", desc.Platform(), platform)
	}
	raw, err := json.Marshal(desc)
	if err != nil {
		b.Fatal(err)
	}
	s, err := trust.Sign(trust.Attestation{
		Version: trust.AttestationVersion, BuildKey: desc.BuildKey(), VariantKey: desc.VariantKey(),
		CPV: cpv, Platform: desc.Platform(), Descriptor: raw,
		Index: map[string]string{
			"DESCRIPTION":    fmt.Sprintf("A benchmark library number %d, with a description of ordinary length", i),
			"EAPI":           "8",
			"SLOT":           "0/1",
			"KEYWORDS":       "~alpha amd64 arm arm64 ~hppa ~loong ~mips ppc ppc64 ~riscv ~s390 sparc x86",
			"LICENSE":        "|| ( GPL-2+ LGPL-2.1+ )",
			"IUSE":           "debug +ssl static-libs test",
			"USE":            "abi_x86_64 amd64 elibc_glibc kernel_linux ssl",
			"DEPEND":         "ssl? ( >=dev-libs/openssl-3.0:= ) sys-libs/zlib",
			"RDEPEND":        "ssl? ( >=dev-libs/openssl-3.0 ) sys-libs/zlib",
			"BDEPEND":        "virtual/pkgconfig",
			"DEFINED_PHASES": "compile configure install prepare test",
			"RESTRICT":       "!test? ( test )",
			"repository":     "gentoo",
			"PROVIDES":       "x86_64: " + soname,
			"REQUIRES":       "x86_64: libc.so.6",
		},
		Content:    trust.ContentID{Image: sha256.Sum256([]byte(cpv + "image")), Metadata: sha256.Sum256([]byte(cpv + "metadata"))},
		FileSHA256: sha256.Sum256([]byte(cpv + "file")), Size: 50 << 10, PieceSize: 262144, Format: trust.FormatGPKG,
		PieceRoot: sha256.Sum256([]byte(cpv + "root")), Time: at,
		Served: trust.ServedSizes{MetadataTar: 20480, ImageTar: 51200 + int64(i%7)*512},
		Needs:  trust.Needs{Glibc: "GLIBC_2.34", X86Level: 1},
	}, k)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// indexGateway is one daemon's gateway over the fixture's state.
type indexGateway struct {
	st  *store.Store
	gw  *portagehook.Gateway
	srv *httptest.Server
	n   int
}

// open starts what a daemon starts for its gateway on state dir: the
// store, a votes book, the listings and the gateway, behind an HTTP
// server.
func (fx *indexFixture) open(b *testing.B, dir string) *indexGateway {
	b.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Trust.FreshWeight = 100 // a closed network: every attester counts
	vb := votes.New(votes.Options{Store: st, Policy: fx.policy, Self: fx.self, Platform: fx.platform, Limits: cfg.Limits, Files: xpak.DefaultLimits()})
	ls := New(Options{
		Store: st, Votes: vb, Platform: fx.platform, Prefetch: cfg.Gateway.Prefetch,
		// A new *fit.Machine each time, as the daemon's machine cache
		// makes once its entry expires.
		Machine: func() (*fit.Machine, error) { return jobtest.Machine(), nil },
	})
	key, err := portagehook.LoadSigningKey(fx.pgp)
	if err != nil {
		b.Fatal(err)
	}
	var header portagehook.Fields
	header.Set("ARCH", "amd64")
	header.Set("CHOST", "x86_64-pc-linux-gnu")
	gw := portagehook.NewGateway(ls, portagehook.GatewayOptions{
		Path: cfg.Gateway.Path, CacheDir: filepath.Join(dir, "gateway"),
		Signer: portagehook.NewSigner(key, time.Now()), Covered: identity.IsCovered, Canonical: identity.ServedValue,
		Header: header, Limits: xpak.DefaultLimits(), PrepareOnIndex: true, IndexWait: 30 * time.Second,
	})
	return &indexGateway{st: st, gw: gw, srv: httptest.NewServer(gw), n: fx.n}
}

// get fetches Packages.gz as portage does and checks it lists every build.
func (g *indexGateway) get(b *testing.B) {
	b.Helper()
	resp, err := http.Get(g.srv.URL + config.Defaults().Gateway.Path + "/Packages.gz")
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET Packages.gz: %v %s", err, resp.Status)
	}
	b.StopTimer()
	defer b.StartTimer()
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "CPV: ") {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	if n != g.n {
		b.Fatalf("index lists %d builds, want %d", n, g.n)
	}
}

func (g *indexGateway) close() {
	g.srv.Close()
	_ = g.gw.Close()
	_ = g.st.Close()
}

func copyFile(b *testing.B, from, to string) {
	b.Helper()
	raw, err := os.ReadFile(from)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(to, raw, 0o600); err != nil {
		b.Fatal(err)
	}
}
