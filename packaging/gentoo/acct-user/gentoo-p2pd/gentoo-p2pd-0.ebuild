# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-user

DESCRIPTION="A user for net-p2p/gentoo-p2pd"
# -1: the first free UID (see acct-group/gentoo-p2pd).
ACCT_USER_ID=-1
ACCT_USER_HOME=/var/lib/gentoo-p2pd
ACCT_USER_HOME_PERMS=0700
ACCT_USER_GROUPS=( gentoo-p2pd )

acct-user_add_deps
