package jobtest

import "github.com/gentoo-p2p/gentoo-p2pd/fit"

// GlibcProvides is what an installed glibc provides, as portage's vdb
// records it (PROVIDES): every soname the fixtures need of the system.
const GlibcProvides = "x86_64: ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2"

// Machine is a machine every fixture fits: glibc installed (2.36, the
// sonames above), an x86-64-v2 CPU, nothing else.
func Machine() *fit.Machine {
	return &fit.Machine{
		Installed: []fit.Installed{{CPV: "sys-libs/glibc-2.36-r7", Slot: "2.2", SubSlot: "2.2"}},
		Provides:  map[string][]string{"x86_64": {"ld-linux-x86-64.so.2", "libc.so.6", "libdl.so.2", "libm.so.6", "libpthread.so.0"}},
		Glibc:     "GLIBC_2.36",
		CPUFlags:  []string{"cx16", "lahf_lm", "popcnt", "sse3", "sse4_1", "sse4_2", "ssse3"},
		X86Level:  2,
	}
}
