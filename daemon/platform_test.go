package daemon

import (
	"errors"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// The local platform hashes resolved flags: -march=native on two CPUs
// makes two platforms, and the same platform as a local build's
// descriptor resolved with the same compiler.
func TestResolvedPlatform(t *testing.T) {
	cpu := func(march string) func(string) (string, error) {
		return func(string) (string, error) { return "-march=" + march + " -mtune=" + march, nil }
	}
	native := config.PortageConfig{CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -march=native", CXXFLAGS: "-O2 -march=native"}
	plain := config.PortageConfig{CHOST: "x86_64-pc-linux-gnu", CFLAGS: "-O2 -pipe", CXXFLAGS: "-O2 -pipe"}

	haswell, err := resolvedPlatform(native, cpu("haswell"))
	if err != nil {
		t.Fatal(err)
	}
	znver3, err := resolvedPlatform(native, cpu("znver3"))
	if err != nil {
		t.Fatal(err)
	}
	if haswell == znver3 {
		t.Errorf("-march=native on two CPUs: one platform %s", haswell)
	}
	build, err := identity.Descriptor{CHOST: native.CHOST, CFLAGS: native.CFLAGS, CXXFLAGS: native.CXXFLAGS}.ResolveNative(cpu("haswell"))
	if err != nil {
		t.Fatal(err)
	}
	if build.Platform() != haswell {
		t.Errorf("local build's platform %s, local platform %s", build.Platform(), haswell)
	}

	// Without native flags the compiler is never asked.
	fail := func(string) (string, error) { return "", errors.New("no gcc") }
	got, err := resolvedPlatform(plain, fail)
	want := identity.Descriptor{CHOST: plain.CHOST, CFLAGS: plain.CFLAGS, CXXFLAGS: plain.CXXFLAGS}.Platform()
	if err != nil || got != want {
		t.Errorf("plain flags: %s, %v; want %s", got, err, want)
	}
	// A native flag nobody can resolve is an error, and the platform it
	// falls back to is none a resolved machine uses.
	got, err = resolvedPlatform(native, fail)
	if !errors.Is(err, identity.ErrNativeUnresolved) || got == haswell || got == znver3 {
		t.Errorf("unresolvable: %s, %v", got, err)
	}
}
