# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-group

DESCRIPTION="A group for net-p2p/gentoo-p2pd"
# -1: the first free GID. An ebuild in ::gentoo would need an ID assigned in
# the uid-gid.txt registry; an overlay may take any free one.
ACCT_GROUP_ID=-1
