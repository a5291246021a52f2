"""wsbench.py - WebSocket figures (issue 19): echo round trips per second through the gateway's
/api/v1/ws/echo against websockify (Debian's) in front of the same sockgate-echo, same client,
same run; and the same client over raw TCP to sockgate-echo, to show what the bridge costs.

The client is bench/ws/ws_load.mjs (Node and the ws package tests/ws pins): 32 sockets, each
sending 64 bytes and waiting for them back before the next.
"""

import json
import os

from model import Figure, Group, Result
from procs import BenchError, children, cpu_seconds, free_port, run_tool, start_server, stop

CONNS = 32
SIZE = 64


def ws_setup(ctx):
    # The client's ws package and websockify itself, when missing (tests/ws/setup.sh installs both).
    rc, out, err, _ = run_tool(["sh", os.path.join(os.path.dirname(ctx.bench_dir), "tests", "ws", "setup.sh")], 900)
    if rc != 0:
        raise BenchError("tests/ws/setup.sh failed: %s" % (err or out).strip()[-300:])
    echo = start_server("ws-echo", [ctx.bin("sockgate-echo"), "--listen", "127.0.0.1:0"], ctx.log("ws-echo"))
    ctx.state["ws_echo"] = echo
    root = os.path.join(ctx.files_dir, "ws-root")
    ctx.state["ws_gw"] = start_server("gateway-ws", [ctx.bin("sockgate"), "--listen", "127.0.0.1:0", "--file-root", root,
                                                     "--echo", "127.0.0.1:%d" % echo.port], ctx.log("gateway-ws"))
    port = free_port()
    ctx.state["ws_websockify"] = start_server("websockify", ["websockify", "127.0.0.1:%d" % port,
                                                             "127.0.0.1:%d" % echo.port],
                                              ctx.log("websockify"), port=port)


def ws_teardown(ctx):
    for key in ("ws_websockify", "ws_gw", "ws_echo"):
        srv = ctx.state.pop(key, None)
        if srv:
            stop(srv)


def _load(ctx, fid, side, url, pids):
    seconds = 2 if ctx.cfg.quick else 3
    argv = ["node", os.path.join(ctx.bench_dir, "ws", "ws_load.mjs"), url, "--conns", str(CONNS), "--seconds",
            str(seconds), "--size", str(SIZE)]
    ctx.command(fid, side, argv)
    before = cpu_seconds(pids)
    client = []
    rc, out, err, _ = run_tool(argv, seconds + 60, client_cpu=client)
    after = cpu_seconds(pids)
    if rc != 0:
        raise BenchError("ws_load.mjs exited with %d: %s" % (rc, (err or out).strip()[-300:]))
    line = [l for l in out.strip().splitlines() if l.startswith("{")]
    if not line:
        raise BenchError("ws_load.mjs printed no result line")
    r = json.loads(line[-1])
    return Result(r["rate"], ops=r["round_trips"], cpu=(after[0] - before[0], after[1] - before[1]),
                  client_cpu=client[0])


def ws_gateway(ctx):
    gw = ctx.state["ws_gw"]
    return _load(ctx, "ws_echo", "sg", "ws://127.0.0.1:%d/api/v1/ws/echo" % gw.port,
                 [gw.pid, ctx.state["ws_echo"].pid])


def ws_websockify(ctx):
    wf = ctx.state["ws_websockify"]
    # websockify forks a process per connection: the parent and its children together.
    return _load(ctx, "ws_echo", "peer", "ws://127.0.0.1:%d/" % wf.port,
                 [wf.pid] + children(wf.pid) + [ctx.state["ws_echo"].pid])


def ws_gateway_again(ctx):
    gw = ctx.state["ws_gw"]
    return _load(ctx, "ws_raw", "sg", "ws://127.0.0.1:%d/api/v1/ws/echo" % gw.port,
                 [gw.pid, ctx.state["ws_echo"].pid])


def ws_raw_tcp(ctx):
    echo = ctx.state["ws_echo"]
    return _load(ctx, "ws_raw", "peer", "tcp://127.0.0.1:%d" % echo.port, [echo.pid])


GROUPS = [
    Group("ws", [
        Figure("ws_echo", "WebSocket echo round trips/s (64 B, 32 sockets)", "rt/s",
               "/api/v1/ws/echo (ws_load.mjs)", "websockify to the same sockgate-echo (ws_load.mjs)", "ratio", 2.0,
               ws_gateway, ws_websockify, source="issue 19"),
        Figure("ws_raw", "the bridge's cost: WebSocket via gateway vs raw TCP to sockgate-echo", "rt/s",
               "/api/v1/ws/echo (ws_load.mjs)", "raw TCP to sockgate-echo (ws_load.mjs tcp://)", "shown", None,
               ws_gateway_again, ws_raw_tcp),
    ], ws_setup, ws_teardown),
]
