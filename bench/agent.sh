#!/bin/sh
# One-command benchmark of the netalias agent against Podman's netavark:
#   sudo bench/agent.sh [-n NAMESPACES] [-rounds R] [-netavark-dns]
# Builds the CLI, creates its own namespaces and networks (10.201.200.0/24,
# 10.201.201.0/24), times connect/disconnect vs netavark setup/teardown in
# interleaved rounds, prints medians, p90s and ratios, and cleans up.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CGO_ENABLED=0 go build -tags netalias_lite -o "$out/netalias" ./cmd/netalias  # as make build
CGO_ENABLED=0 go build -o "$out/agent-bench" ./bench/agent
"$out/agent-bench" -netalias "$out/netalias" "$@"
