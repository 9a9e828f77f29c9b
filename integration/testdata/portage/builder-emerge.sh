#!/bin/bash
# The emerge command of packaging/gentoo-p2pd-build in the builder's
# portage test (GENTOO_P2PD_BUILD_EMERGE): the harness's portage checkout,
# run as the harness's pns.sh runs it, on the config root the script made.
#
# usage: builder-emerge.sh HARNESS ORACLE_WORK EMERGE-ARGS...
# env:   ROOT, PORTAGE_CONFIGROOT, HOME (from gentoo-p2pd-build)
#
# It runs inside gentoo-p2pd-build's private mount namespace. With
# ROOT != / portage also reads /etc/portage as the configuration of /,
# which a host without Gentoo lacks: /etc becomes an overlay (upper layer
# in the job's scratch, HOME) holding the config root's profile, make.conf
# and repos.conf, as pns.sh does.
set -euo pipefail
H=$1 ORACLE_WORK=$2
shift 2
export ORACLE_WORK
. "$H/lib/common.sh"
mkdir -p "$HOME/hostetc/upper" "$HOME/hostetc/wd"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$HOME/hostetc/upper,workdir=$HOME/hostetc/wd" /etc
mkdir -p /etc/portage
ln -sfn "$(readlink "$PORTAGE_CONFIGROOT/etc/portage/make.profile")" /etc/portage/make.profile
ln -sf "$PORTAGE_CONFIGROOT/etc/portage/make.conf" /etc/portage/make.conf
ln -sf "$PORTAGE_CONFIGROOT/etc/portage/repos.conf" /etc/portage/repos.conf
# The playground's repositories only (portage's defaults name gentoo's).
PORTAGE_REPOSITORIES=$(cat "$PORTAGE_CONFIGROOT/etc/portage/repos.conf")
export PORTAGE_REPOSITORIES LANG=C.UTF-8 PORTAGE_OVERRIDE_EPREFIX="" PYTHONPATH="$PORTAGE_SRC/lib" PYTHONDONTWRITEBYTECODE=1
PORTAGE_PYTHON=$("$ORACLE_PYTHON" -c "import sys; print(sys.executable)")
PORTAGE_USERNAME=$(id -un) PORTAGE_GRPNAME=$(id -gn)
export PORTAGE_PYTHON PORTAGE_USERNAME PORTAGE_GRPNAME
export PATH="$PORTAGE_SRC/bin:$ORACLE_BIN:$PATH"
# Nothing of the harness goes into environment.bz2.
export -n ORACLE_DIR ORACLE_WORK PORTAGE_SRC ORACLE_GNUPG ORACLE_BIN ORACLE_PYTHON PORTAGE_COMMIT
exec "$PORTAGE_PYTHON" -b "$PORTAGE_SRC/bin/emerge" "$@"
