#!/bin/sh
# Builds kubo's `ipfs` for the kubo reference of scripts/bench-fetch.sh:
#
#   scripts/build-kubo.sh /tmp/ipfs && IPFS=/tmp/ipfs scripts/bench-fetch.sh
#
# `go install github.com/ipfs/kubo/cmd/ipfs@v0.43.1` refuses kubo's go.mod
# (it replaces go-libp2p with a fork, which the module proxy does not
# serve either), so this builds the module's source with that replace
# dropped and go-libp2p v0.52.0, the release that carries what the fork
# was for (quic-go ≥ v0.62.0, webtransport-go ≥ v0.13.0).
set -eu
version="${KUBO_VERSION:-v0.43.1}"
out="$(realpath -m "${1:-ipfs}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
dir="$(go mod download -json "github.com/ipfs/kubo@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -n "$dir" ] || { echo "build-kubo: could not download kubo $version" >&2; exit 1; }
cp -r "$dir" src
chmod -R u+w src
cd src
sed -i '/^replace github.com\/libp2p\/go-libp2p =>/d' go.mod
GOFLAGS=-mod=mod go get github.com/libp2p/go-libp2p@v0.52.0
GOFLAGS=-mod=mod go build -o "$out" ./cmd/ipfs
"$out" version
