#!/bin/sh
# Benchmark of the Docker network driver (issue 11): `docker run -d` plus
# `docker rm -f` on a netalias network (netalias docker-plugin) against
# Docker's built-in bridge, interleaved rounds on a private dockerd that
# the benchmark starts and removes (the machine's dockerd is not touched):
#   sudo bench/docker-driver.sh [ROUNDS]      (default 20)
# Prints both medians (ms-netalias, ms-bridge) and their ratio (target
# at most 1.2). Holds the kernel lock the integration tests share.
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-20}
exec flock /tmp/netalias-kernel.lock go test ./test -count=1 -run '^$' \
	-bench 'DockerDriverRun' -benchtime "${rounds}x"
