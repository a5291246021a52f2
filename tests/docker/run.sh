#!/bin/bash
# tests/docker/run.sh - sockgate in containers, on a real Docker engine.
#
# Brings its own engine (dockerd under a temporary directory, stopped by pid at
# the end) and its own debian:bookworm-slim when no registry answers, builds
# docker/Dockerfile, starts docker/compose.yaml, and checks as a user would:
# every container healthy, REST calls through the published port reach each
# backend container, the exec sandbox is on (Landlock inside the container,
# the embedded gateway's /readyz), a file survives a backend restart on its volume, nothing
# runs as root, SIGTERM stops every program with status 0, and `down -v`
# leaves no container or volume behind. Needs root (apt-get, dockerd).
#
# Environment: SOCKGATE_DOCKER_CACHE (rootfs cache folder, /var/tmp/sockgate-docker),
# SOCKGATE_DOCKER_KEEP=1 (leave the engine's folder for inspection), SOCKGATE_DOCKER_IMAGE (save the
# built image to this archive, for tests/docker/swarm.sh).
# Exit 0 when every check passed; the last line counts them.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/docker/engine.sh
source "$SRC/tests/docker/engine.sh"
# shellcheck source=tests/docker/checks.sh
source "$SRC/tests/docker/checks.sh"

# The compose services besides the gateway, each a backend in its own container.
BACKENDS=(echo time exec file chat)
PASSED=0
FAILED=0
PHASE=""
PHASE_START=0
TIMINGS=()
COMPOSE_UP=0
ENGINE_PID=""

log() { echo "[docker-test $(date -u +%H:%M:%S)] $*" >&2; }
die() {
    log "FATAL: $*"
    exit 1
}
now() { date +%s.%N; }

# Phases are timed so a slow one shows up in CI's log.
phase() {
    phase_end
    PHASE=$1
    PHASE_START=$(now)
    log "== phase $PHASE"
}
phase_end() {
    [ -n "$PHASE" ] || return 0
    local secs
    secs=$(awk -v a="$PHASE_START" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    TIMINGS+=("$PHASE ${secs}s")
    log "== phase $PHASE took ${secs}s"
    PHASE=""
}

pass() {
    PASSED=$((PASSED + 1))
    log "ok: $*"
}
fail() {
    FAILED=$((FAILED + 1))
    log "FAIL: $*"
}
# check DESCRIPTION COMMAND...: one assertion, counted.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$SRC/docker/compose.yaml" "$@"; }

# The container id of compose service $1, remembered (compose v1 takes most of
# a second per call); a recreated service is forgotten with `unset 'CIDS[svc]'`.
declare -A CIDS=()
cid() {
    if [ -z "${CIDS[$1]:-}" ]; then
        CIDS[$1]=$(compose ps -q "$1" | head -n 1)
    fi
    echo "${CIDS[$1]}"
}

dump_state() {
    log "state at failure:"
    compose ps >&2 2>&1 || true
    local svc c
    for svc in gateway "${BACKENDS[@]}"; do
        c=$(compose ps -q "$svc" 2>/dev/null | head -n 1)
        [ -n "$c" ] || continue
        log "$svc health: $("$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}: {{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$c" 2>/dev/null | tail -n 2 | tr '\n' ' ')"
    done
    compose logs --no-color --tail 40 >&2 2>&1 || true
    tail -n 20 "$ENGINE_DIR/dockerd.log" >&2 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # A signal can land inside a redirected call (the build's log): report to
    # where the script's own output goes.
    exec 1>&8 2>&9
    bounded_stop
    phase_end
    if [ "$COMPOSE_UP" = 1 ]; then
        if [ $rc -ne 0 ] || [ $FAILED -ne 0 ]; then dump_state; fi
        timeout 120 "${COMPOSE[@]}" -p "$PROJECT" -f "$SRC/docker/compose.yaml" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    engine_stop
    if [ "${SOCKGATE_DOCKER_KEEP:-0}" = 1 ]; then
        log "kept $ENGINE_DIR"
    else
        rm -rf "$ENGINE_DIR"
    fi
    if [ ${#TIMINGS[@]} -gt 0 ]; then
        log "timings: ${TIMINGS[*]}"
    fi
    exit $rc
}

# ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts dockerd"

phase deps
"$SRC/scripts/install-deps.sh" docker.io docker-compose debootstrap curl python3 iptables iproute2 procps
DOCKER=$(docker_cli)
if "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    die "neither 'docker compose' nor docker-compose is available"
fi
log "using $DOCKER ($("$DOCKER" --version)), compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"
# The classic builder: no buildx plugin needed, and `--network host` needs no entitlement.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

exec 8>&1 9>&2
ENGINE_DIR=$(mktemp -d /tmp/sockgate-docker.XXXXXX)
PROJECT="sgtest$$"
trap cleanup EXIT
trap 'exit 130' INT TERM

phase engine
engine_start

phase base-image
base_image_ensure

phase build
image_build
if [ -n "${SOCKGATE_DOCKER_IMAGE:-}" ]; then
    # For tests/docker/swarm.sh, run next by .ci/run in an engine of its own: the image, built once.
    bounded 300 "$DOCKER" save -o "$SOCKGATE_DOCKER_IMAGE" sockgate:local || die "docker save to $SOCKGATE_DOCKER_IMAGE failed"
fi
log "build: image $("$DOCKER" image inspect -f '{{.Id}} {{.Size}}' sockgate:local | awk '{ printf "%s, %.1f MiB", substr($1, 8, 12), $2 / 1048576 }')"
IMAGE_USER=$("$DOCKER" image inspect -f '{{.Config.User}}' sockgate:local)
check "image runs as a non-root user by default ($IMAGE_USER)" test -n "$IMAGE_USER" -a "${IMAGE_USER%%:*}" != 0 -a "${IMAGE_USER%%:*}" != root
check "image stop signal is SIGTERM" test "$("$DOCKER" image inspect -f '{{.Config.StopSignal}}' sockgate:local)" = SIGTERM
check "image has a health check" test -n "$("$DOCKER" image inspect -f '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Test}}{{end}}' sockgate:local)"
for prog in sockgate sockgate-echo sockgate-time sockgate-exec sockgate-file sockgate-chat sockgate-cli; do
    check "$prog --version runs in the runtime image" "$DOCKER" run --rm sockgate:local "$prog" --version
done

phase up
# A free port below the ephemeral range: bind(0) and outgoing connections never take one there,
# so it is still free when compose publishes it seconds later (a port from bind(0) may not be).
HTTP_PORT=$(python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(10000, max(low, 10001)), min(200, max(low - 10000, 1))):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
PY
)
[ -n "$HTTP_PORT" ] || die "no free port below the ephemeral range for the gateway"
export SOCKGATE_PORT=$HTTP_PORT SOCKGATE_BIND=127.0.0.1 SOCKGATE_IMAGE=sockgate:local
SOCKGATE_TOKEN="docker-test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SOCKGATE_TOKEN
compose config -q || die "compose.yaml does not validate"
COMPOSE_UP=1
bounded 300 "${COMPOSE[@]}" -p "$PROJECT" -f "$SRC/docker/compose.yaml" up -d --no-build >"$ENGINE_DIR/up.log" 2>&1 || {
    cat "$ENGINE_DIR/up.log" >&2
    die "compose up failed"
}
wait_healthy gateway "${BACKENDS[@]}" || die "the stack did not become healthy within 180 s"
pass "every container reports healthy"
BASE="http://127.0.0.1:$HTTP_PORT"
wait_http "$BASE/readyz" 200 60 || fail "gateway /readyz did not reach 200 within 60 s"

phase rest
rest_checks

phase sandbox
sandbox_checks

phase volume
volume_checks

phase non-root
for svc in gateway "${BACKENDS[@]}"; do
    c=$(cid "$svc")
    check "$svc: 'id -u' in the container is not 0" test "$("$DOCKER" exec "$c" id -u)" != 0
    check "$svc: every process of the container runs as a non-root uid" processes_non_root "$c"
done
check "only the gateway publishes a port, on 127.0.0.1" only_gateway_published

phase stop
timeout 120 "${COMPOSE[@]}" -p "$PROJECT" -f "$SRC/docker/compose.yaml" stop -t 15 >/dev/null 2>&1 || fail "compose stop"
for svc in gateway "${BACKENDS[@]}"; do
    c=$(cid "$svc")
    code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$c")
    check "$svc exits 0 on SIGTERM (status $code)" test "$code" = 0
done

phase down
VOLUME=$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
timeout 120 "${COMPOSE[@]}" -p "$PROJECT" -f "$SRC/docker/compose.yaml" down -v --remove-orphans >/dev/null 2>&1 || fail "compose down -v"
COMPOSE_UP=0
check "down -v removed every container" test -z "$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
check "down -v removed the file volume ($VOLUME)" test -n "$VOLUME" -a -z "$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"

phase engine-stop
engine_stop
phase_end
echo "docker: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
