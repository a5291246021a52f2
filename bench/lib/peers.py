"""peers.py - the programs sockgate is compared with (nginx, redis-server, iperf3) and the gateway,
each started once on 127.0.0.1 with its configuration from bench/peers/ and stopped by pid.
"""

import os
import subprocess
import time

from procs import BenchError, children, free_port, start_server

PEER_PACKAGES = ("nginx", "redis-server", "wrk", "iperf3")


def start_gateway(ctx, name):
    """Starts the gateway with every backend embedded and its file root on tmpfs; returns the Server."""
    root = os.path.join(ctx.files_dir, name)
    spool = os.path.join(ctx.files_dir, name + "-spool")
    os.makedirs(spool, exist_ok=True)
    argv = [ctx.bin("sockgate"), "--listen", "127.0.0.1:0", "--file-root", root, "--spool-dir", spool]
    return start_server(name, argv, ctx.log(name))


def ensure_nginx(ctx, name="nginx", conns=1024):
    """Starts an nginx peer from bench/peers/nginx.conf.in unless it runs already; returns the Server.

    conns is worker_connections: nginx allocates its connection table up front, so only the
    instance that must hold 10,000 idle connections gets a large one.
    """
    if name in ctx.servers:
        return ctx.servers[name]
    port = free_port()
    conf = _render(ctx, "nginx.conf.in", name + ".conf", {
        "@USER@": "user root;" if os.geteuid() == 0 else "",
        "@NAME@": name,
        "@CONNS@": str(conns),
        "@RUN@": ctx.run_dir,
        "@FILES@": ctx.files_dir,
        "@PORT@": str(port),
        "@UPPORT@": str(free_port()),
    })
    os.makedirs(os.path.join(ctx.files_dir, "nginx"), exist_ok=True)
    os.makedirs(os.path.join(ctx.files_dir, "nginx-body"), exist_ok=True)
    argv = ["nginx", "-c", conf, "-p", ctx.run_dir, "-e", os.path.join(ctx.run_dir, name + "-error.log")]
    srv = start_server(name, argv, ctx.log(name), port=port)
    ctx.servers[name] = srv
    deadline = time.monotonic() + 10
    while len(children(srv.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(children(srv.pid)) < 2:
        raise BenchError("%s did not start its 2 workers: %s" % (name, srv.log_tail()))
    return srv


def nginx_workers(ctx, name="nginx"):
    """Returns the pids of an nginx's workers (the processes that serve; the master only supervises)."""
    return children(ctx.servers[name].pid)


def ensure_redis(ctx):
    """Starts redis-server with persistence off unless it runs already; returns the Server."""
    if "redis" in ctx.servers:
        return ctx.servers["redis"]
    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", ctx.run_dir, "--logfile", ""]
    ctx.servers["redis"] = start_server("redis-server", argv, ctx.log("redis"), port=port)
    return ctx.servers["redis"]


def ensure_iperf3(ctx):
    """Starts an iperf3 server unless it runs already; returns the Server."""
    if "iperf3" in ctx.servers:
        return ctx.servers["iperf3"]
    port = free_port()
    argv = ["iperf3", "--server", "--bind", "127.0.0.1", "--port", str(port)]
    ctx.servers["iperf3"] = start_server("iperf3", argv, ctx.log("iperf3"), port=port)
    return ctx.servers["iperf3"]


def _render(ctx, template, name, values):
    with open(os.path.join(ctx.bench_dir, "peers", template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(key, value)
    path = os.path.join(ctx.run_dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def versions():
    """Returns {program: version line} for the peers and tools, for the report."""
    out = {}
    for name, argv in (("nginx", ["nginx", "-v"]), ("redis-server", ["redis-server", "--version"]),
                       ("wrk", ["wrk", "--version"]), ("iperf3", ["iperf3", "--version"]),
                       ("curl", ["curl", "--version"]), ("valgrind", ["valgrind", "--version"])):
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            lines = p.stdout.decode("utf-8", "replace").strip().splitlines()
            out[name] = lines[0].strip() if lines else "?"
        except (OSError, subprocess.TimeoutExpired):
            out[name] = "not installed"
    return out
