#!/usr/bin/env python3
"""memcheck.py - memory checks of the real programs while they take the hostile corpus:

1. the sanitizer build (AddressSanitizer + UndefinedBehaviorSanitizer, LeakSanitizer at exit):
   every program of the system runs sanitized through the whole corpus and is stopped with
   SIGTERM, so the leak check runs; any report in any log, or an exit status other than 0, fails;
2. valgrind memcheck: the gateway, the file and the exec backend of the normal build run under
   valgrind through part of the corpus; no error and no byte definitely or indirectly lost.

Figures: sanitizer reports, valgrind errors, bytes lost, and the hostile suite's own result in
both runs. A part whose tool is missing (no sanitizer build, no valgrind) is reported as skipped
and fails only with --require.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import rellib
from rellib import Figures

HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer")
VALGRIND_GROUPS = ["http", "json", "traversal", "injection", "multipart", "frames"]


def run_hostile(env, args, work):
    env = dict(os.environ, **env)
    env["SOCKGATE_RELIABILITY_DIR"] = work
    cmd = [sys.executable, os.path.join(HERE, "hostile.py"), "--keep"] + args
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    return p.returncode, p.stdout


def cases_tried(out):
    m = re.search(r"hostile\.cases_tried = (\d+)", out)
    return int(m.group(1)) if m else 0


def sanitizer_part(fig, build, keep):
    if not os.access(os.path.join(build, "bin", "sockgate"), os.X_OK):
        fig.info("sanitizer", "skipped: no sanitizer build at %s (make sanitize)" % build)
        return False
    work = tempfile.mkdtemp(prefix="sockgate-memcheck-asan-")
    # detect_leaks=1 is the default on x86_64 Linux; said here so no environment can turn it off by accident.
    env = {"SOCKGATE_BUILD_DIR": build,
           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    status, out = run_hostile(env, [], work)
    reports = []
    for log in glob.glob(os.path.join(work, "**", "*.log"), recursive=True):
        with open(log, errors="replace") as f:
            text = f.read()
        for m in SANITIZER_REPORT.finditer(text):
            reports.append("%s: %s" % (os.path.basename(log), text[m.start():m.start() + 200].splitlines()[0]))
    for r in reports:
        print("memcheck: sanitizer: %s" % r, flush=True)
    if status != 0:
        print(out, flush=True)
    fig.info("sanitizer.build", build)
    fig.info("sanitizer.cases", cases_tried(out))
    fig.check("sanitizer.hostile_suite_status", status, "=", 0)
    fig.check("sanitizer.reports", len(reports), "=", 0)
    rellib.cleanup(work, keep)
    return True


def valgrind_part(fig, groups, keep):
    valgrind = shutil.which("valgrind")
    if not valgrind:
        fig.info("valgrind", "skipped: valgrind is not installed")
        return False
    work = tempfile.mkdtemp(prefix="sockgate-memcheck-vg-")
    wrap = ("%s --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect "
            "--errors-for-leak-kinds=definite,indirect --log-file=%%LOG%%" % valgrind)
    env = {"SOCKGATE_WRAP": wrap, "SOCKGATE_WRAP_PROGRAMS": "sockgate,sockgate-file,sockgate-exec"}
    status, out = run_hostile(env, ["--only"] + groups, work)
    errors = lost = complete = 0
    tool_logs = glob.glob(os.path.join(work, "**", "*.tool"), recursive=True)
    for log in tool_logs:
        with open(log, errors="replace") as f:
            text = f.read()
        complete += 1 if "Memcheck" in text and "ERROR SUMMARY:" in text else 0
        for m in re.finditer(r"ERROR SUMMARY: (\d+) errors", text):
            errors += int(m.group(1))
        for m in re.finditer(r"(definitely|indirectly) lost: ([\d,]+) bytes", text):
            lost += int(m.group(2).replace(",", ""))
        if re.search(r"ERROR SUMMARY: [1-9]|lost: [1-9]", text):
            print("memcheck: valgrind: %s:\n%s" % (os.path.basename(log), text[-3000:]), flush=True)
    if status != 0:
        print(out, flush=True)
    fig.info("valgrind.programs", "sockgate, sockgate-file, sockgate-exec")
    fig.info("valgrind.corpus_groups", ",".join(groups))
    fig.info("valgrind.cases", cases_tried(out))
    # One log per program started under valgrind, each ending with its summary (the program exited).
    fig.check("valgrind.programs_checked", complete, ">=", 3)
    fig.check("valgrind.programs_unfinished", len(tool_logs) - complete, "=", 0)
    fig.check("valgrind.hostile_suite_status", status, "=", 0)
    fig.check("valgrind.errors", errors, "=", 0)
    fig.check("valgrind.bytes_lost", lost, "=", 0)
    rellib.cleanup(work, keep)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the CI version: valgrind on fewer corpus groups")
    ap.add_argument("--asan-build", default=os.environ.get("SOCKGATE_ASAN_BUILD_DIR",
                                                          os.path.join(rellib.SOURCE_DIR, "build-asan")))
    ap.add_argument("--require", action="store_true", help="fail when a tool or the sanitizer build is missing")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    fig = Figures("memcheck")
    groups = ["http", "traversal", "injection"] if args.short else VALGRIND_GROUPS
    ran_asan = sanitizer_part(fig, os.path.abspath(args.asan_build), args.keep)
    ran_vg = valgrind_part(fig, groups, args.keep)
    if args.require and not (ran_asan and ran_vg):
        fig.missed.append("a memory check could not run (see above)")
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
