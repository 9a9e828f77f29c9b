package identity

import (
	"strings"
	"testing"
)

func TestCheckBuildable(t *testing.T) {
	good := Descriptor{CPV: "sys-libs/libxcrypt-4.4.33-r1", USE: []string{"abi_x86_64", "python_targets_python3_12", "c++", "l10n_en-GB", "foo@bar"}}
	if err := good.CheckBuildable(); err != nil {
		t.Fatalf("a real descriptor: %v", err)
	}
	if err := (Descriptor{CPV: "app-arch/xz-utils-5.4.1"}).CheckBuildable(); err != nil {
		t.Fatalf("a package name with a dash: %v", err)
	}
	for _, bad := range []Descriptor{
		{CPV: "libxcrypt", USE: nil},
		{CPV: "sys-libs/libxcrypt-4.4.33 ; rm -rf /"},
		{CPV: "sys-libs/libxcrypt-4.4.33\n=app-misc/evil-1"},
		{CPV: "../../etc/passwd-1"},
		{CPV: "sys-libs/libxcrypt-4.4.33", USE: []string{"system\nfoo bar"}},
		{CPV: "sys-libs/libxcrypt-4.4.33", USE: []string{"*"}},
		{CPV: "sys-libs/libxcrypt-4.4.33", USE: []string{"-static"}},
		{CPV: "sys-libs/libxcrypt-4.4.33", USE: []string{"\x1b[2J"}},
		{CPV: "sys-libs/libxcrypt-4.4.33", USE: strings.Fields(strings.Repeat("a ", MaxUSEFlags+1))},
	} {
		if err := bad.CheckBuildable(); err == nil {
			t.Errorf("%q USE %q: accepted", bad.CPV, bad.USE)
		}
	}
}
