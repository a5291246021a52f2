#!/usr/bin/env python3
"""faults.py - the gateway in front of separately started backends, under steady mixed load:
kill -9 each backend in turn and start it again on its port, freeze one (SIGSTOP) longer than
the gateway's deadline, then kill the file backend and the gateway in the middle of uploads.

Figures: requests sent, answered 2xx, answered 502/503/504, other answers, hung, time to
recover after each restart, gateway restarts, and partial or mixed files found in the root.
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import rellib
from rellib import Figures, Proc, now

GATEWAY_TIMEOUT_MS = 2000
BACKEND_KINDS = {"echo": ("echo",), "time": ("time",), "exec": ("exec",), "file": ("file_put", "file_get")}
UPLOAD_NAMES = ["up-0", "up-1", "up-2", "up-3"]


def start_backends(work):
    root = os.path.join(work, "root")
    backends = {
        "echo": Proc("sockgate-echo", [], work),
        "time": Proc("sockgate-time", [], work),
        "exec": Proc("sockgate-exec", ["--allow", "echo,true", "--workdir", work], work),
        "file": Proc("sockgate-file", ["--root", root], work),
    }
    for p in backends.values():
        p.start()
    return backends, root


def start_gateway(work, backends, listen="127.0.0.1:0"):
    args = ["--timeout-ms", str(GATEWAY_TIMEOUT_MS)]
    for name, p in backends.items():
        args += ["--" + name, "127.0.0.1:%d" % p.port]
    return Proc("sockgate", args, work).start(listen)


def read_events(path):
    events = []
    with open(path) as f:
        for line in f:
            end, kind, status, _lat = line.split()
            events.append((float(end), kind, int(status)))
    events.sort()
    return events


def first_ok_after(events, kinds, t):
    for end, kind, status in events:
        if end >= t and kind in kinds and 200 <= status < 300:
            return end
    return None


def load_phase(args, work, backends, gw, fig):
    """Steady load while each backend is killed and restarted, then one is frozen past the deadline."""
    warm, outage, settle, freeze = (2.0, 0.5, 2.5, 3.0)
    total = warm + len(backends) * (outage + settle) + freeze + settle + 1.0
    events_path = os.path.join(work, "events.txt")
    out_path = os.path.join(work, "load.json")
    load = subprocess.Popen([rellib.program("sockgate-load"), "--url", "http://127.0.0.1:%d" % gw.port,
                             "--clients", str(args.clients), "--seconds", str(int(total + 0.999)), "--hang-ms",
                             "20000", "--events", events_path, "--prefix", "load"],
                            stdout=open(out_path, "w"), stderr=subprocess.STDOUT)
    gw_pid = gw.pid
    time.sleep(warm)
    marks = []
    for name in ("echo", "time", "exec", "file"):
        p = backends[name]
        t_kill = now()
        p.kill(signal.SIGKILL)
        time.sleep(outage)
        p.restart()
        marks.append((name, t_kill, p.ready_at))
        rellib.stderr("faults: %s killed and back on port %d after %.0f ms" % (name, p.port, (p.ready_at - t_kill) * 1000))
        time.sleep(settle)
    # Frozen, not dead: connections are accepted by the kernel and never answered.
    t_stop = now()
    backends["echo"].kill(signal.SIGSTOP)
    time.sleep(freeze)
    backends["echo"].kill(signal.SIGCONT)
    t_cont = now()
    rellib.stderr("faults: echo frozen for %.1f s (gateway deadline %d ms)" % (t_cont - t_stop, GATEWAY_TIMEOUT_MS))
    try:
        load.wait(timeout=total + 60)
    except subprocess.TimeoutExpired:
        load.kill()
        load.wait()
    with open(out_path) as f:
        text = f.read()
    try:
        res = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError("sockgate-load gave no report: %s" % text[-2000:])
    events = read_events(events_path)

    fig.info("clients", args.clients)
    fig.info("sent", res["sent"])
    fig.info("answered_2xx", res["ok"])
    fig.info("answered_502", res["s502"])
    fig.info("answered_503", res["s503"])
    fig.info("answered_504", res["s504"])
    fig.check("answered_other", res["other_status"] + res["bad_body"], "=", 0)
    fig.check("transport_errors", res["transport"], "=", 0)
    # Downloads in flight when the file backend is killed end short of their Content-Length.
    fig.info("downloads_cut_by_a_kill", res.get("cut", 0))
    fig.check("hung", res["hung"], "=", 0)
    if res["first_problem"]:
        rellib.stderr("faults: first problem: %s" % res["first_problem"])
    worst = 0.0
    for name, t_kill, t_ready in marks:
        t_ok = first_ok_after(events, BACKEND_KINDS[name], t_ready)
        recover = (t_ok - t_ready) * 1000 if t_ok else float("inf")
        fig.info("outage_ms.%s" % name, round((t_ok - t_kill) * 1000) if t_ok else "never")
        fig.check("recover_ms.%s" % name, round(recover, 1), "<", 1000)
        worst = max(worst, recover)
    t_ok = first_ok_after(events, ("echo",), t_cont)
    fig.check("recover_ms.echo_after_sigcont", round((t_ok - t_cont) * 1000, 1) if t_ok else float("inf"), "<", 1000)
    frozen = [e for e in events if e[1] == "echo" and t_stop + 0.1 <= e[0] <= t_cont]
    fig.check("answered_504_while_frozen", sum(1 for e in frozen if e[2] == 504), ">", 0)
    # Every echo request that ended while the backend was frozen was answered within its deadline.
    lats = []
    with open(events_path) as f:
        for line in f:
            end, kind, status, lat = line.split()
            if kind == "echo" and t_stop + 0.1 <= float(end) <= t_cont:
                lats.append(float(lat))
    fig.check("slowest_answer_while_frozen_ms", round(max(lats) if lats else 0, 1), "<", GATEWAY_TIMEOUT_MS + 1000)
    restarts = 0 if gw.alive() and gw.pid == gw_pid else 1
    fig.check("gateway_restarts", restarts, "=", 0)
    status, _, body = rellib.request(gw.port, "GET", "/readyz")
    ready = json.loads(body)
    down = [b for b in ("echo", "time", "exec", "file") if not ready["backends"][b]["ok"]]
    fig.check("backends_not_ready_at_end", len(down), "=", 0)
    return res


class SlowUpload(threading.Thread):
    """Sends one PUT through the gateway at a bounded rate, so that it can be killed in the middle."""

    def __init__(self, port, name, body, chunk=64 * 1024, pause=0.004):
        super().__init__(daemon=True)
        self.port, self.name, self.body, self.chunk, self.pause = port, name, body, chunk, pause
        self.sent = 0
        self.status = None

    def run(self):
        try:
            s = socket.create_connection((rellib.HOST, self.port), timeout=20)
        except OSError:
            return
        try:
            s.sendall(("PUT /api/v1/files/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                       "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                       % (self.name, len(self.body))).encode())
            while self.sent < len(self.body):
                n = s.send(self.body[self.sent:self.sent + self.chunk])
                self.sent += n
                time.sleep(self.pause)
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            if reply.startswith(b"HTTP/1.1 "):
                self.status = int(reply[9:12])
        except OSError:
            pass  # the gateway died under us: that is the point
        finally:
            s.close()


def upload_whole(port, name, body):
    status, _, _ = rellib.request(port, "PUT", "/api/v1/files/" + name, body,
                                  {"Content-Type": "application/octet-stream"}, timeout=30)
    return status


def kill_uploads_phase(args, work, backends, gw, root, fig):
    """Kills the file backend, then the gateway, in the middle of uploads; checks what the root holds."""
    rng = random.Random(9)
    size = 8 << 20
    bodies = {}  # name -> sha256 of every complete body ever sent for it

    def body_for(name):
        data = rng.randbytes(size)
        bodies.setdefault(name, set()).add(rellib.sha256(data))
        return data

    for name in UPLOAD_NAMES:
        if upload_whole(gw.port, name, body_for(name)) not in (200, 201):
            raise RuntimeError("the first upload of %s failed" % name)
    mid_body = answered_bad = 0
    for target in ("file", "gateway"):
        for i in range(args.kills):
            name = UPLOAD_NAMES[i % len(UPLOAD_NAMES)]
            up = SlowUpload(gw.port, name, body_for(name))
            up.start()
            time.sleep(rng.uniform(0.05, 0.4))
            victim = backends["file"] if target == "file" else gw
            sent_at_kill = up.sent
            victim.kill(signal.SIGKILL)
            if sent_at_kill < size:
                mid_body += 1
            if target == "gateway":
                gw = victim.restart()
            else:
                victim.restart()
            up.join(timeout=30)
            if target == "file" and up.status not in (502, 503):
                answered_bad += 1
            # Every other round the name gets a new complete content, so a mixed file would show.
            # 201 created, 200 replaced: both stored the whole new content.
            if i % 2 == 1 and upload_whole(gw.port, name, body_for(name)) not in (200, 201):
                answered_bad += 1
    fig.info("uploads_killed", 2 * args.kills)
    fig.check("uploads_killed_mid_body", mid_body, "=", 2 * args.kills)
    fig.check("killed_uploads_answered_other_than_502_503", answered_bad, "=", 0)

    partial = 0
    visible = hidden_temp = 0
    # The load phase's files: each must be exactly one of the uploads sockgate-load made.
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith(".upload-"):
            hidden_temp += 1
            continue
        if entry.startswith("."):
            continue
        visible += 1
        with open(path, "rb") as f:
            data = f.read()
        if entry in bodies:
            if rellib.sha256(data) not in bodies[entry]:
                partial += 1
                rellib.stderr("faults: %s is not any complete upload" % entry)
        elif entry.startswith("load-c"):
            head = data.split(b"\n", 1)[0].decode("ascii", "replace").split()
            ok = False
            if len(head) == 4 and head[0] == "sockgate-load" and head[2] == "seq":
                idx, seq = int(head[1][1:]), int(head[3])
                ok = entry == "load-c%d" % idx and data == rellib.load_file_content(idx, seq, len(data))
            if not ok:
                partial += 1
                rellib.stderr("faults: %s is not any complete upload of sockgate-load" % entry)
        else:
            partial += 1
            rellib.stderr("faults: unexpected file %s in the root" % entry)
    fig.info("files_checked", visible)
    fig.check("partial_or_mixed_files", partial, "=", 0)
    fig.check("temporary_files_left", hidden_temp, "=", 0)
    return gw


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the CI version: fewer clients and kills")
    ap.add_argument("--clients", type=int, help="load clients (default 64, short 16)")
    ap.add_argument("--kills", type=int, help="mid-upload kills of each of file and gateway (default 20, short 5)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = ap.parse_args()
    args.clients = args.clients or (16 if args.short else 64)
    args.kills = args.kills or (5 if args.short else 20)
    rellib.raise_nofile()
    fig = Figures("faults")
    work = rellib.workdir("faults")
    backends, gw = {}, None
    try:
        backends, root = start_backends(work)
        gw = start_gateway(work, backends)
        load_phase(args, work, backends, gw, fig)
        gw = kill_uploads_phase(args, work, backends, gw, root, fig)
        fig.check_clean_exits([("sockgate", gw)] + [(p.name, p) for p in backends.values()])
    except Exception as e:  # a suite that cannot run is a failure, with the reason
        fig.stopped(e)
        args.keep = True
    finally:
        for p in list(backends.values()) + ([gw] if gw else []):
            p.kill(signal.SIGKILL)
        rellib.cleanup(work, args.keep)
    return fig.finish()


if __name__ == "__main__":
    sys.exit(main())
