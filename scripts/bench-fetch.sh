#!/bin/sh
# The headline transfer figure (BENCHMARKS.md, "Headline: one fetch end
# to end, real processes"): `gentoo-p2pd fetch` of a 256 MiB build between two
# gentoo-p2pd daemons on 127.0.0.1, beside curl from nginx over HTTPS
# (TLS 1.3) and, when kubo's ipfs is found, `ipfs cat` between two kubo
# nodes, all in the same run.
#
# Needs nginx and curl (Debian: apt-get install nginx curl). kubo is
# optional: put `ipfs` on PATH or set IPFS=/path/to/ipfs
# (scripts/build-kubo.sh builds it).
#
#   scripts/bench-fetch.sh            # 3 runs
#   COUNT=5 scripts/bench-fetch.sh
set -eu
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "bench-fetch: curl not found" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "bench-fetch: nginx not found (apt-get install nginx)" >&2; exit 1; }
echo "load before: $(cat /proc/loadavg)"
go test -run '^$' -bench 'FetchProcesses' -benchtime 1x -count "${COUNT:-3}" -timeout 60m ./integration/
echo "load after: $(cat /proc/loadavg)"
