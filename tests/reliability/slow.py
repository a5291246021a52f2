#!/usr/bin/env python3
"""slow.py - slow and abusive clients against the gateway (every backend embedded, as shipped):
500 slowloris connections sending their headers a byte at a time, slow readers of a large
download, and uploads and JSON bodies that stall for ever. Throughout, a probe asks GET /healthz
every 50 ms on a new connection.

Figures: the slowest /healthz answer, and for each kind of stalled client when the gateway cut
it: a slowloris within --header-timeout-ms of its connect (plus 1 s), a stalled body within
--body-timeout-ms of its last byte, a stalled reader within the idle timeout; the cuts counted in
/metrics; and what was left behind: files, temporary files, in-flight gauges and descriptors.
"""
import argparse
import json
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import threading
import time

import rellib
from rellib import Figures, Proc, now

# The gateway closes a client connection without traffic for this long (CONN_IDLE_TIMEOUT_S in gateway/server.c).
IDLE_TIMEOUT_S = 60
CUT_SLACK_S = 5
# The head and body deadlines the suite runs the gateway with: the defaults in the full run,
# shorter in the CI run (whose slow clients trickle for 10 s only).
HEADER_TIMEOUT_S = {"full": 20, "short": 5}
BODY_TIMEOUT_S = {"full": 30, "short": 8}
# A deadline cut is seen by the client within this of the deadline (the target).
DEADLINE_SLACK_S = 1.0
BIG_SIZE = 32 << 20


def healthz_ms(port, rid):
    """One GET /healthz on a new connection, tagged rid (connect included), in ms; inf when it fails."""
    t0 = now()
    try:
        status, _, _ = rellib.request(port, "GET", "/healthz", headers={"X-Request-Id": rid}, timeout=5)
    except OSError:
        return float("inf")
    return (now() - t0) * 1000.0 if status == 200 else float("inf")


def control_ms(port):
    """One round trip to a separately started echo server, connect included: what the machine alone costs."""
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


class Prober:
    """GET /healthz every 50 ms, each on a new connection and followed by a control round trip, from a
    process of its own: the suite's hundreds of client sockets and threads must not delay the probe."""

    def __init__(self, port, control_port):
        self.port, self.control_port = port, control_port
        ctx = multiprocessing.get_context("fork")
        self.stop = ctx.Event()
        self.results, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=self.loop, args=(child,), daemon=True)
        self.lat, self.control = [], []
        self.slow_alone = self.failures = 0  # slow_alone: /healthz over 100 ms while the control took < 20 ms
        self.slowest_at, self.slowest_id = 0.0, None

    def start(self):
        self.proc.start()

    def finish(self):
        """Stops the probing and takes its results."""
        self.stop.set()
        if self.results.poll(30):
            r = self.results.recv()
            self.lat, self.control, self.failures = r["lat"], r["control"], r["failures"]
            self.slow_alone, self.slowest_at, self.slowest_id = r["slow_alone"], r["slowest_at"], r["slowest_id"]
        self.proc.join(timeout=10)

    def loop(self, out):
        r = {"lat": [], "control": [], "failures": 0, "slow_alone": 0, "slowest_at": 0.0, "slowest_id": None}
        t0, n, parent = now(), 0, os.getppid()
        # Bounded: ends when told, when the suite is gone, or after an hour whatever happens.
        while not self.stop.is_set() and os.getppid() == parent and now() - t0 < 3600:
            t = now()
            n += 1
            ms = healthz_ms(self.port, "probe-%d" % n)
            ctl = control_ms(self.control_port)
            r["control"].append(ctl)
            if ms == float("inf"):
                r["failures"] += 1
            else:
                if not r["lat"] or ms > max(r["lat"]):
                    r["slowest_at"], r["slowest_id"] = t - t0, "probe-%d" % n
                r["lat"].append(ms)
                r["slow_alone"] += 1 if ms >= 100 and ctl < 20 else 0
            self.stop.wait(0.05)
        out.send(r)


class Slowloris(threading.Thread):
    """n connections that each send one byte of never-ending headers every interval seconds until stall_at."""

    def __init__(self, port, n, interval, stall_at):
        super().__init__(daemon=True)
        self.port, self.n, self.interval, self.stall_at = port, n, interval, stall_at
        self.prefix = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        self.cut_while_sending = 0
        self.cut_after = []  # seconds from the last byte to the close, one per connection
        self.cut_after_open = []  # seconds from the connect to the close, one per connection
        self.never_cut = 0
        self.opened = 0

    def run(self):
        socks = []
        opened_at = {}
        for _ in range(self.n):
            try:
                s = socket.create_connection((rellib.HOST, self.port), timeout=5)
            except OSError:
                continue
            socks.append(s)
            opened_at[s] = now()
        self.opened = len(socks)
        sent = {s: 0 for s in socks}
        last = {}
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        alive = set(socks)
        # Dripping: a byte per connection per interval, spread evenly.
        while now() < self.stall_at and alive:
            for s in list(alive):
                if now() >= self.stall_at:
                    break
                data = self.prefix if sent[s] == 0 else b"a"
                try:
                    s.send(data)
                    sent[s] += 1
                    last[s] = now()
                except OSError:
                    pass
            for key, _ in sel.select(timeout=self.interval):
                s = key.fileobj
                self.cut_after_open.append(now() - opened_at[s])
                sel.unregister(s)
                alive.discard(s)
                self.cut_while_sending += 1
        stalled_at = {s: last.get(s, now()) for s in alive}
        deadline = now() + IDLE_TIMEOUT_S + 3 * CUT_SLACK_S
        while alive and now() < deadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                try:
                    s.recv(4096)
                except OSError:
                    pass
                self.cut_after.append(now() - stalled_at[s])
                self.cut_after_open.append(now() - opened_at[s])
                sel.unregister(s)
                alive.discard(s)
        self.never_cut = len(alive)
        for s in socks:
            s.close()


class SlowReader(threading.Thread):
    """Downloads the big file reading 16 KiB every 0.25 s until stall_at, then reads nothing."""

    def __init__(self, port, rid, stall_at):
        super().__init__(daemon=True)
        self.port, self.rid, self.stall_at = port, rid, stall_at
        self.got_while_reading = 0
        self.stalled_at = None
        self.total = 0
        self.length = None

    def run(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # so the gateway's side fills up soon
        s.settimeout(10)
        s.connect((rellib.HOST, self.port))
        s.sendall(("GET /api/v1/files/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: %s\r\n\r\n"
                   % self.rid).encode())
        while now() < self.stall_at:
            try:
                chunk = s.recv(16384)
            except socket.timeout:
                chunk = b""
            if not chunk:
                break
            self.got_while_reading += len(chunk)
            time.sleep(0.25)
        self.stalled_at = now()
        self.sock = s  # read out later, once the gateway has given up


class StalledUpload(threading.Thread):
    """Sends the head of a request and part of its body, then nothing; waits for the gateway to hang up."""

    def __init__(self, port, kind, rid):
        super().__init__(daemon=True)
        self.port, self.kind, self.rid = port, kind, rid
        self.cut_after = None
        self.answer = b""

    def request(self):
        rid = "X-Request-Id: %s\r\n" % self.rid
        if self.kind == "put":
            return ("PUT /api/v1/files/%s HTTP/1.1\r\nHost: h\r\n%sContent-Length: %d\r\n\r\n"
                    % (self.rid, rid, 16 << 20)).encode() + b"x" * (1 << 20)
        if self.kind == "chunked":
            return ("PUT /api/v1/files/%s HTTP/1.1\r\nHost: h\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                    % (self.rid, rid)).encode() + b"100000\r\n" + b"y" * (1 << 20) + b"\r\n1000\r\nyy"
        if self.kind == "multipart":
            b = "XyZ"
            head = ("--%s\r\nContent-Disposition: form-data; name=\"f\"; filename=\"%s\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n" % (b, self.rid)).encode()
            return ("POST /api/v1/files HTTP/1.1\r\nHost: h\r\n%sContent-Type: multipart/form-data; boundary=%s\r\n"
                    "Content-Length: %d\r\n\r\n" % (rid, b, 8 << 20)).encode() + head + b"z" * (1 << 20)
        return ("POST /api/v1/exec HTTP/1.1\r\nHost: h\r\n%sContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                % rid).encode() + b'{"argv": ["ec'

    def run(self):
        s = socket.create_connection((rellib.HOST, self.port), timeout=10)
        s.sendall(self.request())
        t0 = now()
        s.settimeout(IDLE_TIMEOUT_S + 3 * CUT_SLACK_S)
        try:
            self.answer = s.recv(4096)
        except socket.timeout:
            s.close()
            return
        except OSError:
            pass
        self.cut_after = now() - t0
        s.close()


def log_ids(gw):
    """request id -> access-log record, from the gateway's JSON log."""
    out = {}
    for line in gw.log().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "id" in rec and "status" in rec:
            out[rec["id"]] = rec
    return out


def metric(port, name):
    _, _, body = rellib.request(port, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def metric_labeled(port, name, labels):
    """The value of name{labels} in /metrics, or None."""
    _, _, body = rellib.request(port, "GET", "/metrics")
    want = "%s{%s} " % (name, labels)
    for line in body.decode().splitlines():
        if line.startswith(want):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the CI version: 10 s of dripping instead of 30")
    ap.add_argument("--slowloris", type=int, default=500)
    ap.add_argument("--drip", type=float, help="seconds the slow clients keep trickling before they stall")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.drip = args.drip or (10 if args.short else 30)
    header_s = HEADER_TIMEOUT_S["short" if args.short else "full"]
    body_s = BODY_TIMEOUT_S["short" if args.short else "full"]
    rellib.raise_nofile()
    fig = Figures("slow")
    work = rellib.workdir("slow")
    root, spool = os.path.join(work, "root"), os.path.join(work, "spool")
    os.makedirs(spool)
    gw = None
    try:
        # The embedded backends on loopback ports, not their private UNIX sockets: fd_summary tells
        # the gateway's pooled backend connections from the rest by TCP port.
        listen = [a for b in ("echo", "time", "exec", "file", "chat") for a in ("--%s-listen" % b, "127.0.0.1:0")]
        gw = Proc("sockgate", ["--file-root", root, "--spool-dir", spool, "--log-format", "json",
                               "--header-timeout-ms", str(header_s * 1000), "--body-timeout-ms", str(body_s * 1000)]
                  + listen,
                  work).start()
        big = os.urandom(BIG_SIZE)
        status, _, _ = rellib.request(gw.port, "PUT", "/api/v1/files/big.bin", big, timeout=60)
        if status not in (200, 201):  # created or replaced
            raise RuntimeError("could not store the big file: %s" % status)
        _, _, body = rellib.request(gw.port, "GET", "/readyz")
        ports = {int(b["address"].rsplit(":", 1)[1]) for b in json.loads(body)["backends"].values() if b.get("address")}
        fd0 = rellib.fd_summary(gw.pid, ports)
        control = Proc("sockgate-echo", [], work).start()
        probe = Prober(gw.port, control.port)
        probe.start()
        stall_at = now() + args.drip
        loris = Slowloris(gw.port, args.slowloris, 1.0, stall_at)
        readers = [SlowReader(gw.port, "slow-read-%d" % i, stall_at) for i in range(8)]
        uploads = [StalledUpload(gw.port, kind, "stall-%s-%d" % (kind, i))
                   for kind in ("put", "chunked", "multipart", "json") for i in range(4)]
        for t in [loris] + readers:
            t.start()
        time.sleep(args.drip / 2)
        for t in uploads:
            t.start()
        for t in readers:
            t.join(timeout=args.drip + 30)
        # The readers now sit on full buffers; the gateway must give up on them by itself.
        ids = {}
        deadline = now() + IDLE_TIMEOUT_S + 3 * CUT_SLACK_S
        reader_cut = {}
        while now() < deadline and len(reader_cut) < len(readers):
            ids = log_ids(gw)
            for r in readers:
                if r.rid in ids and r.rid not in reader_cut:
                    reader_cut[r.rid] = now() - r.stalled_at
            time.sleep(0.2)
        loris.join(timeout=IDLE_TIMEOUT_S + 4 * CUT_SLACK_S)
        for t in uploads:
            t.join(timeout=IDLE_TIMEOUT_S + 4 * CUT_SLACK_S)
        probe.finish()

        lat = sorted(probe.lat)
        fig.info("healthz_probes", len(lat))
        fig.check("healthz_failures", probe.failures, "=", 0)
        fig.info("healthz_p99_ms", round(lat[int(0.99 * (len(lat) - 1))], 1) if lat else "none")
        fig.check("healthz_max_ms", round(lat[-1], 1) if lat else float("inf"), "<", 100)
        fig.info("healthz_slowest_at_s", round(probe.slowest_at, 1))
        # The gateway's own view of that request: headers in to answer done, from its access log.
        rec = log_ids(gw).get(probe.slowest_id) or {}
        fig.info("healthz_slowest_inside_gateway_ms", round(rec.get("us", -1000) / 1000.0, 1))
        fig.info("healthz_over_100ms", sum(1 for v in lat if v >= 100))
        # A slow /healthz whose control round trip was slow too is the machine's, not the gateway's.
        fig.info("control_max_ms", round(max(probe.control), 1) if probe.control else "none")
        fig.info("healthz_over_100ms_while_control_fast", probe.slow_alone)

        limit = IDLE_TIMEOUT_S + CUT_SLACK_S
        fig.info("slowloris_opened", loris.opened)
        fig.info("slowloris_cut_while_sending", loris.cut_while_sending)
        fig.check("slowloris_never_cut", loris.never_cut, "=", 0)
        # Every head is due header_s after its connect, however it trickles.
        fig.check("slowloris_cut_after_connect_s_max", round(max(loris.cut_after_open or [float("inf")]), 1), "<=",
                  header_s + DEADLINE_SLACK_S)
        fig.info("slowloris_cut_after_connect_s_min", round(min(loris.cut_after_open or [0]), 1))
        if loris.cut_after:
            fig.info("slowloris_cut_after_stall_s_max", round(max(loris.cut_after), 1))

        cut_short = 0
        for r in readers:
            data = b""
            r.sock.settimeout(5)
            try:
                while True:
                    chunk = r.sock.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            r.sock.close()
            r.total = r.got_while_reading + len(data)
            cut_short += 1 if r.total < BIG_SIZE else 0
        fig.info("slow_readers", len(readers))
        fig.check("slow_readers_served_while_reading", sum(1 for r in readers if r.got_while_reading > 0), "=",
                  len(readers))
        fig.check("slow_readers_cut_after_stall", cut_short, "=", len(readers))
        cuts = list(reader_cut.values())
        fig.check("slow_readers_never_logged", len(readers) - len(cuts), "=", 0)
        fig.check("slow_reader_cut_after_stall_s_max", round(max(cuts or [float("inf")]), 1), "<=", limit)

        for kind in ("put", "chunked", "multipart", "json"):
            mine = [u for u in uploads if u.kind == kind]
            cut = [u.cut_after for u in mine if u.cut_after is not None]
            fig.check("stalled_%s_never_cut" % kind, len(mine) - len(cut), "=", 0)
            # A body silent for body_s is cut (the client measures from its last byte).
            fig.check("stalled_%s_cut_after_s_max" % kind, round(max(cut or [float("inf")]), 1), "<=",
                      body_s + DEADLINE_SLACK_S)
            answered = [u.answer[:12].decode("ascii", "replace") for u in mine if u.answer]
            if answered:
                fig.info("stalled_%s_answers" % kind, sorted(set(answered)))

        head_cuts = metric_labeled(gw.port, "sockgate_http_timeouts_total", 'phase="head"') or 0
        body_cuts = metric_labeled(gw.port, "sockgate_http_timeouts_total", 'phase="body"') or 0
        fig.check("header_timeouts_counted", head_cuts, ">=", loris.opened)
        fig.check("body_timeouts_counted", body_cuts, ">=", len(uploads))

        # The gateway lets go of a cut client's files, gauges and descriptors just after the cut
        # the client saw: wait for that (bounded), instead of a pause that a loaded machine may
        # outlast. Descriptors are counted before /metrics is asked, whose own connection the
        # gateway may still hold for a moment after answering.
        last = {}

        def clean():
            last["fds"] = rellib.fd_summary(gw.pid, ports)
            last["left"] = [e for e in os.listdir(root) if e.startswith("stall-") or e.startswith(".upload-")]
            last["spooled"] = os.listdir(spool)
            last["in_flight"] = metric(gw.port, "sockgate_uploads_in_flight")
            return (not last["left"] and not last["spooled"] and last["in_flight"] == 0
                    and last["fds"]["other"] <= fd0["other"])

        rellib.wait_until(clean, 15.0, step=0.25)
        fig.check("files_left_by_stalled_uploads", len(last["left"]), "=", 0)
        fig.check("spool_files_left", len(last["spooled"]), "=", 0)
        fig.check("uploads_in_flight_at_end", last["in_flight"], "=", 0)
        fig.check("fds_leaked", last["fds"]["other"] - fd0["other"], "<=", 0)
        fig.check("gateway_exit_status_on_sigterm", gw.stop(), "=", 0)
        control.stop()
    except Exception as e:
        fig.stopped(e)
        args.keep = True
    finally:
        if gw:
            gw.kill(signal.SIGKILL)
        rellib.cleanup(work, args.keep)
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
