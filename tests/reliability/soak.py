#!/usr/bin/env python3
"""soak.py - load and soak: many concurrent keep-alive clients doing checked mixed traffic through
the gateway for a while, then 10,000 idle connections held against the gateway and against the
echo backend.

Figures: errors, p50/p99 latency, the gateway's memory at the start and end of the soak,
descriptors leaked by every process, and how many idle connections were served and kept.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import rellib
from rellib import Figures, Proc, now


def start_all(work):
    backends = {
        "echo": Proc("sockgate-echo", [], work),
        "time": Proc("sockgate-time", [], work),
        "exec": Proc("sockgate-exec", ["--allow", "echo,true"], work),
        "file": Proc("sockgate-file", ["--root", os.path.join(work, "root")], work),
    }
    for p in backends.values():
        p.start()
    args = []
    for name, p in backends.items():
        args += ["--" + name, "127.0.0.1:%d" % p.port]
    gw = Proc("sockgate", args, work).start()
    return backends, gw


def settle_fds(pid, peer_ports, baseline, timeout):
    """Waits until pid holds no more non-pool descriptors than baseline; returns the last summary."""
    summary = rellib.fd_summary(pid, peer_ports)
    deadline = now() + timeout
    while summary["other"] > baseline["other"] and now() < deadline:
        time.sleep(0.2)
        summary = rellib.fd_summary(pid, peer_ports)
    return summary


def soak_phase(args, work, backends, gw, fig):
    ports = {p.port for p in backends.values()}
    time.sleep(0.5)
    fd0 = {n: rellib.fd_summary(p.pid, {p.port}) for n, p in backends.items()}
    fd0["gateway"] = rellib.fd_summary(gw.pid, ports)
    rss_idle = rellib.rss_kib(gw.pid)
    out_path = os.path.join(work, "load.json")
    load = subprocess.Popen([rellib.program("sockgate-load"), "--url", "http://127.0.0.1:%d" % gw.port,
                             "--clients", str(args.clients), "--seconds", str(args.seconds), "--hang-ms", "30000",
                             "--error-pause-ms", "0"],
                            stdout=open(out_path, "w"), stderr=subprocess.STDOUT)
    samples = []
    t0 = now()
    while load.poll() is None and now() - t0 < args.seconds + 90:
        samples.append((now() - t0, rellib.rss_kib(gw.pid)))
        time.sleep(0.5)
    if load.poll() is None:
        load.kill()
    load.wait()
    with open(out_path) as f:
        text = f.read()
    try:
        res = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError("sockgate-load gave no report: %s" % text[-2000:])
    # Start: once every client is connected and the pools are warm; end: the last sample under load.
    warm = max(3.0, args.seconds * 0.3)
    under_load = [s for s in samples if warm <= s[0] <= args.seconds]
    rss_start = under_load[0][1] if under_load else samples[0][1]
    rss_end = under_load[-1][1] if under_load else samples[-1][1]
    errors = res["transport"] + res.get("cut", 0) + res["other_status"] + res["bad_body"] + res["s502"] + res["s503"] + res["s504"] + res["hung"]
    fig.info("clients", args.clients)
    fig.info("seconds", args.seconds)
    fig.info("requests", res["done"])
    fig.info("requests_per_s", round(res["rate"]))
    fig.check("errors", errors, "=", 0)
    if res["first_problem"]:
        rellib.stderr("soak: first problem: %s" % res["first_problem"])
    fig.info("p50_ms", round(res["p50_ms"], 1))
    fig.info("p99_ms", round(res["p99_ms"], 1))
    fig.info("max_ms", round(res["max_ms"], 1))
    fig.info("gateway_rss_kib.idle", rss_idle)
    fig.info("gateway_rss_kib.start", rss_start)
    fig.info("gateway_rss_kib.end", rss_end)
    step = max(1, len(under_load) // 12)  # a dozen samples show whether it climbs or levels off
    fig.info("gateway_rss_kib.samples_under_load", " ".join(str(v) for t, v in under_load[::step]))
    fig.check("gateway_rss_growth_pct", round(100.0 * (rss_end - rss_start) / rss_start, 1), "<", 10)
    fd1 = settle_fds(gw.pid, ports, fd0["gateway"], 10)
    fig.info("gateway_pooled_backend_connections", fd1["pooled"])
    fig.check("fds_leaked.gateway", fd1["other"] - fd0["gateway"]["other"], "=", 0)
    for name, p in backends.items():
        s = settle_fds(p.pid, {p.port}, fd0[name], 10)
        fig.check("fds_leaked.%s" % name, s["other"] - fd0[name]["other"], "=", 0)
    return fd0


class Prober(threading.Thread):
    """While idle connections are held: GET /healthz and a checked echo through the gateway, every 100 ms."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.errors = 0
        self.count = 0
        self.max_ms = 0.0

    def run(self):
        while not self.stop.is_set():
            t0 = now()
            try:
                st1, _, _ = rellib.request(self.port, "GET", "/healthz", timeout=10)
                st2, _, body = rellib.request_json(self.port, "POST", "/api/v1/echo", {"message": "probe"}, timeout=10)
                ok = st1 == 200 and st2 == 200 and json.loads(body).get("reply") == "PROBE"
            except (OSError, ValueError):
                ok = False
            self.max_ms = max(self.max_ms, (now() - t0) * 1000)
            self.count += 1
            self.errors += 0 if ok else 1
            self.stop.wait(0.1)


def idle_phase(args, work, target_name, target, gw, fig, peer_ports):
    """Holds args.idle served connections to target while the gateway keeps answering."""
    base = rellib.fd_summary(target.pid, peer_ports)
    rss0 = rellib.rss_kib(target.pid)
    proto = "http" if target is gw else "echo"
    idle = subprocess.Popen([rellib.program("sockgate-idle"), "--addr", "127.0.0.1:%d" % target.port, "--conns",
                             str(args.idle), "--hold", str(args.hold), "--proto", proto, "--setup-ms", "60000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = idle.stderr.readline()  # "holding N connections ...", printed once all are served
    rellib.stderr("soak: %s: %s" % (target_name, line.strip()))
    rss_held = rellib.rss_kib(target.pid)
    fds_held = rellib.fd_summary(target.pid, peer_ports)["total"]
    probe = Prober(gw.port)
    probe.start()
    try:
        out, err = idle.communicate(timeout=args.hold + 180)
    except subprocess.TimeoutExpired:
        idle.kill()
        out, err = idle.communicate()
    probe.stop.set()
    probe.join(timeout=30)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError("sockgate-idle gave no report: %s %s" % (out, err))
    key = "idle_%s" % target_name
    fig.info("%s.connections" % key, args.idle)
    fig.check("%s.served" % key, res["served"], "=", args.idle)
    fig.check("%s.closed_by_server" % key, res["closed_by_server"], "=", 0)
    fig.info("%s.setup_ms" % key, res["setup_ms"])
    if res["first_error"]:
        rellib.stderr("soak: %s: first error: %s" % (key, res["first_error"]))
    fig.info("%s.fds_while_held" % key, fds_held)
    fig.info("%s.rss_kib_before" % key, rss0)
    fig.info("%s.rss_kib_while_held" % key, rss_held)
    fig.check("%s.probe_errors" % key, probe.errors, "=", 0)
    fig.info("%s.probes" % key, probe.count)
    fig.info("%s.probe_max_ms" % key, round(probe.max_ms, 1))
    after = settle_fds(target.pid, peer_ports, base, 15)
    fig.check("%s.fds_leaked" % key, after["other"] - base["other"], "=", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the CI version: 200 clients for 10 s, 10,000 idle for 5 s")
    ap.add_argument("--clients", type=int)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--idle", type=int, default=10000, help="idle connections to hold")
    ap.add_argument("--hold", type=int, help="seconds to hold them")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.clients = args.clients or (200 if args.short else 1000)
    args.seconds = args.seconds or (10 if args.short else 60)
    args.hold = args.hold or (5 if args.short else 30)
    limit = rellib.raise_nofile()
    fig = Figures("soak")
    fig.info("nofile_limit", limit)
    work = rellib.workdir("soak")
    backends, gw = {}, None
    try:
        backends, gw = start_all(work)
        soak_phase(args, work, backends, gw, fig)
        ports = {p.port for p in backends.values()}
        idle_phase(args, work, "gateway", gw, gw, fig, ports)
        idle_phase(args, work, "echo", backends["echo"], gw, fig, {backends["echo"].port})
        fig.check_clean_exits([("sockgate", gw)] + [(p.name, p) for p in backends.values()])
    except Exception as e:
        fig.stopped(e)
        args.keep = True
    finally:
        for p in list(backends.values()) + ([gw] if gw else []):
            p.kill(signal.SIGKILL)
        rellib.cleanup(work, args.keep)
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
