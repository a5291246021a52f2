#!/usr/bin/env python3
"""http_diff.py - sockgate's HTTP layer against nginx's, request by request (issue 14).

Every request of the hostile corpus that speaks HTTP (the `http`, `api` and `smuggle` cases of
tests/reliability/corpus/*.jsonl) goes twice, each time on a fresh connection: to one sockgate
directly, and through nginx to a second, identical sockgate (its own file root, so state-changing
cases see the same files on both sides). Where nginx's parser accepts a request, the answer is
sockgate's either way, so the two differ only where the parsers differ. The answers are
compared by class: 1xx-5xx by the status's first digit, `hang` (nothing within the wait, the
connection still open), `close` (closed without an answer). A disagreement fails the suite unless
ALLOWED names the case and says why.

Needs nginx (Debian's package; installed when missing and running as root). Figures: cases
compared, disagreements allowed, disagreements not allowed.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import hostile
import rellib
from rellib import Figures, Proc, now

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT_S = 3.0  # how long an answer is waited for before the connection counts as hanging

# Disagreements that are right, by case name: (sockgate's class, nginx's class, why).
NGINX_WAITS_FOR_BODY = ("nginx answers 100 Continue and waits for the body before it asks its upstream; the "
                        "gateway refuses from the headers alone, so the client never sends the body")
NGINX_RELAYS_EARLY_ANSWER = ("the gateway answers before the body and closes, as it should; nginx was still sending "
                             "that body upstream, so it answers 502 itself instead of relaying the 413")
ALLOWED = {
    "a bad name is refused before a 50 MB body is read (Expect: 100-continue)": ("4xx", "hang", NGINX_WAITS_FOR_BODY),
    "Expect 100-continue with a body over the limit is refused before the body": ("4xx", "hang",
                                                                                   NGINX_WAITS_FOR_BODY),
    "JSON body over --max-json": ("4xx", "5xx", NGINX_RELAYS_EARLY_ANSWER),
    "PUT over --max-upload": ("4xx", "5xx", NGINX_RELAYS_EARLY_ANSWER),
    "HTTP/0.9 request": ("4xx", "close", "nginx answers HTTP/0.9 in kind, a bare body without a status line; "
                                         "libmicrohttpd answers 400. Both refuse"),
    "TLS hello on the plain port": ("close", "4xx", "libmicrohttpd closes on a request line it cannot parse; nginx "
                                                    "answers 400 first. Both refuse"),
    "binary junk": ("hang", "4xx", "the junk starts with NUL, so libmicrohttpd reads its line as empty, skips it "
                                   "as RFC 9112 2.2 allows before a request, and waits for one; the header "
                                   "deadline ends the wait"),
    "header without a colon": ("4xx", "2xx", "nginx drops a header line it cannot parse "
                                             "(ignore_invalid_headers); libmicrohttpd refuses the request, which "
                                             "RFC 9112 5 allows and is the stricter choice"),
}

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        server_name 127.0.0.1;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 10s;
        }}
    }}
}}
"""


def ensure_nginx():
    """Returns the nginx binary, installing Debian's package when it is missing and we are root."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if path:
        return path
    if os.geteuid() != 0:
        raise SystemExit("http_diff: nginx is not installed (apt-get install nginx)")
    script = os.path.join(rellib.SOURCE_DIR, "scripts", "install-deps.sh")
    subprocess.run([script, "nginx"], check=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    with socket.socket() as s:
        s.bind((rellib.HOST, 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground, its prefix and logs under run, proxying to upstream_port."""

    def __init__(self, binary, run, upstream_port):
        self.binary, self.run, self.upstream = binary, run, upstream_port
        self.popen, self.port = None, None

    def start(self):
        for _ in range(5):  # a port picked free may be taken before nginx binds it: pick again
            self.port = free_port()
            conf = os.path.join(self.run, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", run=self.run,
                                          port=self.port, upstream=self.upstream))
            log = open(os.path.join(self.run, "nginx.out"), "wb")
            self.popen = subprocess.Popen([self.binary, "-c", conf, "-p", self.run, "-e",
                                           os.path.join(self.run, "nginx-error.log")],
                                          stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            if rellib.wait_until(lambda: self.popen.poll() is not None or self.answers(), 10):
                if self.popen.poll() is None:
                    return self
            self.stop()
        raise RuntimeError("nginx did not start: %s" % open(os.path.join(self.run, "nginx-error.log")).read())

    def answers(self):
        try:
            socket.create_connection((rellib.HOST, self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def answer_class(port, raw, shut_write):
    """Sends raw on a new connection; returns the class of what came back."""
    s = socket.create_connection((rellib.HOST, port), timeout=10)
    try:
        try:
            s.sendall(raw)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        status, _, body, closed = hostile.read_http(s, WAIT_S)
    finally:
        s.close()
    if status is None:
        return "close" if closed else ("hang" if not body else "garbage")
    if status == 100:
        return "hang"  # 100 Continue and then nothing: waiting for a body that never comes
    return "%dxx" % (status // 100)


def case_bytes(env, case):
    if case["type"] == "api":
        return hostile.build_api_request(env, case)
    return env.expand(case["raw"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="accepted for symmetry: every case runs")
    ap.add_argument("--verbose", action="store_true", help="print every case")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    fig = Figures("http_diff")
    work = rellib.workdir("http_diff")
    env = hostile.Env(work)
    env.leaks = 0
    nginx = None
    procs = {}
    try:
        binary = ensure_nginx()
        hostile.make_tree(env)
        logs = os.path.join(work, "logs")
        os.makedirs(logs)
        procs["gateway"] = Proc("sockgate", ["--file-root", env.root, "--max-upload", "1M"], logs).start()
        # The one behind nginx gets a copy of the same tree, so both sides start from the same files.
        twin_root = env.root + "-behind-nginx"
        shutil.copytree(env.root, twin_root, symlinks=True)
        procs["gateway_behind_nginx"] = Proc("sockgate", ["--file-root", twin_root, "--max-upload", "1M"],
                                             logs).start()
        run = os.path.join(work, "nginx")
        os.makedirs(run)
        nginx = Nginx(binary, run, procs["gateway_behind_nginx"].port).start()
        cases = [c for c in hostile.load_cases(None) if c["type"] in ("http", "api", "smuggle")]
        compared, allowed, bad = 0, 0, []
        for i, case in enumerate(cases):
            env.case_no = i
            raw = case_bytes(env, case)
            got = {}

            def ask(name, port):
                got[name] = answer_class(port, raw, case.get("shut_write"))

            threads = [threading.Thread(target=ask, args=("sockgate", procs["gateway"].port)),
                       threading.Thread(target=ask, args=("nginx", nginx.port))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            compared += 1
            mine, theirs = got.get("sockgate"), got.get("nginx")
            verdict = "same"
            if mine != theirs:
                rule = ALLOWED.get(case["name"])
                if rule and rule[0] == mine and rule[1] == theirs:
                    allowed += 1
                    verdict = "allowed"
                else:
                    bad.append("%s %s: sockgate %s, nginx %s" % (case["where"], case["name"], mine, theirs))
                    verdict = "DIFFERS"
            if args.verbose:
                print("%-8s sockgate %-6s nginx %-6s %s" % (verdict, mine, theirs, case["name"]), flush=True)
            for name, p in procs.items():
                if not p.alive():
                    raise RuntimeError("%s died after %s" % (name, case["name"]))
        for b in bad:
            print("http_diff: disagreement not in the table: %s" % b, flush=True)
        fig.info("cases_compared", compared)
        fig.info("disagreements_allowed", allowed)
        fig.check("disagreements_not_allowed", len(bad), "=", 0)
        fig.check_clean_exits(procs.items())
    except Exception as e:  # noqa: BLE001 - any failure of the suite is reported as one
        fig.stopped(e)
        args.keep = True
    finally:
        if nginx:
            nginx.stop()
        for p in procs.values():
            if p.alive():
                p.kill()
        rellib.cleanup(work, args.keep)
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
