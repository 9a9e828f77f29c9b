package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// localPlatform is the platform whose builds this machine's portage can use: the same
// CHOST and flags as its own builds would have, with -march=native and its
// kin resolved by this machine's gcc (see resolvedPlatform).
func localPlatform(p config.PortageConfig) string {
	platform, _ := resolvedPlatform(p, identity.GCCNative(context.Background(), identity.GCCFor(p.CHOST)))
	return platform
}

// platformSettings are the values localPlatform hashes, native flags
// resolved as there: what `find` and `search` compare with another
// platform's to say which setting differs.
func platformSettings(p config.PortageConfig, expand func(flag string) (string, error)) map[string]string {
	d := identity.Descriptor{
		CHOST: p.CHOST, CFLAGS: p.CFLAGS, CXXFLAGS: p.CXXFLAGS,
		FFLAGS: p.FFLAGS, FCFLAGS: p.FCFLAGS, LDFLAGS: p.LDFLAGS,
	}
	if r, err := d.ResolveNative(expand); err == nil {
		d = r
	}
	return map[string]string{"CHOST": d.CHOST, "CFLAGS": d.CFLAGS, "CXXFLAGS": d.CXXFLAGS,
		"FFLAGS": d.FFLAGS, "FCFLAGS": d.FCFLAGS, "LDFLAGS": d.LDFLAGS}
}

// resolvedPlatform is the platform of p's flags with every native flag
// replaced by what expand says it means on this CPU, as the descriptors of
// this machine's own builds are (identity.Descriptor.ResolveNative): two
// machines with -march=native on different CPUs must not meet on one
// platform, since their builds' code differs. When a flag cannot be
// resolved (no gcc) the error is returned with the platform of the
// unresolved flags, on which no peer publishes (votes refuses descriptors
// that say native), so nothing built for another CPU is listed.
func resolvedPlatform(p config.PortageConfig, expand func(flag string) (string, error)) (string, error) {
	d := identity.Descriptor{
		CHOST: p.CHOST, CFLAGS: p.CFLAGS, CXXFLAGS: p.CXXFLAGS,
		FFLAGS: p.FFLAGS, FCFLAGS: p.FCFLAGS, LDFLAGS: p.LDFLAGS,
	}
	r, err := d.ResolveNative(expand)
	if err != nil {
		return d.Platform(), err
	}
	return r.Platform(), nil
}

// machineCache keeps the last fit.Machine a few seconds: the index is
// read in bursts, and a package portage just installed shows within that.
type machineCache struct {
	mu   sync.Mutex
	m    *fit.Machine
	read time.Time
}

// machineTTL is how long a loaded machine is reused.
const machineTTL = 5 * time.Second

// machine is this machine as portage installs onto it: the vdb's sonames
// and slots, the root's glibc, the CPU, and gcc for named -march values.
func (d *Daemon) machine() (*fit.Machine, error) {
	c := &d.machines
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m != nil && time.Since(c.read) < machineTTL {
		return c.m, nil
	}
	m, err := fit.LoadMachine("/", d.vdb)
	if err != nil {
		return nil, err
	}
	m.March = fit.GCCMarch(context.Background(), identity.GCCFor(d.cfg.Portage.CHOST))
	c.m, c.read = m, time.Now()
	return m, nil
}
