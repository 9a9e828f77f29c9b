package daemon

import (
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// localPlatform is the platform whose builds this machine's portage can use: the same
// CHOST and flags as its own builds would have.
func localPlatform(p config.PortageConfig) string {
	d := identity.Descriptor{
		CHOST: p.CHOST, CFLAGS: p.CFLAGS, CXXFLAGS: p.CXXFLAGS,
		FFLAGS: p.FFLAGS, FCFLAGS: p.FCFLAGS, LDFLAGS: p.LDFLAGS,
	}
	return d.Platform()
}
