# shellcheck shell=bash
# checks.sh - sourced by tests/docker/run.sh: what a user checks once the
# compose stack is up. Uses run.sh's check/pass/fail, compose, cid, $DOCKER,
# $BASE (the gateway's published address) and $SOCKGATE_TOKEN.

# Waits (at most 180 s) until every named compose service reports healthy.
wait_healthy() {
    local deadline=$((SECONDS + 180)) svc c state all
    while [ $SECONDS -lt $deadline ]; do
        all=1
        for svc in "$@"; do
            c=$(cid "$svc")
            state=$([ -n "$c" ] && "$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c" 2>/dev/null || true)
            [ "$state" = healthy ] || all=0
        done
        [ $all = 1 ] && return 0
        sleep 1
    done
    for svc in "$@"; do
        c=$(cid "$svc")
        log "$svc: $("$DOCKER" inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c" 2>/dev/null)"
    done
    return 1
}

# Waits (at most $3 s) until GET $1 answers status $2.
wait_http() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null)" = "$2" ] && return 0
        sleep 0.5
    done
    return 1
}

# api METHOD PATH [curl args...]: one authorised call; the body lands in
# $ENGINE_DIR/body, the status in $STATUS.
api() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -s -o "$ENGINE_DIR/body" -w '%{http_code}' --max-time 60 -X "$method" \
        -H "Authorization: Bearer $SOCKGATE_TOKEN" "$@" "$BASE$path" || echo 000)
}

# json EXPR: evaluates a Python expression over the last body parsed as JSON (as j).
json() {
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$ENGINE_DIR/body" "$1" 2>/dev/null
}

# Calls through the gateway that must reach each backend container.
rest_checks() {
    api GET /healthz
    check "GET /healthz is 200" test "$STATUS" = 200
    # With a token, /readyz shows the backends' details only to a caller that presents it.
    STATUS=$(curl -s -o "$ENGINE_DIR/body" -w '%{http_code}' --max-time 10 \
        -H "Authorization: Bearer ${SOCKGATE_TOKEN:-}" "$BASE/readyz" || echo 000)
    check "GET /readyz is 200 with every remote backend up" test "$STATUS" = 200
    local b ip
    for b in "${BACKENDS[@]}"; do
        ip=$(container_ip "$(cid "$b")")
        check "/readyz: $b is up, remote (not embedded), at the $b container's address $ip" \
            test "$(json "(j['backends']['$b']['ok'], j['backends']['$b']['embedded'], j['backends']['$b']['address'].rsplit(':', 1)[0])")" = "(True, False, '$ip')"
    done

    local ctype
    ctype=$(curl -s -o "$ENGINE_DIR/page" -w '%{http_code} %{content_type}' --max-time 10 "$BASE/" || echo 000)
    # shellcheck disable=SC2016 # expanded by the inner bash
    check "GET / serves the page from the image ($ctype)" \
        bash -c '[[ "$1" == "200 text/html"* ]] && grep -qi "<html" "$2"' _ "$ctype" "$ENGINE_DIR/page"
    api GET /metrics
    check "GET /metrics is 200 (got $STATUS)" test "$STATUS" = 200

    STATUS=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -H 'Content-Type: application/json' \
        --data '{"message":"no token"}' "$BASE/api/v1/echo" || echo 000)
    check "POST /api/v1/echo without the token is 401 (SOCKGATE_TOKEN reached the gateway)" test "$STATUS" = 401

    api POST /api/v1/echo -H 'Content-Type: application/json' --data '{"message":"hello from docker"}'
    check "POST /api/v1/echo is 200 (got $STATUS)" test "$STATUS" = 200
    check "echo reply is upper-cased by the echo container" test "$(json 'j["reply"]')" = "HELLO FROM DOCKER"

    api GET '/api/v1/time?format=%25Y'
    local year
    year=$(json 'j["time"]')
    check "GET /api/v1/time is 200 (got $STATUS)" test "$STATUS" = 200
    check "time with format %Y is this year ($year)" year_is_now "$year"

    api POST /api/v1/exec -H 'Content-Type: application/json' --data '{"argv":["uname","-n"]}'
    local exec_host
    exec_host=$("$DOCKER" inspect -f '{{.Config.Hostname}}' "$(cid exec)")
    check "POST /api/v1/exec uname -n is 200 (got $STATUS)" test "$STATUS" = 200
    check "the command ran in the exec container ($exec_host)" test "$(json 'j["stdout"].strip()')" = "$exec_host"
    api POST /api/v1/exec -H 'Content-Type: application/json' --data '{"argv":["id","-u"]}'
    check "the command ran as a non-root uid ($(json 'j["stdout"].strip()'))" \
        test -n "$(json 'j["stdout"].strip()')" -a "$(json 'j["stdout"].strip()')" != 0
    api POST /api/v1/exec -H 'Content-Type: application/json' --data '{"argv":["cat","/etc/passwd"]}'
    check "a command outside --allow is 403 (got $STATUS)" test "$STATUS" = 403

    echo_outage_checks
}

# Stops the echo container: the gateway must fail clearly, then use the
# backend again once it is back, without a restart of its own.
echo_outage_checks() {
    local c
    c=$(cid echo)
    "$DOCKER" stop -t 10 "$c" >/dev/null
    api POST /api/v1/echo -H 'Content-Type: application/json' --data '{"message":"anyone there"}'
    check "echo container stopped: POST /api/v1/echo is 502/503/504 (got $STATUS)" \
        grep -qE '^50[234]$' <<<"$STATUS"
    check "the outage is a JSON error with a code" test -n "$(json 'j["error"]["code"]')"
    "$DOCKER" start "$c" >/dev/null
    wait_healthy echo || fail "echo did not come back healthy"
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        api POST /api/v1/echo -H 'Content-Type: application/json' --data '{"message":"back again"}'
        [ "$STATUS" = 200 ] && break
        sleep 1
    done
    check "echo works again through the same gateway once the container is back" \
        test "$STATUS" = 200 -a "$(json 'j["reply"]')" = "BACK AGAIN"

    # A recreated container (new image, changed settings) is a new container,
    # often at a new address: the gateway must find it by name again.
    local old_ip new_ip gateway_before
    old_ip=$(container_ip "$c")
    gateway_before=$(cid gateway)
    timeout 120 "${COMPOSE[@]}" -p "$PROJECT" -f "$SRC/docker/compose.yaml" up -d --no-deps --force-recreate echo \
        >/dev/null 2>&1 || fail "compose up --force-recreate echo"
    unset 'CIDS[echo]' 'CIDS[gateway]'
    wait_healthy echo || fail "the recreated echo did not become healthy"
    new_ip=$(container_ip "$(cid echo)")
    check "recreating echo left the gateway container running as it was" test "$(cid gateway)" = "$gateway_before"
    deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        api POST /api/v1/echo -H 'Content-Type: application/json' --data '{"message":"new container"}'
        [ "$STATUS" = 200 ] && break
        sleep 1
    done
    check "echo works through the same gateway after echo was recreated (address $old_ip -> $new_ip; got $STATUS)" \
        test "$STATUS" = 200 -a "$(json 'j["reply"]')" = "NEW CONTAINER"
}

year_is_now() {
    local y
    y=$(date -u +%Y)
    [ "$1" = "$y" ] || [ "$1" = "$((y - 1))" ] || [ "$1" = "$((y + 1))" ]
}

# A file round trip through the gateway into the file container's volume,
# kept across a restart of that container.
volume_checks() {
    local f="$ENGINE_DIR/upload.bin" name=docker-round-trip.bin want got c
    head -c $((8 * 1024 * 1024 + 123)) /dev/urandom >"$f"
    want=$(sha256sum "$f" | cut -d' ' -f1)

    api PUT "/api/v1/files/$name" -H 'Content-Type: application/octet-stream' --data-binary "@$f"
    check "PUT /api/v1/files/$name is 201 (got $STATUS)" test "$STATUS" = 201
    check "the upload's sha256 in the reply matches" test "$(json 'j["sha256"]')" = "$want"
    c=$(cid file)
    got=$("$DOCKER" exec "$c" sha256sum "/var/lib/sockgate/files/$name" 2>/dev/null | cut -d' ' -f1 || true)
    check "the file is on the file container's volume with the same sha256" test "$got" = "$want"

    api GET /api/v1/files
    check "GET /api/v1/files lists it" test "$(json '[f["size"] for f in j["files"] if f["name"] == "'$name'"]')" = "[$((8 * 1024 * 1024 + 123))]"

    "$DOCKER" restart -t 10 "$c" >/dev/null
    wait_healthy file || fail "file did not come back healthy after a restart"
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        STATUS=$(curl -s -o "$ENGINE_DIR/download.bin" -w '%{http_code}' --max-time 60 \
            -H "Authorization: Bearer $SOCKGATE_TOKEN" "$BASE/api/v1/files/$name" || echo 000)
        [ "$STATUS" = 200 ] && break
        sleep 1
    done
    check "GET /api/v1/files/$name after the file container restarted is 200 (got $STATUS)" test "$STATUS" = 200
    check "the downloaded bytes match the upload (sha256)" \
        test "$(sha256sum "$ENGINE_DIR/download.bin" | cut -d' ' -f1)" = "$want"

    api DELETE "/api/v1/files/$name"
    check "DELETE /api/v1/files/$name is 204 (got $STATUS)" test "$STATUS" = 204
    check "the file is gone from the volume" bash -c "! '$DOCKER' exec '$c' test -e '/var/lib/sockgate/files/$name'"
}

# The address of container $1 on the compose network.
container_ip() {
    "$DOCKER" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"
}

# Every process in container $1 runs with a non-zero uid.
processes_non_root() {
    local uids
    uids=$("$DOCKER" top "$1" -eo pid,uid,comm | awk 'NR > 1 { print $2 }')
    [ -n "$uids" ] || return 1
    ! grep -qx 0 <<<"$uids"
}

# The gateway publishes 8080 on 127.0.0.1 only; no backend publishes anything.
only_gateway_published() {
    local svc ports
    for svc in "${BACKENDS[@]}"; do
        ports=$("$DOCKER" port "$(cid "$svc")")
        [ -z "$ports" ] || { log "$svc publishes: $ports"; return 1; }
    done
    ports=$("$DOCKER" port "$(cid gateway)")
    [ -n "$ports" ] && ! grep -v '127.0.0.1:' <<<"$ports" | grep -q .
}

# The exec sandbox (issue 17) is on inside the containers: Docker's default
# seccomp profile lets Landlock through, so a command reaches nothing outside
# its workdir and the system's directories.
sandbox_checks() {
    local c log
    c=$(cid exec)
    log=$("$DOCKER" logs "$c" 2>&1 || true)
    check "the exec container's log says commands are confined by Landlock" \
        grep -q "files confined (Landlock)" <<<"$log"
    log "exec container: $(grep -o 'sandbox best-effort:.*' <<<"$log" | head -n 1)"
    api POST /api/v1/exec -H 'Content-Type: application/json' --data '{"argv":["ls","/var/lib/sockgate"]}'
    check "ls of the image's home is refused by the sandbox (got $STATUS, $(json 'j.get("exit_code")'))" \
        test "$STATUS" = 200 -a "$(json 'j["exit_code"]')" = 2 -a "$(json '"Permission denied" in j["stderr"]')" = True
    api POST /api/v1/exec -H 'Content-Type: application/json' --data '{"argv":["wc","-c","/proc/1/cmdline"]}'
    check "wc of another process's /proc entry is refused ($(json 'j.get("stderr", "").strip()'))" \
        test "$STATUS" = 200 -a "$(json '"Permission denied" in j["stderr"]')" = True
    api POST /api/v1/exec -H 'Content-Type: application/json' --data '{"argv":["wc","-l","/etc/hostname"]}'
    check "reading the system's /etc still works (got $STATUS, $(json 'j.get("stdout", "").strip()'))" \
        test "$STATUS" = 200 -a "$(json 'j["exit_code"]')" = 0

    # The image's default command: the gateway with every backend embedded.
    local g ready=""
    g=$("$DOCKER" run -d --rm --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true \
        sockgate:local)
    for _ in $(seq 1 60); do
        ready=$("$DOCKER" exec "$g" curl -s --max-time 5 http://127.0.0.1:8080/readyz 2>/dev/null || true)
        grep -q '"ready":true' <<<"$ready" && break
        sleep 0.5
    done
    printf '%s' "$ready" >"$ENGINE_DIR/body"
    check "embedded gateway: /readyz reports the exec sandbox with Landlock on ($(json 'j["backends"]["exec"].get("sandbox")'))" \
        test "$(json '(j["backends"]["exec"]["sandbox"]["files"], j["backends"]["exec"]["sandbox"]["landlock_abi"] > 0)')" = "(True, True)"
    check "embedded gateway: the backends are UNIX sockets in a private directory" \
        test "$(json 'all(b["address"].startswith("unix:/tmp/sockgate-gw-") for b in j["backends"].values())')" = True
    "$DOCKER" stop -t 15 "$g" >/dev/null 2>&1 || true
}
