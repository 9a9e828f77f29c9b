package identity

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	dbzip2 "github.com/dsnet/compress/bzip2"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// TestParsedAgrees: deriving everything from one parse gives exactly what
// the standalone functions give, for every fixture and for a package whose
// environment.bz2 is not bzip2 or does not parse (the same errors).
func TestParsedAgrees(t *testing.T) {
	type result struct {
		digest    [32]byte
		digestErr string
		desc      Descriptor
		descErr   string
		served    xpak.ServedSizes
		servedErr string
	}
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	standalone := func(pkg *xpak.Package) (r result) {
		var err error
		r.digest, err = MetadataDigest(pkg.Metadata)
		r.digestErr = errText(err)
		r.desc, err = DescriptorFromMetadata(pkg.Metadata, nil)
		r.descErr = errText(err)
		r.served, err = ServedSizes(pkg)
		r.servedErr = errText(err)
		return r
	}
	parsed := func(pkg *xpak.Package) (r result) {
		p := Parse(pkg.Metadata)
		var err error
		// Another order than standalone's: the parse is lazy and shared.
		r.served, err = p.ServedSizes(pkg)
		r.servedErr = errText(err)
		r.desc, err = p.Descriptor(nil)
		r.descErr = errText(err)
		r.digest, err = p.MetadataDigest()
		r.digestErr = errText(err)
		return r
	}
	var pkgs []*xpak.Package
	for _, rel := range allFixtures(t) {
		pkg, err := xpak.ReadFile(filepath.Join(fixtures, rel), xpak.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, pkg)
	}
	// Broken environments: not bzip2, and bzip2 of text that is no
	// `declare -p` output. FFLAGS is dropped so the descriptor reads the
	// environment too.
	for _, env := range [][]byte{[]byte("not bzip2"), bz(t, "rm -rf /\n")} {
		m := xpak.NewMetadata(nil)
		for _, k := range pkgs[0].Metadata.Keys() {
			v, _ := pkgs[0].Metadata.Raw(k)
			m.Set(k, v)
		}
		m.Delete("FFLAGS")
		m.Set(environmentKey, env)
		cp := *pkgs[0]
		cp.Metadata = m
		pkgs = append(pkgs, &cp)
	}
	for i, pkg := range pkgs {
		want, got := standalone(pkg), parsed(pkg)
		if !reflect.DeepEqual(want, got) {
			t.Errorf("package %d (%s): one parse gives\n%+v\nstandalone\n%+v", i, pkg.Path, got, want)
		}
		if i < len(pkgs)-2 {
			// environment.bz2 as xpak decoded it gives the same.
			var env bytes.Buffer
			if _, err := xpak.ReadFileWith(pkg.Path, xpak.DefaultLimits(), xpak.Taps{Environment: &env}); err != nil {
				t.Fatal(err)
			}
			decoded := func(pkg *xpak.Package) (r result) {
				p := ParseDecoded(pkg.Metadata, env.Bytes())
				var err error
				r.served, err = p.ServedSizes(pkg)
				r.servedErr = errText(err)
				r.desc, err = p.Descriptor(nil)
				r.descErr = errText(err)
				r.digest, err = p.MetadataDigest()
				r.digestErr = errText(err)
				return r
			}
			if d := decoded(pkg); !reflect.DeepEqual(want, d) {
				t.Errorf("package %d (%s): ParseDecoded gives\n%+v\nstandalone\n%+v", i, pkg.Path, d, want)
			}
		}
		if i >= len(pkgs)-2 && (got.digestErr == "" || got.descErr == "" || got.servedErr == "") {
			t.Errorf("package %d: a broken environment.bz2 was accepted: %+v", i, got)
		}
	}
	if _, err := Parse(pkgs[0].Metadata).ServedSizes(pkgs[1]); err == nil {
		t.Error("ServedSizes of another package's metadata was accepted")
	}
	huge := make([]byte, MaxEnvironmentSize+1)
	if _, err := ParseDecoded(pkgs[0].Metadata, huge).MetadataDigest(); !errors.Is(err, ErrEnvironmentTooLarge) {
		t.Errorf("a decoded environment beyond the bound: %v", err)
	}
}

// TestPooledEnvironmentWriter: a recycled bzip2 writer gives the bytes a
// new one gives (the served size is predicted from them), whatever it
// compressed before.
func TestPooledEnvironmentWriter(t *testing.T) {
	texts := [][]byte{[]byte(strings.Repeat("declare -- A=\"1\"\n", 5000)), []byte("declare -- B=\"2\"\n"), {}}
	fresh := func(text []byte) []byte {
		var buf bytes.Buffer
		w, err := dbzip2.NewWriter(&buf, &dbzip2.WriterConfig{Level: dbzip2.BestCompression})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(text)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for range 3 {
		for _, text := range texts {
			got, err := compressEnvironment(text)
			if err != nil || !bytes.Equal(got, fresh(text)) {
				t.Fatalf("%d bytes of text: pooled writer gives other bytes than a new one (%v)", len(text), err)
			}
		}
	}
}
