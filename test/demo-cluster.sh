#!/usr/bin/env bash
# The netalias cluster demo (run it with `make demo-cluster`): three hosts,
# each a network namespace on an underlay bridge with its own etcd member,
# `netalias agent` in cluster mode and CoreDNS with the cluster option.
# centos-1 on host 2 and centos-2 on host 1 share one network over VXLAN:
# centos-2 pings centos-1 by name across hosts, host 1 resolves
# centos-1.testnet, then host 2 dies and its name goes everywhere.
#
# It works in private namespaces and a private state directory per host
# and touches nothing it did not make; everything it made goes away on
# exit, also on Ctrl-C or an error.
#
# usage: test/demo-cluster.sh [BINDIR]   (BINDIR holds netalias, netalias-full, coredns, netalias-etcd; default bin)
set -euo pipefail

BINDIR=$(cd "${1:-bin}" && pwd)
NETWORK=${DEMO_NETWORK:-testnet}
C1=${DEMO_C1:-centos-1}
C2=${DEMO_C2:-centos-2}
P=${DEMO_PREFIX:-democl}   # prefix of the demo's namespaces
UL=10.213.240             # underlay: host N at .1N
SUBNET=10.213.32.0/20
TTL=3s

bold=$'\e[1m'; green=$'\e[32m'; red=$'\e[31m'; dim=$'\e[2m'; off=$'\e[0m'
[ -t 1 ] || { bold=; green=; red=; dim=; off=; }
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
ok()   { printf '%s✔ %s%s\n' "$green" "$*" "$off"; }
die()  { printf '%s✘ %s%s\n' "$red" "$*" "$off" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "the demo creates namespaces, bridges and VXLAN devices: run it as root"
for tool in ip dig ping; do command -v $tool >/dev/null || die "missing $tool (make deps installs it)"; done
for b in netalias netalias-full coredns netalias-etcd; do
	[ -x "$BINDIR/$b" ] || die "no $b in $BINDIR (make build etcd)"
done
for ns in "$C1" "$C2" "$P-ul" "$P-h1" "$P-h2" "$P-h3"; do
	[ ! -e "/run/netns/$ns" ] || die "a namespace named $ns exists already; the demo leaves it alone and stops"
done

WORK=$(mktemp -d /tmp/netalias-demo-cluster.XXXXXX)
PIDS=()
MADE_NS=()

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	step "cleaning up"
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	# Containers first (their veths go with them), then the hosts (bridges,
	# VXLAN devices, nft tables live inside), then the underlay.
	for ns in "${MADE_NS[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
		rm -rf "/etc/netns/$ns"
	done
	rm -rf "$WORK"
	ok "removed the hosts, their etcd members, agents, DNS servers, bridges, VXLAN devices and containers"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# hostrun N CMD...: run CMD inside host N with its cluster settings (a
# function: not for background processes, whose $! would be a subshell's).
hostrun() {
	local n=$1; shift
	env NETALIAS_ETCD="http://$UL.1$n:2379" NETALIAS_HOST="host$n" NETALIAS_VTEP="$UL.1$n" \
		NETALIAS_STATE_DIR="$WORK/host$n/state" ip netns exec "$P-h$n" "$@"
}

step "1. three hosts on one underlay, each with an etcd member"
ip netns add "$P-ul"; MADE_NS+=("$P-ul")
ip -n "$P-ul" link add br0 type bridge
ip -n "$P-ul" link set br0 up
CLUSTER=host1=http://$UL.11:2380,host2=http://$UL.12:2380,host3=http://$UL.13:2380
for n in 1 2 3; do
	ip netns add "$P-h$n"; MADE_NS+=("$P-h$n")
	ip -n "$P-ul" link add "h$n" type veth peer name eth0 netns "$P-h$n"
	ip -n "$P-ul" link set "h$n" master br0 up
	ip -n "$P-h$n" addr add "$UL.1$n/24" dev eth0
	ip -n "$P-h$n" link set lo up
	ip -n "$P-h$n" link set eth0 up
	mkdir -p "$WORK/host$n"
	ip netns exec "$P-h$n" "$BINDIR/netalias-etcd" --name "host$n" --data-dir "$WORK/host$n/etcd" \
		--client-url "http://$UL.1$n:2379" --peer-url "http://$UL.1$n:2380" \
		--initial-cluster "$CLUSTER" --unsafe-no-fsync > "$WORK/host$n/etcd.log" 2>&1 &
	PIDS+=($!); eval "ETCD$n=$!"
done
for n in 1 2 3; do
	for _ in $(seq 300); do grep -q "ready" "$WORK/host$n/etcd.log" && break; sleep 0.1; done
	grep -q "ready" "$WORK/host$n/etcd.log" || { cat "$WORK/host$n/etcd.log" >&2; die "etcd on host $n not ready"; }
done
ok "hosts $P-h1..3 at $UL.11-13, etcd members ready"

step "2. on each host: netalias agent --etcd … --host hostN --vtep … and CoreDNS with 'cluster'"
for n in 1 2 3; do
	env NETALIAS_ETCD="http://$UL.1$n:2379" NETALIAS_HOST="host$n" NETALIAS_VTEP="$UL.1$n" \
		NETALIAS_STATE_DIR="$WORK/host$n/state" ip netns exec "$P-h$n" \
		"$BINDIR/netalias" agent --lease-ttl $TTL > "$WORK/host$n/agent.log" 2>&1 &
	PIDS+=($!); eval "AGENT$n=$!"
	cat > "$WORK/host$n/Corefile" <<-EOF
	.:53 {
	    errors
	    netalias {
	        state $WORK/host$n/state
	        ttl 5
	        cluster http://$UL.1$n:2379 {
	            host host$n
	        }
	    }
	}
	EOF
	ip netns exec "$P-h$n" "$BINDIR/coredns" -conf "$WORK/host$n/Corefile" > "$WORK/host$n/coredns.log" 2>&1 &
	PIDS+=($!); eval "DNS$n=$!"
done
for n in 1 2 3; do
	for _ in $(seq 100); do
		ip netns exec "$P-h$n" dig +time=1 +tries=1 @127.0.0.1 "probe.$NETWORK" A 2>/dev/null | grep -q "status:" && break
		sleep 0.1
	done
done
printf '%s' "$dim"; sed -n 2p "$WORK/host1/agent.log"; printf '%s' "$off"
ok "agents and DNS servers running on the three hosts"

step "3. host 1 creates the cluster network $NETWORK (one compare-and-swap in etcd)"
show hostrun 1 "$BINDIR/netalias" network create --subnet $SUBNET "$NETWORK"

step "4. $C1 on host 2 and $C2 on host 1 (host 2 joins $NETWORK by connecting)"
ip netns add "$C1"; MADE_NS+=("$C1")
ip netns add "$C2"; MADE_NS+=("$C2")
show hostrun 2 "$BINDIR/netalias" connect "$NETWORK" "$C1"
show hostrun 1 "$BINDIR/netalias" connect "$NETWORK" "$C2"
C1_IP=$(ip -n "$C1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
C2_IP=$(ip -n "$C2" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
ok "$C1 is $C1_IP on host 2, $C2 is $C2_IP on host 1 (each host allocates from its own address block)"

step "5. host 1 resolves $C1.$NETWORK (it lives on host 2)"
for _ in $(seq 50); do
	ANSWER=$(ip netns exec "$P-h1" dig +short @127.0.0.1 "$C1.$NETWORK" A)
	[ "$ANSWER" = "$C1_IP" ] && break
	sleep 0.1
done
printf '%s\n' "$ANSWER"
[ "$ANSWER" = "$C1_IP" ] || die "expected $C1_IP, got '${ANSWER:-nothing}'"
ok "host 1 resolves $C1.$NETWORK to $C1_IP"

step "6. $C2 (host 1) pings $C1 (host 2) by name, over VXLAN"
for _ in $(seq 30); do ip netns exec "$C2" ping -c1 -W1 "$C1" >/dev/null 2>&1 && break; sleep 0.1; done
show ip netns exec "$C2" ping -c 2 -W 2 "$C1" | tee "$WORK/ping.out"
grep -q " 0% packet loss" "$WORK/ping.out" || die "ping from $C2 to $C1 failed"
ok "$C2 reached $C1 by name across hosts"
printf '%s' "$dim"; ip netns exec "$P-h1" bridge fdb show | grep "dst $UL.12" | head -3; printf '%s' "$off"

step "7. host 2 dies: its agent, DNS server and etcd member killed, its namespace gone"
{
	kill -9 "$AGENT2" "$DNS2" "$ETCD2" || true
	wait "$AGENT2" "$DNS2" "$ETCD2" || true
} 2>/dev/null
ip netns del "$P-h2"
DIED=$(date +%s%N)
for _ in $(seq 100); do
	STATUS=$(ip netns exec "$P-h1" dig +time=1 +tries=1 @127.0.0.1 "$C1.$NETWORK" A | grep -o "status: [A-Z]*" || true)
	[ "$STATUS" = "status: NXDOMAIN" ] && break
	sleep 0.1
done
[ "$STATUS" = "status: NXDOMAIN" ] || die "$C1.$NETWORK still answers on host 1 after host 2 died"
ok "$C1.$NETWORK is gone on host 1 after $(( ($(date +%s%N) - DIED) / 1000000 )) ms (lease TTL $TTL); host 1's forwarding entries to host 2: $(ip netns exec "$P-h1" bridge fdb show | grep -c "dst $UL.12" || true)"

printf '\n%sdemo complete%s\n' "$green$bold" "$off"
