#!/bin/bash
# tests/docker/swarm.sh - docker/stack.yaml on a real one-node Docker swarm.
#
# Brings its own engine as tests/docker/run.sh does (engine.sh: dockerd under a
# temporary directory, stopped by pid), builds the image, makes the engine a
# one-node swarm, deploys the stack and checks, from a client container on the
# stack's overlay network that calls the gateway by name:
#   - 40 calls of `uname -n` reach all 3 exec replicas; scaled to 5, all 5
#     within 25 s (the gateway re-resolves the dnsrr name);
#   - a steady stream of echo calls sees no failure while an echo replica is
#     killed, nor while echo is rolled (docker service update --force);
#   - requests through the other gateway see no failure while one is rolled.
# Needs root. Run it under `flock /tmp/sockgate-docker.lock`: never two engines.
# Environment: SOCKGATE_DOCKER_CACHE, SOCKGATE_DOCKER_KEEP=1 (as run.sh); SOCKGATE_DOCKER_IMAGE,
# an image archive run.sh saved from the same tree, loaded instead of building again.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/docker/engine.sh
source "$SRC/tests/docker/engine.sh"
# shellcheck source=tests/docker/checks.sh
source "$SRC/tests/docker/checks.sh"

STACK=sgswarm
NET=${STACK}_sockgate
PASSED=0
FAILED=0
ENGINE_PID=""
STACK_UP=0
EVENTS_PID=""

log() { echo "[swarm-test $(date -u +%H:%M:%S)] $*" >&2; }
die() {
    log "FATAL: $*"
    exit 1
}
pass() {
    PASSED=$((PASSED + 1))
    log "ok: $*"
}
fail() {
    FAILED=$((FAILED + 1))
    log "FAIL: $*"
}
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    bounded_stop
    if [ "$STACK_UP" = 1 ]; then
        if [ $rc -ne 0 ] || [ $FAILED -ne 0 ]; then
            "$DOCKER" service ls >&2 2>&1 || true
            # Why each task ended (unhealthy, killed, exit status), and the engine's own record of it.
            for s in gateway gwb echo exec time file chat; do
                "$DOCKER" service ps --no-trunc --format '{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Error}}' \
                    "${STACK}_$s" >&2 2>&1 || true
            done
            grep -E 'health_status|kill|die|oom' "$ENGINE_DIR/events.log" 2>/dev/null | tail -n 60 >&2 || true
            for s in gateway gwb echo exec; do
                "$DOCKER" service logs --no-task-ids --tail 30 "${STACK}_$s" >&2 2>&1 || true
            done
        fi
        "$DOCKER" service rm "${STACK}_gwb" >/dev/null 2>&1 || true
        timeout 120 "$DOCKER" stack rm "$STACK" >/dev/null 2>&1 || true
    fi
    timeout 60 "$DOCKER" swarm leave --force >/dev/null 2>&1 || true
    if [ -n "${EVENTS_PID:-}" ]; then kill "$EVENTS_PID" 2>/dev/null || true; fi
    engine_stop
    if [ "${SOCKGATE_DOCKER_KEEP:-0}" = 1 ]; then log "kept $ENGINE_DIR"; else rm -rf "$ENGINE_DIR"; fi
    exit $rc
}

# client SCRIPT: runs a bash script in a throw-away container on the stack's network (curl is in the image).
client() {
    "$DOCKER" run --rm --network "$NET" --entrypoint bash sockgate:local -c "$1"
}

# Replicas of service $1 running now (the "3" of "3/3").
running() {
    "$DOCKER" service ls --filter "name=${STACK}_$1" --format '{{.Name}} {{.Replicas}}' |
        awk -v n="${STACK}_$1" '$1 == n { split($2, a, "/"); print a[1] }'
}

# wait_replicas SERVICE N: until N tasks run (bounded: 180 s).
wait_replicas() {
    local deadline=$((SECONDS + 180))
    until [ "$(running "$1")" = "$2" ]; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 1
    done
}

# Calls uname -n through the gateway COUNT times (or until WANT distinct names, within SECS); prints the distinct names.
exec_names() {
    local count=$1 want=$2 secs=$3
    client "
        seen=''; end=\$((SECONDS + $secs))
        for i in \$(seq 1 $count); do
            n=\$(curl -sf -m 10 -H 'Content-Type: application/json' -d '{\"argv\": [\"uname\", \"-n\"]}' \
                http://gateway:8080/api/v1/exec | sed -n 's/.*\"stdout\": *\"\\([^\"\\\\]*\\).*/\\1/p')
            [ -n \"\$n\" ] && seen=\$(printf '%s\n%s\n' \"\$seen\" \"\$n\" | sort -u | grep .)
            [ \$(printf '%s\n' \"\$seen\" | grep -c .) -ge $want ] && break
            [ \$SECONDS -lt \$end ] || break
        done
        printf '%s\n' \"\$seen\"
    "
}

# stream_start NAME HOST: a client container sending echo calls to HOST (at most 2,000, at most 120 s)
# until /tmp/stop exists in it; it prints "ok N failed M" and every failure.
stream_start() {
    "$DOCKER" run -d --name "$1" --network "$NET" --entrypoint bash sockgate:local -c "
        ok=0; bad=0; end=\$((SECONDS + 120))
        for i in \$(seq 1 2000); do
            [ -e /tmp/stop ] && break
            [ \$SECONDS -lt \$end ] || break
            r=\$(curl -s -m 15 -o /tmp/body -w '%{http_code}' -H 'Content-Type: application/json' \
                -d '{\"message\": \"steady\"}' http://$2:8080/api/v1/echo)
            if [ \"\$r\" = 200 ] && grep -q STEADY /tmp/body; then ok=\$((ok + 1)); else bad=\$((bad + 1)); echo \"call \$i: \$r \$(head -c 300 /tmp/body)\"; fi
            sleep 0.05
        done
        echo \"ok \$ok failed \$bad\"
    " >/dev/null
}

# stream_stop NAME: stops the stream and prints its last line ("ok N failed M") after its failures.
stream_stop() {
    "$DOCKER" exec "$1" touch /tmp/stop >/dev/null 2>&1 || true
    timeout 60 "$DOCKER" wait "$1" >/dev/null || true
    "$DOCKER" logs "$1" 2>&1
    "$DOCKER" rm -f "$1" >/dev/null 2>&1 || true
}

# no_failures LOG: the stream made calls and none failed.
no_failures() {
    local last
    last=$(printf '%s\n' "$1" | tail -n 1)
    [[ "$last" =~ ^ok\ ([0-9]+)\ failed\ 0$ ]] && [ "${BASH_REMATCH[1]}" -ge 20 ]
}

# ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts dockerd"
"$SRC/scripts/install-deps.sh" docker.io debootstrap curl python3 iptables iproute2 procps
DOCKER=$(docker_cli)
export DOCKER_BUILDKIT=0
ENGINE_DIR=$(mktemp -d /tmp/sockgate-swarm.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM

engine_start
if [ -n "${SOCKGATE_DOCKER_IMAGE:-}" ] && [ -s "$SOCKGATE_DOCKER_IMAGE" ]; then
    # The image tests/docker/run.sh built from this same tree (.ci/run passes it on): no second build.
    log "image: loading $SOCKGATE_DOCKER_IMAGE"
    bounded 300 "$DOCKER" load -i "$SOCKGATE_DOCKER_IMAGE" >/dev/null || die "docker load $SOCKGATE_DOCKER_IMAGE failed"
else
    base_image_ensure
    image_build
fi

# The engine's events, read back when something failed.
"$DOCKER" events --format '{{.Time}} {{.Type}} {{.Action}} {{index .Actor.Attributes "name"}}' >"$ENGINE_DIR/events.log" 2>&1 &
EVENTS_PID=$!
log "swarm: init (one node, advertised on loopback)"
"$DOCKER" swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
HTTP_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STACK_UP=1
SOCKGATE_PORT=$HTTP_PORT "$DOCKER" stack deploy -c "$SRC/docker/stack.yaml" "$STACK" >/dev/null ||
    die "docker stack deploy failed"
for s in gateway:1 echo:3 time:2 exec:3 file:1 chat:1; do
    check "service ${s%%:*} runs ${s##*:} task(s)" wait_replicas "${s%%:*}" "${s##*:}"
done
# The gateway answers once every backend did a round trip (readyz), on the host port it is published on.
deadline=$((SECONDS + 120))
until curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz"; do
    [ $SECONDS -lt $deadline ] || break
    sleep 1
done
check "the gateway is ready on the host port (mode: host)" curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz"
check "readyz lists 3 exec addresses" test "$(curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["backends"]["exec"]["addresses"]))')" = 3

names=$(exec_names 40 99 60)
log "exec names seen in 40 calls: $(echo $names)"
check "40 calls of uname -n reach all 3 exec replicas" test "$(printf '%s\n' "$names" | grep -c .)" = 3
"$DOCKER" service scale -d "${STACK}_exec=5" >/dev/null
check "exec scaled to 5 tasks" wait_replicas exec 5
names=$(exec_names 400 5 25)
log "exec names seen after scaling: $(echo $names)"
check "after scaling exec to 5, calls reach all 5 within 25 s" test "$(printf '%s\n' "$names" | grep -c .)" = 5

# An echo replica killed under a steady stream of calls.
stream_start sg-stream-kill gateway
sleep 3
victim=$("$DOCKER" ps -q --filter "label=com.docker.swarm.service.name=${STACK}_echo" | head -n 1)
"$DOCKER" kill "$victim" >/dev/null
sleep 8
out=$(stream_stop sg-stream-kill)
log "stream while an echo replica was killed: $(printf '%s\n' "$out" | tail -n 1)"
printf '%s\n' "$out" | head -n 5 >&2
check "no echo call failed while a replica was killed" no_failures "$out"
wait_replicas echo 3 || true

# echo rolled (start-first, one at a time) under a steady stream.
stream_start sg-stream-roll gateway
sleep 2
timeout 300 "$DOCKER" service update --force --quiet "${STACK}_echo" >/dev/null 2>&1 || true
sleep 3
out=$(stream_stop sg-stream-roll)
log "stream while echo was rolled: $(printf '%s\n' "$out" | tail -n 1)"
printf '%s\n' "$out" | head -n 5 >&2
check "no echo call failed while echo was rolled" no_failures "$out"

# A second gateway on the network; the stack's gateway rolled while calls go through the second one.
"$DOCKER" service create -d --name "${STACK}_gwb" --network "$NET" --endpoint-mode dnsrr \
    -e SOCKGATE_ECHO=echo:9001 -e SOCKGATE_TIME=time:9002 -e SOCKGATE_EXEC=exec:9003 \
    -e SOCKGATE_FILE=file:9004 -e SOCKGATE_CHAT=chat:9005 -e SOCKGATE_RESOLVE_INTERVAL=1s \
    sockgate:local sockgate --listen 0.0.0.0:8080 >/dev/null
check "a second gateway runs" wait_replicas gwb 1
client 'for i in $(seq 1 60); do curl -sf -o /dev/null http://'"${STACK}_gwb"':8080/readyz && exit 0; sleep 1; done; exit 1' ||
    fail "the second gateway never turned ready"
stream_start sg-stream-gw "${STACK}_gwb"
sleep 2
timeout 300 "$DOCKER" service update --force --quiet "${STACK}_gateway" >/dev/null 2>&1 || true
sleep 2
out=$(stream_stop sg-stream-gw)
log "stream through the other gateway while one was rolled: $(printf '%s\n' "$out" | tail -n 1)"
printf '%s\n' "$out" | head -n 5 >&2
check "no call through the other gateway failed while the gateway was rolled" no_failures "$out"
check "the rolled gateway serves again" client \
    'for i in $(seq 1 60); do curl -sf -o /dev/null http://gateway:8080/readyz && exit 0; sleep 1; done; exit 1'

log "passed $PASSED, failed $FAILED"
[ "$FAILED" -eq 0 ]
