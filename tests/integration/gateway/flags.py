#!/usr/bin/env python3
"""Every program's flags as a newcomer meets them: a bad flag exits 2 at once and creates nothing,
a busy port exits 1 before any backend starts or directory is made, durations and sizes follow
one convention (old spellings still work), --help states it and the usage line lists every flag,
and --embedded-listen fixes the embedded backends' ports, all listed at start-up."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

BIN = os.path.abspath(os.environ.get("SOCKGATE_BIN_DIR", "build/bin"))
PROGRAMS = ["sockgate", "sockgate-echo", "sockgate-time", "sockgate-exec", "sockgate-file", "sockgate-chat"]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(argv, cwd, timeout=30):
    return subprocess.run([os.path.join(BIN, argv[0])] + argv[1:], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def start(argv, cwd):
    """Starts argv and returns (process, stderr lines up to 'listening on' and the block after it)."""
    proc = subprocess.Popen([os.path.join(BIN, argv[0])] + argv[1:], cwd=cwd, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "uploads" in line or (argv[0] != "sockgate" and "listening on" in line):
            break
    return proc, lines


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        proc.stderr.close()


def free_run(n):
    """A base port with n free consecutive TCP and UDP ports after it, held by nothing once returned."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n > 65535:
            continue
        held, ok = [], True
        for p in range(base, base + n):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                t = socket.socket(socket.AF_INET, kind)
                try:
                    t.bind(("127.0.0.1", p))
                    held.append(t)
                except OSError:
                    ok = False
        for t in held:
            t.close()
        if ok:
            return base
    raise SystemExit("no run of free ports")

# sockgate's duration flags: (flag, environment variable, least, most, as --help and errors write them).
DURATIONS = [("timeout", "SOCKGATE_TIMEOUT", "10ms", "1h"),
             ("grace", "SOCKGATE_GRACE", "0ms", "1h"),
             ("drain", "SOCKGATE_DRAIN", "0ms", "1h"),
             ("resolve-interval", "SOCKGATE_RESOLVE_INTERVAL", "100ms", "1h"),
             ("eject", "SOCKGATE_EJECT", "10ms", "30s"),
             ("header-timeout", "SOCKGATE_HEADER_TIMEOUT", "0ms", "1h"),
             ("body-timeout", "SOCKGATE_BODY_TIMEOUT", "0ms", "1h"),
             ("ws-ping", "SOCKGATE_WS_PING", "0ms", "1h"),
             ("ws-pong-timeout", "SOCKGATE_WS_PONG_TIMEOUT", "10ms", "1h"),
             ("ws-idle-timeout", "SOCKGATE_WS_IDLE_TIMEOUT", "0ms", "168h"),
             ("upload-expiry", "SOCKGATE_UPLOAD_EXPIRY", "1s", "8784h")]
# Their old spellings in milliseconds, and the flag each one sets.
OLD_MS = [("timeout-ms", "SOCKGATE_TIMEOUT_MS", "timeout"), ("grace-ms", "SOCKGATE_GRACE_MS", "grace"),
          ("header-timeout-ms", "SOCKGATE_HEADER_TIMEOUT_MS", "header-timeout"),
          ("body-timeout-ms", "SOCKGATE_BODY_TIMEOUT_MS", "body-timeout"),
          ("drain-ms", "SOCKGATE_DRAIN_MS", "drain"),
          ("resolve-interval-ms", "SOCKGATE_RESOLVE_INTERVAL_MS", "resolve-interval"),
          ("eject-ms", "SOCKGATE_EJECT_MS", "eject")]


def ms_of(text):
    """Milliseconds of a duration as the tables above write it."""
    m = re.fullmatch(r"(\d+)(ms|s|h)", text)
    return int(m.group(1)) * {"ms": 1, "s": 1000, "h": 3600000}[m.group(2)]


def run_env(argv, cwd, env):
    return subprocess.run([os.path.join(BIN, argv[0])] + argv[1:], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, **env))


def check_durations(work):
    """Every duration flag, by flag and by environment variable, keeps its own range: the ends are taken
    (--print-routes exits 0 once every flag is checked), one past them is refused naming the flag and range."""
    r = run(["sockgate", "--help"], work)
    for flag, env, least, most in DURATIONS:
        check(re.search(r"^  --%s DURATION .*\[env %s\]$" % (flag, env), r.stdout, re.M) is not None,
              "--help lists --%s with %s" % (flag, env))
        says = "--%s '%%s' must be a duration from %s to %s" % (flag, least, most)
        over = "%dms" % (ms_of(most) + 1)
        for how in ("flag", "env"):
            for value in (least, most):
                got = run(["sockgate", "--%s" % flag, value, "--print-routes"], work) if how == "flag" else \
                    run_env(["sockgate", "--print-routes"], work, {env: value})
                check(got.returncode == 0 and "GET /healthz" in got.stdout,
                      "%s of --%s takes %s: %d %s" % (how, flag, value, got.returncode, got.stderr))
            bad = [over, "soon"] + (["%dms" % (ms_of(least) - 1)] if ms_of(least) > 0 else [])
            for value in bad:
                got = run(["sockgate", "--%s" % flag, value], work) if how == "flag" else \
                    run_env(["sockgate"], work, {env: value})
                check(got.returncode == 2 and (says % value) in got.stderr,
                      "%s of --%s refuses %s saying %r: %d %s" % (how, flag, value, says % value, got.returncode,
                                                                  got.stderr))
    ranges = {flag: (least, most) for flag, _, least, most in DURATIONS}
    for old, env, flag in OLD_MS:
        least, most = ranges[flag]
        over = str(ms_of(most) + 1)
        got = run(["sockgate", "--%s" % old, str(ms_of(most)), "--print-routes"], work)
        check(got.returncode == 0, "--%s %d is taken: %s" % (old, ms_of(most), got.stderr))
        for argv, env_set in [(["sockgate", "--%s" % old, over], {}), (["sockgate"], {env: over})]:
            got = run_env(argv, work, env_set)
            check(got.returncode == 2 and ("--%s '%sms' must be a duration from %s to %s" % (flag, over, least, most))
                  in got.stderr, "%s %s sets --%s: %s" % (argv, env_set, flag, got.stderr))
    check(os.listdir(work) == [], "checking durations created %s" % os.listdir(work))


def main():
    work = tempfile.mkdtemp(prefix="sg-flags-")
    try:
        # Bad flags: exit 2 at once, nothing created in the current folder.
        for argv, why in [(["sockgate", "--listen", "nope"], "--listen"),
                          (["sockgate", "--timeout", "5"], "with a unit"),
                          (["sockgate", "--max-json", "1"], "size"),
                          (["sockgate", "--web-root", os.path.join(work, "absent")], "--web-root"),
                          (["sockgate", "--embedded-listen", "nope"], "--embedded-listen"),
                          (["sockgate-echo", "--idle-timeout", "soon"], "duration"),
                          (["sockgate-exec", "--timeout", "5"], "with a unit"),
                          (["sockgate-file", "--max-size", "lots"], "size")]:
            r = run(argv, work)
            check(r.returncode == 2, "%s exits 2, got %d: %s" % (argv, r.returncode, r.stderr))
            check(why in r.stderr, "%s says %r: %s" % (argv, why, r.stderr))
            check(os.listdir(work) == [], "%s created %s" % (argv, os.listdir(work)))
        for prog in PROGRAMS:
            r = run([prog, "--listen", "nope"], work)
            check(r.returncode == 2, "%s --listen nope exits 2, got %d" % (prog, r.returncode))
        check(os.listdir(work) == [], "a bad --listen created %s" % os.listdir(work))
        check_durations(work)

        # A busy port: exit 1, no embedded backend started, no file root made.
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(["sockgate", "--listen", "127.0.0.1:%d" % port], work)
        check(r.returncode == 1, "sockgate on a busy port exits 1, got %d" % r.returncode)
        check("embedded" not in r.stderr, "no backend started before the bind failed: %s" % r.stderr)
        r = run(["sockgate-file", "--listen", "127.0.0.1:%d" % port, "--root", "root"], work)
        check(r.returncode == 1, "sockgate-file on a busy port exits 1, got %d" % r.returncode)
        check(os.listdir(work) == [], "a busy port left %s behind" % os.listdir(work))
        busy.close()

        # --help: the units convention everywhere; the usage line names every option.
        for prog in PROGRAMS + ["sockgate-cli"]:
            r = run([prog, "--help"], work)
            check(r.returncode == 0 and "500ms" in r.stdout and "1024-based" in r.stdout,
                  "%s --help states the units" % prog)
            if prog == "sockgate-cli":
                check("SOCKGATE_CLI_TIMEOUT_MS" in r.stdout, "sockgate-cli --help lists its environment variables")
                continue
            usage = r.stdout.split("\n\n")[0]
            check("[...]" not in usage, "%s's usage line is complete" % prog)
            for flag in re.findall(r"^  (--[a-z-]+)", r.stdout, re.M):
                if flag in ("--help", "--version"):
                    continue
                if "old spelling" in [l for l in r.stdout.splitlines() if l.startswith("  " + flag + " ")][0]:
                    continue
                check(flag in usage, "%s's usage line names %s" % (prog, flag))

        # Old spellings still work; --embedded-listen fixes the ports, all listed at start-up.
        base = free_run(5)
        proc, lines = start(["sockgate", "--listen", "127.0.0.1:0", "--embedded-listen", "127.0.0.1:%d" % base,
                             "--timeout-ms", "5000", "--grace-ms", "100", "--file-root", "up"], work)
        text = "".join(lines)
        check("listening on" in text, "sockgate with old spellings starts: %s" % text)
        for i, name in enumerate(["echo", "time", "exec", "file", "chat"]):
            check(re.search(r"%s\s+127\.0\.0\.1:%d " % (name, base + i), text) is not None,
                  "the start-up block lists %s at %d" % (name, base + i))
        check(re.search(r"uploads\s+%s" % re.escape(os.path.join(work, "up")), text) is not None,
              "the start-up block names the file root")
        check(re.search(r"page\s+http://127\.0\.0\.1:\d+/", text) is not None, "the start-up block names the page")
        check(stop(proc) == 0, "sockgate stops with 0")
        proc, lines = start(["sockgate-echo", "--listen", "127.0.0.1:0", "--idle-timeout", "30"], work)
        check(any("listening on" in l for l in lines), "sockgate-echo takes a bare --idle-timeout in seconds")
        check(stop(proc) == 0, "sockgate-echo stops with 0")
    finally:
        subprocess.run(["rm", "-rf", work])
    if failures:
        print("%d failure(s)" % len(failures), file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
