#!/usr/bin/env bash
# bench/dns.sh — DNS benchmark of the netalias CoreDNS build, one command:
#
#   sudo bench/dns.sh            (ROUNDS=7 DUR=5 by default)
#
# Interleaved rounds of dnsperf against, on this machine and in this run:
#   netalias_host     our coredns, ALIAS.NETWORK from the host (127.0.5.1)
#   netalias_bare_ns  the same server, bare names from inside a namespace
#                     attached by the agent (asked at the network's gateway)
#   netalias_qual_ns  the same server, NAME.NETWORK from inside the namespace:
#                     separates the veth/bridge/netfilter path from the lookup
#   netalias_10k      our coredns with 10,000 endpoints over 100 networks
#   aardvark          aardvark-dns serving a Podman network (runc, busybox)
#   hosts             CoreDNS's hosts plugin serving the same names from a file
#   bare_miekg        a bare miekg/dns server answering one fixed record
#   netalias_deployed our coredns with the chain people deploy (as in
#                     Corefile.example): errors, prometheus, netalias, cache,
#                     forward (to bare_miekg) and loop
#   netalias_ep       our coredns with errors and prometheus only: what the
#                     deployed chain costs before cache and forward, which
#                     netalias answers never reach (it runs before cache)
# Each line: QPS, server CPU time per answered query (/proc/PID/stat, steadier
# than QPS on shared machines) and mean latency; the summary gives medians of
# per-round ratios. Then change-to-answer latency (state file written →
# answer changed, through the real server) and resident memory.
#
# Everything stays on loopback (127.0.5.x) and in namespaces/networks made
# here (10.202.210.0/24, 10.202.211.0/24, 10.202.0-99.0/24 for the 10k
# state files, which get no kernel objects), all removed on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-7}
DUR=${DUR:-5}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/dns.sh: needs root (namespaces, port 53, podman)" >&2; exit 1; }
for c in dnsperf podman ip; do command -v $c >/dev/null || { echo "bench/dns.sh: needs $c" >&2; exit 1; }; done

W=$(mktemp -d /tmp/ndn-bench.XXXXXX)
SUF=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
PIDS=()
NSS=()
PODNET=ndn-bench-$SUF
PODCTR=ndnb-$SUF
PODIMG=localhost/ndn-bb-$SUF
STATE=$W/state
LARGE=$W/large
NA="$W/netalias --state-dir $STATE"

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    $NA network rm --force benchnet >/dev/null 2>&1
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; rm -rf "/etc/netns/$n"; done
    podman rm -f -t 0 "$PODCTR" >/dev/null 2>&1
    podman network rm -f "$PODNET" >/dev/null 2>&1
    podman rmi -f "$PODIMG" >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT

echo "# building" >&2
CGO_ENABLED=0 go build -trimpath -o "$W/coredns" ./cmd/coredns
CGO_ENABLED=0 go build -trimpath -o "$W/netalias" ./cmd/netalias
CGO_ENABLED=0 go build -trimpath -o "$W/dnsb" ./bench/dns

# --- our server: an agent network with 10 attached namespaces ---
GW=10.202.210.1
$NA network create --subnet 10.202.210.0/24 benchnet >/dev/null
: > "$W/hosts"; : > "$W/q-host"; : > "$W/q-bare"; : > "$W/q-nsq"
for i in $(seq 0 9); do
    ns=ndn-$SUF-c$i
    ip netns add "$ns"; NSS+=("$ns")
    $NA connect benchnet "$ns" --name "c$i" --alias "svc$i" >/dev/null
    ip4=$(jq -r ".endpoints[] | select(.name==\"c$i\") | .ipv4" "$STATE/networks/benchnet.json")
    echo "$ip4 c$i.benchnet svc$i.benchnet" >> "$W/hosts"
    echo "c$i.benchnet A" >> "$W/q-host"
    echo "c$i A" >> "$W/q-bare"
    echo "c$i.benchnet A" >> "$W/q-nsq"
done
CLIENT_NS=ndn-$SUF-c0

# The CoreDNS servers under comparison run the lookup plugin alone (as the
# issue's "trivial plugin" reference); netalias keeps its own metrics and
# scoping. netalias_deployed is the deployed chain (Corefile.example without
# health, ready and reload, which add listeners, not work per query).
cat > "$W/Corefile.netalias" <<EOC
.:53 {
    bind 127.0.5.1 $GW
    netalias {
        state $STATE
    }
}
EOC
cat > "$W/Corefile.deployed" <<EOC
.:53 {
    bind 127.0.5.5
    errors
    prometheus 127.0.5.5:9153
    netalias {
        state $STATE
    }
    cache 30
    forward . 127.0.5.3:53
    loop
}
EOC
cat > "$W/Corefile.ep" <<EOC
.:53 {
    bind 127.0.5.6
    errors
    prometheus 127.0.5.6:9153
    netalias {
        state $STATE
    }
}
EOC
cat > "$W/Corefile.hosts" <<EOC
.:53 {
    bind 127.0.5.2
    hosts $W/hosts {
        ttl 5
    }
}
EOC
mkdir -p "$LARGE"
"$W/dnsb" gen "$LARGE" 100 100 > "$W/q-large"
cat > "$W/Corefile.large" <<EOC
.:53 {
    bind 127.0.5.4
    netalias {
        state $LARGE
    }
}
EOC

start() { # name cmd...: start a server in the background, remember its pid
    local name=$1; shift
    "$@" > "$W/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}
start netalias "$W/coredns" -conf "$W/Corefile.netalias"
start deployed "$W/coredns" -conf "$W/Corefile.deployed"
start ep "$W/coredns" -conf "$W/Corefile.ep"
start hosts "$W/coredns" -conf "$W/Corefile.hosts"
start large "$W/coredns" -conf "$W/Corefile.large"
start bare "$W/dnsb" bare 127.0.5.3:53

# --- aardvark-dns: a Podman network with one running busybox container ---
echo "# podman network and container" >&2
mkdir -p "$W/bbroot/bin"
cp "$(command -v busybox)" "$W/bbroot/bin/busybox"
for a in sh sleep; do ln -sf busybox "$W/bbroot/bin/$a"; done
tar -C "$W/bbroot" -cf "$W/bb.tar" .
podman import -q "$W/bb.tar" "$PODIMG" >/dev/null
podman network create --subnet 10.202.211.0/24 "$PODNET" >/dev/null
podman run -d -q --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --name "$PODCTR" --network "$PODNET" --network-alias c1 "$PODIMG" sleep 100000 >/dev/null
echo "$PODCTR.dns.podman A" > "$W/q-aard"
AGW=10.202.211.1

wait_answer() { # server name
    for _ in $(seq 1 200); do
        if dig +time=1 +tries=1 +short @"$1" "$2" | grep -q .; then return 0; fi
        sleep 0.05
    done
    echo "bench/dns.sh: $1 never answered $2" >&2; cat "$W"/*.log >&2; exit 1
}
wait_answer 127.0.5.1 c1.benchnet
wait_answer 127.0.5.2 c1.benchnet
wait_answer 127.0.5.3 c1.benchnet
wait_answer 127.0.5.4 c99.net99
wait_answer 127.0.5.5 c1.benchnet
wait_answer 127.0.5.6 c1.benchnet
wait_answer $AGW "$PODCTR.dns.podman"
PID_aardvark=$(pgrep -o -x aardvark-dns)
[ -n "$(ip netns exec "$CLIENT_NS" dig +short @$GW c1)" ] || { echo "bench/dns.sh: bare name from the namespace failed" >&2; exit 1; }

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

run() { # round label pid server queryfile [netns]
    local round=$1 label=$2 pid=$3 server=$4 q=$5 ns=${6:-}
    local c0 c1 out
    c0=$(cpu_ticks "$pid")
    if [ -n "$ns" ]; then
        out=$(ip netns exec "$ns" dnsperf -s "$server" -d "$q" -l "$DUR" -q 100 2>&1)
    else
        out=$(dnsperf -s "$server" -d "$q" -l "$DUR" -q 100 2>&1)
    fi
    c1=$(cpu_ticks "$pid")
    echo "$out" | awk -v r="$round" -v l="$label" -v dc="$((c1 - c0))" -v tck="$TCK" '
        /Queries completed:/ {done=$3}
        /Queries per second:/ {qps=$4}
        /Average Latency/ {lat=$4*1000}
        END { cpu = (done > 0) ? dc * 1e6 / tck / done : 0; printf "%s %s %.0f %.3f %.4f\n", r, l, qps, cpu, lat }'
}

RES=$W/results
echo "round server qps cpu_us_per_query latency_ms" | tee "$RES"
for r in $(seq 1 "$ROUNDS"); do
    run "$r" netalias_host "$PID_netalias" 127.0.5.1 "$W/q-host" | tee -a "$RES"
    run "$r" aardvark "$PID_aardvark" $AGW "$W/q-aard" | tee -a "$RES"
    run "$r" hosts "$PID_hosts" 127.0.5.2 "$W/q-host" | tee -a "$RES"
    run "$r" bare_miekg "$PID_bare" 127.0.5.3 "$W/q-host" | tee -a "$RES"
    run "$r" netalias_bare_ns "$PID_netalias" $GW "$W/q-bare" "$CLIENT_NS" | tee -a "$RES"
    run "$r" netalias_qual_ns "$PID_netalias" $GW "$W/q-nsq" "$CLIENT_NS" | tee -a "$RES"
    run "$r" netalias_10k "$PID_large" 127.0.5.4 "$W/q-large" | tee -a "$RES"
    run "$r" netalias_deployed "$PID_deployed" 127.0.5.5 "$W/q-host" | tee -a "$RES"
    run "$r" netalias_ep "$PID_ep" 127.0.5.6 "$W/q-host" | tee -a "$RES"
done
echo
"$W/dnsb" summary "$RES"
echo
rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
echo "resident memory: netalias (10 endpoints) $(rss "$PID_netalias"), netalias (10,000 endpoints over 100 networks) $(rss "$PID_large") (target ≤ 80 MB), hosts $(rss "$PID_hosts")"
echo -n "10 endpoints:     "; "$W/dnsb" change "$STATE" benchnet 127.0.5.1:53 200
echo -n "10,000 endpoints: "; "$W/dnsb" change "$LARGE" net42 127.0.5.4:53 200
echo "(change-to-answer: from the start of the agent-style atomic write, fsync included, to the new answer over UDP; target p99 ≤ 10 ms)"
