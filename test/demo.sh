#!/usr/bin/env bash
# The netalias demo (run it with `make demo`): the tutorial's step 5, without
# Docker. Two namespace "containers" on a user-defined bridge network find
# each other by alias, and the host resolves them too.
#
# It works in a private state directory and touches nothing it did not make;
# everything it made goes away on exit, also on Ctrl-C or an error.
#
# usage: test/demo.sh [BINDIR]    (BINDIR holds netalias and coredns; default bin)
set -euo pipefail

BINDIR=$(cd "${1:-bin}" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
NETWORK=${DEMO_NETWORK:-testnet}
C1=${DEMO_C1:-centos-1}
C2=${DEMO_C2:-centos-2}

bold=$'\e[1m'; green=$'\e[32m'; red=$'\e[31m'; dim=$'\e[2m'; off=$'\e[0m'
[ -t 1 ] || { bold=; green=; red=; dim=; off=; }
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
ok()   { printf '%s✔ %s%s\n' "$green" "$*" "$off"; }
die()  { printf '%s✘ %s%s\n' "$red" "$*" "$off" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "the demo creates bridges and namespaces: run it as root"
for tool in ip nft dig ping; do command -v $tool >/dev/null || die "missing $tool (make deps installs it)"; done
[ -x "$BINDIR/netalias" ] && [ -x "$BINDIR/coredns" ] || die "no binaries in $BINDIR (make build)"
for ns in "$C1" "$C2"; do
	[ ! -e "/run/netns/$ns" ] || die "a namespace named $ns exists already; the demo leaves it alone and stops"
done

WORK=$(mktemp -d /tmp/netalias-demo.XXXXXX)
STATE=$WORK/state
NA=("$BINDIR/netalias" --state-dir "$STATE")
COREDNS_PID=
MADE_NETWORK=
MADE_C1=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	step "cleaning up"
	[ -n "$COREDNS_PID" ] && kill "$COREDNS_PID" 2>/dev/null && wait "$COREDNS_PID" 2>/dev/null || true
	if [ -n "$MADE_C1" ]; then
		"${NA[@]}" disconnect "$NETWORK" "$C1" >/dev/null 2>&1 || true
		ip netns del "$C1" 2>/dev/null || true
		rm -rf "/etc/netns/$C1"
	fi
	[ -n "$MADE_NETWORK" ] && { "${NA[@]}" network rm --force "$NETWORK" >/dev/null 2>&1 || true; }
	rm -rf "$WORK"
	ok "removed the network, its bridge and nft rules, the namespaces and the DNS server"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "1. a user-defined bridge network, like 'docker network create $NETWORK'"
show "${NA[@]}" network create "$NETWORK"
MADE_NETWORK=1
show "${NA[@]}" network ls
INFO=$("${NA[@]}" network inspect --format json "$NETWORK")
GATEWAY=$(jq -r '.[0].network.gateway' <<<"$INFO")
ok "bridge $(jq -r '.[0].network.bridge' <<<"$INFO") up, subnet $(jq -r '.[0].network.subnet' <<<"$INFO"), gateway $GATEWAY"

step "2. the DNS server: CoreDNS with the netalias plugin, from Corefile.example"
# The example reads /var/lib/netalias; the demo points it at its own state,
# listens only on loopback and the network's gateway (not the wildcard
# address, so it runs beside a stub resolver on 127.0.0.53 or other DNS
# servers), and drops forwarding upstream: it serves only netalias names, and
# no query leaves the machine.
sed -e "s#/var/lib/netalias#$STATE#g" -e "s#^\.:53 {#&\n    bind 127.0.0.1 $GATEWAY#" \
	-e '/^\s*\(forward\|loop\)\b/d' "$HERE/Corefile.example" > "$WORK/Corefile"
"$BINDIR/coredns" -conf "$WORK/Corefile" > "$WORK/coredns.log" 2>&1 &
COREDNS_PID=$!
for _ in $(seq 100); do
	# A name under a known network is answered by netalias itself.
	dig +time=1 +tries=1 @127.0.0.1 "no-such-name.$NETWORK" A 2>/dev/null | grep -q "status: NXDOMAIN" && break
	kill -0 "$COREDNS_PID" 2>/dev/null || { cat "$WORK/coredns.log" >&2; die "coredns exited (port 53 taken? see README: Running beside a stub resolver)"; }
	sleep 0.1
done
ok "coredns answering on 127.0.0.1:53 and on $GATEWAY:53 (pid $COREDNS_PID)"

step "3. container $C1: a network namespace joined to $NETWORK with --alias $C1"
show ip netns add "$C1"
MADE_C1=1
show "${NA[@]}" connect "$NETWORK" "$C1" --alias "$C1"
C1_IP=$(ip -n "$C1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
ok "$C1 has eth0 $C1_IP; its resolver: $(grep -v '^#' "/etc/netns/$C1/resolv.conf" | tr '\n' ' ')"

step "4. from the host: dig $C1.$NETWORK"
ANSWER=$(dig +short @127.0.0.1 "$C1.$NETWORK" A)
printf '%s\n' "$ANSWER"
[ "$ANSWER" = "$C1_IP" ] || die "expected $C1_IP, got '${ANSWER:-nothing}'"
ok "the host resolves $C1.$NETWORK to $C1_IP"
PTR=$(dig +short @127.0.0.1 -x "$C1_IP")
ok "and back: $C1_IP is $PTR"

step "5. container $C2 pings $C1 by alias (netalias run, like docker run --network $NETWORK)"
show "${NA[@]}" run --name "$C2" --network "$NETWORK" -- ping -c 2 -W 2 "$C1" | tee "$WORK/ping.out"
grep -q " 0% packet loss" "$WORK/ping.out" || die "ping from $C2 to $C1 failed"
ok "$C2 reached $C1 by name; the reply came from $(grep -o 'from [^:]*' "$WORK/ping.out" | head -1 | cut -d' ' -f2-)"

step "6. the address follows the container: $C1 reconnects"
show "${NA[@]}" disconnect "$NETWORK" "$C1"
# The DNS side learns of it through fsnotify and netlink: allow it 1 s.
for _ in $(seq 20); do
	GONE=$(dig +short @127.0.0.1 "$C1.$NETWORK" A)
	[ -z "$GONE" ] && break
	sleep 0.05
done
[ -z "$GONE" ] || die "$C1.$NETWORK still answers $GONE after disconnect"
ok "after disconnect, $C1.$NETWORK is gone (NXDOMAIN)"
show "${NA[@]}" connect "$NETWORK" "$C1" --alias "$C1"
for _ in $(seq 20); do
	AGAIN=$(dig +short @127.0.0.1 "$C1.$NETWORK" A)
	[ -n "$AGAIN" ] && break
	sleep 0.05
done
[ "$AGAIN" = "$C1_IP" ] || die "expected the sticky address $C1_IP back, got '${AGAIN:-nothing}'"
ok "reconnected: $C1.$NETWORK is $AGAIN again (sticky address)"

printf '\n%sdemo complete%s\n' "$green$bold" "$off"
