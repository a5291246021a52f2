"""loads.py - the request-rate figures: REST echo (wrk), native echo (50 connections, plain and
pipelined), UDP time, and exec of `true`, each against its peer.

Every measurement is one run of a load driver with the server already warm; the value is the
driver's own rate, and the server's CPU time over the run is kept to explain it.
"""

import json
import os
import re
import urllib.request

from model import Figure, Group, Result
from procs import BenchError, cpu_seconds, run_tool, start_server, stop
import peers


def _json_line(out, tool):
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError("%s printed no result line" % tool)


def _measure(ctx, fid, side, argv, pids, timeout, parse):
    """Runs one load driver against a server; returns the Result parse() makes of its output."""
    ctx.command(fid, side, argv)
    before = cpu_seconds(pids)
    client = []
    rc, out, err, _ = run_tool(argv, timeout, client_cpu=client)
    after = cpu_seconds(pids)
    cpu = (after[0] - before[0], after[1] - before[1])
    if rc != 0:
        raise BenchError("%s exited with %d: %s" % (os.path.basename(argv[0]), rc, (err or out).strip()[-300:]))
    value, ops = parse(out)
    return Result(value, ops=ops, cpu=cpu if pids else None, client_cpu=client[0])


# REST echo: wrk with 64 keep-alive connections, POST /api/v1/echo against nginx `return 200`.

WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_TOTAL = re.compile(r"(\d+) requests in")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _parse_wrk(out):
    rate = WRK_RATE.search(out)
    if not rate:
        raise BenchError("wrk printed no Requests/sec line: %s" % out.strip()[-300:])
    bad = WRK_NON2XX.search(out)
    if bad:
        raise BenchError("wrk got %s responses that were not 2xx" % bad.group(1))
    sock = WRK_SOCKERR.search(out)
    if sock and any(int(n) for n in sock.groups()):
        raise BenchError("wrk: %s" % sock.group(0))
    total = WRK_TOTAL.search(out)
    return float(rate.group(1)), int(total.group(1)) if total else None


def _wrk(ctx, fid, side, url, pids, lua=None, conns=64):
    d = ctx.cfg.wrk_seconds
    argv = ["wrk", "-t2", "-c%d" % conns, "-d%ds" % d, "--timeout", "5s"]
    if lua:
        argv += ["-s", lua]
    argv.append(url)
    return _measure(ctx, fid, side, argv, pids, d + 30, _parse_wrk)


def rest_setup(ctx):
    ctx.state["rest_gw"] = peers.start_gateway(ctx, "gateway-rest")
    peers.ensure_nginx(ctx)
    reply = _post_json("http://127.0.0.1:%d/api/v1/echo" % ctx.state["rest_gw"].port, {"message": "hello sockgate"})
    if reply.get("reply") != "HELLO SOCKGATE":
        raise BenchError("POST /api/v1/echo answered %r, not {\"reply\": \"HELLO SOCKGATE\"}" % reply)


def _post_json(url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except (OSError, ValueError) as e:
        raise BenchError("POST %s: %s" % (url, e)) from e


def rest_teardown(ctx):
    gw = ctx.state.pop("rest_gw", None)
    if gw:
        stop(gw)


def rest_sg(ctx):
    gw = ctx.state["rest_gw"]
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_echo", "sg", "http://127.0.0.1:%d/api/v1/echo" % gw.port, [gw.pid], lua)


def rest_proxy_peer(ctx):
    # The same POST as the gateway's, through nginx's proxy_pass to a keep-alive upstream (one hop each).
    ng = ctx.servers["nginx"]
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_echo_proxy", "peer", "http://127.0.0.1:%d/proxy" % ng.port, peers.nginx_workers(ctx), lua)


def rest_proxy_sg(ctx):
    gw = ctx.state["rest_gw"]
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_echo_proxy", "sg", "http://127.0.0.1:%d/api/v1/echo" % gw.port, [gw.pid], lua)


def rest_1000_sg(ctx):
    gw = ctx.state["rest_gw"]
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_echo_1000", "sg", "http://127.0.0.1:%d/api/v1/echo" % gw.port, [gw.pid], lua, 1000)


def rest_64_sg(ctx):
    # The "peer" of the 1,000-connection row is the gateway itself at 64 connections, in the same round.
    gw = ctx.state["rest_gw"]
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_echo_1000", "peer", "http://127.0.0.1:%d/api/v1/echo" % gw.port, [gw.pid], lua)


def _nginx_wide(ctx):
    # At 1,000 clients a proxied call holds three connections (client, and both ends of the
    # upstream one), past the shared instance's 1,024 a worker: its own instance, so the
    # shared one keeps the small connection table the memory rows compare against.
    return peers.ensure_nginx(ctx, "nginx-wide", conns=4096)


def rest_proxy_1000_nginx(ctx):
    # Context for rest_echo_1000: how much the honest peer itself keeps at 1,000 connections on this machine.
    ng = _nginx_wide(ctx)
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_proxy_1000_nginx", "sg", "http://127.0.0.1:%d/proxy" % ng.port,
                peers.nginx_workers(ctx, "nginx-wide"), lua, 1000)


def rest_proxy_64_nginx(ctx):
    ng = _nginx_wide(ctx)
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    return _wrk(ctx, "rest_proxy_1000_nginx", "peer", "http://127.0.0.1:%d/proxy" % ng.port,
                peers.nginx_workers(ctx, "nginx-wide"), lua)


def rest_floor_sg(ctx):
    # The same gateway answering from memory, with no backend behind the route: what
    # libmicrohttpd and the gateway's request handling cost on their own, the ceiling of rest_echo.
    gw = ctx.state["rest_gw"]
    return _wrk(ctx, "rest_floor", "sg", "http://127.0.0.1:%d/favicon.svg" % gw.port, [gw.pid])


def rest_floor_peer(ctx):
    ng = ctx.servers["nginx"]
    return _wrk(ctx, "rest_floor", "peer", "http://127.0.0.1:%d/ok" % ng.port, peers.nginx_workers(ctx))


def rest_peer(ctx):
    ng = ctx.servers["nginx"]
    return _wrk(ctx, "rest_echo", "peer", "http://127.0.0.1:%d/ok" % ng.port, peers.nginx_workers(ctx))


# Native echo: 50 connections, one request or 16 in flight each; sockgate-echo against redis PING.

def echo_setup(ctx):
    ctx.state["echo"] = start_server("sockgate-echo", [ctx.bin("sockgate-echo"), "--listen", "127.0.0.1:0"],
                                     ctx.log("sockgate-echo"))
    peers.ensure_redis(ctx)


def echo_teardown(ctx):
    srv = ctx.state.pop("echo", None)
    if srv:
        stop(srv)


def _parse_rate(key):
    def parse(out):
        r = _json_line(out, "load driver")
        if r.get("errors", 0) or r.get("failed", 0):
            raise BenchError("the load driver counted errors: %s" % out.strip())
        return float(r[key]), r.get("round_trips", r.get("count"))
    return parse


def _echo_load(ctx, fid, side, pipeline):
    if side == "sg":
        srv, target = ctx.state["echo"], "echo"
    else:
        srv, target = ctx.servers["redis"], "redis"
    d = ctx.cfg.load_seconds
    argv = [ctx.bin("sockgate-echo-load"), "--target", target, "--addr", "127.0.0.1:%d" % srv.port,
            "--conns", "50", "--pipeline", str(pipeline), "--duration", str(d)]
    return _measure(ctx, fid, side, argv, [srv.pid], d + 60, _parse_rate("round_trips_per_s"))


# UDP time: 16 datagrams in flight; sockgate-time against the bare UDP echo, same payload.

def udp_setup(ctx):
    ctx.state["time"] = start_server("sockgate-time", [ctx.bin("sockgate-time"), "--listen", "127.0.0.1:0"],
                                     ctx.log("sockgate-time"))
    ctx.state["udp_echo"] = start_server("sockgate-udp-echo",
                                         [ctx.bin("sockgate-udp-echo"), "--listen", "127.0.0.1:0"],
                                         ctx.log("sockgate-udp-echo"))


def udp_teardown(ctx):
    for key in ("time", "udp_echo"):
        srv = ctx.state.pop(key, None)
        if srv:
            stop(srv)


def _udp_load(ctx, side):
    srv = ctx.state["time" if side == "sg" else "udp_echo"]
    d = ctx.cfg.load_seconds
    argv = [ctx.bin("sockgate-udp-load"), "--addr", "127.0.0.1:%d" % srv.port, "--expect",
            "time" if side == "sg" else "echo", "--payload", "%Y-%m-%d %X", "--inflight", "16",
            "--duration", str(d)]
    return _measure(ctx, "udp_time", side, argv, [srv.pid], d + 30, _parse_rate("round_trips_per_s"))


# Exec of `true`: commands per second over the framed protocol against a bare posix_spawn loop.

def exec_setup(ctx):
    ctx.state["exec"] = start_server("sockgate-exec", [ctx.bin("sockgate-exec"), "--listen", "127.0.0.1:0",
                                                       "--allow", "true"], ctx.log("sockgate-exec"))


def exec_teardown(ctx):
    srv = ctx.state.pop("exec", None)
    if srv:
        stop(srv)


def _exec_sg(ctx):
    srv = ctx.state["exec"]
    d = ctx.cfg.load_seconds
    argv = [ctx.bin("sockgate-exec-load"), "--addr", "127.0.0.1:%d" % srv.port, "--command", "true",
            "--count", "10000000", "--duration-ms", str(d * 1000)]
    return _measure(ctx, "exec_true", "sg", argv, [srv.pid], d + 60, _parse_rate("per_second"))


def _exec_peer(ctx):
    d = ctx.cfg.load_seconds
    argv = [ctx.bin("sockgate-spawn-loop"), "--command", "/usr/bin/true", "--count", "10000000",
            "--duration-ms", str(d * 1000)]
    return _measure(ctx, "exec_true", "peer", argv, [], d + 60, _parse_rate("per_second"))


GROUPS = [
    Group("rest", [
        Figure("rest_echo", "REST echo req/s, wrk 64 keep-alive conns", "req/s",
               "POST /api/v1/echo (gateway)", "nginx `return 200`", "ratio", 0.5,
               rest_sg, rest_peer, source="issue 6"),
        Figure("rest_echo_proxy", "REST echo req/s against nginx proxy_pass, one hop each, wrk 64 keep-alive conns",
               "req/s", "POST /api/v1/echo (gateway, echo backend)",
               "nginx `proxy_pass` to a keep-alive upstream answering `return 200`", "ratio", 1.0,
               rest_proxy_sg, rest_proxy_peer, source="issue 15"),
        Figure("rest_echo_1000", "REST echo at 1,000 keep-alive conns against 64, wrk", "req/s",
               "POST /api/v1/echo, 1,000 conns", "the same at 64 conns", "ratio", 0.9,
               rest_1000_sg, rest_64_sg, source="issue 15"),
        Figure("rest_proxy_1000_nginx", "context for the row above: nginx `proxy_pass` at 1,000 keep-alive conns "
               "against 64, wrk", "req/s", "nginx `proxy_pass`, 1,000 conns", "the same at 64 conns", "shown", None,
               rest_proxy_1000_nginx, rest_proxy_64_nginx),
        Figure("rest_floor", "gateway floor: a static answer, no backend, wrk 64 conns", "req/s",
               "GET /favicon.svg (gateway, from memory)", "nginx `return 200`", "ratio", 0.8,
               rest_floor_sg, rest_floor_peer, source="issue 15"),
    ], rest_setup, rest_teardown),
    Group("echo", [
        Figure("echo_50", "native echo round trips/s, 50 conns", "rt/s", "sockgate-echo",
               "redis-server inline PING", "ratio", 1.0,
               lambda c: _echo_load(c, "echo_50", "sg", 1), lambda c: _echo_load(c, "echo_50", "peer", 1),
               source="issue 3"),
        Figure("echo_50_p16", "same, 16 in flight per conn", "rt/s", "sockgate-echo",
               "redis-server PING pipelined", "ratio", 1.0,
               lambda c: _echo_load(c, "echo_50_p16", "sg", 16),
               lambda c: _echo_load(c, "echo_50_p16", "peer", 16), source="issue 3"),
    ], echo_setup, echo_teardown),
    Group("udp", [
        Figure("udp_time", "UDP time round trips/s, 16 in flight", "rt/s", "sockgate-time",
               "bare UDP echo (bench/udp_echo.c)", "ratio", 0.9,
               lambda c: _udp_load(c, "sg"), lambda c: _udp_load(c, "peer"), source="issue 3"),
    ], udp_setup, udp_teardown),
    Group("exec", [
        Figure("exec_true", "exec of `true`, commands/s", "cmd/s", "sockgate-exec (framed, 1 conn)",
               "bare posix_spawn loop (bench/spawn_loop.c)", "ratio", 0.8, _exec_sg, _exec_peer,
               source="issue 4"),
    ], exec_setup, exec_teardown),
]
