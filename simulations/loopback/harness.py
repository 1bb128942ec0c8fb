"""One loopback harness run: phases, in order, on real processes; returns the report dict.

1. start N formd nodes, wait until every node lists all N alive;
2. steady state: transport byte counters over `steady` seconds of a quiet cluster;
3. convergence: `changes` label changes, each timed until every node shows it;
4. the workload file and the fault schedule (if any), then the jobs' outcome;
5. with serf: a kill -9 on the quiet formd cluster (after the workload), then formd is stopped
   and N Serf agents do the same tag changes and the same kill -9, and the ratios are taken.

Whatever happens (an exception, Ctrl-C), every process started is stopped in the finally
block and the state root is removed unless `keep`.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..netns.cluster import PORT
from ..netns.network import Network
from .formd_cluster import PROFILES, FormdCluster, leftovers
from .measure import ratio, spread, summarise, time_until_seen
from .runner import WorkloadRunner, labels_of
from .serf_cluster import SERF_LAN_DEFAULTS, SerfCluster
from .workload import Step

LABEL = "harness"
CHANGE_TIMEOUT_S = 60.0


@dataclass
class Options:
    nodes: int = 5
    profile: str = "default"
    settings: dict[str, str] = field(default_factory=dict)  # formd.toml overrides on top of the profile
    changes: int = 5
    steady_s: float = 10.0
    steps: list[Step] = field(default_factory=list)  # workload steps and --kill/--term/--restart faults
    workload: str | None = None  # the file the steps came from, for the report
    drain_s: float = 120.0
    serf: bool = False
    keep: bool = False
    root: Path | None = None
    netns: bool = False  # each node on a host of its own (a network namespace), not 127.0.0.1
    delay_ms: float = 0.0  # netns only: one-way delay on every connection to a node
    loss: float = 0.0  # netns only: chance that a packet to a host is dropped
    say: Callable[[str], None] = print


class Harness:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.stop = threading.Event()
        self.root = options.root or Path(tempfile.mkdtemp(prefix="formnet-loopback-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = {**PROFILES[options.profile], **options.settings}
        self.network = Network(options.nodes) if options.netns else None
        hosts = self.network.hosts if self.network else None
        self.formd = FormdCluster(self.root / "formd", options.nodes, self.settings, options.say, hosts)
        self.serf: SerfCluster | None = None
        self.report: dict[str, Any] = {}

    @property
    def processes(self) -> list[dict[str, Any]]:
        return self.formd.pids + (self.serf.pids if self.serf else [])

    def run(self) -> dict[str, Any]:
        began = time.monotonic()
        say = self.options.say
        self.report = {
            "harness": "netns" if self.network else "loopback",
            "nodes": self.options.nodes,
            "profile": self.options.profile,
            "settings": self.settings,
            "workload": None,
            "serf": None,
            "comparison": None,
            "jobs": None,
            "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
            "code": code_version(),
            "root": str(self.root),
        }
        try:
            self.report["error"] = "run did not complete"  # cleared at the end of a complete run
            if self.network is not None:
                self.network.start()
                self.network.impair(PORT, self.options.delay_ms, self.options.loss)
                self.report["network"] = {
                    "subnet": f"{self.network.prefix}.0/24",
                    "delay_ms": self.options.delay_ms,
                    "loss": self.options.loss,
                    "namespaces": [self.network.hub, *(h.name for h in self.network.hosts)],
                }
                say(f"{self.options.nodes} hosts (network namespaces) on {self.network.prefix}.0/24")
            say(
                f"starting {self.options.nodes} formd nodes under {self.root} (profile {self.options.profile})"
            )
            self.report["started_s"] = round(self.formd.start(), 3)
            say(
                f"converged: every node lists all {self.options.nodes} alive, "
                f"{self.report['started_s']:.2f}s after the first start"
            )
            self.report.update(self._steady_bytes())
            self.report["convergence"] = self._label_changes(
                self.formd.observers, self._formd_label, self._formd_label_seen
            )
            runner = WorkloadRunner(self.formd, self.root / "scratch", say, self.stop)
            if self.options.steps:
                runner.run(self.options.steps)
                self.report["jobs"] = runner.account(self.options.drain_s)
                self.report["workload"] = {
                    "file": self.options.workload,
                    "steps": runner.steps,
                    "label_changes": runner.label_changes,
                }
            if self.options.serf:
                self._compare_with_serf(runner)
            self.report["failure_detection"] = runner.failures
            del self.report["error"]
        finally:
            self.stop.set()
            self.report["shutdown"] = self.close()
            self.report["processes"] = self.processes
            self.report["shutdown"]["left_behind"] = len(leftovers(self.processes))
            self.report["cost"] = {"wall_s": round(time.monotonic() - began, 2)}
        return self.report

    def close(self) -> dict[str, Any]:
        """Stop everything this run started (safe to call twice), then remove the root unless keep."""
        shutdown = {"formd": self.formd.stop()}
        if self.serf is not None:
            shutdown["serf"] = self.serf.stop()
        if self.network is not None:
            shutdown["namespaces_stuck"] = self.network.close()
        if not self.options.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        shutdown["kept"] = str(self.root) if self.options.keep else None
        return shutdown

    # ---- phases -------------------------------------------------------------------------

    def _steady_bytes(self) -> dict[str, Any]:
        first = self.formd.counters()
        t0 = time.monotonic()
        self.stop.wait(self.options.steady_s)
        second = self.formd.counters()
        elapsed = time.monotonic() - t0
        sent = [(second[k]["bytes_sent"] - first[k]["bytes_sent"]) / elapsed for k in first if k in second]
        received = [
            (second[k]["bytes_received"] - first[k]["bytes_received"]) / elapsed for k in first if k in second
        ]
        mean_sent = round(statistics.mean(sent), 1)
        self.options.say(f"steady state: {mean_sent / 1024:.2f} KiB/s sent per node over {elapsed:.1f}s")
        return {
            "bytes_per_node_per_s": mean_sent,
            "bytes": {
                "sent_per_node_per_s": mean_sent,
                "sent_max_node_per_s": round(max(sent), 1),
                "received_per_node_per_s": round(statistics.mean(received), 1),
                "window_s": round(elapsed, 2),
            },
        }

    def _label_changes(self, observers, change, seen_check) -> dict[str, Any]:
        """`changes` times: one node changes a label (tag), time until every node shows it."""
        results = []
        size = self.options.nodes
        for number in range(self.options.changes):
            index, value = (number * 7 + 3) % size, f"v{number}"
            start = time.monotonic()
            target = change(index, value)
            request_s = round(time.monotonic() - start, 4)
            times = time_until_seen(
                observers(), seen_check(target, value), start=start, timeout=CHANGE_TIMEOUT_S, stop=self.stop
            )
            results.append({"node": index, "request_s": request_s, **spread(times)})
            self.options.say(
                f"change {number + 1}/{self.options.changes} on node {index}: all nodes after "
                f"{_fmt(results[-1]['all_s'])} (50% {_fmt(results[-1]['p50_s'])})"
            )
            self.stop.wait(0.3)  # let the cluster settle so changes do not overlap
        return summarise(results)

    def _formd_label(self, index: int, value: str) -> str:
        self.formd.set_label(index, LABEL, value)
        return self.formd.nodes[index].node_id

    @staticmethod
    def _formd_label_seen(target: str, value: str):
        return labels_of(target, {LABEL: value}, ())

    def _serf_tag(self, index: int, value: str) -> str:
        self.serf.set_tag(index, LABEL, value)
        return self.serf.agents[index].name

    @staticmethod
    def _serf_tag_seen(target: str, value: str):
        def seen(members: list[dict]) -> bool:
            return any(m["Name"] == target and m["Tags"].get(LABEL) == value for m in members)

        return seen

    # ---- the Serf comparison ---------------------------------------------------------------------

    def _compare_with_serf(self, runner: WorkloadRunner) -> None:
        say = self.options.say
        running = [i for i, node in enumerate(self.formd.nodes) if node.running()]
        victim = running[-1] if len(running) >= 2 else None
        formd_kill = None
        if victim is not None:
            say(f"comparison: kill -9 formd n{victim} on the quiet cluster")
            runner.run([Step(do="kill", node=victim)])
            formd_kill = runner.failures["kill"][-1]
            formd_kill["comparison"] = True
        self.formd.stop()  # before Serf starts, so the two never share the CPUs

        say(f"starting {self.options.nodes} serf agents")
        self.serf = SerfCluster(self.root / "serf", self.options.nodes, say)
        serf_report: dict[str, Any] = {
            "nodes": self.options.nodes,
            "settings": SERF_LAN_DEFAULTS,
            "encrypted": True,
            "bytes_per_node_per_s": None,
        }
        serf_report["started_s"] = round(self.serf.start(), 3)
        say(f"serf converged after {serf_report['started_s']:.2f}s")
        serf_report["convergence"] = self._label_changes(
            self.serf.observers, self._serf_tag, self._serf_tag_seen
        )
        serf_kill = None
        if victim is not None:
            say(f"comparison: kill -9 serf s{victim}")
            start = time.monotonic()
            self.serf.kill(victim)
            name = self.serf.agents[victim].name
            observers = self.serf.observers()

            def failed(members: list[dict]) -> bool:
                return any(m["Name"] == name and m["Status"] == "failed" for m in members)

            serf_kill = {
                "node": name,
                "failed": spread(
                    time_until_seen(observers, failed, start=start, timeout=120, stop=self.stop)
                ),
            }
            say(f"           {name} failed on every other agent after {_fmt(serf_kill['failed']['all_s'])}")
        serf_report["failure_detection"] = {"kill": [serf_kill] if serf_kill else []}
        self.report["serf"] = serf_report
        self.report["comparison"] = self._ratios(formd_kill, serf_kill)

    def _ratios(self, formd_kill: dict | None, serf_kill: dict | None) -> dict[str, Any]:
        formd_conv, serf_conv = self.report["convergence"], self.report["serf"]["convergence"]
        formd_dead = formd_kill["dead"]["all_s"] if formd_kill else None
        serf_failed = serf_kill["failed"]["all_s"] if serf_kill else None
        return {
            "label_change_all_s": {
                "formd": formd_conv["all_s"],
                "serf": serf_conv["all_s"],
                "ratio": ratio(formd_conv["all_s"], serf_conv["all_s"]),
            },
            "label_change_p50_s": {
                "formd": formd_conv["p50_s"],
                "serf": serf_conv["p50_s"],
                "ratio": ratio(formd_conv["p50_s"], serf_conv["p50_s"]),
            },
            "kill_detected_all_s": {
                "formd": formd_dead,
                "serf": serf_failed,
                "ratio": ratio(formd_dead, serf_failed),
            },
            "explanation": explain_timings(self.settings, self.options.nodes),
        }


def explain_timings(settings: dict[str, str], size: int) -> dict[str, str]:
    """Why the two systems' figures differ: the timing each one is configured with."""
    probe = float(settings.get("probe_interval_ms", "1000")) / 1000
    scale = math.log10(max(size, 10))
    suspicion = probe * float(settings["suspect_mult"]) * scale
    serf = SERF_LAN_DEFAULTS
    serf_min = serf["suspicion_mult"] * max(1.0, math.log10(max(size, 1))) * serf["probe_interval_ms"] / 1000
    return {
        "formd": (
            f"a change is queued and pushed on the next gossip round (every {settings['gossip_interval_ms']} ms, to "
            f"{settings['gossip_fanout']} random peers, each receiver passing it on); active probe of one peer every "
            f"{probe:g} s (timeout {settings.get('probe_timeout_ms', '500')} ms, then "
            f"{settings.get('indirect_probes', '3')} "
            "indirect probes); a failed probe writes a suspicion into the document, and a "
            "suspected node is dead after "
            f"{settings['suspect_mult']} x log10(max(n,10)) probe intervals = {suspicion:.1f} s unless it refutes "
            f"(heartbeat silence remains a slower backstop)"
        ),
        "serf": (
            "a tag change is queued and piggybacked on the next gossip round (every "
            f"{serf['gossip_interval_ms']} ms, to "
            f"{serf['gossip_nodes']} random peers, each receiver passing it on); "
            f"active probe of one peer every {serf['probe_interval_ms'] / 1000:g} s (timeout "
            f"{serf['probe_timeout_ms']} ms, "
            f"then indirect probes); a failed probe makes the node suspect, and the suspicion times out after "
            f"{serf_min:.1f} s to {serf_min * serf['suspicion_max_timeout_mult']:.1f} s (shorter "
            "the more peers confirm) -> failed"
        ),
    }


def code_version() -> dict[str, Any]:
    """The commit the figures were measured on, and whether the working tree differed from it."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(changes.stdout.strip())}


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value * 1000:.0f} ms"


def run(options: Options) -> dict[str, Any]:
    """The module's API: one whole run, processes stopped and state removed (unless keep) on return."""
    return Harness(options).run()
