"""rellib.py - what the reliability suites share: starting and stopping the real programs,
readings from /proc, raw HTTP and frame helpers, and the figures every suite prints.

Every network call goes to 127.0.0.1 and has a timeout; every wait has a deadline.
"""
import ctypes
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("SOCKGATE_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
HOST = "127.0.0.1"

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def program(name):
    """Returns the path of a built program: build/bin for the product, build/tests and build/bench for tools."""
    for sub in ("bin", "tests", "bench"):
        path = os.path.join(BUILD_DIR, sub, name)
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("rellib: %s is not built under %s (cmake --build %s)" % (name, BUILD_DIR, BUILD_DIR))


def raise_nofile():
    """Raises this process's soft descriptor limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _die_with_parent():
    # A suite that crashes must not leave servers behind holding ports.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def now():
    """The monotonic clock in seconds: the same CLOCK_MONOTONIC the C drivers stamp their events with."""
    return time.monotonic()


class Proc:
    """One started program: its pid, its log file, and the port from its 'listening on' line."""

    count = 0

    def __init__(self, name, args, workdir, env=None):
        self.name = name
        self.args = list(args)
        self.workdir = workdir
        self.env = env
        self.popen = None
        self.port = None
        self.log_path = None
        self.ready_at = None
        self.starts = 0

    def start(self, listen="127.0.0.1:0", timeout=15.0):
        """Starts the program with --listen listen and waits for its 'listening on' line."""
        Proc.count += 1
        self.log_path = os.path.join(self.workdir, "%s-%d.log" % (self.name, Proc.count))
        log = open(self.log_path, "wb")
        argv = [program(self.name)] + (["--listen", listen] if listen else []) + self.args
        # SOCKGATE_WRAP runs the programs named in SOCKGATE_WRAP_PROGRAMS under a tool (valgrind).
        wrap = os.environ.get("SOCKGATE_WRAP", "").split()
        if wrap and self.name in os.environ.get("SOCKGATE_WRAP_PROGRAMS", "").split(","):
            argv = [w.replace("%LOG%", self.log_path + ".tool") for w in wrap] + argv
            timeout = max(timeout, 120.0)
        env = dict(os.environ)
        env.update(self.env or {})
        self.popen = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                                      preexec_fn=_die_with_parent)
        log.close()
        self.starts += 1
        deadline = now() + timeout
        pattern = re.compile(rb"listening on ([0-9.]+|\[[0-9a-f:]+\]):([0-9]+)")
        while now() < deadline:
            with open(self.log_path, "rb") as f:
                m = pattern.search(f.read())
            if m:
                self.ready_at = now()
                self.port = int(m.group(2))
                return self
            if self.popen.poll() is not None:
                break
            time.sleep(0.002)
        tail = open(self.log_path, "rb").read()[-2000:].decode("utf-8", "replace")
        self.kill(signal.SIGKILL)
        raise RuntimeError("%s did not start listening:\n%s" % (self.name, tail))

    def restart(self, timeout=15.0):
        """Starts the program again on the port it had, retrying while the port is still held."""
        deadline = now() + timeout
        while True:
            try:
                return self.start("127.0.0.1:%d" % self.port, timeout=max(1.0, deadline - now()))
            except RuntimeError:
                if now() >= deadline:
                    raise
                time.sleep(0.05)

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Sends sig; for SIGKILL also reaps the process."""
        if not self.alive():
            return
        os.kill(self.popen.pid, sig)
        if sig == signal.SIGKILL:
            self.popen.wait(timeout=10)

    def stop(self, timeout=60.0):
        """SIGTERM, then waits; returns the exit status (or -signal), SIGKILL after the timeout."""
        if not self.popen:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
                return "ignored SIGTERM"
        return self.popen.returncode

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def rss_kib(pid):
    """Resident memory of pid in KiB (VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _tcp_table(pid):
    """inode -> (local port, remote port, state hex) for every TCP socket in pid's network namespace."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                    table[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state)
        except FileNotFoundError:
            pass
    return table


def fd_summary(pid, peer_ports=()):
    """Counts pid's descriptors: total, established TCP connections to peer_ports (a pool), and the rest."""
    table = _tcp_table(pid)
    total = pooled = established = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        total += 1
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if not m or int(m.group(1)) not in table:
            continue
        lport, rport, state = table[int(m.group(1))]
        if state == "01":  # ESTABLISHED
            established += 1
            if rport in peer_ports or lport in peer_ports:
                pooled += 1
    return {"total": total, "pooled": pooled, "established": established, "other": total - pooled}


def request(port, method, path, body=None, headers=None, timeout=10.0):
    """One HTTP request on a new connection; returns (status, headers dict lower-cased, body bytes)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def request_json(port, method, path, obj, timeout=10.0):
    body = json.dumps(obj).encode()
    return request(port, method, path, body, {"Content-Type": "application/json"}, timeout)


def raw_exchange(port, data, timeout=5.0, shut_write=False):
    """Sends raw bytes and reads until the peer closes or the timeout passes; returns (bytes, closed)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    out = b""
    closed = False
    deadline = now() + timeout
    try:
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer may close before taking everything: what it answered still counts
        while now() < deadline:
            s.settimeout(max(0.01, deadline - now()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
            if len(out) > (4 << 20):
                break
    finally:
        s.close()
    return out, closed


def frame(header, body=b""):
    """A frame: u32 little-endian header length, the header (a dict, or raw bytes as given), the body."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(header)) + header + body


def parse_frames(data):
    """Splits received bytes into (header dict or None, body) pairs; stops at the first incomplete one."""
    frames = []
    while len(data) >= 4:
        n = struct.unpack("<I", data[:4])[0]
        if len(data) < 4 + n:
            break
        try:
            hdr = json.loads(data[4:4 + n])
        except ValueError:
            hdr = None
        size = 0
        if isinstance(hdr, dict):
            size = hdr.get("total_size", hdr.get("filesize", 0)) or 0
        frames.append((hdr, data[4 + n:4 + n + size]))
        data = data[4 + n + size:]
    return frames


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tree_digest(root):
    """relative path -> (kind, size, mtime_ns, sha256 of content, mode) for everything under root, symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    out[rel] = ("file", st.st_size, st.st_mtime_ns, sha256(f.read()), st.st_mode)
            else:
                out[rel] = ("dir" if os.path.isdir(path) else "other", 0, st.st_mtime_ns, "", st.st_mode)
    return out


def splitmix_bytes(seed, n):
    """The bytes sockgate-load's splitmix64 generator gives for seed (see kinds.c file_content)."""
    out = bytearray()
    s = seed & 0xFFFFFFFFFFFFFFFF
    mask = 0xFFFFFFFFFFFFFFFF
    while len(out) < n:
        s = (s + 0x9E3779B97F4A7C15) & mask
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out += z.to_bytes(8, "little")
    return bytes(out[:n])


def load_file_content(idx, seq, size):
    """What sockgate-load uploads as seq of client idx (kinds.c file_content)."""
    head = ("sockgate-load c%d seq %d\n" % (idx, seq)).encode()
    return head + splitmix_bytes(((idx << 32) ^ seq), size - len(head))


class Figures:
    """Collects a suite's figures, prints each as 'figure: NAME = VALUE (target ...)', and decides the exit code."""

    def __init__(self, suite):
        self.suite = suite
        self.missed = []
        self.all = {}
        # The machine is shared: its load says how much of a latency figure is the machine's.
        self.info("load_average_at_start", round(os.getloadavg()[0], 1))

    def _print(self, name, value, note):
        full = "%s.%s" % (self.suite, name)
        self.all[full] = value
        if isinstance(value, float):
            value = round(value, 1)
        print("figure: %s = %s (%s)" % (full, value, note), flush=True)

    def info(self, name, value):
        self._print(name, value, "info")

    def check(self, name, value, op, limit):
        """Prints a figure with its target; op is one of '<', '<=', '=', '>=', '>'."""
        ok = {"<": value < limit, "<=": value <= limit, "=": value == limit, ">=": value >= limit,
              ">": value > limit}[op]
        self._print(name, value, "target %s %s: %s" % (op, limit, "ok" if ok else "MISSED"))
        if not ok:
            self.missed.append("%s.%s = %s (target %s %s)" % (self.suite, name, value, op, limit))
        return ok

    def check_clean_exits(self, procs):
        """Stops each (name, Proc) with SIGTERM and checks that every one exited 0."""
        codes = {name: p.stop() for name, p in procs}
        bad = [n for n, c in codes.items() if c != 0]
        self.check("programs_not_exiting_0_on_sigterm", len(bad), "=", 0)
        if bad:
            stderr("%s: exit statuses %s" % (self.suite, codes))

    def stopped(self, e):
        """Records a suite that could not run to its end as a failure, with the reason."""
        self.missed.append("the suite stopped: %r" % e)
        stderr("%s: %r" % (self.suite, e))

    def finish(self):
        self.info("load_average_at_end", round(os.getloadavg()[0], 1))
        if self.missed:
            for m in self.missed:
                print("%s: MISSED %s" % (self.suite, m), flush=True)
            return 1
        print("%s: every target met" % self.suite, flush=True)
        return 0


def workdir(suite, keep=False):
    """A fresh directory for a suite's files and logs (removed at the end unless keep)."""
    base = os.environ.get("SOCKGATE_RELIABILITY_DIR") or tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="sockgate-%s-" % suite, dir=base)
    return path


def cleanup(path, keep):
    if keep:
        print("work directory kept: %s" % path, flush=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def wait_until(predicate, timeout, step=0.05):
    """Calls predicate until it is true or timeout seconds pass; returns its last value."""
    deadline = now() + timeout
    while True:
        value = predicate()
        if value or now() >= deadline:
            return value
        time.sleep(step)


def healthz_ms(port, timeout=5.0):
    """Time of one GET /healthz on a new connection, in ms (connect included); inf when it fails."""
    t0 = now()
    try:
        status, _, _ = request(port, "GET", "/healthz", timeout=timeout)
    except OSError:
        return float("inf")
    return (now() - t0) * 1000.0 if status == 200 else float("inf")


def stderr(msg):
    print(msg, file=sys.stderr, flush=True)
