"""transfers.py - the byte-moving and memory figures: 1 GiB upload and download on tmpfs through the
gateway (curl) and through sockgate-cli against nginx WebDAV PUT and static GET, the iperf3 loopback
ceiling, the servers' peak memory during those transfers, and 10,000 idle connections held.
"""

import hashlib
import json
import os
import shlex
import socket
import struct
import time

from model import MIB, Figure, Group, Result
from procs import BenchError, PeakSampler, cpu_seconds, run_tool, start_server, status_kib, stop
import peers

NAME = "bench.bin"


def files_setup(ctx):
    ctx.state["files_gw"] = peers.start_gateway(ctx, "gateway-files")
    root = os.path.join(ctx.files_dir, "file-root")
    ctx.state["file"] = start_server("sockgate-file", [ctx.bin("sockgate-file"), "--listen", "127.0.0.1:0",
                                                       "--root", root], ctx.log("sockgate-file"))
    peers.ensure_nginx(ctx)
    peers.ensure_iperf3(ctx)
    src = os.path.join(ctx.files_dir, "src.bin")
    size = ctx.cfg.file_mib * MIB
    digest = hashlib.sha256()
    with open("/dev/urandom", "rb") as rnd, open(src, "wb") as out:
        left = size
        while left:
            chunk = rnd.read(min(left, 4 * MIB))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    ctx.state["src"] = (src, size, digest.hexdigest())


def files_teardown(ctx):
    for key in ("files_gw", "file"):
        srv = ctx.state.pop(key, None)
        if srv:
            stop(srv)


def _record_peak(ctx, fid, side, kib):
    """Keeps the largest peak of this round for a memory figure (several transfers feed one row)."""
    prev = ctx.values(fid, side).get(ctx.round)
    mib = kib / 1024.0
    if prev is None or mib > prev.value:
        ctx.record(fid, side, Result(mib))


def _transfer(ctx, fid, side, argv, pids_fn, mem_fid, check, stdout=None, mem_side=None):
    """Runs one client transfer while sampling the server's memory and CPU; returns the Result in MiB/s.

    The peak goes to mem_fid's mem_side (default: side): a row whose two sides are both sockgate
    (tus against PUT, both via the gateway) must not feed the memory row's nginx column.
    """
    ctx.command(fid, side, " ".join(shlex.quote(a) for a in argv) + (" > /dev/null" if stdout else ""))
    pids = pids_fn()
    before = cpu_seconds(pids)
    client = []
    with PeakSampler(pids_fn) as peak:
        if stdout is None:
            rc, out, err, elapsed = run_tool(argv, 600, client_cpu=client)
        else:
            rc, out, err, elapsed = run_tool(argv, 600, stdout=stdout, client_cpu=client)
    after = cpu_seconds(pids)
    if rc != 0:
        raise BenchError("%s exited with %d: %s" % (os.path.basename(argv[0]), rc, (err or out).strip()[-300:]))
    nbytes, seconds = check(out, elapsed)
    _record_peak(ctx, mem_fid, mem_side or side, peak.peak_kib)
    return Result(nbytes / seconds / MIB, ops=nbytes, cpu=(after[0] - before[0], after[1] - before[1]),
                  client_cpu=client[0])


def _curl(method_args, url, resp):
    return ["curl", "-sS", "-f", "-H", "Expect:"] + method_args + ["-o", resp, "-w",
                                                                    "%{http_code} %{size_upload} "
                                                                    "%{size_download} %{time_total}", url]


def _curl_check(want_bytes, upload, verify=None):
    def check(out, _elapsed):
        try:
            code, up, down, total = out.split()
            code, up, down, total = int(code), float(up), float(down), float(total)
        except ValueError as e:
            raise BenchError("curl printed %r" % out) from e
        got = up if upload else down
        if code not in (200, 201, 204) or int(got) != want_bytes:
            raise BenchError("curl: HTTP %d after %d of %d bytes" % (code, got, want_bytes))
        if verify:
            verify()
        return got, total
    return check


def _gw_url(ctx):
    return "http://127.0.0.1:%d/api/v1/files/%s" % (ctx.state["files_gw"].port, NAME)


def upload_gw(ctx):
    src, size, sha = ctx.state["src"]
    resp = os.path.join(ctx.run_dir, "put-response.json")

    def verify():
        with open(resp) as f:
            body = json.load(f)
        if body.get("sha256") != sha or body.get("size") != size:
            raise BenchError("the gateway stored %r, not %d bytes with sha256 %s" % (body, size, sha))
    gw = ctx.state["files_gw"]
    return _transfer(ctx, "upload_gw", "sg", _curl(["-T", src], _gw_url(ctx), resp), lambda: [gw.pid], "mem_gw",
                     _curl_check(size, True, verify))


def _stored_sha256(ctx, name):
    """The sha256 the gateway's HEAD gives for a stored file (its ETag), or None."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", ctx.state["files_gw"].port, timeout=60)
    try:
        conn.request("HEAD", "/api/v1/files/" + name)
        resp = conn.getresponse()
        return (resp.getheader("ETag") or "").strip('"') if resp.status == 200 else None
    finally:
        conn.close()


def _tus_client(ctx, fid, side, mode, name):
    """One upload with bench/tus_upload.py (tus PATCHes of 8 MiB, or one PUT): the same client both ways."""
    src, size, sha = ctx.state["src"]
    gw = ctx.state["files_gw"]
    argv = ["python3", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tus_upload.py"),
            mode, "127.0.0.1:%d" % gw.port, src, name, "--chunk", "8M"]

    def check(out, _elapsed):
        try:
            nbytes, seconds = out.split()
            nbytes, seconds = int(nbytes), float(seconds)
        except ValueError as e:
            raise BenchError("tus_upload.py printed %r" % out) from e
        stored = _stored_sha256(ctx, name)
        if nbytes != size or stored != sha:
            raise BenchError("%s stored sha256 %s for %d bytes, not %s" % (mode, stored, nbytes, sha))
        return nbytes, seconds
    return _transfer(ctx, fid, side, argv, lambda: [gw.pid], "mem_gw", check, mem_side="sg")


def upload_tus(ctx):
    return _tus_client(ctx, "upload_tus", "sg", "tus", "tus-" + NAME)


def upload_tus_put(ctx):
    return _tus_client(ctx, "upload_tus", "peer", "put", "put-" + NAME)


def _nginx_put(ctx, fid):
    src, size, _ = ctx.state["src"]
    url = "http://127.0.0.1:%d/dav/%s" % (ctx.servers["nginx"].port, NAME)
    stored = os.path.join(ctx.files_dir, "nginx", NAME)

    def verify():
        if os.stat(stored).st_size != size:
            raise BenchError("nginx stored %d bytes, not %d" % (os.stat(stored).st_size, size))
    mem_fid = "mem_gw" if fid == "upload_gw" else "mem_file"
    return _transfer(ctx, fid, "peer", _curl(["-T", src], url, os.devnull), lambda: peers.nginx_workers(ctx),
                     mem_fid, _curl_check(size, True, verify))


def _nginx_get(ctx, fid):
    _, size, _ = ctx.state["src"]
    url = "http://127.0.0.1:%d/static/%s" % (ctx.servers["nginx"].port, NAME)
    mem_fid = "mem_gw" if fid == "download_gw" else "mem_file"
    return _transfer(ctx, fid, "peer", _curl([], url, os.devnull), lambda: peers.nginx_workers(ctx), mem_fid,
                     _curl_check(size, False))


def download_gw(ctx):
    _, size, _ = ctx.state["src"]
    gw = ctx.state["files_gw"]
    return _transfer(ctx, "download_gw", "sg", _curl([], _gw_url(ctx), os.devnull), lambda: [gw.pid], "mem_gw",
                     _curl_check(size, False))


def _file_addr(ctx):
    return "127.0.0.1:%d" % ctx.state["file"].port


def upload_cli(ctx, fid="upload_cli"):
    src, size, sha = ctx.state["src"]
    argv = [ctx.bin("sockgate-cli"), "put", "--quiet", _file_addr(ctx), src, NAME]

    def check(out, elapsed):
        if not out.startswith(sha):
            raise BenchError("sockgate-cli put printed %r, not sha256 %s" % (out.strip(), sha))
        return size, elapsed
    fsrv = ctx.state["file"]
    return _transfer(ctx, fid, "sg", argv, lambda: [fsrv.pid], "mem_file", check)


def download_cli(ctx, fid="download_cli"):
    _, size, _ = ctx.state["src"]
    argv = [ctx.bin("sockgate-cli"), "get", "--quiet", _file_addr(ctx), NAME, "-"]
    fsrv = ctx.state["file"]
    sink = open(os.devnull, "wb")
    try:
        return _transfer(ctx, fid, "sg", argv, lambda: [fsrv.pid], "mem_file",
                         lambda out, elapsed: (size, elapsed), stdout=sink)
    finally:
        sink.close()


# The same transfers against a peer that also hashes every byte with sha256, as sockgate-cli
# does to verify what it sent or received: nginx's transfers with `openssl dgst -sha256` (the same
# libcrypto, so the same SHA instructions) beside them.

def _hashing_peer(ctx, fid, script, args, size, sha):
    argv = ["bash", "-c", script, "bash"] + args

    def check(out, elapsed):
        if sha not in out:
            raise BenchError("the peer's hash printed %r, not %s" % (out.strip()[-200:], sha))
        return size, elapsed
    return _transfer(ctx, fid, "peer", argv, lambda: peers.nginx_workers(ctx), "mem_file", check)


def upload_hashing_peer(ctx):
    src, size, sha = ctx.state["src"]
    url = "http://127.0.0.1:%d/dav/%s" % (ctx.servers["nginx"].port, NAME)
    # openssl reads the file while curl sends it: the client hashes alongside, as the cli's thread does.
    script = ('openssl dgst -sha256 "$1" & curl -sS -f -H Expect: -T "$1" -o /dev/null "$2"; rc=$?; wait $!; exit $rc')
    return _hashing_peer(ctx, "upload_cli_hashed", script, [src, url], size, sha)


def download_hashing_peer(ctx):
    _, size, sha = ctx.state["src"]
    url = "http://127.0.0.1:%d/static/%s" % (ctx.servers["nginx"].port, NAME)
    script = 'set -o pipefail; curl -sS -f "$1" | openssl dgst -sha256'
    return _hashing_peer(ctx, "download_cli_hashed", script, [url], size, sha)


def loopback_round(ctx):
    """Measures the iperf3 single-stream loopback ceiling once per round (the row has no pair)."""
    srv = ctx.servers["iperf3"]
    d = ctx.cfg.load_seconds
    argv = ["iperf3", "--client", "127.0.0.1", "--port", str(srv.port), "--time", str(d), "--json"]
    ctx.command("loopback", "peer", argv)
    rc, out, err, _ = run_tool(argv, d + 30)
    try:
        bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError) as e:
        raise BenchError("iperf3 exited with %d: %s" % (rc, (err or out).strip()[-300:])) from e
    ctx.record("loopback", "peer", Result(bps / 8 / MIB))


# 10,000 idle connections: each served once, then held open while the server's RSS is read.

def idle_setup(ctx):
    ctx.state["idle_echo"] = start_server("sockgate-echo-idle", [ctx.bin("sockgate-echo"), "--listen",
                                                                 "127.0.0.1:0"], ctx.log("sockgate-echo-idle"))
    peers.ensure_nginx(ctx, "nginx-idle", 16384)


def idle_teardown(ctx):
    for srv in (ctx.state.pop("idle_echo", None), ctx.servers.pop("nginx-idle", None)):
        if srv:
            stop(srv)


def _hold_idle(ctx, fid, side, port, request, expect, pids_fn):
    """Opens cfg.idle_conns connections, one exchange each, then reads the summed RSS of pids_fn()."""
    n = ctx.cfg.idle_conns
    ctx.command(fid, side, "%d TCP connections to 127.0.0.1:%d, each sends %r once and then stays open "
                           "(bench/lib/transfers.py _hold_idle)" % (n, port, request))
    base = sum(status_kib(p, "VmRSS") for p in pids_fn())
    held = []
    linger = struct.pack("ii", 1, 0)  # close with RST: 10,000 closes leave no TIME_WAIT behind
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.sendall(request)
            reply = s.recv(4096)
            if not reply.startswith(expect):
                raise BenchError("connection %d got %r, not %r" % (len(held), reply[:40], expect))
        time.sleep(0.5)  # the server settles: accept queues drained, buffers released
        rss = sum(status_kib(p, "VmRSS") for p in pids_fn())
        fds = sum(_open_fds(p) for p in pids_fn())
    except OSError as e:
        raise BenchError("after %d idle connections: %s" % (len(held), e)) from e
    finally:
        for s in held:
            s.close()
    return Result(rss / 1024.0, ops=n, note="%d connections; %.1f MiB before them, %.0f bytes per connection, "
                  "%d descriptors open while measured" % (n, base / 1024.0, (rss - base) * 1024.0 / n, fds))


def _open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def idle_sg(ctx):
    srv = ctx.state["idle_echo"]
    return _hold_idle(ctx, "mem_echo_idle", "sg", srv.port, b"x", b"X", lambda: [srv.pid])


def idle_peer(ctx):
    return _hold_idle(ctx, "mem_echo_idle", "peer", ctx.servers["nginx-idle"].port,
                      b"GET /ok HTTP/1.1\r\nHost: bench\r\n\r\n", b"HTTP/1.1 200",
                      lambda: peers.nginx_workers(ctx, "nginx-idle"))


GROUPS = [
    Group("files", [
        Figure("upload_gw", "1 GiB upload MiB/s, tmpfs: PUT via gateway", "MiB/s", "curl -T, PUT /api/v1/files",
               "nginx WebDAV PUT", "ratio", 1.0, upload_gw, lambda c: _nginx_put(c, "upload_gw"), source="issue 6"),
        Figure("upload_tus", "1 GiB upload MiB/s, tmpfs: tus PATCHes of 8 MiB via gateway", "MiB/s",
               "bench/tus_upload.py tus: POST, then 8 MiB PATCHes", "one PUT via gateway, same client", "ratio", 0.9,
               upload_tus, upload_tus_put, source="issue 18"),
        Figure("upload_cli", "1 GiB upload MiB/s, tmpfs: put via cli", "MiB/s", "sockgate-cli put (sockgate-file)",
               "nginx WebDAV PUT", "ratio", 1.0, upload_cli, lambda c: _nginx_put(c, "upload_cli"),
               source="issue 5"),
        Figure("download_gw", "1 GiB download MiB/s: GET via gateway", "MiB/s", "curl, GET /api/v1/files",
               "nginx static GET", "ratio", 0.8, download_gw, lambda c: _nginx_get(c, "download_gw"),
               source="issue 6"),
        Figure("download_cli", "1 GiB download MiB/s: get via cli", "MiB/s", "sockgate-cli get (sockgate-file)",
               "nginx static GET", "ratio", 0.8, download_cli, lambda c: _nginx_get(c, "download_cli"),
               source="issue 5"),
        Figure("upload_cli_hashed", "same put, against a peer that hashes too", "MiB/s",
               "sockgate-cli put (sockgate-file)", "nginx WebDAV PUT + openssl sha256 of the file alongside", "shown",
               None, lambda c: upload_cli(c, "upload_cli_hashed"), upload_hashing_peer),
        Figure("download_cli_hashed", "same get, against a peer that hashes too", "MiB/s",
               "sockgate-cli get (sockgate-file)", "nginx static GET piped into openssl sha256", "shown", None,
               lambda c: download_cli(c, "download_cli_hashed"), download_hashing_peer),
        Figure("loopback", "loopback ceiling MiB/s", "MiB/s", "fastest sockgate transfer above",
               "iperf3 single stream", "shown", None),
        Figure("mem_gw", "memory: gateway peak RSS during 1 GiB PUT and GET", "MiB", "sockgate (gateway)",
               "nginx workers", "bound", 32.0, source="issue 6"),
        Figure("mem_file", "memory: file server peak RSS during 1 GiB cli put and get", "MiB", "sockgate-file",
               "nginx workers", "bound", 16.0, source="issue 5"),
    ], files_setup, files_teardown, each_round=loopback_round),
    Group("idle", [
        Figure("mem_echo_idle", "memory: echo with 10k idle conns", "MiB", "sockgate-echo", "nginx workers",
               "bound", 64.0, idle_sg, idle_peer, source="issue 3"),
    ], idle_setup, idle_teardown),
]
