package portagehook_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// An installed package's vdb entry yields the descriptor of the binpkg it
// was installed from, for every real fixture format.
func TestInstalledMetadataIsTheBinpkgs(t *testing.T) {
	for _, set := range []string{fixtures.ReproGPKG1, fixtures.ReproXPAK1} {
		dir := t.TempDir()
		files, err := fixtures.WritePKGDIR(set, filepath.Join(dir, "pkgdir"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			vdb := filepath.Join(dir, "vdb")
			cpv := jobtest.WriteVDB(t, vdb, f)
			pkg, err := xpak.ReadFile(f, xpak.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			want, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err := portagehook.InstalledMetadata(vdb, cpv, xpak.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if m.Has("CONTENTS") {
				t.Error("CONTENTS read as metadata")
			}
			got, err := identity.DescriptorFromMetadata(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) || got.VariantKey() != want.VariantKey() {
				t.Fatalf("%s: vdb descriptor %+v, binpkg's %+v", f, got, want)
			}
		}
	}
}

func TestInstalledMetadataRefuses(t *testing.T) {
	vdb := t.TempDir()
	if _, err := portagehook.InstalledMetadata(vdb, "app-misc/hello-1.0", xpak.DefaultLimits()); !errors.Is(err, portagehook.ErrNotInstalled) {
		t.Fatalf("not installed: %v", err)
	}
	for _, cpv := range []string{"../etc/passwd-1", "app-misc/../../x-1", "hello-1.0", "app-misc/hello", "./x-1"} {
		if _, err := portagehook.InstalledMetadata(vdb, cpv, xpak.DefaultLimits()); err == nil || errors.Is(err, portagehook.ErrNotInstalled) {
			t.Errorf("%q: %v, want refused as not a cpv", cpv, err)
		}
	}
	dir := filepath.Join(vdb, "app-misc", "big-1.0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "DESCRIPTION"), make([]byte, 2048), 0o644); err != nil {
		t.Fatal(err)
	}
	lim := xpak.DefaultLimits()
	lim.MaxMetadataValue = 1024
	if _, err := portagehook.InstalledMetadata(vdb, "app-misc/big-1.0", lim); err == nil {
		t.Fatal("a value over the limit was read")
	}
}

// The vdb entry stock portage wrote when it installed a binpkg yields the
// binpkg's own descriptor (testdata/vdb/README.md).
func TestInstalledMetadataOfARealPortageVDB(t *testing.T) {
	m, err := portagehook.InstalledMetadata("testdata/vdb/var-db-pkg", "app-misc/p2pfiles-1.0", xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if m.Has("CONTENTS") || m.Has("COUNTER") {
		t.Error("portage's bookkeeping read as metadata")
	}
	got, err := identity.DescriptorFromMetadata(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := xpak.ReadFile("testdata/vdb/p2pfiles-1.0-1315823140.gpkg.tar", xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || got.VariantKey() != want.VariantKey() || got.BuildKey() != want.BuildKey() {
		t.Fatalf("vdb descriptor\n%+v\nbinpkg's\n%+v", got, want)
	}
}
