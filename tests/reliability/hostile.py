#!/usr/bin/env python3
"""hostile.py - runs the hostile-input corpus (tests/reliability/corpus/*.jsonl) against the gateway
and, directly, against every backend: malformed frames, malformed HTTP, bad JSON, path traversal
in every spelling, command injection, oversized everything.

Each line of a corpus file is one case (see corpus/README.md). Around the whole run: a sentinel
tree outside the file root is fingerprinted before and after, every injection case names a
marker file that must never appear, and every process must still be alive (and answering) at
the end. Figures: cases tried, answered as expected, crashes, files touched outside the root,
commands run that were not allowed, secrets leaked.
"""
import argparse
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import rellib
from rellib import Figures, Proc, now

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
TEMPLATE = re.compile(r"\{\{([A-Z_]+)(?::([^}]*))?\}\}")
# Native frames a smuggling case hides in an HTTP body: one per backend op that changes something.
# A backend that ever reads one as a request of its own is the hole issue 14 closed.
SMUGGLED = {
    "DELETE": rellib.frame({"op": "delete", "filename": "victim.txt", "id": "smuggled"}),
    "UPLOAD": rellib.frame({"op": "upload", "filename": "smuggled.txt", "total_size": 3, "id": "smuggled"}, b"bad"),
    "LIST": rellib.frame({"op": "list", "id": "smuggled"}),
    "EXEC": rellib.frame({"op": "exec", "argv": ["smuggled-canary"], "id": "smuggled"}),
    "REPLY": rellib.frame({"op": "reply", "to": "127.0.0.1:9", "text": "smuggled", "id": "smuggled"}),
}
# What a follow-up request on a framed connection looks like, per backend, to prove it stays usable.
FOLLOW_UP = {"exec": {"op": "exec", "argv": ["true"]}, "exec_wide": {"op": "exec", "argv": ["ls"]},
             "file": {"op": "list"}, "chat": {"op": "stats"}}
# The second exec backend: commands that read, write, rename and link, so the sandbox cases have
# something to try (corpus/sandbox.jsonl); the gateway fronts the first, default-allowlist one.
WIDE_ALLOW = "cat,ls,touch,mv,cp,ln,rm,mkdir,sh,env,chmod,head,truncate"


class Env:
    """The running system and the paths the templates name."""

    def __init__(self, work):
        self.work = work
        self.root = os.path.join(work, "root")
        self.sentinel = os.path.join(work, "sentinel")
        self.markers = os.path.join(work, "markers")
        self.secret = "SENTINEL-SECRET-%d" % os.getpid()
        self.procs = {}
        self.case_no = 0

    def expand(self, text):
        """Turns a corpus string into bytes: UTF-8 text with {{...}} templates filled in."""
        out = b""
        pos = 0
        for m in TEMPLATE.finditer(text):
            out += text[pos:m.start()].encode("utf-8")
            pos = m.end()
            name, arg = m.group(1), m.group(2)
            if name == "HEX":
                out += bytes.fromhex(arg)
            elif name == "REPEAT":
                what, n = arg.rsplit(",", 1)
                out += self.expand(what) * int(n)
            elif name == "MARKER":
                out += os.path.join(self.markers, "m%d" % self.case_no).encode()
            elif name == "SENTINEL":
                out += self.sentinel.encode()
            elif name == "ROOT":
                out += self.root.encode()
            elif name == "SECRET":
                out += self.secret.encode()
            elif name == "FRAME":
                out += SMUGGLED[arg]
            elif name == "CHUNK":
                # One chunk of a chunked body carrying a frame: size line, the frame, CRLF.
                out += b"%x\r\n" % len(SMUGGLED[arg]) + SMUGGLED[arg] + b"\r\n"
            else:
                raise ValueError("unknown template {{%s}}" % name)
        return out + text[pos:].encode("utf-8")

    def port(self, target):
        return self.procs[target].port


def read_http(sock, timeout):
    """Reads one HTTP answer (status line, headers, Content-Length body); returns (status, headers, body, closed)."""
    data = bytearray()
    deadline = now() + timeout
    closed = False
    while now() < deadline:
        sock.settimeout(max(0.01, deadline - now()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", data[:head_end], re.I)
            if m and len(data) >= head_end + 4 + int(m.group(1)):
                break
    data = bytes(data)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not m:
        return None, {}, data, closed
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    if "content-length" in headers and headers["content-length"].isdigit():
        body = body[:int(headers["content-length"])]  # a pipelined answer may follow
    return int(m.group(1)), headers, body, closed


def build_api_request(env, case):
    """The raw bytes of an "api" case: method, path, headers, body, Connection: close."""
    body = b""
    if "json" in case:
        body = env.expand(json.dumps(case["json"], ensure_ascii=False))
    elif "body" in case:
        body = env.expand(case["body"])
    headers = dict(case.get("headers", {}))
    if "json" in case:
        headers.setdefault("Content-Type", "application/json")
    if body and not case.get("no_length") and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    req = env.expand(case["method"]) + b" " + env.expand(case["path"]) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for k, v in headers.items():
        req += k.encode() + b": " + env.expand(str(v)) + b"\r\n"
    return req + b"Connection: close\r\n\r\n" + body


def check_http(env, case, status, headers, body, closed):
    """Returns None when the answer is what the case expects, else why not."""
    exp = case["expect"]
    secret = env.secret.encode()
    if secret in body:
        env.leaks += 1
        return "the answer contains the sentinel secret"
    if status is None:
        if exp.get("or_closed") and closed:
            return None
        if exp.get("or_waits") and not closed and not body:
            return None  # taken for the start of a request still to come: the idle timeout ends it
        return "no HTTP answer (closed=%s, got %r)" % (closed, body[:80])
    if status not in exp["status"]:
        return "status %d, expected %s: %r" % (status, exp["status"], body[:200])
    if "code" in exp:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return "no JSON error body: %r" % body[:200]
        if code not in exp["code"]:
            return "error code %s, expected %s" % (code, exp["code"])
    if "fields" in exp:
        try:
            got = json.loads(body)
        except ValueError:
            return "no JSON body: %r" % body[:200]
        for k, v in exp["fields"].items():
            want = env.expand(v).decode() if isinstance(v, str) else v
            have = field(got, k)
            if have != want:
                return "%s = %r, expected %r" % (k, have, want)
    return None


def field(obj, path):
    """obj["a"][0]["b"] for the path "a.0.b"; None when any step is missing."""
    for step in path.split("."):
        if isinstance(obj, list) and step.isdigit() and int(step) < len(obj):
            obj = obj[int(step)]
        elif isinstance(obj, dict):
            obj = obj.get(step)
        else:
            return None
    return obj


def run_http(env, case):
    raw = build_api_request(env, case) if case["type"] == "api" else env.expand(case["raw"])
    s = socket.create_connection((rellib.HOST, env.port("gateway")), timeout=10)
    try:
        try:
            s.sendall(raw)
            if case.get("shut_write"):
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused before the whole body went out: the answer is what counts
        status, headers, body, closed = read_http(s, case.get("timeout", 10))
    finally:
        s.close()
    return check_http(env, case, status, headers, body, closed)


def read_frame(sock, timeout):
    """Reads one frame; returns (header or None, body, closed)."""
    data = b""
    deadline = now() + timeout
    while now() < deadline:
        frames = rellib.parse_frames(data)
        if frames:
            return frames[0][0], frames[0][1], False
        sock.settimeout(max(0.01, deadline - now()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return None, data, True
        if not chunk:
            return None, data, True
        data += chunk
    return None, data, False


def wait_closed(sock, timeout):
    deadline = now() + timeout
    while now() < deadline:
        sock.settimeout(max(0.01, deadline - now()))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True
    return False


def run_frame(env, case):
    exp = case["expect"]
    target = case["target"]
    s = socket.create_connection((rellib.HOST, env.port(target)), timeout=10)
    try:
        for part in case["send"]:
            if "frame" in part:
                f = part["frame"]
                header = env.expand(f["header"])
                body = env.expand(f.get("body", ""))
                n = f.get("len", len(header))
                data = n.to_bytes(4, "little") + header + body
            else:
                data = env.expand(part["raw"])
            try:
                s.sendall(data)
            except OSError:
                break
        if case.get("shut_write"):
            s.shutdown(socket.SHUT_WR)
        hdr, body, closed = read_frame(s, case.get("timeout", 5))
        if env.secret.encode() in body:
            env.leaks += 1
            return "the answer contains the sentinel secret"
        if exp.get("no_answer"):
            if hdr is not None:
                return "expected no answer, got %s" % hdr
        else:
            if hdr is None:
                return "no frame back (closed=%s, got %r)" % (closed, body[:80])
            code = (hdr.get("error") or {}).get("code") if isinstance(hdr, dict) else None
            if "error" in exp and code not in exp["error"]:
                return "error %s, expected %s: %s" % (code, exp["error"], hdr)
            if exp.get("ok") and code is not None:
                return "expected success, got %s" % hdr
            for k, v in exp.get("fields", {}).items():
                want = env.expand(v).decode() if isinstance(v, str) else v
                if hdr.get(k) != want:
                    return "%s = %r, expected %r" % (k, hdr.get(k), want)
            if "body" in exp and body != env.expand(exp["body"]):
                return "body %r, expected %r" % (body[:120], exp["body"])
        if exp.get("closed") is True and not closed and not wait_closed(s, 3):
            return "the connection stayed open after a broken frame"
        if exp.get("closed") is False:
            try:
                s.sendall(rellib.frame(FOLLOW_UP[target]))
                hdr2, _, _ = read_frame(s, 5)
            except OSError:
                hdr2 = None
            if not isinstance(hdr2, dict) or "error" in hdr2:
                return "the connection was not usable afterwards (%s)" % hdr2
    finally:
        s.close()
    return None


def chat_stats(env):
    s = socket.create_connection((rellib.HOST, env.port("chat")), timeout=5)
    try:
        s.sendall(rellib.frame({"op": "stats"}))
        hdr, _, _ = read_frame(s, 5)
    finally:
        s.close()
    return hdr["stats"]


def run_udp(env, case):
    exp = case["expect"]
    target = case["target"]
    before = chat_stats(env) if "stat" in exp else None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Waiting out the window is the answer for a service that never replies; a reply that is due
    # gets as long as a loaded machine may take.
    s.settimeout(1.0 if exp.get("no_reply") else 10.0)
    try:
        s.sendto(env.expand(case["send"]), (rellib.HOST, env.port(target)))
        try:
            reply = s.recv(70000)
        except socket.timeout:
            reply = None
    finally:
        s.close()
    if exp.get("no_reply") and reply is not None:
        return "expected no reply, got %r" % reply[:80]
    if "reply_prefix" in exp and (reply is None or not reply.startswith(env.expand(exp["reply_prefix"]))):
        return "reply %r, expected it to start with %r" % (reply and reply[:80], exp["reply_prefix"])
    if "reply" in exp and reply != env.expand(exp["reply"]):
        return "reply %r, expected %r" % (reply and reply[:80], exp["reply"])
    if before is not None:
        after = wait_until_stat(env, exp["stat"], before[exp["stat"]] + 1)
        if after < before[exp["stat"]] + 1:
            return "%s did not count the datagram (%d -> %d)" % (exp["stat"], before[exp["stat"]], after)
    return None


def wait_until_stat(env, name, want):
    value = rellib.wait_until(lambda: chat_stats(env)[name] >= want and chat_stats(env)[name], 10.0)
    return value or chat_stats(env)[name]


def backend_log_sizes(env):
    return {name: os.path.getsize(p.log_path) for name, p in env.procs.items() if name in ("file", "exec")}


def new_log_text(env, sizes):
    out = {}
    for name, size in sizes.items():
        with open(env.procs[name].log_path, "rb") as f:
            f.seek(size)
            out[name] = f.read().decode("utf-8", "replace")
    return out


def run_smuggle(env, case):
    """An HTTP request that hides native frames in its body. Beyond its answer: no backend may have
    seen a request the client did not make (file log, exec log, chat replies), the victim file
    stays, and the next user's request on a fresh connection is served."""
    sizes = backend_log_sizes(env)
    replies = chat_stats(env)["replies"]
    why = run_http(env, case)
    if why:
        return why
    time.sleep(0.3)  # a smuggled frame would be served within this
    logs = new_log_text(env, sizes)
    # The client's own requests are allowed (an upload of carrier.txt, the runner's listings): what
    # may never show is the delete or the upload of smuggled.txt that only the hidden frames ask for.
    for op in ("op=delete", "name=smuggled.txt"):
        if op in logs["file"]:
            return "the file backend served a request nobody made: %s" % logs["file"].strip()[:300]
    if "smuggled-canary" in logs["exec"]:
        return "the exec backend saw a smuggled command: %s" % logs["exec"].strip()[:300]
    if chat_stats(env)["replies"] != replies:
        return "the chat backend sent a smuggled reply"
    st, _, body = rellib.request(env.port("gateway"), "GET", "/api/v1/files/victim.txt")
    if st != 200 or body != b"victim":
        return "the victim file is gone or changed: %s %r" % (st, body[:80])
    st, _, _ = rellib.request(env.port("gateway"), "GET", "/api/v1/files")
    if st != 200:
        return "the next user's listing got %s" % st
    return None


RUNNERS = {"api": run_http, "http": run_http, "frame": run_frame, "udp": run_udp, "smuggle": run_smuggle}


def load_cases(only):
    cases = []
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.jsonl"))):
        group = os.path.splitext(os.path.basename(path))[0]
        if only and group not in only:
            continue
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("//"):
                    continue
                try:
                    case = json.loads(line)
                except ValueError as e:
                    raise SystemExit("%s:%d: %s" % (path, n, e))
                case["group"] = group
                case["where"] = "%s:%d" % (os.path.basename(path), n)
                cases.append(case)
    return cases


def undocumented_statuses(env):
    """Every (method, route, status) the gateway's access log shows that docs/openapi.json does not list
    for that operation: the statuses the handlers really produced, held against the document."""
    with open(os.path.join(rellib.SOURCE_DIR, "docs", "openapi.json")) as f:
        paths = json.load(f)["paths"]
    out = subprocess.run([rellib.program("sockgate"), "--print-routes"], capture_output=True, text=True,
                         check=True).stdout
    pattern_of = {name: pattern for _, pattern, name in (line.split() for line in out.splitlines())}
    pattern_of["static"] = "/"
    line_re = re.compile(r"request id=\S+ method=(\S+) .*?route=(\S+) status=(\d+)")
    missing, checked = set(), 0
    for line in env.procs["gateway"].log().splitlines():
        m = line_re.search(line)
        if not m or m.group(2) not in pattern_of or m.group(3) == "499":
            continue  # "other" is no route at all; 499 is a client that left before any answer
        checked += 1
        method, route, status = m.group(1).lower(), m.group(2), m.group(3)
        op = paths.get(pattern_of[route], {}).get(method)
        if op is None or status not in op.get("responses", {}):
            missing.add("%s %s (%s) %s" % (method.upper(), pattern_of[route], route, status))
    return sorted(missing), checked


def start_system(env, work):
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    env.procs["echo"] = Proc("sockgate-echo", [], logs).start()
    env.procs["time"] = Proc("sockgate-time", [], logs).start()
    env.procs["exec"] = Proc("sockgate-exec", ["--workdir", os.path.join(work, "execwd")], logs).start()
    env.procs["exec_wide"] = Proc("sockgate-exec", ["--workdir", os.path.join(work, "execwd2"),
                                                    "--allow", WIDE_ALLOW], logs).start()
    env.procs["file"] = Proc("sockgate-file", ["--root", env.root, "--max-size", "1M"], logs).start()
    env.procs["chat"] = Proc("sockgate-chat", [], logs).start()
    args = ["--max-upload", "1M"]
    for name in ("echo", "time", "exec", "file", "chat"):
        args += ["--" + name, "127.0.0.1:%d" % env.procs[name].port]
    env.procs["gateway"] = Proc("sockgate", args, logs).start()


def make_tree(env):
    os.makedirs(env.root)
    os.makedirs(env.markers)
    os.makedirs(os.path.join(env.work, "execwd"))
    os.makedirs(os.path.join(env.work, "execwd2"))
    os.makedirs(os.path.join(env.sentinel, "sub"))
    with open(os.path.join(env.sentinel, "secret.txt"), "w") as f:
        f.write(env.secret + "\n")
    with open(os.path.join(env.sentinel, "sub", "inner.txt"), "w") as f:
        f.write("inner " + env.secret + "\n")
    # A file in the root whose name looks like a traversal target, and a symlink planted in the root
    # the way a local user could: the API must not follow it out of the root.
    os.symlink(os.path.join(env.sentinel, "secret.txt"), os.path.join(env.root, "link-to-secret"))
    os.symlink(env.sentinel, os.path.join(env.root, "dir-link"))
    os.symlink(os.path.join(env.sentinel, "sub", "inner.txt"), os.path.join(env.root, "link-for-upload"))
    # The file smuggling cases try to delete through a pooled backend connection.
    with open(os.path.join(env.root, "victim.txt"), "w") as f:
        f.write("victim")


def outside_root(env):
    """Fingerprint of everything in the work directory that is not the root, the markers, the logs or a workdir."""
    skip = ("root", "markers", "logs", "execwd", "execwd2")
    digest = rellib.tree_digest(env.work)
    return {k: v for k, v in digest.items() if k.split(os.sep)[0] not in skip}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="accepted for symmetry: the corpus is the same")
    ap.add_argument("--only", nargs="*", help="corpus files (without .jsonl) to run")
    ap.add_argument("--verbose", action="store_true", help="print every case")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    fig = Figures("hostile")
    work = rellib.workdir("hostile")
    env = Env(work)
    env.leaks = 0
    cases = load_cases(args.only)
    crashed, failures, by_group = [], [], {}
    try:
        make_tree(env)
        start_system(env, work)
        before = outside_root(env)
        for i, case in enumerate(cases):
            env.case_no = i
            try:
                why = RUNNERS[case["type"]](env, case)
            except (OSError, ValueError, KeyError) as e:
                why = "the case could not run: %r" % e
            g = by_group.setdefault(case["group"], [0, 0])
            g[0] += 1
            if why:
                failures.append("%s %s: %s" % (case["where"], case["name"], why))
            else:
                g[1] += 1
            if args.verbose:
                print("%s %-50s %s" % ("ok  " if not why else "FAIL", case["name"], why or ""), flush=True)
            for name, p in env.procs.items():
                if not p.alive():
                    crashed.append("%s died after %s (%s)" % (name, case["name"], p.popen.returncode))
                    p.restart()
        after = outside_root(env)
        touched = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        markers = os.listdir(env.markers)
        # The system still does its job for a well-behaved client.
        sane = []
        gp = env.port("gateway")
        st, _, body = rellib.request_json(gp, "POST", "/api/v1/echo", {"message": "still here"})
        sane.append(st == 200 and json.loads(body)["reply"] == "STILL HERE")
        st, _, body = rellib.request_json(gp, "POST", "/api/v1/exec", {"argv": ["echo", "ok"]})
        sane.append(st == 200 and json.loads(body)["stdout"] == "ok\n")
        st, _, _ = rellib.request(gp, "PUT", "/api/v1/files/after-hostile.txt", b"fine")
        sane.append(st in (200, 201))
        st, _, body = rellib.request(gp, "GET", "/api/v1/files/after-hostile.txt")
        sane.append(st == 200 and body == b"fine")
        st, _, _ = rellib.request(gp, "GET", "/api/v1/time")
        sane.append(st == 200)

        undocumented, n_logged = undocumented_statuses(env)
        fig.info("answers_held_against_openapi", n_logged)
        for u in undocumented:
            print("hostile: a status docs/openapi.json does not list: %s" % u, flush=True)
        for f in failures:
            print("hostile: unexpected answer: %s" % f, flush=True)
        for c in crashed:
            print("hostile: CRASH: %s" % c, flush=True)
        for t in touched:
            print("hostile: touched outside the root: %s" % t, flush=True)
        for m in markers:
            print("hostile: marker created (a command ran): %s" % m, flush=True)
        for g, (n, ok) in sorted(by_group.items()):
            fig.info("cases.%s" % g, "%d/%d" % (ok, n))
        fig.info("cases_tried", len(cases))
        fig.check("cases_answered_unexpectedly", len(failures), "=", 0)
        fig.check("crashes", len(crashed), "=", 0)
        fig.check("files_touched_outside_root", len(touched), "=", 0)
        fig.check("commands_run_not_allowed", len(markers), "=", 0)
        fig.check("secrets_leaked", env.leaks, "=", 0)
        fig.check("sanity_requests_failed_after", sane.count(False), "=", 0)
        fig.check("statuses_not_in_openapi", len(undocumented), "=", 0)
        fig.check_clean_exits(env.procs.items())
    except Exception as e:
        fig.stopped(e)
        args.keep = True
    finally:
        for p in env.procs.values():
            p.kill(signal.SIGKILL)
        rellib.cleanup(work, args.keep or bool(fig.missed))
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
