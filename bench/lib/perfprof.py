"""perfprof.py - where the wall-clock CPU time of a path goes, kernel included, with perf's cpu-clock.

Callgrind (callgrind.py) counts user-space instructions only, and the paths sockgate is slow on
spend most of their time in the kernel (loopback TCP, copies). Where `perf record -e cpu-clock`
works (a software event: it needs no hardware counters, so it works in virtual machines that
refuse `-e instructions`), the same path runs at full speed with perf sampling the server 999
times a second, and the samples are summed by program or library and by function.
"""

import os
import signal
import subprocess
import time

from callgrind import recipe
from procs import BenchError, run_tool, start_server, stop

TOP_SYMBOLS = 15
TOP_DSOS = 8
TRANSFERS = ("upload_gw", "download_gw", "upload_cli", "download_cli")


def available(run_dir):
    """Returns None when perf can sample cpu-clock here, else why not."""
    data = os.path.join(run_dir, "perf-check.data")
    try:
        p = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", data, "--", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "perf cannot run: %s" % e
    finally:
        if os.path.exists(data):
            os.unlink(data)
    if p.returncode != 0:
        return "perf record -e cpu-clock fails: %s" % p.stderr.decode("utf-8", "replace").strip()[-200:]
    return None


def _report(data, sort, limit):
    """Returns [(percent, what)] from perf report --stdio sorted by sort keys."""
    p = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", sort, "--percent-limit", "0.5"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    rows = []
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line:
            continue
        pct, _, rest = line.partition("%")
        try:
            rows.append((float(pct), " ".join(rest.split())))
        except ValueError:
            continue
        if len(rows) >= limit:
            break
    return rows


def _summarize(data, role):
    return {"role": role, "by_dso": _report(data, "dso", TOP_DSOS), "by_symbol": _report(data, "dso,sym", TOP_SYMBOLS)}


def profile(ctx, fid):
    """Samples figure fid's sockgate server (and client, for the cli rows) at full speed; returns a dict."""
    server_argv, setup, load, _, client_too, stdout = recipe(ctx, fid)
    repeat = 8 if fid in TRANSFERS else (4 if fid == "exec_true" else 1)
    srv = start_server("perf-" + fid, server_argv, ctx.log("perf-" + fid))
    server_data = os.path.join(ctx.run_dir, "perf.%s.server.data" % fid)
    client_data = os.path.join(ctx.run_dir, "perf.%s.client.data" % fid)
    perf = None
    load_argv = None
    try:
        setup(srv.port)
        with open(ctx.log("perf-record-" + fid), "ab") as log:
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(srv.pid),
                                     "-o", server_data], stdout=log, stderr=log, start_new_session=True)
        time.sleep(0.5)  # perf attaches to every thread before the load starts
        for i in range(repeat):
            load_argv = load(srv.port)
            if client_too and i == 0:
                load_argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-o", client_data,
                             "--"] + load_argv
            rc, _, err, _ = run_tool(load_argv, 600, stdout=stdout)
            if rc != 0:
                raise BenchError("the sampled load exited with %d: %s" % (rc, err.strip()[-300:]))
    finally:
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(60)
            except subprocess.TimeoutExpired:
                perf.kill()
                perf.wait()
        stop(srv)
    parts = [_summarize(server_data, "server")]
    if client_too and os.path.exists(client_data):
        parts.append(_summarize(client_data, "client (first run only)"))
    return {"server_cmd": server_argv, "load_cmd": load_argv, "repeat": repeat, "parts": parts}
