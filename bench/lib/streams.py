"""streams.py - streamed exec through the gateway (issue 16): `seq 1 100000000` streamed to curl
against the same command piped to `wc -c` locally, and the time from the command's first write to
the client's first byte of it, against a local pipe.
"""

import json
import re
import socket
import statistics
import subprocess
import time

from model import MIB, Figure, Group, Result
from procs import BenchError, run_tool, start_server, stop

SEQ_N = 100000000
# Bytes `seq 1 N` writes: every number and its newline.
SEQ_BYTES = sum((min(10 ** d - 1, SEQ_N) - 10 ** (d - 1) + 1) * (d + 1) for d in range(1, len(str(SEQ_N)) + 1))
# The first-byte command: a short pause so the stream is open and idle when the line is written,
# then the time of the write itself, in nanoseconds, as its only output.
FIRST_BYTE_CMD = "sleep 0.05; date +%s%N"
EVENT = re.compile(rb'event: stdout\ndata: \{"data":"(\d+)\\n"\}')


def streams_setup(ctx):
    argv = [ctx.bin("sockgate"), "--listen", "127.0.0.1:0", "--allow", "seq,sh", "--threads", "2"]
    ctx.state["stream_gw"] = start_server("gateway-stream", argv, ctx.log("gateway-stream"))


def streams_teardown(ctx):
    srv = ctx.state.pop("stream_gw", None)
    if srv:
        stop(srv)


def _url(ctx):
    return "http://127.0.0.1:%d/api/v1/exec" % ctx.state["stream_gw"].port


def seq_gw(ctx):
    body = json.dumps({"argv": ["seq", "1", str(SEQ_N)], "timeout_ms": 600000})
    # curl -N reads the events as they come; only the last line (the exit event) is kept to check.
    cmd = ("curl -sS -N -H 'Content-Type: application/json' -H 'Accept: application/x-ndjson' -d '%s' %s "
           "| tail -n 1" % (body, _url(ctx)))
    ctx.command("stream_seq", "sg", cmd)
    rc, out, err, elapsed = run_tool(["sh", "-c", cmd], 900)
    try:
        last = json.loads(out)
    except ValueError as e:
        raise BenchError("the stream did not end with an event: %r %s" % (out[-200:], err[-200:])) from e
    if rc != 0 or last.get("type") != "exit" or last.get("exit_code") != 0:
        raise BenchError("the stream ended with %r (curl status %d)" % (last, rc))
    return Result(SEQ_BYTES / elapsed / MIB, ops=SEQ_BYTES)


def seq_local(ctx):
    cmd = "seq 1 %d | wc -c" % SEQ_N
    ctx.command("stream_seq", "peer", cmd)
    rc, out, err, elapsed = run_tool(["sh", "-c", cmd], 900)
    if rc != 0 or out.strip() != str(SEQ_BYTES):
        raise BenchError("seq | wc -c printed %r (status %d): %s" % (out, rc, err[-200:]))
    return Result(SEQ_BYTES / elapsed / MIB, ops=SEQ_BYTES)


def _samples(ctx):
    return 30 if ctx.cfg.quick else 200


def _gw_first_byte(port):
    """One streamed run of FIRST_BYTE_CMD; returns milliseconds from its write to our read of it."""
    body = json.dumps({"argv": ["sh", "-c", FIRST_BYTE_CMD]}).encode()
    # HTTP/1.0: the body is not chunked, so the event's bytes arrive as the command wrote them.
    req = (b"POST /api/v1/exec HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        while True:
            piece = s.recv(65536)
            now = time.time_ns()
            if not piece:
                raise BenchError("the stream ended without the command's line: %r" % got[-300:])
            got += piece
            m = EVENT.search(got)
            if m:
                return (now - int(m.group(1))) / 1e6


def _local_first_byte():
    p = subprocess.Popen(["sh", "-c", FIRST_BYTE_CMD], stdout=subprocess.PIPE)
    line = p.stdout.readline()
    now = time.time_ns()
    p.wait()
    return (now - int(line)) / 1e6


def _latency(ctx, side, one, label):
    ms = sorted(one() for _ in range(_samples(ctx)))
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    ctx.command("stream_first_byte", side, label)
    return Result(statistics.median(ms), ops=len(ms), note="median of %d, p99 %.2f ms, max %.2f ms"
                  % (len(ms), p99, ms[-1]))


def first_byte_gw(ctx):
    port = ctx.state["stream_gw"].port
    return _latency(ctx, "sg", lambda: _gw_first_byte(port),
                    "bench/lib/streams.py: POST /api/v1/exec (Accept: text/event-stream) of sh -c '%s', "
                    "receive time minus the printed time" % FIRST_BYTE_CMD)


def first_byte_local(ctx):
    return _latency(ctx, "peer", _local_first_byte,
                    "bench/lib/streams.py: sh -c '%s' read through a local pipe" % FIRST_BYTE_CMD)


GROUPS = [
    Group("stream", [
        Figure("stream_seq", "streamed exec MiB/s: seq 1 100000000", "MiB/s",
               "curl -N, POST /api/v1/exec (NDJSON)", "seq piped to wc -c locally", "ratio", 0.5, seq_gw, seq_local,
               source="issue 16"),
        Figure("stream_first_byte", "streamed exec: command's write to client's first byte, median ms", "ms",
               "gateway SSE", "local pipe", "shown", None, first_byte_gw, first_byte_local, source="issue 16"),
    ], streams_setup, streams_teardown),
]
