"""procs.py - the processes of a bench run: start, wait until ready, sample memory and CPU, stop by pid.

Every server bench/run starts goes through start_server(), which records it in one list;
stop_all() (called from bench/run's finally and its SIGTERM handler) stops each by its pid,
SIGTERM first and SIGKILL after a grace period, so nothing outlives the run.
"""

import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"listening on (\S+):(\d+)")

_started = []
started_commands = []  # (name, argv) of every server started, for the report


class BenchError(Exception):
    """A measurement that could not be made (a server that did not start, a load driver that failed)."""


class Server:
    """One started server: its name, pid, port, log file and command line."""

    def __init__(self, name, popen, argv, log_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.argv = argv
        self.log_path = log_path
        self.port = None

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, lines=5):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port():
    """Returns a TCP port on 127.0.0.1 that was free a moment ago (for peers that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name, argv, log_path, env=None, port=None, timeout=30.0):
    """Starts argv with stderr and stdout in log_path and waits until it is ready.

    Ready means a `listening on HOST:PORT` line in the log (sockgate's programs, which are
    given port 0), or, when port is given (peers), a TCP connect to 127.0.0.1:port that
    succeeds. Returns the Server with its port; raises BenchError when it does not come up.
    """
    log = open(log_path, "ab")
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env,
                                 start_new_session=True)
    except OSError as e:
        raise BenchError("%s: cannot start %s: %s" % (name, argv[0], e)) from e
    finally:
        log.close()
    srv = Server(name, popen, argv, log_path)
    _started.append(srv)
    started_commands.append((name, argv))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not srv.alive():
            raise BenchError("%s exited with status %s at start-up: %s" % (name, popen.returncode, srv.log_tail()))
        if port is None:
            m = _find_listening(log_path)
            if m:
                srv.port = m
                return srv
        elif _can_connect(port):
            srv.port = port
            return srv
        time.sleep(0.05)
    stop(srv)
    raise BenchError("%s was not ready within %.0f s: %s" % (name, timeout, srv.log_tail()))


def _find_listening(log_path):
    try:
        with open(log_path, "rb") as f:
            m = LISTENING.search(f.read(65536).decode("utf-8", "replace"))
    except OSError:
        return None
    return int(m.group(2)) if m else None


def _can_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(srv, grace=20.0):
    """Stops one server by its pid: SIGTERM, then SIGKILL after grace seconds; returns its exit status."""
    if srv.alive():
        try:
            os.kill(srv.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            srv.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(srv.pid, signal.SIGKILL)
            srv.popen.wait()
    if srv in _started:
        _started.remove(srv)
    return srv.popen.returncode


def stop_all():
    """Stops every server still running, newest first."""
    for srv in list(reversed(_started)):
        stop(srv)


def children(pid):
    """Returns the pids of pid's child processes (nginx's workers)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def status_kib(pid, field):
    """Returns a kB field of /proc/PID/status (VmRSS, VmHWM), or 0 when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pids):
    """Resets VmHWM of each pid to its current RSS (Linux clear_refs 5); returns whether all took it."""
    ok = True
    for pid in pids:
        try:
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


def cpu_seconds(pids):
    """Returns (user, system) CPU seconds used so far by pids together, threads included."""
    user = system = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


class PeakSampler:
    """Polls the summed VmRSS of some pids every 10 ms while a transfer runs, and reads VmHWM after.

    Peak is the larger of the highest polled sum and the summed VmHWM since reset_peak(), so a
    spike between two polls is not missed where clear_refs works.
    """

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._pids = []
        self._hwm_ok = False

    def __enter__(self):
        self._pids = self.pids_fn()
        self._hwm_ok = reset_peak(self._pids)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(0.01):
            total = sum(status_kib(p, "VmRSS") for p in self._pids)
            self.peak_kib = max(self.peak_kib, total)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self._hwm_ok:
            self.peak_kib = max(self.peak_kib, sum(status_kib(p, "VmHWM") for p in self._pids))
        return False


def run_tool(argv, timeout, env=None, stdout=subprocess.PIPE, client_cpu=None):
    """Runs a load driver or client to completion; returns (exit status, stdout text, stderr text, seconds).

    When client_cpu is a list, the (user, system) CPU seconds the tool used are appended to it.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, env=full_env,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError("%s did not finish within %.0f s" % (os.path.basename(argv[0]), timeout)) from e
    except OSError as e:
        raise BenchError("cannot run %s: %s" % (argv[0], e)) from e
    elapsed = time.monotonic() - t0
    if client_cpu is not None:
        ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu.append((ru2.ru_utime - ru.ru_utime, ru2.ru_stime - ru.ru_stime))
    out = p.stdout.decode("utf-8", "replace") if isinstance(p.stdout, bytes) else ""
    return p.returncode, out, p.stderr.decode("utf-8", "replace"), elapsed
