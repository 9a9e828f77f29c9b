#!/bin/sh
# The whole-process xz figure of BENCHMARKS.md ("Image digest of xz
# packages"): `gentoo-p2pd inspect` of an XPAK whose image is a tar of this
# machine's shared libraries, beside `xz -dc | sha256sum` of the same
# compressed image, as one block (xz -T1) and as xz -T2 blocks (what
# portage writes with MAKEOPTS=-j2 or more), runs alternated.
#
#   scripts/bench-xz-inspect.sh            # 3 runs of each
#   COUNT=5 LIBS=/usr/lib64 scripts/bench-xz-inspect.sh
#
# Needs xz and GNU time (/usr/bin/time); about ten minutes, most of it
# compressing.
set -eu
cd "$(dirname "$0")/.."
libs="${LIBS:-/usr/lib/x86_64-linux-gnu}"
fixture=../shared/fixtures/portage/repro/xpak-1/app-misc/hello-1.0.tbz2
[ -f "$fixture" ] || { echo "bench-xz-inspect: $fixture not found (../shared beside the checkout)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
go build -o "$work/gentoo-p2pd" ./cmd/gentoo-p2pd
(cd "$libs" && ls | grep '\.so\.' | tar -cf "$work/libs.tar" -T -)
echo "image: $(stat -c %s "$work/libs.tar") bytes of $libs/*.so.*"
# A portage-written XPAK segment (its metadata) after the image.
off=$(grep -obUa XPAKPACK "$fixture" | tail -n 1 | cut -d: -f1)
tail -c +"$((off + 1))" "$fixture" > "$work/segment"
for t in 1 2; do
	xz -6 -T"$t" -c "$work/libs.tar" > "$work/libs.T$t.xz"
	cat "$work/libs.T$t.xz" "$work/segment" > "$work/libs.T$t.xpak"
done
rm "$work/libs.tar"
echo "load before: $(cat /proc/loadavg)"
i=0
while [ "$i" -lt "${COUNT:-3}" ]; do
	for t in 1 2; do
		/usr/bin/time -f "inspect -T$t: %e s, %U+%S CPU-s, peak RSS %M KB" "$work/gentoo-p2pd" inspect --json "$work/libs.T$t.xpak" > /dev/null
		/usr/bin/time -f "pipeline -T$t: %e s, %U+%S CPU-s" sh -c 'xz -dc "$1" | sha256sum > /dev/null' sh "$work/libs.T$t.xz"
	done
	i=$((i + 1))
done
echo "load after: $(cat /proc/loadavg)"
