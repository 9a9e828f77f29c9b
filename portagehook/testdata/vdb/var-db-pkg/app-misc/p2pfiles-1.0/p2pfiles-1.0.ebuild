EAPI="8"
SLOT="0"
KEYWORDS="amd64"
DEPEND=""
IUSE=""

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
