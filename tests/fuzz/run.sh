#!/bin/sh
# Runs every fuzz target built in BUILD_DIR/fuzz for SECONDS each, on a copy of its seed corpus.
# A crash leaves its reproducer in tests/fuzz/crashes/ and fails the run.
set -eu
build=${1:-build-fuzz}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
status=0
mkdir -p "$here/crashes"
for target in "$build"/fuzz/fuzz_*; do
    [ -x "$target" ] || continue
    name=$(basename "$target")
    work=$(mktemp -d)
    if [ -d "$here/corpus/$name" ]; then
        cp -r "$here/corpus/$name/." "$work/"
    fi
    echo "fuzz: $name for ${seconds}s" >&2
    if ! "$target" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$here/crashes/$name-" -print_final_stats=1 "$work" 2>"$work.log"; then
        tail -50 "$work.log" >&2
        echo "fuzz: $name FAILED (reproducer in tests/fuzz/crashes/)" >&2
        status=1
    else
        grep -E "stat::number_of_executed_units|Done" "$work.log" | sed "s/^/fuzz: $name: /" >&2 || true
    fi
    rm -rf "$work" "$work.log"
done
exit $status
