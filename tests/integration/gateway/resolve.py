#!/usr/bin/env python3
"""A backend given by name is every address the name resolves to, looked up again as it changes.

The gateway runs in a private mount namespace (unshare -m) whose /etc/hosts is a file this test
rewrites, so the name replicas.test is ours: two exec replicas at first (127.0.0.2 and .3), a
third added (.4), one taken away (.2). Every call is answered, by the replicas the name holds.
Skips (exit 77) where mount namespaces are not allowed."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.path.abspath(os.environ.get("SOCKGATE_BIN_DIR", "build/bin"))
SKIP = 77


def common_port(ips):
    """A TCP port free on every address of ips (the replicas of one name share the port)."""
    for _ in range(100):
        s = socket.socket()
        s.bind((ips[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for ip in ips:
            t = socket.socket()
            try:
                t.bind((ip, port))
            except OSError:
                ok = False
            t.close()
        if ok:
            return port
    raise SystemExit("no common free port")


def start(argv, env=None):
    """Starts argv with stderr to a file; returns (process, address from its 'listening on' line)."""
    log = tempfile.NamedTemporaryFile(prefix="sockgate-resolve-", delete=False)
    proc = subprocess.Popen(argv, stderr=log, env=env)
    for _ in range(400):  # a bound of 20 s, not a timing assertion
        with open(log.name) as f:
            m = re.search(r"listening on (?:https?://)?(\S+)", f.read())
        if m:
            return proc, m.group(1), log.name
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(log.name) as f:
        sys.stderr.write(f.read())
    proc.kill()
    raise SystemExit("%s did not start" % argv[0])


def call(base, path, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def main():
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        print("mount namespaces not allowed here: skipped", file=sys.stderr)
        return SKIP
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = common_port(ips)
    work = tempfile.mkdtemp(prefix="sockgate-resolve-")
    hosts = os.path.join(work, "hosts")
    procs = []
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print("FAIL:", what, file=sys.stderr)

    def write_hosts(addrs):
        # Rewritten in place (same inode): the bind mount shows the new text, and glibc reads it per lookup.
        with open(hosts, "r+") as f:
            f.seek(0)
            f.truncate()
            f.write("127.0.0.1 localhost\n" + "".join("%s replicas.test\n" % a for a in addrs))

    try:
        dirs = {}
        for ip in ips:
            d = os.path.join(work, ip)
            os.mkdir(d)
            dirs[d] = ip
            p, _, _ = start([os.path.join(BIN, "sockgate-exec"), "--listen", "%s:%d" % (ip, port), "--allow", "pwd",
                             "--workdir", d, "--sandbox", "off"])
            procs.append(p)
        open(hosts, "w").close()
        write_hosts(ips[:2])
        gw_argv = [os.path.join(BIN, "sockgate"), "--listen", "127.0.0.1:0", "--exec", "replicas.test:%d" % port,
                   "--resolve-interval-ms", "200", "--file-root", os.path.join(work, "files"),
                   "--spool-dir", work]
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        gw, addr, gw_log = start(["unshare", "-m", "sh", "-c", script, hosts] + gw_argv)
        procs.append(gw)
        base = "http://" + addr

        def who():
            status, body = call(base, "/api/v1/exec", {"argv": ["pwd"]})
            check(status == 200, "exec answered %d: %s" % (status, body))
            return dirs.get(body.get("stdout", "").strip()) if status == 200 else None

        def addresses():
            _, body = call(base, "/readyz")
            return {a["address"]: a["state"] for a in body["backends"]["exec"]["addresses"]}

        seen = {who() for _ in range(40)}
        check(seen == set(ips[:2]), "40 calls reached %s, not both replicas of the name" % sorted(seen, key=str))
        check(set(addresses()) == {"%s:%d" % (ip, port) for ip in ips[:2]}, "readyz lists %s" % addresses())

        write_hosts(ips)  # a third replica appears under the name
        reached = set()
        for _ in range(400):  # a bound, not a timing assertion
            reached.add(who())
            if ips[2] in reached:
                break
            time.sleep(0.02)
        check(ips[2] in reached, "the added replica %s never got a call" % ips[2])

        write_hosts(ips[1:])  # one replica leaves the name
        gone = "%s:%d" % (ips[0], port)
        for _ in range(400):
            if gone not in addresses():
                break
            time.sleep(0.05)
        check(gone not in addresses(), "%s still listed after leaving the name: %s" % (gone, addresses()))
        seen = {who() for _ in range(30)}
        check(ips[0] not in seen and seen <= set(ips[1:]), "calls after the change reached %s" % sorted(seen, key=str))
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            metrics = r.read().decode()
        check('sockgate_backend_address_calls_total{backend="exec",address="%s:%d"}' % (ips[2], port) in metrics,
              "no per-address call counter for the added replica")
        gw.send_signal(signal.SIGTERM)
        check(gw.wait(timeout=30) == 0, "the gateway did not exit 0")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(["rm", "-rf", work])
    if failures:
        print("%d failed" % len(failures), file=sys.stderr)
        return 1
    print("resolve: all passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
