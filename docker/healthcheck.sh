#!/bin/bash
# sockgate-healthcheck: the image's HEALTHCHECK. One image runs every program,
# so this finds which sockgate program runs in the container, works out the
# address it listens on (its --listen flag, else its environment, else the
# program's default port), and asks it the way a client would: GET /healthz
# for the gateway, a native protocol round trip through sockgate-cli for a
# backend. Exit 0 healthy, 1 unhealthy (what Docker expects).
set -u

fail() {
    echo "sockgate-healthcheck: $*" >&2
    exit 1
}

# The first process whose program is a sockgate server (never the cli itself).
find_server() {
    for dir in /proc/[0-9]*; do
        [ -r "$dir/cmdline" ] || continue
        argv0=$(tr '\0' '\n' <"$dir/cmdline" 2>/dev/null | head -n 1)
        case "${argv0##*/}" in
        sockgate | sockgate-echo | sockgate-time | sockgate-exec | sockgate-file | sockgate-chat)
            echo "${dir#/proc/}"
            return 0
            ;;
        esac
    done
    return 1
}

# Prints the value of --listen from the process's argv, if given.
listen_from_argv() {
    tr '\0' '\n' <"/proc/$1/cmdline" | awk '
        want { print; exit }
        $0 == "--listen" { want = 1; next }
        /^--listen=/ { sub(/^--listen=/, ""); print; exit }'
}

# Prints the value of environment variable $2 of process $1, if set.
env_of() {
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n "s/^$2=//p" | head -n 1
}

pid=$(find_server) || fail "no sockgate program runs in this container"
prog=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
prog=${prog##*/}
case "$prog" in
sockgate) name=gateway port=8080 ;;
sockgate-echo) name=echo port=9001 ;;
sockgate-time) name=time port=9002 ;;
sockgate-exec) name=exec port=9003 ;;
sockgate-file) name=file port=9004 ;;
sockgate-chat) name=chat port=9005 ;;
esac
upper=$(echo "$name" | tr "[:lower:]" "[:upper:]")

addr=$(listen_from_argv "$pid")
if [ -z "$addr" ] && [ "$name" != gateway ]; then
    addr=$(env_of "$pid" "SOCKGATE_${upper}_LISTEN")
fi
[ -n "$addr" ] || addr=$(env_of "$pid" SOCKGATE_LISTEN)
[ -n "$addr" ] || addr="127.0.0.1:$port"

# A wildcard address is reached through loopback inside the container.
case "$addr" in
0.0.0.0:* | :*) addr="127.0.0.1:${addr##*:}" ;;
"[::]:"*) addr="[::1]:${addr##*:}" ;;
esac

case "$name" in
gateway)
    # With HTTPS on, the certificate names the public host, not 127.0.0.1: a liveness probe that
    # sends nothing secret skips the name check (-k) rather than fail on it.
    scheme=http
    tls_opt=""
    if [ -n "$(env_of "$pid" SOCKGATE_TLS_CERT)" ] || tr '\0' '\n' <"/proc/$pid/cmdline" | grep -q '^--tls-cert'; then
        scheme=https
        tls_opt=-k
    fi
    curl -fsS $tls_opt -o /dev/null --max-time 4 "$scheme://$addr/healthz" || fail "GET $scheme://$addr/healthz failed"
    ;;
echo)
    reply=$(sockgate-cli echo "$addr" healthcheck) || fail "echo round trip to $addr failed"
    [ "$reply" = HEALTHCHECK ] || fail "echo at $addr replied '$reply', expected HEALTHCHECK"
    ;;
time)
    reply=$(sockgate-cli time "$addr") || fail "time round trip to $addr failed"
    [ -n "$reply" ] || fail "time at $addr sent an empty reply"
    ;;
exec)
    # Any command the backend answers for is a full protocol round trip; a
    # refusal (exit 127, command_not_allowed) still proves it is serving.
    sockgate-cli exec "$addr" true >/dev/null 2>&1
    rc=$?
    [ "$rc" -eq 0 ] || [ "$rc" -eq 127 ] || fail "exec round trip to $addr failed (exit $rc)"
    ;;
file)
    sockgate-cli ls "$addr" >/dev/null || fail "file list from $addr failed"
    ;;
chat)
    # sockgate-cli's chat is interactive, so the framed "stats" op is sent by
    # hand: a little-endian u32 header length (14) and the JSON header.
    host=${addr%:*}
    host=${host#[}
    host=${host%]}
    exec 3<>"/dev/tcp/$host/${addr##*:}" 2>/dev/null || fail "chat at $addr does not accept connections"
    printf '\016\000\000\000{"op":"stats"}' >&3 || fail "chat at $addr: write failed"
    reply=$(timeout 3 dd bs=4096 count=1 status=none <&3 | tr -d '\000-\010')
    exec 3<&-
    case "$reply" in
    *'"stats"'*) ;;
    *) fail "chat at $addr did not answer the stats op" ;;
    esac
    ;;
esac
exit 0
