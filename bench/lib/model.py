"""model.py - what a bench run measures and keeps: figures, groups, results, and the run's context.

A Figure is one row of the table: a sockgate measurement and a peer measurement made
alternately, round after round. A Group is the set of figures that share servers: its
setup starts them once, its teardown stops them. Results are kept per round so the report
can give each side's median and the median of the per-round ratios.
"""

import os
import shlex
import statistics

MIB = 1024 * 1024


class Result:
    """One measurement: its value (in the figure's unit) and what explains it."""

    def __init__(self, value, ops=None, cpu=None, note=None, client_cpu=None):
        self.value = value
        self.ops = ops                # operations (requests, round trips, bytes) the value was computed from
        self.cpu = cpu                # (user, system) CPU seconds of the measured server(s) during the run
        self.client_cpu = client_cpu  # (user, system) CPU seconds of the load driver or client
        self.note = note


class Figure:
    """One table row.

    kind is 'ratio' (higher is better; met when the median per-round ratio >= target),
    'bound' (memory; met when the largest sockgate value <= target, in KiB; the peer is shown),
    or 'shown' (no target). sg and peer are callables taking the Ctx and returning a Result;
    they are None for a figure whose values other figures' runs record (the memory rows).
    """

    def __init__(self, fid, title, unit, sg_label, peer_label, kind, target, sg=None, peer=None, source=None):
        self.id = fid
        self.title = title
        self.unit = unit
        self.sg_label = sg_label
        self.peer_label = peer_label
        self.kind = kind
        self.target = target
        self.sg = sg
        self.peer = peer
        self.source = source  # the issue that sets the target


class Group:
    """Figures sharing servers; setup and teardown take the Ctx. each_round runs once per round after the pairs."""

    def __init__(self, name, figures, setup, teardown, each_round=None):
        self.name = name
        self.figures = figures
        self.setup = setup
        self.teardown = teardown
        self.each_round = each_round


class Ctx:
    """Everything one run shares: settings, directories, started servers, and what was measured."""

    def __init__(self, cfg, bin_dir, run_dir, files_dir, bench_dir):
        self.cfg = cfg
        self.bin_dir = bin_dir
        self.run_dir = run_dir      # logs and configuration of this run (disk)
        self.files_dir = files_dir  # transferred files (tmpfs)
        self.bench_dir = bench_dir
        self.repo_prefix = os.path.dirname(bench_dir) + "/"
        self.servers = {}
        self.round = 0
        self.results = {}           # figure id -> side -> {round: Result}
        self.failures = {}          # figure id -> list of messages
        self.commands = {}          # figure id -> side -> command line (the first round's)
        self.state = {}             # what a group's setup leaves for its figures

    def bin(self, name):
        """A load generator from build/bench (bench/CMakeLists.txt), else a program from build/bin."""
        path = "%s/bench/%s" % (os.path.dirname(self.bin_dir), name)
        if os.access(path, os.X_OK):
            return path
        return "%s/%s" % (self.bin_dir, name)

    def log(self, name):
        return "%s/%s.log" % (self.run_dir, name)

    def record(self, fid, side, result):
        self.results.setdefault(fid, {}).setdefault(side, {})[self.round] = result

    def fail(self, fid, side, message):
        self.failures.setdefault(fid, []).append("round %d, %s: %s" % (self.round + 1, side, message))

    def command(self, fid, side, argv):
        text = argv if isinstance(argv, str) else " ".join(shlex.quote(a) for a in argv)
        text = text.replace(self.repo_prefix, "")  # build/bin/... reads the same on every checkout
        self.commands.setdefault(fid, {}).setdefault(side, text)

    def values(self, fid, side):
        return self.results.get(fid, {}).get(side, {})


def summarize(fig, ctx):
    """Returns the summary of one figure: medians, per-round ratios, the verdict ('met', 'missed', 'failed', 'shown')."""
    sg = ctx.values(fig.id, "sg")
    peer = ctx.values(fig.id, "peer")
    s = {"sg_median": None, "peer_median": None, "ratio_median": None, "ratios": [], "sg_max": None,
         "rounds": max(len(sg), len(peer)), "failures": ctx.failures.get(fig.id, [])}
    if sg:
        s["sg_median"] = statistics.median(r.value for r in sg.values())
        s["sg_max"] = max(r.value for r in sg.values())
    if peer:
        s["peer_median"] = statistics.median(r.value for r in peer.values())
    s["ratios"] = [sg[i].value / peer[i].value for i in sorted(sg) if i in peer and peer[i].value > 0]
    if s["ratios"]:
        s["ratio_median"] = statistics.median(s["ratios"])
    if fig.kind == "shown":
        s["verdict"] = "shown" if (sg or peer) and not s["failures"] else "failed"
    elif s["failures"] or not sg or (fig.kind == "ratio" and s["ratio_median"] is None):
        s["verdict"] = "failed"
    elif fig.kind == "ratio":
        s["verdict"] = "met" if s["ratio_median"] >= fig.target else "missed"
    else:
        s["verdict"] = "met" if s["sg_max"] <= fig.target else "missed"
    return s
