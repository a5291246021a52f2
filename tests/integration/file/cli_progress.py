#!/usr/bin/env python3
"""sockgate-cli put and get on a real terminal (a pty of 50 and 80 columns) against a real sockgate-file:
every redraw of the bar fits on one line, and each transfer ends with one summary line."""
import fcntl
import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import termios

BIN = os.environ.get("SOCKGATE_BIN_DIR", "build/bin")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def run_on_pty(argv, columns):
    """Runs argv with stdout and stderr on a pty of the given width; returns (status, everything written).
    The width is set before the program starts, so its first TIOCGWINSZ already sees it."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break  # EIO: every holder of the slave side has closed it
        if not chunk:
            break
        out += chunk
    status = proc.wait(timeout=120)
    os.close(master)
    return status, out.decode("utf-8", "replace")


def check_bar(out, columns, verb, name, sha):
    # The pty turns \n into \r\n; each \r starts a redraw, \033[K clears what it leaves.
    text = out.replace("\r\n", "\n").replace("\033[K", "")
    lines = text.split("\n")
    # What stays on screen of a line is what its last \r leaves.
    summary = [l.split("\r")[-1] for l in lines if l.split("\r")[-1].startswith(verb + " ")]
    check(len(summary) == 1, "%s at %d columns: one summary line, got %r" % (verb, columns, summary))
    if summary:
        check(re.search(r"^%s %s: [0-9.]+ (MiB|KiB|B) in [0-9.]+ s \([0-9.]+ (B|KiB|MiB|GiB)/s\), sha256 %s$"
                        % (verb, re.escape(name), sha), summary[0]) is not None,
              "%s summary reads %r" % (verb, summary[0]))
    redraws = [seg for line in lines for seg in line.split("\r")]
    bars = [r for r in redraws if "%" in r and not r.startswith(verb + " ")]
    check(len(bars) >= 1, "%s at %d columns drew a bar" % (verb, columns))
    for r in bars:
        check(len(r) < columns, "%s at %d columns: a redraw of %d characters wraps: %r" % (verb, columns, len(r), r))


def main():
    work = tempfile.mkdtemp(prefix="sg-progress-")
    root = os.path.join(work, "root")
    srv = subprocess.Popen([os.path.join(BIN, "sockgate-file"), "--listen", "127.0.0.1:0", "--root", root],
                           stderr=subprocess.PIPE, text=True)
    try:
        addr = None
        for line in srv.stderr:
            m = re.search(r"listening on (\S+)", line)
            if m:
                addr = m.group(1)
                break
        check(addr is not None, "sockgate-file started")
        data = os.urandom(24 << 20)
        sha = hashlib.sha256(data).hexdigest()
        name = "a-rather-long-file-name-for-a-narrow-terminal.bin"
        src = os.path.join(work, name)
        with open(src, "wb") as f:
            f.write(data)
        cli = os.path.join(BIN, "sockgate-cli")
        for columns in (50, 80):
            status, out = run_on_pty([cli, "put", addr, src], columns)
            check(status == 0, "put at %d columns exits 0, got %d: %s" % (columns, status, out[-300:]))
            check_bar(out, columns, "put", name, sha)
            dst = os.path.join(work, "got-%d" % columns)
            status, out = run_on_pty([cli, "get", addr, name, dst], columns)
            check(status == 0, "get at %d columns exits 0, got %d: %s" % (columns, status, out[-300:]))
            check_bar(out, columns, "got", name, sha)
            with open(dst, "rb") as f:
                check(hashlib.sha256(f.read()).hexdigest() == sha, "get wrote the same bytes")
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        subprocess.run(["rm", "-rf", work])
    if failures:
        print("%d failure(s)" % len(failures), file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
