"""callgrind.py - where the time of the slowest path goes, with valgrind's callgrind.

perf would be the first choice, but where the CPU's counters are not exposed (`perf stat -e
instructions true` says <not supported>, as in most virtual machines) callgrind counts the
instructions instead. The server runs under callgrind with instrumentation off, the path's setup
runs, instrumentation is switched on for a short bounded load only, and callgrind_annotate lists
the functions that executed the most instructions. Callgrind sees user space only: the
kernel's share is given by the CPU user/system split measured during the real rounds.
"""

import json
import os
import re
import subprocess

from model import MIB
from procs import BenchError, run_tool, start_server, stop

PROFILE_FILE_MIB = 64
TOP = 15


def _valgrind(ctx, fid, role):
    out = os.path.join(ctx.run_dir, "callgrind.%s.%s.out" % (fid, role))
    return out, ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out]


def _gateway_argv(ctx):
    root = os.path.join(ctx.files_dir, "profile-gw")
    return [ctx.bin("sockgate"), "--listen", "127.0.0.1:0", "--file-root", root]


def _profile_file(ctx):
    path = os.path.join(ctx.files_dir, "profile.bin")
    if not os.path.exists(path):
        with open("/dev/urandom", "rb") as rnd, open(path, "wb") as out:
            for _ in range(PROFILE_FILE_MIB // 4):
                out.write(rnd.read(4 * MIB))
    return path


def _curl_put(port, src):
    return ["curl", "-sS", "-f", "-H", "Expect:", "-T", src, "-o", os.devnull,
            "http://127.0.0.1:%d/api/v1/files/profile.bin" % port]


def _curl_get(port):
    return ["curl", "-sS", "-f", "-o", os.devnull, "http://127.0.0.1:%d/api/v1/files/profile.bin" % port]


def recipe(ctx, fid):
    """Returns (server argv, setup(port), load(port) -> argv, ops text, profile the client too?, load stdout).

    The load's stdout is subprocess.PIPE when its result line is read, else /dev/null (a download
    to stdout, as in the measured rounds).
    """
    pipe = subprocess.PIPE
    lua = os.path.join(ctx.bench_dir, "wrk", "echo.lua")
    none = lambda port: None  # noqa: E731
    if fid == "rest_echo":
        return (_gateway_argv(ctx), none,
                lambda p: ["wrk", "-t1", "-c8", "-d10s", "--timeout", "30s", "-s", lua,
                           "http://127.0.0.1:%d/api/v1/echo" % p], "requests", False, pipe)
    if fid in ("echo_50", "echo_50_p16"):
        pipeline = "16" if fid == "echo_50_p16" else "1"
        return ([ctx.bin("sockgate-echo"), "--listen", "127.0.0.1:0"], none,
                lambda p: [ctx.bin("sockgate-echo-load"), "--addr", "127.0.0.1:%d" % p, "--conns", "50",
                           "--pipeline", pipeline, "--duration", "5"], "round trips", False, pipe)
    if fid == "udp_time":
        return ([ctx.bin("sockgate-time"), "--listen", "127.0.0.1:0"], none,
                lambda p: [ctx.bin("sockgate-udp-load"), "--addr", "127.0.0.1:%d" % p, "--duration", "5"],
                "round trips", False, pipe)
    if fid == "exec_true":
        return ([ctx.bin("sockgate-exec"), "--listen", "127.0.0.1:0", "--allow", "true"], none,
                lambda p: [ctx.bin("sockgate-exec-load"), "--addr", "127.0.0.1:%d" % p, "--count", "300"],
                "commands", False, pipe)
    src = _profile_file(ctx)
    if fid == "upload_gw":
        return _gateway_argv(ctx), none, lambda p: _curl_put(p, src), "MiB", False, pipe
    if fid == "download_gw":
        return (_gateway_argv(ctx), lambda p: _run_checked(_curl_put(p, src)), _curl_get, "MiB", False, pipe)
    file_argv = [ctx.bin("sockgate-file"), "--listen", "127.0.0.1:0", "--root",
                 os.path.join(ctx.files_dir, "profile-file")]
    put = lambda p: [ctx.bin("sockgate-cli"), "put", "--quiet", "127.0.0.1:%d" % p, src, "profile.bin"]  # noqa: E731
    if fid == "upload_cli":
        return file_argv, none, put, "MiB", True, pipe
    if fid == "download_cli":
        return (file_argv, lambda p: _run_checked(put(p)),
                lambda p: [ctx.bin("sockgate-cli"), "get", "--quiet", "127.0.0.1:%d" % p, "profile.bin", "-"],
                "MiB", True, subprocess.DEVNULL)
    raise BenchError("no profile recipe for %s" % fid)


def _run_checked(argv):
    rc, out, err, _ = run_tool(argv, 600)
    if rc != 0:
        raise BenchError("%s exited with %d: %s" % (argv[0], rc, err.strip()[-300:]))


def _ops_done(fid, load_out):
    """Returns how many operations the profiled load did (requests, round trips, commands, MiB)."""
    if fid == "rest_echo":
        m = re.search(r"(\d+) requests in", load_out)
        return int(m.group(1)) if m else None
    if fid in ("upload_gw", "download_gw", "upload_cli", "download_cli"):
        return PROFILE_FILE_MIB
    for line in reversed(load_out.strip().splitlines()):
        if line.startswith("{"):
            r = json.loads(line)
            return r.get("round_trips", r.get("count"))
    return None


def annotate(out_file, inclusive):
    """Returns callgrind_annotate's total instruction count and its top (count, function) rows."""
    argv = ["callgrind_annotate", "--auto=no", "--inclusive=" + ("yes" if inclusive else "no"), out_file]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    total = None
    rows = []
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(.*)$", line)
        if not m:
            continue
        count, what = int(m.group(1).replace(",", "")), m.group(2).strip()
        if what.startswith("PROGRAM TOTALS"):
            total = count
        elif total and len(rows) < TOP:
            # The inclusive list names a function once per file it was seen from: keep the first.
            short = _short(what)
            if not any(c == count and r.split(" (")[0] == short.split(" (")[0] for c, r in rows):
                rows.append((count, short))
    return total, rows


def _short(what):
    """Turns "PATH:FUNCTION [OBJECT]" into "FUNCTION (file.c, object)" so the table stays readable."""
    m = re.match(r"^(.*?):(.+?)(?: \[(.*)\])?$", what)
    if not m:
        return what
    path, func, obj = m.groups()
    where = [os.path.basename(path)] if path and path != "???" else []
    if obj:
        where.append(os.path.basename(obj))
    return "%s (%s)" % (func, ", ".join(where)) if where else func


def profile(ctx, fid):
    """Profiles figure fid's sockgate side; returns a dict the report prints (or raises BenchError)."""
    server_argv, setup, load, unit, client_too, stdout = recipe(ctx, fid)
    out, vg = _valgrind(ctx, fid, "server")
    srv = start_server("callgrind-" + fid, vg + server_argv, ctx.log("callgrind-" + fid), timeout=180)
    client_out = None
    try:
        setup(srv.port)
        load_argv = load(srv.port)
        if client_too:
            client_out, cvg = _valgrind(ctx, fid, "client")
            load_argv = cvg[:2] + ["--callgrind-out-file=" + client_out] + load_argv
        subprocess.run(["callgrind_control", "-i", "on", str(srv.pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        rc, load_out, load_err, _ = run_tool(load_argv, 900, stdout=stdout)
        subprocess.run(["callgrind_control", "-i", "off", str(srv.pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        if rc != 0:
            raise BenchError("the profiled load exited with %d: %s" % (rc, load_err.strip()[-300:]))
    finally:
        stop(srv, grace=180)
    ops = _ops_done(fid, load_out)
    result = {"figure": fid, "unit": unit, "ops": ops, "server_cmd": vg + server_argv, "load_cmd": load_argv,
              "parts": []}
    for role, path in (("server", out), ("client", client_out)):
        if not path or not os.path.exists(path):
            continue
        total, self_rows = annotate(path, False)
        _, incl_rows = annotate(path, True)
        result["parts"].append({"role": role, "total": total, "self": self_rows, "inclusive": incl_rows,
                                "file": os.path.basename(path)})
    if not result["parts"]:
        raise BenchError("callgrind wrote no profile (see %s)" % ctx.log("callgrind-" + fid))
    return result


def available():
    """Returns why profiling cannot run here, or None when valgrind and callgrind_control are installed."""
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")):
            return "%s is not installed" % tool
    return None


def slowest(figures, summaries):
    """Returns the ratio figure furthest below (or least above) its target, the one to profile."""
    best = None
    for fig in figures:
        s = summaries[fig.id]
        if fig.kind != "ratio" or s["ratio_median"] is None:
            continue
        margin = s["ratio_median"] / fig.target
        if best is None or margin < best[0]:
            best = (margin, fig)
    return best[1] if best else None
