# shellcheck shell=bash
# engine.sh - sourced by tests/docker/run.sh: a private Docker engine and the
# Debian base image, on a machine that has neither a running engine nor a
# reachable image registry.
#
# The engine gets its own data root, exec root, pid file and socket under
# $ENGINE_DIR, so it never touches (or is touched by) a system engine, and is
# stopped by its pid. The base image is pulled when a registry answers, else
# built with debootstrap from the machine's own apt mirror and imported.

# bounded SECS CMD...: runs CMD for at most SECS seconds, in the background so
# that a signal reaches the caller's trap at once rather than after CMD ends
# (bash defers traps while a foreground child runs). The trap can stop it by
# $BG_PID. Returns CMD's status (124 on timeout).
BG_PID=""
bounded() {
    local secs=$1 rc=0
    shift
    timeout "$secs" "$@" &
    BG_PID=$!
    wait "$BG_PID" || rc=$?
    BG_PID=""
    return $rc
}

# Stops what bounded() is running, if anything (from a trap).
bounded_stop() {
    if [ -n "${BG_PID:-}" ] && kill -0 "$BG_PID" 2>/dev/null; then
        kill -TERM "$BG_PID" 2>/dev/null || true
        wait "$BG_PID" 2>/dev/null || true
    fi
    BG_PID=""
}

# The Docker CLI to use: Debian's (matches Debian's engine, and builds with the
# classic builder without needing the buildx plugin), else whatever is on PATH.
docker_cli() {
    if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}

# Prints the first apt mirror URI serving suite $1 (e.g. bookworm) from the
# machine's apt sources: one-line sources.list files and deb822 .sources files.
apt_mirror_for_suite() {
    local suite=$1 files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] && files+=("$f")
    done
    if [ ${#files[@]} -gt 0 ]; then
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } # skip [options]
                if ($(i + 1) == suite) { print $i; exit }
            }' "${files[@]}" | head -n 1 | grep . && return 0
    fi
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        # One stanza per paragraph: Types, URIs, Suites, maybe Enabled: no.
        awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ") && uri != "")
                    { print uri; found = 1; exit }
                types = ""; uri = ""; suites = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:" { $1 = ""; types = $0; sub(/^ +/, "", types) }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }' "$f" | head -n 1 | grep . && return 0
    done
    return 1
}

# Starts dockerd with everything under $ENGINE_DIR and waits (bounded) until it
# answers; sets ENGINE_PID and exports DOCKER_HOST.
engine_start() {
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
    ENGINE_IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo "")
    ENGINE_HAD_BRIDGE=0
    if ip link show docker0 >/dev/null 2>&1; then ENGINE_HAD_BRIDGE=1; fi
    dockerd --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$ENGINE_DIR/dockerd.pid" -H "unix://$ENGINE_DIR/docker.sock" \
        --log-level warn >"$ENGINE_DIR/dockerd.log" 2>&1 &
    ENGINE_PID=$!
    export DOCKER_HOST="unix://$ENGINE_DIR/docker.sock"
    local deadline=$((SECONDS + 60))
    until "$DOCKER" info >/dev/null 2>&1; do
        if ! kill -0 "$ENGINE_PID" 2>/dev/null; then
            tail -n 30 "$ENGINE_DIR/dockerd.log" >&2
            die "dockerd exited during start-up"
        fi
        [ $SECONDS -lt $deadline ] || { tail -n 30 "$ENGINE_DIR/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
        sleep 0.5
    done
    log "engine: dockerd pid $ENGINE_PID, $("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null), socket $DOCKER_HOST"
}

# Stops our dockerd (and the containerd it started) by pid, unmounts whatever
# it left under $ENGINE_DIR, and puts ip_forward back as it was.
engine_stop() {
    [ -n "${ENGINE_PID:-}" ] || return 0
    local containerd_pid="" deadline
    containerd_pid=$(cat "$ENGINE_DIR/exec/containerd/containerd.pid" 2>/dev/null || true)
    if kill -0 "$ENGINE_PID" 2>/dev/null; then
        kill -TERM "$ENGINE_PID" 2>/dev/null || true
        deadline=$((SECONDS + 30))
        while kill -0 "$ENGINE_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
        if kill -0 "$ENGINE_PID" 2>/dev/null; then
            log "engine: dockerd ignored SIGTERM for 30 s, killing it"
            kill -KILL "$ENGINE_PID" 2>/dev/null || true
        fi
    fi
    wait "$ENGINE_PID" 2>/dev/null || true
    if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
        kill -TERM "$containerd_pid" 2>/dev/null || true
        sleep 1
        if kill -0 "$containerd_pid" 2>/dev/null; then kill -KILL "$containerd_pid" 2>/dev/null || true; fi
    fi
    ENGINE_PID=""
    # Deepest mounts first; lazy, because a busy overlay must not stop the clean-up.
    awk -v d="$ENGINE_DIR" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    # dockerd turned forwarding on and made the docker0 bridge; leave the host as
    # we found it unless another engine (the system's) still needs them. Its
    # iptables chains stay: empty and harmless without the bridge, and shared
    # with any other engine on the machine.
    if ! pgrep -x dockerd >/dev/null; then
        if [ "${ENGINE_IP_FORWARD:-}" = 0 ]; then
            echo 0 >/proc/sys/net/ipv4/ip_forward 2>/dev/null || true
        fi
        if [ "${ENGINE_HAD_BRIDGE:-1}" = 0 ]; then
            ip link delete docker0 2>/dev/null || true
        fi
    fi
}

# Makes debian:bookworm-slim exist in the engine: a pull when a registry
# answers, else a cached or fresh debootstrap rootfs imported as that tag.
base_image_ensure() {
    local tag=debian:bookworm-slim
    if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
        log "base: $tag already present"
        return 0
    fi
    if timeout 30 "$DOCKER" pull -q "$tag" >"$ENGINE_DIR/pull.log" 2>&1; then
        log "base: pulled $tag from a registry"
        return 0
    fi
    log "base: pull failed ($(tail -n 1 "$ENGINE_DIR/pull.log" | cut -c1-120)); building it with debootstrap"

    local cache_dir=${SOCKGATE_DOCKER_CACHE:-/var/tmp/sockgate-docker}
    local tarball
    tarball="$cache_dir/bookworm-minbase-$(date -u +%Y%m%d).tar"
    if [ ! -s "$tarball" ]; then
        local mirror rootfs="$ENGINE_DIR/rootfs"
        mirror=$(apt_mirror_for_suite bookworm) || die "no apt source for bookworm in /etc/apt: cannot debootstrap"
        log "base: debootstrap --variant=minbase bookworm from the machine's apt mirror"
        bounded 900 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$ENGINE_DIR/debootstrap.log" 2>&1 ||
            { tail -n 20 "$ENGINE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
        # What the real slim image leaves out: package caches and lists.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
        # Cached by date so a machine that runs this again the same day skips
        # debootstrap; a failed cache write only costs that speed.
        if mkdir -p "$cache_dir" 2>/dev/null && tar -C "$rootfs" -cf "$tarball.tmp.$$" . 2>/dev/null; then
            mv -f "$tarball.tmp.$$" "$tarball"
            find "$cache_dir" -maxdepth 1 -name 'bookworm-minbase-*.tar' ! -name "${tarball##*/}" -delete 2>/dev/null || true
        else
            rm -f "$tarball.tmp.$$"
            tar -C "$rootfs" -cf "$ENGINE_DIR/rootfs.tar" .
            tarball="$ENGINE_DIR/rootfs.tar"
        fi
        rm -rf "$rootfs"
    else
        log "base: using cached rootfs $tarball"
    fi
    "$DOCKER" import --change 'CMD ["bash"]' - "$tag" <"$tarball" >/dev/null || die "docker import of $tarball failed"
    log "base: imported $tag"
}

# Prints the network `docker build` should use: the default bridge when a
# container on it reaches the apt mirror, else the host's network.
build_network() {
    local mirror host port
    mirror=$("$DOCKER" run --rm debian:bookworm-slim sh -c \
        'sed -n "s/^deb \([^ ]*\) .*/\1/p" /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1' 2>/dev/null || true)
    host=$(echo "$mirror" | sed -E 's|^[a-z]+://([^/:]+).*|\1|')
    port=80
    case "$mirror" in https:*) port=443 ;; esac
    if [ -n "$host" ] && "$DOCKER" run --rm debian:bookworm-slim \
        timeout 10 bash -c "exec 3<>/dev/tcp/$host/$port" >/dev/null 2>&1; then
        echo default
    else
        echo host
    fi
}

# Builds sockgate:local from the checkout $SRC with the classic builder (bounded, 20 min), the
# build's log in $ENGINE_DIR/build.log and its tail shown on failure.
image_build() {
    local network
    network=$(build_network)
    log "build: docker build --network $network (the network apt-get inside the build uses)"
    bounded 1200 "$DOCKER" build --network "$network" -f "$SRC/docker/Dockerfile" -t sockgate:local "$SRC" \
        >"$ENGINE_DIR/build.log" 2>&1 || {
        tail -n 40 "$ENGINE_DIR/build.log" >&2
        die "docker build failed"
    }
}
