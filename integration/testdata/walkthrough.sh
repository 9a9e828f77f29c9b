#!/bin/bash
# The first hour of a new user, scripted: five daemons on 127.0.0.1 started
# with no bootstrap flags find each other through the public DHT's
# rendezvous (here a stand-in on loopback, named by
# GENTOO_P2PD_NETWORK_RENDEZVOUS_PEERS as the public bootstrap peers are by
# default); "search hello" lists the build three of them made with its votes
# and holders; "find" on a machine of another platform says why it has
# nothing, and its status why its gateway lists nothing. Each step prints what a user would type and see.
#
# Environment: BIN (the gentoo-p2pd binary), WORK (an empty directory),
# GENTOO_P2PD_NETWORK_RENDEZVOUS_PEERS, FIXTURE_{CHOST,CFLAGS,CXXFLAGS,LDFLAGS}
# (the platform the fixture builds were made for), and PKGDIR_alice,
# PKGDIR_bob, PKGDIR_carol (their builds of app-misc/hello-1.0).
# (pipefail: no pipeline here ends before its writer, so SIGPIPE cannot fail one.)
set -euo pipefail

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait' EXIT

# as NAME CMD...: run CMD as the user NAME (a home, config, state and runtime
# dir of its own; the network on loopback). oscar's CFLAGS differ. The five
# are one club's machines, so each counts the others' builds fully
# (trust.fresh_weight = 100); on the open network strangers earn standing
# first (docs/SECURITY.md, "Standing").
as() {
	local name=$1 cflags=$FIXTURE_CFLAGS
	shift
	[[ $name == oscar ]] && cflags="-O3 -pipe"
	exec_env=(env -i PATH=/usr/local/bin:/usr/bin:/bin
		HOME="$WORK/$name/home" XDG_CONFIG_HOME="$WORK/$name/config"
		XDG_STATE_HOME="$WORK/$name/state" XDG_RUNTIME_DIR="$WORK/$name/run"
		GENTOO_P2PD_NETWORK_RENDEZVOUS_PEERS="$GENTOO_P2PD_NETWORK_RENDEZVOUS_PEERS"
		GENTOO_P2PD_NETWORK_QUIC=false GENTOO_P2PD_NETWORK_AUTONAT=false
		GENTOO_P2PD_NETWORK_HOLE_PUNCHING=false GENTOO_P2PD_NETWORK_RELAY_CLIENT=false
		GENTOO_P2PD_PORTAGE_CHOST="$FIXTURE_CHOST" GENTOO_P2PD_PORTAGE_CFLAGS="$cflags"
		GENTOO_P2PD_PORTAGE_CXXFLAGS="$FIXTURE_CXXFLAGS" GENTOO_P2PD_PORTAGE_LDFLAGS="$FIXTURE_LDFLAGS"
		GENTOO_P2PD_TRUST_FRESH_WEIGHT=100)
	"${exec_env[@]}" "$@"
}

# start NAME [PKGDIR]: `gentoo-p2pd daemon` with no bootstrap peers.
start() {
	local name=$1 pkgdir=${2:-$WORK/$1/binpkgs}
	mkdir -p "$WORK/$name"/{home,config,state,run} "$pkgdir"
	chmod 700 "$WORK/$name/run"
	as "$name" true # sets exec_env; the daemon itself runs in this shell, so $! is its pid
	"${exec_env[@]}" "$BIN" daemon --listen /ip4/127.0.0.1/tcp/0 --mdns=false \
		--gateway-listen 127.0.0.1:0 --pkgdir "$pkgdir" >"$WORK/$name.log" 2>&1 &
	pids+=($!)
}

# wait_for WHAT CMD...: poll CMD until it succeeds, for at most 90 s.
wait_for() {
	local what=$1 i
	shift
	for ((i = 0; i < 900; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "FAIL: timed out waiting for $what" >&2
	return 1
}

# found NAME N: NAME has at least N peers and has advertised itself.
found() {
	local status n
	status=$(as "$1" "$BIN" status --json)
	n=$(sed -n 's/^  "peers": \([0-9]*\),$/\1/p' <<<"$status")
	[[ -n $n && $n -ge $2 ]] && grep -q '"discovery": "public DHT rendezvous (advertised;' <<<"$status"
}

all_found() {
	local n
	for n in alice bob carol erin oscar; do
		found "$n" 4 || return 1
	done
}

hello_allowed() { as erin "$BIN" search hello | grep >/dev/null '^app-misc/hello-1.0 *allowed *3/3 *3 '; }

say() { printf '\n$ %s\n' "$*"; }

echo "== five daemons, no bootstrap flags"
start alice "$PKGDIR_alice"
start bob "$PKGDIR_bob"
start carol "$PKGDIR_carol"
start erin
start oscar
for n in alice bob carol erin oscar; do
	wait_for "$n's socket" test -S "$WORK/$n/run/gentoo-p2pd.sock"
done
wait_for "every daemon to advertise itself and find the four others through the rendezvous" all_found
say gentoo-p2pd status "(erin)"
as erin "$BIN" status | grep -E '^(reachability|discovery|platform) '

echo
echo "== search: what the network has for erin's machine"
wait_for "erin to count three agreeing votes for hello" hello_allowed
say gentoo-p2pd search hello "(erin)"
as erin "$BIN" search hello

echo
echo "== erin fetches it; her cached copy is served on, so a search counts it as fetched"
say gentoo-p2pd fetch app-misc/hello-1.0 "(erin)"
as erin "$BIN" fetch app-misc/hello-1.0 | tail -n 1
fetched_once() { as alice "$BIN" search hello | grep >/dev/null '^app-misc/hello-1.0 *allowed *3/3 *3 *0 *3 *1 '; }
wait_for "alice's search to count erin's copy" fetched_once
say gentoo-p2pd search hello "(alice)"
as alice "$BIN" search hello | sed -n 1,2p

echo
echo "== find on a machine of another platform (oscar: CFLAGS=\"-O3 -pipe\")"
say gentoo-p2pd find app-misc/hello-1.0 "(oscar)"
status=0
as oscar "$BIN" find app-misc/hello-1.0 || status=$?
echo "exit status $status"
[[ $status == 3 ]]
say gentoo-p2pd status "(oscar)"
as oscar "$BIN" status | grep -A1 '^gateway' 
