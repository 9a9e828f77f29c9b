# Ebuilds the end-to-end portage tests build with real portage at test time
# (ResolverPlayground format, loaded by the harness's
# setup_playground.py --extra-ebuilds <this file>). Plain EAPI 8, no
# eclasses (the playground has none), no distfiles: every source is written
# by the ebuild itself. integration/e2e_fixtures_test.go keys its build
# cache by this file's content.

# Files a re-packed GPKG and portage's merge must carry exactly: a setuid
# and a setgid program, hardlinks (of an ELF program, which estrip handles
# by inode, and of a data file), and paths and a hardlink target longer
# than tar's 100-byte name field (GNU long-name/long-link records or PAX
# headers).
P2PFILES = r"""
DESCRIPTION="hardlinks, setuid and setgid programs, very long paths"
HOMEPAGE="https://example.invalid/p2pfiles"
LICENSE="MIT"
S="${WORKDIR}"

LONGDIR=/usr/share/p2pfiles/a-directory-name-long-enough-that-tar-needs-long-name-records/and-a-second-level-directory-to-make-sure-of-it

src_compile() {
	cat > p2pfiles.c <<-'EOC' || die
	#include <stdio.h>
	int main(void) { puts("p2pfiles"); return 0; }
	EOC
	${CC:-gcc} ${CFLAGS} ${LDFLAGS} -o p2pfiles p2pfiles.c || die
}

src_install() {
	dobin p2pfiles
	ln "${ED}"/usr/bin/p2pfiles "${ED}"/usr/bin/p2pfiles-hardlink || die
	exeinto /usr/libexec/p2pfiles
	newexe p2pfiles p2pfiles-setgid
	fperms 4711 /usr/bin/p2pfiles
	fperms 2755 /usr/libexec/p2pfiles/p2pfiles-setgid
	insinto /usr/share/p2pfiles
	newins - data.txt <<<"one inode, two names"
	ln "${ED}"/usr/share/p2pfiles/data.txt "${ED}"/usr/share/p2pfiles/data-hardlink.txt || die
	insinto "${LONGDIR}"
	newins - file-at-the-end-of-a-path-longer-than-one-hundred-bytes.txt <<<"long path"
	ln "${ED}${LONGDIR}"/file-at-the-end-of-a-path-longer-than-one-hundred-bytes.txt \
		"${ED}${LONGDIR}"/hardlink-with-a-long-target-at-the-end-of-the-same-long-path.txt || die
	dosym "${LONGDIR}"/file-at-the-end-of-a-path-longer-than-one-hundred-bytes.txt /usr/share/p2pfiles/symlink-to-the-long-path
}
"""


# A shared library with a subslot: SLOT 0/<soname version>, like
# dev-libs/openssl. Version 1 provides libp2plib.so.1, version 2
# libp2plib.so.2.
def p2plib(soversion):
    return r"""
DESCRIPTION="shared library with a subslot"
HOMEPAGE="https://example.invalid/p2plib"
LICENSE="MIT"
S="${WORKDIR}"

src_compile() {
	printf 'int p2plib_answer(void) { return %(v)s; }\n' > p2plib.c || die
	printf 'int p2plib_answer(void);\n' > p2plib.h || die
	${CC:-gcc} ${CFLAGS} -fPIC -shared -Wl,-soname,libp2plib.so.%(v)s ${LDFLAGS} -o libp2plib.so.%(v)s.0 p2plib.c || die
}

src_install() {
	dolib.so libp2plib.so.%(v)s.0
	dosym libp2plib.so.%(v)s.0 /usr/$(get_libdir)/libp2plib.so.%(v)s
	dosym libp2plib.so.%(v)s /usr/$(get_libdir)/libp2plib.so
	doheader p2plib.h
}
""" % {"v": soversion}


# Links libp2plib: the binpkg's RDEPEND records the resolved slot operator
# (dev-libs/p2plib:0/1=) and its REQUIRES names libp2plib.so.1.
P2PUSE = r"""
DESCRIPTION="links dev-libs/p2plib through a := dependency"
HOMEPAGE="https://example.invalid/p2puse"
LICENSE="MIT"
S="${WORKDIR}"

src_compile() {
	cat > p2puse.c <<-'EOC' || die
	#include <stdio.h>
	#include <p2plib.h>
	int main(void) { printf("%d\n", p2plib_answer()); return 0; }
	EOC
	${CC:-gcc} ${CFLAGS} -I"${ESYSROOT}"/usr/include ${LDFLAGS} \
		-L"${ESYSROOT}"/usr/$(get_libdir) -o p2puse p2puse.c -lp2plib || die
}

src_install() {
	dobin p2puse
}
"""

# A program that needs libp2pghost.so.1, which no package installs: its
# REQUIRES names a soname nothing provides.
P2PORPHAN = r"""
DESCRIPTION="needs a shared library no package provides"
HOMEPAGE="https://example.invalid/p2porphan"
LICENSE="MIT"
S="${WORKDIR}"

src_compile() {
	printf 'int p2p_ghost(void) { return 0; }\n' > ghost.c || die
	${CC:-gcc} ${CFLAGS} -fPIC -shared -Wl,-soname,libp2pghost.so.1 ${LDFLAGS} -o libp2pghost.so.1 ghost.c || die
	printf 'int p2p_ghost(void);\nint main(void) { return p2p_ghost(); }\n' > orphan.c || die
	${CC:-gcc} ${CFLAGS} ${LDFLAGS} -o p2porphan orphan.c ./libp2pghost.so.1 || die
}

src_install() {
	dobin p2porphan
}
"""

# A program that needs symbol version GLIBC_2.99 of libc.so.6, which no
# glibc has yet. It is linked against a stand-in libc.so.6 that defines
# that version besides the two every program needs, so its version needs
# read libc.so.6: GLIBC_2.34 GLIBC_2.2.5 GLIBC_2.99, and the dynamic
# loader refuses to start it ("version `GLIBC_2.99' not found").
P2PFUTURE = r"""
DESCRIPTION="needs a glibc symbol version newer than any glibc"
HOMEPAGE="https://example.invalid/p2pfuture"
LICENSE="MIT"
S="${WORKDIR}"

src_compile() {
	mkdir stub || die
	cat > future.map <<-'EOM' || die
	GLIBC_2.2.5 { global: __cxa_finalize; local: *; };
	GLIBC_2.34 { global: __libc_start_main; } GLIBC_2.2.5;
	GLIBC_2.99 { global: p2p_future; } GLIBC_2.34;
	EOM
	cat > future.c <<-'EOC' || die
	void __cxa_finalize(void *d) { (void)d; }
	int __libc_start_main(void) { return 0; }
	int p2p_future(void) { return 0; }
	EOC
	${CC:-gcc} -fPIC -shared -nostdlib -Wl,-soname,libc.so.6 -Wl,--version-script=future.map -o stub/libc.so.6 future.c || die
	printf 'int p2p_future(void);\nint main(void) { return p2p_future(); }\n' > p2pfuture.c || die
	${CC:-gcc} ${CFLAGS} ${LDFLAGS} -o p2pfuture p2pfuture.c stub/libc.so.6 || die
}

src_install() {
	dobin p2pfuture
}
"""

# A program marked as needing x86-64-v4 (AVX-512) in its GNU property note
# (GNU_PROPERTY_X86_ISA_1_NEEDED), which glibc's loader checks.
P2PISA = r"""
DESCRIPTION="needs the x86-64-v4 ISA level"
HOMEPAGE="https://example.invalid/p2pisa"
LICENSE="MIT"
S="${WORKDIR}"

src_compile() {
	printf 'int main(void) { return 0; }\n' > p2pisa.c || die
	${CC:-gcc} ${CFLAGS} -march=x86-64-v4 ${LDFLAGS} -Wl,-z,x86-64-v4 -o p2pisa p2pisa.c || die
}

src_install() {
	dobin p2pisa
}
"""

# A program that compiles its build directory in, as real packages do
# (assert's __FILE__ names the source by the path it was compiled from,
# below WORKDIR): honest builders in different PORTAGE_TMPDIRs make
# different bytes, and say so in their attestations' build_dir.
P2PBUILDDIR = r"""
DESCRIPTION="compiles its build directory in"
HOMEPAGE="https://example.invalid/p2pbuilddir"
LICENSE="MIT"
S="${WORKDIR}"

src_compile() {
	cat > p2pbuilddir.c <<-'EOC' || die
	#include <assert.h>
	int main(int argc, char **argv) { (void)argv; assert(argc > 0); return 0; }
	EOC
	${CC:-gcc} ${CFLAGS} ${LDFLAGS} -o p2pbuilddir "${S}"/p2pbuilddir.c || die
}

src_install() {
	dobin p2pbuilddir
}
"""

# The client's glibc: a Gentoo vdb always has sys-libs/glibc, whose
# PROVIDES names libc.so.6 and the loader. This stand-in installs the host's
# own libraries (prebuilt, not stripped again) so the client playground's
# vdb provides the sonames every compiled package requires.
GLIBC = r"""
DESCRIPTION="stand-in for the installed glibc: the host's own libraries"
HOMEPAGE="https://example.invalid/glibc"
LICENSE="LGPL-2.1+"
S="${WORKDIR}"
RESTRICT="strip"
QA_PREBUILT="*"

src_install() {
	local lib host
	host=$(dirname "$(${CC:-gcc} -print-file-name=libc.so.6)") || die
	insinto /usr/$(get_libdir)
	for lib in libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2 ld-linux-x86-64.so.2; do
		[[ -e ${host}/${lib} ]] || continue
		cp -L "${host}/${lib}" "${ED}/usr/$(get_libdir)/${lib}" || die
		chmod 0755 "${ED}/usr/$(get_libdir)/${lib}" || die
	done
}
"""

EBUILDS = {
    "app-misc/p2pfiles-1.0": {"EAPI": "8", "SLOT": "0", "KEYWORDS": "amd64", "MISC_CONTENT": P2PFILES},
    "dev-libs/p2plib-1": {"EAPI": "8", "SLOT": "0/1", "KEYWORDS": "amd64", "MISC_CONTENT": p2plib(1)},
    "dev-libs/p2plib-2": {"EAPI": "8", "SLOT": "0/2", "KEYWORDS": "amd64", "MISC_CONTENT": p2plib(2)},
    "app-misc/p2puse-1": {
        "EAPI": "8",
        "SLOT": "0",
        "KEYWORDS": "amd64",
        "RDEPEND": "dev-libs/p2plib:=",
        "DEPEND": "dev-libs/p2plib:=",
        "MISC_CONTENT": P2PUSE,
    },
    "app-misc/p2porphan-1": {"EAPI": "8", "SLOT": "0", "KEYWORDS": "amd64", "MISC_CONTENT": P2PORPHAN},
    "app-misc/p2pfuture-1": {"EAPI": "8", "SLOT": "0", "KEYWORDS": "amd64", "MISC_CONTENT": P2PFUTURE},
    "app-misc/p2pisa-1": {"EAPI": "8", "SLOT": "0", "KEYWORDS": "amd64", "MISC_CONTENT": P2PISA},
    "app-misc/p2pbuilddir-1": {"EAPI": "8", "SLOT": "0", "KEYWORDS": "amd64", "MISC_CONTENT": P2PBUILDDIR},
    "sys-libs/glibc-2.36": {"EAPI": "8", "SLOT": "2.2", "KEYWORDS": "amd64", "MISC_CONTENT": GLIBC},
}
