"""tlsbench.py - HTTPS figures (issue 20): a 1 GiB GET over TLS through the gateway against nginx
serving the same bytes over TLS with the same certificate, and full TLS handshakes per second
(`openssl s_time -new`, no session reuse) against the same nginx.
"""

import os
import re
import subprocess

from model import MIB, Figure, Group, Result
from procs import BenchError, children, free_port, run_tool, start_server, stop
import peers
import transfers

NAME = "tls-bench.bin"


def _openssl(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _make_pki(d):
    """A CA and a P-256 server certificate for 127.0.0.1 signed by it (the one both servers use)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench-ca"], d)
    _openssl(["req"] + ec + ["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"], d)
    with open(os.path.join(d, "srv.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
              "srv.pem", "-days", "2", "-extfile", "srv.ext"], d)


def tls_setup(ctx):
    d = os.path.join(ctx.run_dir, "tls")
    os.makedirs(d, exist_ok=True)
    _make_pki(d)
    cert, key = os.path.join(d, "srv.pem"), os.path.join(d, "srv.key")
    ctx.state["tls_ca"] = os.path.join(d, "ca.pem")
    root = os.path.join(ctx.files_dir, "tls-root")
    spool = os.path.join(ctx.files_dir, "tls-spool")
    os.makedirs(spool, exist_ok=True)
    gw = start_server("gateway-tls", [ctx.bin("sockgate"), "--listen", "127.0.0.1:0", "--file-root", root,
                                      "--spool-dir", spool, "--tls-cert", cert, "--tls-key", key],
                      ctx.log("gateway-tls"))
    ctx.state["tls_gw"] = gw
    port = free_port()
    conf = peers._render(ctx, "nginx-tls.conf.in", "nginx-tls.conf", {
        "@USER@": "user root;" if os.geteuid() == 0 else "", "@RUN@": ctx.run_dir, "@FILES@": ctx.files_dir,
        "@PORT@": str(port), "@CERT@": cert, "@KEY@": key})
    os.makedirs(os.path.join(ctx.files_dir, "nginx-tls"), exist_ok=True)
    ctx.servers["nginx-tls"] = start_server("nginx-tls", ["nginx", "-c", conf, "-p", ctx.run_dir, "-e",
                                                          os.path.join(ctx.run_dir, "nginx-tls-error.log")],
                                            ctx.log("nginx-tls"), port=port)
    # The same bytes on both sides: random, file_mib MiB, stored through the gateway and copied for nginx.
    size = ctx.cfg.file_mib * MIB
    src = os.path.join(ctx.files_dir, "tls-src.bin")
    with open("/dev/urandom", "rb") as rnd, open(src, "wb") as out:
        left = size
        while left:
            chunk = rnd.read(min(left, 4 * MIB))
            out.write(chunk)
            left -= len(chunk)
    rc, out, err, _ = run_tool(["curl", "-sS", "-f", "--cacert", ctx.state["tls_ca"], "-T", src, "-o", os.devnull,
                                "https://127.0.0.1:%d/api/v1/files/%s" % (gw.port, NAME)], 600)
    if rc != 0:
        raise BenchError("storing the TLS bench file through the gateway failed: %s" % err.strip()[-300:])
    os.replace(src, os.path.join(ctx.files_dir, "nginx-tls", NAME))
    ctx.state["tls_size"] = size


def tls_teardown(ctx):
    srv = ctx.state.pop("tls_gw", None)
    if srv:
        stop(srv)
    srv = ctx.servers.pop("nginx-tls", None)
    if srv:
        stop(srv)


def _get(ctx, fid, side, url, pids_fn):
    size = ctx.state["tls_size"]
    argv = transfers._curl(["--cacert", ctx.state["tls_ca"]], url, os.devnull)
    return transfers._transfer(ctx, fid, side, argv, pids_fn, "tls_mem", transfers._curl_check(size, False))


def download_gw_tls(ctx):
    gw = ctx.state["tls_gw"]
    return _get(ctx, "tls_download", "sg", "https://127.0.0.1:%d/api/v1/files/%s" % (gw.port, NAME),
                lambda: [gw.pid])


def download_nginx_tls(ctx):
    ng = ctx.servers["nginx-tls"]
    return _get(ctx, "tls_download", "peer", "https://127.0.0.1:%d/static/%s" % (ng.port, NAME),
                lambda: children(ng.pid))


def _handshakes(ctx, fid, side, port, path):
    seconds = 2 if ctx.cfg.quick else 5
    argv = ["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, "-new", "-time", str(seconds), "-CAfile",
            ctx.state["tls_ca"], "-www", path]
    ctx.command(fid, side, " ".join(argv))
    rc, out, err, _ = run_tool(argv, seconds + 60)
    m = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if rc != 0 or not m:
        raise BenchError("openssl s_time failed (%d): %s" % (rc, (err or out).strip()[-300:]))
    conns, secs = int(m.group(1)), float(m.group(2))
    return Result(conns / secs, ops=conns)


def handshakes_gw(ctx):
    return _handshakes(ctx, "tls_handshakes", "sg", ctx.state["tls_gw"].port, "/healthz")


def handshakes_nginx(ctx):
    return _handshakes(ctx, "tls_handshakes", "peer", ctx.servers["nginx-tls"].port, "/static/" + NAME + "x")


GROUPS = [
    Group("tls", [
        Figure("tls_download", "1 GiB download MiB/s over TLS: GET via gateway", "MiB/s",
               "curl --cacert, GET /api/v1/files (https)", "nginx static GET (https, same certificate)", "ratio", 0.8,
               download_gw_tls, download_nginx_tls, source="issue 20"),
        Figure("tls_handshakes", "full TLS handshakes per second", "conn/s", "openssl s_time -new, GET /healthz",
               "openssl s_time -new, nginx (a 404 page)", "shown", None, handshakes_gw, handshakes_nginx),
        Figure("tls_mem", "memory: peak RSS during the TLS download", "MiB", "sockgate (gateway)", "nginx workers",
               "shown", None),
    ], tls_setup, tls_teardown),
]
