#!/bin/sh
# Installs what `make bench` compares sockgate against (nginx, redis-server, wrk, iperf3), plus the
# packages given as arguments (bench/run adds the profilers, valgrind and linux-perf, unless --quick),
# with apt-get, only when missing. Run as root on Debian.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../scripts/install-deps.sh" nginx redis-server wrk iperf3 curl "$@"
