package identity

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

const testRepo = "testdata/repo"

func mustDescriptor(t testing.TB, m *xpak.Metadata, cache *MD5Cache) Descriptor {
	t.Helper()
	d, err := DescriptorFromMetadata(m, cache)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Golden values: the canonical encoding and keys of app-misc/consumer-1.0
// (gpkg/zstd-multi-instance). If this test fails, the build key of every
// package changed: that is a protocol change and needs a new version string.
const (
	consumerCanonical = "gentoo-p2p build v1\n" +
		"3:cpv,21:app-misc/consumer-1.0," +
		"6:ebuild,64:a5f391613b6fbb7aaf57d0370d4e5d88e6a651f924830dbb3ec1ac6565c64a94," +
		"8:eclasses,1:0," +
		"3:use,1:2,5:amd64,12:kernel_linux," +
		"5:chost,19:x86_64-pc-linux-gnu," +
		"6:cflags,9:-O2 -pipe," +
		"8:cxxflags,9:-O2 -pipe," +
		"6:fflags,0:," +
		"7:fcflags,0:," +
		"7:ldflags,23:-Wl,-O1 -Wl,--as-needed," +
		"9:slot_deps,1:1,22:dev-libs/libfoo:0/2.1=," +
		"8:requires,1:0,"
	consumerBuildKey   = "bafkreihjyhwzwy2jlbeicoa6ojxzioegdmhoji2l4yi435djoxltg64uqi"
	consumerVariantKey = "bafkreidxmu5n5f6gactiqb3dsjdbqmt5kfplxjhsjsxv7hg66aiv622vfi"
	consumerPlatform   = "x86_64-pc-linux-gnu-82ad48a787ac4969"
)

func TestDescriptorGolden(t *testing.T) {
	d := mustDescriptor(t, loadFixture(t, consumerGPKG), nil)
	if got := string(d.Canonical()); got != consumerCanonical {
		t.Errorf("Canonical():\n%q\nwant\n%q", got, consumerCanonical)
	}
	if got := d.BuildKey().String(); got != consumerBuildKey {
		t.Errorf("BuildKey() = %s, want %s", got, consumerBuildKey)
	}
	if got := d.VariantKey().String(); got != consumerVariantKey {
		t.Errorf("VariantKey() = %s, want %s", got, consumerVariantKey)
	}
	if got := d.Platform(); got != consumerPlatform {
		t.Errorf("Platform() = %s, want %s", got, consumerPlatform)
	}
	variant := strings.Replace(consumerCanonical, "gentoo-p2p build v1\n", "gentoo-p2p variant v1\n", 1)
	variant = variant[:strings.Index(variant, "9:slot_deps,")]
	if got := string(d.VariantCanonical()); got != variant {
		t.Errorf("VariantCanonical():\n%q\nwant\n%q", got, variant)
	}
	// The key is CIDv1, raw codec, sha2-256 of the canonical bytes.
	k, err := d.BuildKey().CID()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := mh.Decode(k.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if k.Version() != 1 || k.Type() != cid.Raw || dec.Code != mh.SHA2_256 {
		t.Errorf("key %s: version %d codec %x hash %x", k, k.Version(), k.Type(), dec.Code)
	}
}

func TestDescriptorFields(t *testing.T) {
	hello := mustDescriptor(t, loadFixture(t, helloGPKG1), nil)
	want := Descriptor{
		CPV:          "app-misc/hello-1.0",
		EbuildDigest: hello.EbuildDigest,
		Eclasses:     map[string]string{},
		USE:          []string{"amd64", "bar", "kernel_linux"},
		CHOST:        "x86_64-pc-linux-gnu",
		CFLAGS:       "-O2 -pipe",
		CXXFLAGS:     "-O2 -pipe",
		LDFLAGS:      "-Wl,-O1 -Wl,--as-needed",
		Requires:     map[string][]string{"x86_64": {"libc.so.6"}},
	}
	if !reflect.DeepEqual(hello, want) {
		t.Errorf("hello descriptor\n%+v\nwant\n%+v", hello, want)
	}
	if len(hello.EbuildDigest) != 64 {
		t.Errorf("EbuildDigest %q", hello.EbuildDigest)
	}
	consumer := mustDescriptor(t, loadFixture(t, consumerGPKG), nil)
	if !slices.Equal(consumer.SlotDeps, []string{"dev-libs/libfoo:0/2.1="}) {
		t.Errorf("consumer SlotDeps = %q", consumer.SlotDeps)
	}
}

func TestBuildKeysOfHonestBuildsAgree(t *testing.T) {
	for _, g := range [][]string{
		{helloGPKG1, helloGPKG2, helloXPAK1, helloXPAK2, helloMIXPAK, helloMIGPKG1, helloXZ},
		{layoutGPKG1, layoutGPKG2, layoutXPAK1, layoutXPAK2},
		{consumerGPKG, consumerXPAK, consumerXZ},
	} {
		first := mustDescriptor(t, loadFixture(t, g[0]), nil)
		for _, rel := range g[1:] {
			d := mustDescriptor(t, loadFixture(t, rel), nil)
			if d.BuildKey() != first.BuildKey() || d.VariantKey() != first.VariantKey() || d.Platform() != first.Platform() {
				t.Errorf("%s: keys differ from %s", rel, g[0])
			}
		}
	}
}

func TestBuildKeysSeparateBuilds(t *testing.T) {
	foo0 := mustDescriptor(t, loadFixture(t, helloMIGPKG1), nil) // USE=-foo
	foo1 := mustDescriptor(t, loadFixture(t, helloMIGPKG2), nil) // USE=foo
	if foo0.BuildKey() == foo1.BuildKey() || foo0.VariantKey() == foo1.VariantKey() {
		t.Error("USE=foo and USE=-foo share a key")
	}
	if foo0.Platform() != foo1.Platform() {
		t.Error("USE changed the platform")
	}
	seen := map[keys.Build]string{}
	for _, rel := range []string{helloMIGPKG1, helloMIGPKG2, layoutGPKG1, consumerGPKG, libfooGPKG} {
		k := mustDescriptor(t, loadFixture(t, rel), nil).BuildKey()
		if prev, dup := seen[k]; dup {
			t.Fatalf("%s and %s share build key %s", rel, prev, k)
		}
		seen[k] = rel
	}
}

func TestVariantKeyIgnoresLinkedLibraries(t *testing.T) {
	base := loadFixture(t, consumerGPKG)
	d := mustDescriptor(t, base, nil)
	newer := mustDescriptor(t, withKey(base, "RDEPEND", []byte("dev-libs/libfoo:0/2.2=\n")), nil)
	if newer.VariantKey() != d.VariantKey() {
		t.Error("libfoo's subslot changed the variant key")
	}
	if newer.BuildKey() == d.BuildKey() {
		t.Error("libfoo's subslot did not change the build key")
	}
	req := mustDescriptor(t, withKey(base, "REQUIRES", []byte("x86_64: libfoo.so.3\n")), nil)
	if req.VariantKey() != d.VariantKey() || req.BuildKey() == d.BuildKey() {
		t.Error("REQUIRES must change the build key only")
	}
}

func TestDescriptorNormalisation(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	want := mustDescriptor(t, base, nil)
	same := []*xpak.Metadata{
		withKey(base, "CFLAGS", []byte("  -O2\t\t-pipe \n")),
		withKey(base, "LDFLAGS", []byte("-Wl,-O1\n  -Wl,--as-needed")),
		withKey(base, "USE", []byte("kernel_linux bar amd64 bar notineffective\n")),
		withKey(base, "REQUIRES", []byte("x86_64:   libc.so.6 libc.so.6\n")),
		withKey(base, "BUILD_TIME", []byte("5\n")),
		withKey(base, "FEATURES", []byte("ccache\n")),
	}
	for i, m := range same {
		if got := mustDescriptor(t, m, nil); got.BuildKey() != want.BuildKey() {
			t.Errorf("case %d: build key changed: %+v", i, got)
		}
	}
	different := []*xpak.Metadata{
		withKey(base, "CFLAGS", []byte("-O3 -pipe\n")),
		withKey(base, "CHOST", []byte("aarch64-unknown-linux-gnu\n")),
		withKey(base, "hello-1.0.ebuild", []byte("EAPI=8\n")),
		withKey(base, "FFLAGS", []byte("-O2\n")),
	}
	for i, m := range different {
		if got := mustDescriptor(t, m, nil); got.BuildKey() == want.BuildKey() || got.VariantKey() == want.VariantKey() {
			t.Errorf("case %d: keys unchanged", i)
		}
	}
	// A descriptor from a stranger (unsorted, duplicated, odd whitespace)
	// hashes like the normalised one.
	messy := want
	messy.USE = []string{"kernel_linux", "bar", "amd64", "bar"}
	messy.CFLAGS = " -O2   -pipe "
	messy.Requires = map[string][]string{"x86_64": {"libc.so.6", "libc.so.6"}}
	messy.Eclasses = nil
	if messy.BuildKey() != want.BuildKey() {
		t.Error("Canonical does not normalise")
	}
}

func TestDescriptorFlagsFromEnvironment(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	m := withEnv(t, base, func(s string) string {
		return replaceOnce(t, s, `declare -x FFLAGS=""`, `declare -x FFLAGS="-O2  -march=native"`)
	})
	d := mustDescriptor(t, m, nil)
	if d.FFLAGS != "-O2 -march=native" || d.FCFLAGS != "" {
		t.Errorf("FFLAGS %q FCFLAGS %q", d.FFLAGS, d.FCFLAGS)
	}
	// A metadata key wins over the environment.
	d = mustDescriptor(t, withKey(m, "FFLAGS", []byte("-O1\n")), nil)
	if d.FFLAGS != "-O1" {
		t.Errorf("FFLAGS %q", d.FFLAGS)
	}
}

func TestDescriptorEclassesFromMD5Cache(t *testing.T) {
	cache := LoadMD5Cache(testRepo)
	if cache == nil || cache.RepoName() != "test_repo" {
		t.Fatalf("LoadMD5Cache: %+v", cache)
	}
	base := withKey(loadFixture(t, consumerGPKG), "INHERITED", []byte("toolchain-funcs multilib\n"))
	withCache := mustDescriptor(t, base, cache)
	want := map[string]string{"multilib": "e89724c6bed533d4ed674239b3d79a5e", "toolchain-funcs": "f04e41ad6236e5450cf055fb49906d39"}
	if !maps.Equal(withCache.Eclasses, want) {
		t.Errorf("eclasses with cache = %v", withCache.Eclasses)
	}
	namesOnly := map[string]string{"multilib": "", "toolchain-funcs": ""}
	cases := []struct {
		name  string
		m     *xpak.Metadata
		cache *MD5Cache
	}{
		{"no cache", base, nil},
		{"no md5-cache dir", base, LoadMD5Cache(t.TempDir())},
		{"other repository", withKey(base, "repository", []byte("gentoo\n")), cache},
		{"stale ebuild", withKey(base, "consumer-1.0.ebuild", []byte("EAPI=8\n")), cache},
		{"INHERITED disagrees", withKey(base, "INHERITED", []byte("multilib toolchain-funcs flag-o-matic\n")), cache},
	}
	for _, c := range cases {
		d := mustDescriptor(t, c.m, c.cache)
		wantNames := namesOnly
		if c.name == "INHERITED disagrees" {
			wantNames = map[string]string{"multilib": "", "toolchain-funcs": "", "flag-o-matic": ""}
		}
		if !maps.Equal(d.Eclasses, wantNames) {
			t.Errorf("%s: eclasses %v, want names only", c.name, d.Eclasses)
		}
	}
	if mustDescriptor(t, base, nil).BuildKey() == withCache.BuildKey() {
		t.Error("eclass digests do not reach the build key")
	}
	// Without INHERITED the cache's record is used as is.
	if d := mustDescriptor(t, loadFixture(t, consumerGPKG), cache); !maps.Equal(d.Eclasses, want) {
		t.Errorf("no INHERITED: %v", d.Eclasses)
	}
	// A hello record whose _md5_ is for another ebuild is ignored.
	if d := mustDescriptor(t, loadFixture(t, helloGPKG1), cache); len(d.Eclasses) != 0 {
		t.Errorf("stale hello record used: %v", d.Eclasses)
	}
	// A malformed record is an error, not silently names-only.
	if _, err := DescriptorFromMetadata(loadFixture(t, libfooGPKG), cache); !errors.Is(err, ErrBadMD5Cache) {
		t.Errorf("malformed record: %v", err)
	}
}

func TestMD5CacheEntryRejectsTraversal(t *testing.T) {
	cache := LoadMD5Cache(testRepo)
	for _, cpv := range []string{"../profiles/repo_name", "app-misc/..", "app-misc", "/etc/passwd", "app-misc/consumer-1.0/x"} {
		if _, ok, err := cache.Entry(cpv); ok || err != nil {
			t.Errorf("Entry(%q) = %v, %v", cpv, ok, err)
		}
	}
	m := withKey(loadFixture(t, consumerGPKG), "CATEGORY", []byte("../../etc\n"))
	if _, err := DescriptorFromMetadata(m, cache); !errors.Is(err, ErrIncompleteMetadata) {
		t.Errorf("CATEGORY ../../etc: %v", err)
	}
	var nilCache *MD5Cache
	if _, ok, err := nilCache.Entry("app-misc/consumer-1.0"); ok || err != nil {
		t.Error("nil cache has entries")
	}
	if abs, _ := filepath.Abs(testRepo); LoadMD5Cache(abs) == nil {
		t.Error("absolute repo path not loaded")
	}
}

func TestDescriptorIncompleteMetadata(t *testing.T) {
	base := loadFixture(t, helloGPKG1)
	for _, m := range []*xpak.Metadata{
		withKey(base, "CATEGORY", nil),
		withKey(base, "PF", nil),
		withKey(base, "CHOST", nil),
		withKey(base, "hello-1.0.ebuild", nil),
		withKey(base, "IUSE_EFFECTIVE", nil),
	} {
		if _, err := DescriptorFromMetadata(m, nil); !errors.Is(err, ErrIncompleteMetadata) {
			t.Errorf("error %v, want ErrIncompleteMetadata", err)
		}
	}
	if _, err := DescriptorFromMetadata(withKey(base, "REQUIRES", []byte("libc.so.6\n")), nil); !errors.Is(err, ErrBadRequires) {
		t.Errorf("REQUIRES without ABI: %v", err)
	}
	if _, err := DescriptorFromMetadata(nil, nil); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("nil: %v", err)
	}
}

func TestSlotOperatorDeps(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"dev-libs/libfoo:0/2.1=", []string{"dev-libs/libfoo:0/2.1="}},
		{"dev-libs/libfoo:0/2.1= dev-libs/libfoo:0/2.1=", []string{"dev-libs/libfoo:0/2.1="}},
		{"|| ( a/b:1/2= ( c/d:0= ) ) !x/y:0= !!x/z:1= foo? ( e/f:2/3=[abi_x86_32(-)] ) g/h:= i/j:1 i/k:* >=k/l-2:3/4= m/n::gentoo o/p",
			[]string{">=k/l-2:3/4=", "a/b:1/2=", "c/d:0=", "e/f:2/3=[abi_x86_32(-)]", "g/h:="}},
	}
	for _, c := range cases {
		if got := SlotOperatorDeps(c.in); !slices.Equal(got, c.want) {
			t.Errorf("SlotOperatorDeps(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseRequires(t *testing.T) {
	got, err := ParseRequires("x86_64: libm.so.6 libc.so.6 x86_32: libc.so.6 x86_64: libz.so.1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"x86_64": {"libc.so.6", "libm.so.6", "libz.so.1"}, "x86_32": {"libc.so.6"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"libc.so.6", ": libc.so.6"} {
		if _, err := ParseRequires(bad); !errors.Is(err, ErrBadRequires) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if got, err := ParseRequires(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v %v", got, err)
	}
}

func TestDescriptorJSON(t *testing.T) {
	d := mustDescriptor(t, withKey(loadFixture(t, consumerGPKG), "REQUIRES", []byte("x86_64: libfoo.so.2\n")), LoadMD5Cache(testRepo))
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{`"cpv":`, `"ebuild_digest":`, `"eclasses":`, `"use":`, `"chost":`, `"cflags":`, `"cxxflags":`, `"fflags":`, `"fcflags":`, `"ldflags":`, `"slot_deps":`, `"requires":`} {
		if !strings.Contains(string(b), tag) {
			t.Errorf("JSON lacks %s: %s", tag, b)
		}
	}
	var back Descriptor
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.BuildKey() != d.BuildKey() || back.VariantKey() != d.VariantKey() || !reflect.DeepEqual(back, d) {
		t.Errorf("JSON round trip changed the descriptor: %+v", back)
	}
}

func FuzzMD5CacheEntry(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testRepo, "metadata", "md5-cache", "*", "*"))
	if len(files) == 0 {
		f.Fatal("no md5-cache seeds")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseMD5CacheEntry(b)
		if err != nil {
			if !errors.Is(err, ErrBadMD5Cache) {
				t.Fatalf("error kind: %v", err)
			}
			return
		}
		if !isLowerHex(e.EbuildMD5, 32) {
			t.Fatalf("accepted _md5_ %q", e.EbuildMD5)
		}
		for n, d := range e.Eclasses {
			if !validPkgComponent(n) || !isLowerHex(d, 32) {
				t.Fatalf("accepted eclass %q %q", n, d)
			}
		}
	})
}

func FuzzDependencyParsers(f *testing.F) {
	f.Add("|| ( a/b:1/2= ( c/d:0= ) ) !x/y:0= foo? ( e/f:2/3=[abi_x86_32(-)] )", "x86_64: libc.so.6 x86_32: libc.so.6")
	f.Fuzz(func(t *testing.T, dep, req string) {
		for _, a := range SlotOperatorDeps(dep) {
			if !strings.Contains(a, ":") || strings.HasPrefix(a, "!") {
				t.Fatalf("extracted %q", a)
			}
		}
		r, err := ParseRequires(req)
		if err != nil {
			return
		}
		d := Descriptor{CPV: "a/b-1", Requires: r, SlotDeps: SlotOperatorDeps(dep)}
		again := d
		again.SlotDeps = slices.Clone(d.SlotDeps)
		slices.Reverse(again.SlotDeps)
		if d.BuildKey() != again.BuildKey() {
			t.Fatal("slot dep order changed the build key")
		}
	})
}
