#!/bin/bash
# tests/docker/fresh.sh - the README's promise on a really fresh machine: in a pristine
# debian:bookworm-slim container (nothing installed beyond the base system), a copy of the
# tree runs the README's two commands as root, as a newcomer would:
#
#   make run    must install what is missing, build, and start the gateway: the README's
#               curl examples are then run against it, exactly as printed there;
#   make test   must install what is missing (Chromium, Node.js, npm for the browser test)
#               and pass every test.
#
# Brings its own engine and base image (tests/docker/engine.sh, shared with run.sh). The
# container has Docker's default capabilities (CI machines that are containers themselves
# refuse --privileged), so the one test that mounts a tmpfs (test_file_failures' full disk)
# says SKIPPED there. Nothing in the ctest suite needs a Docker engine (the real-engine test
# is run.sh, run by .ci/run beside this one), so `make test` runs whole.
#
# Environment: SOCKGATE_DOCKER_CACHE (rootfs cache, as run.sh), SOCKGATE_DOCKER_KEEP=1,
# SOCKGATE_FRESH_TEST_ARGS (extra ctest arguments inside, e.g. "-E browser" to bisect).
# Exit 0 when both commands did what the README says.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/docker/engine.sh
source "$SRC/tests/docker/engine.sh"

log() { echo "[fresh-test $(date -u +%H:%M:%S)] $*" >&2; }
die() {
    log "FATAL: $*"
    exit 1
}

ENGINE_PID=""
CONTAINER=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    bounded_stop
    if [ -n "$CONTAINER" ]; then
        if [ $rc -ne 0 ]; then
            "$DOCKER" logs --tail 60 "$CONTAINER" >&2 2>&1 || true
        fi
        timeout 60 "$DOCKER" rm -f "$CONTAINER" >/dev/null 2>&1 || true
    fi
    engine_stop
    if [ "${SOCKGATE_DOCKER_KEEP:-0}" = 1 ]; then log "kept $ENGINE_DIR"; else rm -rf "$ENGINE_DIR"; fi
    exit $rc
}

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts dockerd"
# Serialized with other apt-get runs on a shared machine (the lock is only advisory).
flock /tmp/sockgate-apt.lock "$SRC/scripts/install-deps.sh" docker.io debootstrap iptables iproute2 procps
DOCKER=$(docker_cli)
export DOCKER_BUILDKIT=0

ENGINE_DIR=$(mktemp -d /tmp/sockgate-fresh.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
start=$SECONDS

engine_start
base_image_ensure

# The tree as a newcomer gets it: the sources, none of this machine's build output or packages.
log "copying the tree (without build*/, node_modules/, .git)"
tar -C "$SRC" --exclude='./build*' --exclude='node_modules' --exclude='./.git' \
    -cf "$ENGINE_DIR/tree.tar" .

# The commands the README prints, read from it so that the test follows the README, not a copy:
# every line of the sh block after "try the API".
README_CURL="$ENGINE_DIR/readme-curl.sh"
awk '/try the API/ { want = 1 } want && /^```sh$/ { inblock = 1; next } inblock && /^```$/ { exit }
     inblock && NF { print }' "$SRC/README.md" >"$README_CURL"
grep -q '^curl ' "$README_CURL" || die "the README shows no curl example after 'try the API'"
# And the set-up block's lines before `make run` (what a fresh machine needs first).
README_SETUP="$ENGINE_DIR/readme-setup.sh"
awk '/^## Set-up/ { want = 1 } want && /^```sh$/ { inblock = 1; next } inblock && /^```$/ { exit }
     inblock && NF { print }' "$SRC/README.md" >"$README_SETUP"
grep -q '^make run' "$README_SETUP" || die "the README's set-up no longer says 'make run'"
grep -q '^make test' "$README_SETUP" || die "the README's set-up no longer says 'make test'"
sed -i '/^make /d' "$README_SETUP"

# What runs inside: make run in the background until it says it listens, the README's curl lines
# against it (each must succeed), SIGINT, then make test.
cat >"$ENGINE_DIR/inside.sh" <<'INSIDE'
#!/bin/bash
set -euo pipefail
cd /root/sockgate
say() { echo "[inside $(date -u +%H:%M:%S)] $*"; }
export DEBIAN_FRONTEND=noninteractive
while IFS= read -r line; do
    say "README set-up: $line"
    bash -c "set -eo pipefail; ${line%%#*}" >/tmp/setup.log 2>&1 || { tail -n 20 /tmp/setup.log; say "FAIL: $line"; exit 1; }
done </tmp/readme-setup.sh
say "make run"
setsid make run >/tmp/run.log 2>&1 &
RUN_PID=$!
for _ in $(seq 1 1800); do
    grep -q 'listening on' /tmp/run.log && break
    kill -0 $RUN_PID 2>/dev/null || { cat /tmp/run.log; say "FAIL: make run ended before listening"; exit 1; }
    sleep 1
done
grep -q 'listening on' /tmp/run.log || { tail -n 40 /tmp/run.log; say "FAIL: make run did not listen within 30 min"; exit 1; }
grep 'listening on\|print_addresses' /tmp/run.log
cd /tmp/readme
status=0
while IFS= read -r line; do
    say "README: $line"
    if out=$(bash -c "set -o pipefail; ${line%%#*}" 2>&1); then
        echo "$out" | head -c 600; echo
    else
        echo "$out"; say "FAIL: the README's '$line' failed"; status=1
    fi
done </tmp/readme-curl.sh
cd /root/sockgate
# make's child is the gateway; SIGINT to the whole group (setsid made it one), as Ctrl-C does.
kill -INT -- -$RUN_PID 2>/dev/null || kill -INT $RUN_PID
wait $RUN_PID || true
[ $status -eq 0 ] || exit 1
say "make test ${SOCKGATE_FRESH_TEST_ARGS:-}"
make test ${SOCKGATE_FRESH_TEST_ARGS:+CTEST_ARGS="$SOCKGATE_FRESH_TEST_ARGS"}
say "both README commands did what it says"
INSIDE

# The container's own network when it reaches the apt mirror (and the npm registry); else the host's,
# where the README's port 8080 must then be free.
NETWORK=$(build_network)
if [ "$NETWORK" = host ] && (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    die "the container needs the host's network here, and 127.0.0.1:8080 (the README's port) is taken"
fi
# The network's part of this machine, not the README's: certificate authorities the machine
# added itself (a TLS-inspecting proxy's, in /usr/local/share/ca-certificates) are handed to
# Node.js inside, so npm reaches its registry as it does here. None: nothing is handed over.
CA_ENV=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cat /usr/local/share/ca-certificates/*.crt >"$ENGINE_DIR/local-ca.crt"
    CA_ENV=(-e NODE_EXTRA_CA_CERTS=/tmp/local-ca.crt)
    log "handing this machine's own CA certificates to Node.js in the container"
fi
log "starting a pristine debian:bookworm-slim container (network: $NETWORK)"
CONTAINER=$("$DOCKER" create --network "$NETWORK" -w /root -e SOCKGATE_FRESH_TEST_ARGS "${CA_ENV[@]}" \
    debian:bookworm-slim bash -c 'set -e; mkdir -p /root/sockgate /tmp/readme; tar -C /root/sockgate -xf /tmp/tree.tar; exec bash /tmp/inside.sh')
"$DOCKER" cp "$ENGINE_DIR/tree.tar" "$CONTAINER:/tmp/tree.tar"
"$DOCKER" cp "$ENGINE_DIR/inside.sh" "$CONTAINER:/tmp/inside.sh"
"$DOCKER" cp "$README_CURL" "$CONTAINER:/tmp/readme-curl.sh"
"$DOCKER" cp "$README_SETUP" "$CONTAINER:/tmp/readme-setup.sh"
if [ ${#CA_ENV[@]} -gt 0 ]; then "$DOCKER" cp "$ENGINE_DIR/local-ca.crt" "$CONTAINER:/tmp/local-ca.crt"; fi
"$DOCKER" start "$CONTAINER" >/dev/null
# Bounded: a hang must fail CI, not stall it (CI's whole run stays under 30 min).
rc=0
bounded "${SOCKGATE_FRESH_TIMEOUT:-1500}" "$DOCKER" wait "$CONTAINER" >"$ENGINE_DIR/exit" || rc=$?
"$DOCKER" logs "$CONTAINER" >"$ENGINE_DIR/inside.log" 2>&1 || true
grep -E '^\[inside|listening on|print_addresses|tests passed|tests failed|Failed|\*\*\*|FAIL' "$ENGINE_DIR/inside.log" | tail -n 80 >&2 || true
[ $rc -eq 0 ] || die "the container did not finish within ${SOCKGATE_FRESH_TIMEOUT:-1500} s"
code=$(cat "$ENGINE_DIR/exit")
log "container exited with $code after $((SECONDS - start)) s"
[ "$code" = 0 ] || { tail -n 60 "$ENGINE_DIR/inside.log" >&2; die "the README's commands failed on a fresh bookworm"; }
echo "fresh: make run and make test pass on a pristine debian:bookworm-slim ($((SECONDS - start)) s)"
