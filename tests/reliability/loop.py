#!/usr/bin/env python3
"""loop.py - no request waits on another's backend (issue 15): the gateway's workers are event loops
that suspend a request while its backend works, so a slow or frozen backend holds only its own
requests.

1. 64 `sleep 5` execs in flight at once (exec --max-procs 64) while GET /healthz and POST echo
   are probed every 50 ms, each on fresh connections and on a kept-alive one: no probe may take
   100 ms, and every exec must be done within 5.5 s.
2. The exec backend, then the echo backend, frozen with SIGSTOP while calls to it pile up: the
   other routes (healthz, echo, time) keep a p99 under 20 ms (exec's is shown: spawning a command
   alone can take that long here); once the backend runs again every call piled up is answered
   (by it, or 504 at the gateway's deadline), none hangs.
3. 150 uploads that stall after their head (the embedded file service serves 128 connections at
   once): first raw sockets that send a PUT head and one byte, then slowhttptest -B (slow body)
   when it is installed. Meanwhile uploads, downloads (whole and ranged) and listings keep
   answering 2xx: a stalled upload holds no connection of the file service.

Every probe is paired with a round trip to a separately started echo server (the control): a slow
probe whose control was slow too is the machine's, and is reported as such.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import rellib
from rellib import Figures, Proc, now

N_EXECS = 64
SLEEP_S = 5
EXEC_DONE_S = 5.5
PROBE_MAX_MS = 100
FROZEN_P99_MS = 20
PERIOD_S = 0.05


def control_ms(port):
    """One round trip to the control echo server, connect included, in ms."""
    t0 = now()
    try:
        with socket.create_connection((rellib.HOST, port), timeout=5) as s:
            s.sendall(b"ping\n")
            got = b""
            while len(got) < 5:
                chunk = s.recv(16)
                if not chunk:
                    break
                got += chunk
    except OSError:
        return float("inf")
    return (now() - t0) * 1000.0


def ask(conn, port, kind, rid):
    """One probe request (kind: healthz, echo, time, exec) tagged rid; conn is a kept-alive connection
    or None. Returns the latency in ms (inf on a failure) and the connection to use next time."""
    fresh = conn is None
    if fresh:
        conn = http.client.HTTPConnection(rellib.HOST, port, timeout=5)
    method, path, body = {
        "healthz": ("GET", "/healthz", None),
        "echo": ("POST", "/api/v1/echo", b'{"message":"probe"}'),
        "time": ("GET", "/api/v1/time", None),
        "exec": ("POST", "/api/v1/exec", b'{"argv":["echo","probe"]}'),
    }[kind]
    headers = {"Content-Type": "application/json"} if body else {}
    headers["X-Request-Id"] = rid
    t0 = now()
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        ms = (now() - t0) * 1000.0 if resp.status == 200 else float("inf")
    except (OSError, http.client.HTTPException):
        ms = float("inf")
        conn.close()
        return ms, None
    if fresh:
        conn.close()
        return ms, None
    return ms, conn


def probe_loop(port, control_port, kinds, keep_alive, stop, out):
    """Probes each kind every PERIOD_S (in a process of its own) until stop; sends the results."""
    res = {k: [] for k in kinds}
    slowest = {k: (0.0, None) for k in kinds}
    ctl = []
    conns = {k: None for k in kinds}
    t0, parent, n = now(), os.getppid(), 0
    while not stop.is_set() and os.getppid() == parent and now() - t0 < 600:
        n += 1
        for k in kinds:
            rid = "probe-%s-%s-%d" % (k, "kept" if keep_alive else "fresh", n)
            ms, c = ask(conns[k], port, k, rid)
            conns[k] = c if keep_alive else None
            res[k].append(ms)
            if ms != float("inf") and ms > slowest[k][0]:
                slowest[k] = (ms, rid)
        ctl.append(control_ms(control_port))
        stop.wait(PERIOD_S)
    out.send({"lat": res, "control": ctl, "slowest": slowest})


class Probes:
    """Probe processes: one on fresh connections, one on kept-alive connections."""

    def __init__(self, port, control_port, kinds):
        ctx = multiprocessing.get_context("fork")
        self.stop = ctx.Event()
        self.procs = []
        for keep in (False, True):
            rx, tx = ctx.Pipe(duplex=False)
            p = ctx.Process(target=probe_loop, args=(port, control_port, kinds, keep, self.stop, tx), daemon=True)
            self.procs.append((keep, p, rx))

    def start(self):
        for _, p, _ in self.procs:
            p.start()

    def finish(self):
        """Stops the probes; returns {(kind, 'fresh'|'kept'): [ms...]} and every control time."""
        self.stop.set()
        lat, ctl = {}, []
        self.slowest = {}
        for keep, p, rx in self.procs:
            if rx.poll(30):
                r = rx.recv()
                for k, v in r["lat"].items():
                    lat[(k, "kept" if keep else "fresh")] = v
                    self.slowest[(k, "kept" if keep else "fresh")] = r["slowest"][k][1]
                ctl += r["control"]
            p.join(timeout=10)
        return lat, ctl


def post_json(port, path, obj, timeout):
    """One POST on a new connection; returns (status, seconds, the answer decoded or None)."""
    t0 = now()
    answer = None
    try:
        status, _, body = rellib.request_json(port, "POST", path, obj, timeout=timeout)
        try:
            answer = json.loads(body)
        except ValueError:
            pass
    except OSError:
        status = None
    return status, now() - t0, answer


def p99(values):
    v = sorted(values)
    return v[int(0.99 * (len(v) - 1))] if v else float("inf")


def gateway_us(gw):
    """request id -> microseconds inside the gateway (headers in to answer done), from its JSON log."""
    out = {}
    for line in gw.log().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "id" in rec and "us" in rec:
            out[rec["id"]] = rec["us"]
    return out


def report_probes(fig, prefix, lat, ctl, op, limit, stat, gw=None, slowest=None):
    """One checked figure per probe kind and connection style (stat: max or p99). With the gateway's
    log, the slowest probe's time inside the gateway too: what is left is accept, network and scheduling."""
    inside = gateway_us(gw) if gw and slowest else {}
    for (kind, style), values in sorted(lat.items()):
        if inside and slowest.get((kind, style)) in inside:
            fig.info("%s_%s_%s_slowest_inside_gateway_ms" % (prefix, kind, style),
                     round(inside[slowest[(kind, style)]] / 1000.0, 1))
        finite = [v for v in values if v != float("inf")]
        fig.check("%s_%s_%s_failures" % (prefix, kind, style), len(values) - len(finite), "=", 0)
        value = max(finite) if stat == "max" else p99(finite)
        if kind == "exec":
            # A command's own spawn costs the exec service 5-30 ms on this machine: its time is shown,
            # the 20 ms target applies to the routes whose work is the gateway's alone.
            fig.info("%s_%s_%s_%s_ms" % (prefix, kind, style, stat), round(value if finite else float("inf"), 1))
            continue
        fig.check("%s_%s_%s_%s_ms" % (prefix, kind, style, stat), round(value if finite else float("inf"), 1), op,
                  limit)
        fig.info("%s_%s_%s_probes" % (prefix, kind, style), len(values))
    fig.info("%s_control_max_ms" % prefix, round(max(ctl), 1) if ctl else "none")


def many_execs(fig, gw, control):
    probes = Probes(gw.port, control.port, ["healthz", "echo"])
    probes.start()
    results = [None] * N_EXECS

    def one(i):
        results[i] = post_json(gw.port, "/api/v1/exec",
                               {"argv": ["sleep", str(SLEEP_S)], "timeout_ms": (SLEEP_S + 5) * 1000}, 30)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(N_EXECS)]
    for t in threads:
        t.start()
        threading.Event().wait(0.01)  # 64 forks at the same instant would measure the machine, not the gateway
    for t in threads:
        t.join(timeout=60)
    lat, ctl = probes.finish()
    slept = [r for r in results if r and r[0] == 200 and r[2] and r[2].get("exit_code") == 0
             and not r[2].get("timed_out")]
    fig.check("execs_slept_whole_and_answered_200", len(slept), "=", N_EXECS)
    fig.check("exec_slowest_s", round(max([r[1] for r in results if r] or [float("inf")]), 2), "<=", EXEC_DONE_S)
    fig.info("exec_fastest_s", round(min([r[1] for r in results if r] or [0]), 2))
    report_probes(fig, "during_execs", lat, ctl, "<", PROBE_MAX_MS, "max", gw, probes.slowest)


def frozen_backend(fig, gw, control, backend, path, body, others, args):
    """Freezes backend with SIGSTOP while calls to it pile up; probes the other routes."""
    piled = []

    def one():
        piled.append(post_json(gw.port, path, body, 60))

    os.kill(backend.pid, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=one, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        probes = Probes(gw.port, control.port, others)
        probes.start()
        threading.Event().wait(args.frozen_s)
        lat, ctl = probes.finish()
    finally:
        os.kill(backend.pid, signal.SIGCONT)
    for t in threads:
        t.join(timeout=60)
    name = backend.name.replace("sockgate-", "")
    fig.check("%s_frozen_calls_unanswered" % name, 16 - len(piled), "=", 0)
    fig.info("%s_frozen_calls_statuses" % name, sorted({str(r[0]) for r in piled}))
    report_probes(fig, "%s_frozen" % name, lat, ctl, "<", FROZEN_P99_MS, "p99", gw, probes.slowest)


N_STALLED = 150
FILE_ROUNDS = 20


def uploads_in_flight(port):
    """The gateway's sockgate_uploads_in_flight gauge (-1 when /metrics cannot be read)."""
    try:
        status, _, body = rellib.request(port, "GET", "/metrics", timeout=5)
    except OSError:
        return -1
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("sockgate_uploads_in_flight "):
            return int(float(line.split()[1]))
    return -1


def file_rounds(port, tag):
    """FILE_ROUNDS rounds of upload, download, ranged download and listing; returns the failures."""
    bad = []
    for i in range(FILE_ROUNDS):
        name = "/api/v1/files/%s-%d.bin" % (tag, i)
        data = rellib.splitmix_bytes(i + 1, 50000)
        steps = [("PUT", name, data, {}, (200, 201), None),
                 ("GET", name, None, {}, (200,), data),
                 ("GET", name, None, {"Range": "bytes=100-199"}, (206,), data[100:200]),
                 ("GET", "/api/v1/files", None, {}, (200,), None)]
        for method, path, body, headers, ok, want in steps:
            try:
                status, _, got = rellib.request(port, method, path, body, headers, timeout=10)
            except OSError as e:
                status, got = str(e), None
            if status not in ok or (want is not None and got != want):
                bad.append("%s %s: %s" % (method, path, status))
    return bad


def stalled_uploads(fig, gw, work):
    """150 uploads stalled after their head; the file routes must keep answering 2xx."""
    socks = []
    try:
        for i in range(N_STALLED):
            s = socket.create_connection((rellib.HOST, gw.port), timeout=10)
            s.sendall(b"PUT /api/v1/files/stalled-%d.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Length: 1048576\r\n\r\nx" % i)
            socks.append(s)
        begun = rellib.wait_until(lambda: uploads_in_flight(gw.port) >= N_STALLED, 30)
        fig.check("raw_stalled_uploads_begun", uploads_in_flight(gw.port), ">=", N_STALLED)
        bad = file_rounds(gw.port, "raw")
        fig.check("raw_stalled_file_route_failures", len(bad), "=", 0)
        if bad:
            fig.info("raw_stalled_first_failures", bad[:5])
        fig.info("raw_stalled_begun_within_30s", bool(begun))
    finally:
        for s in socks:
            s.close()
    rellib.wait_until(lambda: uploads_in_flight(gw.port) == 0, 30)
    fig.check("raw_stalled_uploads_left", uploads_in_flight(gw.port), "=", 0)

    tool = shutil.which("slowhttptest")
    if not tool:
        fig.info("slowhttptest", "not installed: apt-get install slowhttptest")
        return
    # -B: slow body; 150 connections at once, 1 MiB announced, a few bytes every 5 s, for 40 s.
    cmd = [tool, "-B", "-c", str(N_STALLED), "-r", "150", "-l", "40", "-i", "5", "-s", "1048576", "-x", "10",
           "-t", "PUT", "-p", "3", "-u", "http://127.0.0.1:%d/api/v1/files/slowhttptest.bin" % gw.port]
    slow = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    try:
        held = rellib.wait_until(lambda: uploads_in_flight(gw.port) >= N_STALLED * 9 // 10, 20)
        fig.info("slowhttptest_uploads_held", uploads_in_flight(gw.port))
        fig.check("slowhttptest_held_most", 1 if held else 0, "=", 1)
        bad = file_rounds(gw.port, "slow")
        fig.check("slowhttptest_file_route_failures", len(bad), "=", 0)
        if bad:
            fig.info("slowhttptest_first_failures", bad[:5])
    finally:
        slow.terminate()
        try:
            slow.wait(timeout=10)
        except subprocess.TimeoutExpired:
            slow.kill()
            slow.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the CI version: 3 s frozen instead of 8")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.frozen_s = 3 if args.short else 8
    rellib.raise_nofile()
    fig = Figures("loop")
    work = rellib.workdir("loop")
    procs = []
    try:
        exec_p = Proc("sockgate-exec", ["--allow", "sleep,echo", "--max-procs", str(N_EXECS), "--workdir", work],
                      work).start()
        echo_p = Proc("sockgate-echo", [], work).start()
        procs += [exec_p, echo_p]
        gw = Proc("sockgate", ["--exec", "127.0.0.1:%d" % exec_p.port, "--echo", "127.0.0.1:%d" % echo_p.port,
                               "--timeout-ms", "4000", "--file-root", os.path.join(work, "root"),
                               "--log-format", "json"], work).start()
        procs.append(gw)
        control = Proc("sockgate-echo", [], work).start()
        procs.append(control)
        many_execs(fig, gw, control)
        frozen_backend(fig, gw, control, exec_p, "/api/v1/exec", {"argv": ["echo", "piled"], "timeout_ms": 1000},
                       ["healthz", "echo", "time"], args)
        frozen_backend(fig, gw, control, echo_p, "/api/v1/echo", {"message": "piled"},
                       ["healthz", "exec", "time"], args)
        stalled_uploads(fig, gw, work)
        fig.check_clean_exits([("sockgate", gw), ("sockgate-exec", exec_p), ("sockgate-echo", echo_p)])
        control.stop()
    except Exception as e:
        fig.stopped(e)
        args.keep = True
    finally:
        for p in procs:
            p.kill(signal.SIGKILL)
        rellib.cleanup(work, args.keep)
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
