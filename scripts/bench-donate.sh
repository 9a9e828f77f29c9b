#!/bin/bash
# What donating costs beyond the build itself: one build of the real
# sys-libs/libxcrypt-4.4.33 with stock portage, alternately
#   A. plain emerge --buildpkgonly in a harness playground (the reference),
#   B. the shipped gentoo-p2pd-build (private config root, ROOT and PKGDIR
#      in a builder root, overlays in a private mount namespace) copying
#      the same playground's configuration,
# RUNS times each, printing wall, user and system seconds per run.
#
# usage (root): scripts/bench-donate.sh [RUNS]
# env: GENTOO_P2PD_PORTAGE_HARNESS (default ../shared/portage-harness),
#      ORACLE_WORK (default a fresh dir in /var/tmp)
set -euo pipefail
RUNS=${1:-3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
H=$(readlink -f "${GENTOO_P2PD_PORTAGE_HARNESS:-$REPO/../shared/portage-harness}")
REAL=$(readlink -f "$H/../real-packages")
export ORACLE_WORK=${ORACLE_WORK:-$(mktemp -d /var/tmp/gentoo-p2pd-bench-donate.XXXXXX)}
. "$H/lib/common.sh"
[[ -f $PORTAGE_SRC/lib/portage/__init__.py ]] || "$H/get_portage.sh" >/dev/null
oracle_ensure_gtar
export PATH="$ORACLE_BIN:$PATH" LC_ALL=C.UTF-8
"$H/gen_gpg_key.sh" >/dev/null 2>&1
# Not below /var/tmp: builds overlay it.
W=$(mktemp -d /tmp/gentoo-p2pd-bench-donate-run.XXXXXX)
trap 'rm -rf "$W"' EXIT
EP=$W/host
python3 "$H/setup_playground.py" "$EP" --extra-ebuilds "$REPO/integration/testdata/portage/ebuilds.py" \
	--extra-ebuilds "$REAL/ebuilds.py" >"$W/setup.log" 2>&1
mkdir -p "$EP/var/portage/distfiles"
cp "$REAL/distfiles/libxcrypt-4.4.33.tar.xz" "$EP/var/portage/distfiles/"
"$H/pns.sh" "$EP" ebuild "$EP/var/repositories/test_repo/sys-libs/libxcrypt/libxcrypt-4.4.33.ebuild" manifest >"$W/manifest.log" 2>&1
CPV=sys-libs/libxcrypt-4.4.33
TIMEFORMAT='%R %U %S'
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# run what wall_s user_s sys_s"
for i in $(seq "$RUNS"); do
	rm -rf "$W/a-pkgdir"
	t=$( { time PKGDIR="$W/a-pkgdir" MAKEOPTS=-j2 "$H/pns.sh" "$EP" emerge --buildpkgonly --oneshot --nodeps \
		--quiet-build=y --color=n "=$CPV" >"$W/a.log" 2>&1 || true; } 2>&1 )
	ls "$W"/a-pkgdir/sys-libs/libxcrypt* >/dev/null || { tail -n 30 "$W/a.log"; exit 1; }
	echo "$i emerge $t"
	root=$W/b-root
	rm -rf "$root"
	mkdir -p "$root/pkgdir" "$root/work"
	t=$( { time env GENTOO_P2PD_BUILD_CONFIG_FROM="$EP" \
		GENTOO_P2PD_BUILD_EMERGE="$REPO/integration/testdata/portage/builder-emerge.sh $H $ORACLE_WORK" \
		GENTOO_P2PD_BUILD_CPV=$CPV GENTOO_P2PD_BUILD_USE= GENTOO_P2PD_BUILD_JOBS=2 \
		GENTOO_P2PD_BUILD_ROOT="$root" GENTOO_P2PD_BUILD_PKGDIR="$root/pkgdir" GENTOO_P2PD_BUILD_WORK="$root/work" \
		"$REPO/packaging/gentoo-p2pd-build" >"$W/b.log" 2>&1 || true; } 2>&1 )
	ls "$root"/pkgdir/sys-libs/libxcrypt* >/dev/null || { tail -n 30 "$W/b.log"; exit 1; }
	echo "$i gentoo-p2pd-build $t"
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
