#!/bin/sh
# Runs the reliability and security suites (issue 9) and fails when any target is missed.
#
#   tests/reliability/run.sh [--short] [--build DIR] [--asan-build DIR] [SUITE...]
#
# Suites: hostile http_diff faults soak slow loop memcheck (all of them by default, in that order). --short is
# the CI version: every suite, smaller and shorter, about four minutes in all on two cores.
# Every figure line of the run is also written to BUILD/reliability-figures.txt.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build="$top/build"
asan_build="$top/build-asan"
short=""
suites=""
while [ $# -gt 0 ]; do
    case "$1" in
    --short) short="--short" ;;
    --build) build=$(cd "$2" && pwd); shift ;;
    --asan-build) asan_build="$2"; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown flag $1" >&2; exit 2 ;;
    *) suites="$suites $1" ;;
    esac
    shift
done
[ -n "$suites" ] || suites="hostile http_diff faults soak slow loop memcheck"

# The load drivers are test programs; build them when the tree was built without them.
if [ ! -x "$build/tests/sockgate-load" ] || [ ! -x "$build/tests/sockgate-idle" ]; then
    cmake --build "$build" --target sockgate-load sockgate-idle >/dev/null || exit 1
fi
export SOCKGATE_BUILD_DIR="$build"
export SOCKGATE_ASAN_BUILD_DIR="$asan_build"
figures="$build/reliability-figures.txt"
: >"$figures"
failed=""
start=$(date +%s)
for suite in $suites; do
    if [ ! -f "$here/$suite.py" ]; then
        echo "run.sh: no suite named $suite" >&2
        exit 2
    fi
    t0=$(date +%s)
    echo "== reliability: $suite $short"
    out=$(mktemp)
    { python3 "$here/$suite.py" $short 2>&1; echo $? >"$out.status"; } | tee "$out"
    status=$(cat "$out.status")
    grep '^figure: ' "$out" >>"$figures"
    rm -f "$out" "$out.status"
    echo "== reliability: $suite: $( [ $status -eq 0 ] && echo ok || echo FAILED ) in $(( $(date +%s) - t0 ))s"
    [ $status -eq 0 ] || failed="$failed $suite"
done
echo "== reliability: $(grep -c . "$figures") figures in $figures, $(( $(date +%s) - start ))s in all"
if [ -n "$failed" ]; then
    echo "== reliability: FAILED:$failed"
    exit 1
fi
echo "== reliability: every target met"
