#!/bin/bash
# Builds the binpkgs of the end-to-end portage tests with real portage
# (integration/e2e_fixtures_test.go runs it and caches OUT under
# $ORACLE_WORK, keyed by the content of this directory).
#
# usage: build.sh OUT
# env:   GENTOO_P2PD_PORTAGE_HARNESS  ../shared/portage-harness
#        ORACLE_WORK                  the harness's scratch dir (portage checkout)
#        REAL_PACKAGES                ../shared/real-packages (libxcrypt)
#
# Two playgrounds at different paths, three independent builds of every
# shared package, one per future builder daemon:
#
#   OUT/pg-a/pkgdirs/gpkg-zstd   GPKG, zstd  (binpkg-multi-instance)
#   OUT/pg-a/pkgdirs/xpak-bzip2  XPAK, bzip2 (binpkg-multi-instance)
#   OUT/pg-b/pkgdirs/gpkg-xz     GPKG, xz    (binpkg-multi-instance)
#
# Shared (built three times): app-misc/p2pfiles, dev-libs/p2plib-1,
# app-misc/p2puse, sys-libs/libxcrypt and app-misc/hello twice (USE=-foo,
# the profile's default, and USE=foo). app-misc/p2pbuilddir is built once
# in each playground, into OUT/pg-{a,b}/pkgdirs/builddir (no builder of
# the end-to-end network holds it): it compiles the build directory in. Built once, in gpkg-zstd:
# app-misc/p2porphan, app-misc/p2pfuture and app-misc/p2pisa (the test
# copies them to the other builders: they only have to be allowed, and not
# fit) and app-misc/layout (held by one builder: below the threshold).
# Logs: OUT/logs/NAME.log; OUT/timings has the seconds each run took.
set -euo pipefail
OUT=$(readlink -f "$1")
HERE=$(dirname "$(readlink -f "$0")")
H=$(readlink -f "${GENTOO_P2PD_PORTAGE_HARNESS:?set GENTOO_P2PD_PORTAGE_HARNESS}")
REAL=$(readlink -f "${REAL_PACKAGES:?set REAL_PACKAGES}")
: "${ORACLE_WORK:?set ORACLE_WORK}"
export ORACLE_WORK
. "$H/lib/common.sh"
oracle_require_src
oracle_ensure_gtar
export PATH="$ORACLE_BIN:$PATH"
mkdir -p "$OUT/logs"
: > "$OUT/timings"
# The playground configures a signing key (unused: FEATURES=-binpkg-signing)
# and needs one to start.
"$H/gen_gpg_key.sh" > "$OUT/logs/gpg.log" 2>&1

SHARED="app-misc/p2pfiles =dev-libs/p2plib-1 app-misc/p2puse sys-libs/libxcrypt app-misc/hello"
ONCE="app-misc/p2porphan app-misc/p2pfuture app-misc/p2pisa app-misc/layout"

playground() { # dir
	local ep=$1
	python3 "$H/setup_playground.py" "$ep" --extra-ebuilds "$HERE/ebuilds.py" --extra-ebuilds "$REAL/ebuilds.py" \
		> "$OUT/logs/$(basename "$ep")-setup.log" 2>&1
	# libxcrypt's distfile, offline, and its Manifest.
	local dd
	dd=$(sed -n 's/^DISTDIR="\(.*\)"$/\1/p' "$ep/etc/portage/make.conf")
	mkdir -p "$dd"
	cp "$REAL/distfiles/libxcrypt-4.4.33.tar.xz" "$dd/"
	"$H/pns.sh" "$ep" ebuild "$ep/var/repositories/test_repo/sys-libs/libxcrypt/libxcrypt-4.4.33.ebuild" manifest \
		> "$OUT/logs/$(basename "$ep")-manifest.log" 2>&1
	# p2puse links p2plib-1 (subslot 0/1); version 2 exists for the
	# client's subslot test only.
	echo ">=dev-libs/p2plib-2" > "$ep/etc/portage/package.mask"
}

# emerge_in runs the checkout's emerge in playground $1 with SYSROOT=ROOT:
# pns.sh drops SYSROOT from the environment, and with SYSROOT=/ an EAPI 7+
# DEPEND (p2puse's on p2plib) is installed into the host's own /.
emerge_in() { # playground emerge-args...
	local ep=$1
	shift
	"$H/pns.sh" "$ep" env SYSROOT="$ep" "$ORACLE_PYTHON" -b "$PORTAGE_SRC/bin/emerge" "$@"
}

run() { # playground name make.conf-lines... -- emerge args
	local ep=$1 name=$2
	shift 2
	: > "$ep/etc/portage/variant.conf"
	while [[ $1 != -- ]]; do echo "$1" >> "$ep/etc/portage/variant.conf"; shift; done
	shift
	local start=$SECONDS
	if ! emerge_in "$ep" --oneshot --buildpkg --quiet-build=y --color=n "$@" > "$OUT/logs/$name.log" 2>&1; then
		echo "build $name failed:" >&2
		tail -n 40 "$OUT/logs/$name.log" >&2
		return 1
	fi
	echo "$name $((SECONDS - start))" >> "$OUT/timings"
	: > "$ep/etc/portage/variant.conf"
}

chain_a() {
	local ep=$OUT/pg-a P=$OUT/pg-a/pkgdirs
	playground "$ep"
	run "$ep" gpkg-zstd 'BINPKG_FORMAT="gpkg"' 'BINPKG_COMPRESS="zstd"' "PKGDIR=\"$P/gpkg-zstd\"" -- $SHARED $ONCE
	run "$ep" gpkg-zstd-foo 'BINPKG_FORMAT="gpkg"' 'BINPKG_COMPRESS="zstd"' "PKGDIR=\"$P/gpkg-zstd\"" 'USE="${USE} foo"' -- app-misc/hello
	run "$ep" xpak-bzip2 'BINPKG_FORMAT="xpak"' 'BINPKG_COMPRESS="bzip2"' "PKGDIR=\"$P/xpak-bzip2\"" -- $SHARED
	run "$ep" xpak-bzip2-foo 'BINPKG_FORMAT="xpak"' 'BINPKG_COMPRESS="bzip2"' "PKGDIR=\"$P/xpak-bzip2\"" 'USE="${USE} foo"' -- app-misc/hello
	run "$ep" builddir-a 'BINPKG_FORMAT="gpkg"' 'BINPKG_COMPRESS="zstd"' "PKGDIR=\"$P/builddir\"" -- app-misc/p2pbuilddir
}

chain_b() {
	local ep=$OUT/pg-b P=$OUT/pg-b/pkgdirs
	playground "$ep"
	run "$ep" gpkg-xz 'BINPKG_FORMAT="gpkg"' 'BINPKG_COMPRESS="xz"' "PKGDIR=\"$P/gpkg-xz\"" -- $SHARED
	run "$ep" gpkg-xz-foo 'BINPKG_FORMAT="gpkg"' 'BINPKG_COMPRESS="xz"' "PKGDIR=\"$P/gpkg-xz\"" 'USE="${USE} foo"' -- app-misc/hello
	run "$ep" builddir-b 'BINPKG_FORMAT="gpkg"' 'BINPKG_COMPRESS="zstd"' "PKGDIR=\"$P/builddir\"" -- app-misc/p2pbuilddir
}

# The two playgrounds build side by side (portage is mostly one Python
# process per build: two cores halve the time).
chain_a & a=$!
chain_b & b=$!
rc=0
wait $a || rc=1
wait $b || rc=1
gpgconf --homedir "$ORACLE_GNUPG" --kill gpg-agent 2>/dev/null || true
exit $rc
