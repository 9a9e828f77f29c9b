# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit go-module systemd

DESCRIPTION="Peer-to-peer sharing of Gentoo binary packages, trusted by independent reproducers"
HOMEPAGE="https://github.com/gentoo-p2p/gentoo-p2pd"

if [[ ${PV} == 9999 ]]; then
	inherit git-r3
	EGIT_REPO_URI="https://github.com/gentoo-p2p/gentoo-p2pd.git"
else
	SRC_URI="https://github.com/gentoo-p2p/gentoo-p2pd/archive/v${PV}.tar.gz -> ${P}.tar.gz
		https://github.com/gentoo-p2p/gentoo-p2pd/releases/download/v${PV}/${P}-deps.tar.xz"
	KEYWORDS="~amd64 ~arm64"
fi

LICENSE="GPL-2"
# Dependency licenses (go-module: keep in sync with go.mod).
LICENSE+=" Apache-2.0 BSD BSD-2 ISC MIT MPL-2.0"
SLOT="0"
IUSE="systemd"

RDEPEND="
	acct-user/gentoo-p2pd
	acct-group/gentoo-p2pd
	app-crypt/gnupg
"
BDEPEND=">=dev-lang/go-1.26"

src_unpack() {
	if [[ ${PV} == 9999 ]]; then
		git-r3_src_unpack
		go-module_live_vendor
	else
		go-module_src_unpack
	fi
}

src_compile() {
	ego build -trimpath -ldflags "-X main.version=${PV}" -o gentoo-p2pd ./cmd/gentoo-p2pd
}

src_test() {
	ego test -short ./...
}

src_install() {
	emake DESTDIR="${D}" PREFIX="${EPREFIX}/usr" BINARY=gentoo-p2pd install-files
	newinitd packaging/openrc/gentoo-p2pd.initd gentoo-p2pd
	newconfd packaging/openrc/gentoo-p2pd.confd gentoo-p2pd
	systemd_dounit packaging/systemd/system/gentoo-p2pd.service
	systemd_douserunit packaging/systemd/user/gentoo-p2pd.service
	keepdir /etc/gentoo-p2pd
}

pkg_postinst() {
	elog "Start one daemon per user:   systemctl --user enable --now gentoo-p2pd"
	elog "or the system service:       rc-update add gentoo-p2pd default"
	elog "Then, as root, connect portage to it: gentoo-p2pd setup-portage"
	elog "and add FEATURES=\"buildpkg getbinpkg binary_sharing\" to make.conf."
}
