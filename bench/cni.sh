#!/bin/sh
# One-command benchmark of the netalias CNI plugin against Debian's
# reference bridge + host-local (both masquerading):
#   sudo bench/cni.sh [-n NAMESPACES] [-rounds R]
# Builds the CLI (which is the plugin), creates its own namespaces and
# networks (10.201.202.0/24, 10.206.251.0/24), times ADD, CHECK and DEL per
# attachment through libcni in interleaved rounds, prints medians, p90s and
# ratios, and cleans up.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CGO_ENABLED=0 go build -tags netalias_lite -o "$out/netalias" ./cmd/netalias  # as make build
CGO_ENABLED=0 go build -o "$out/cni-bench" ./bench/cni
"$out/cni-bench" -netalias "$out/netalias" "$@"
