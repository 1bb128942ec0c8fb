"""Running a workload and a fault schedule against a live FormdCluster, through the real `form` CLI.

Submit/label/wait steps run one after another on the caller's thread; kill/term/restart steps
run on their own thread at their `at` time. Each fault starts a measurement of how long the
other running nodes take to see it (dead / left / alive again); a label step measures how long
until every running node shows it. At the end, `drain` waits until every submitted job is final
on every running node and counts the outcomes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .formd_cluster import FormdCluster, compile_wasi
from .measure import spread, time_until_seen
from .workload import ANY_NODE, Step

FINAL_JOB_STATES = ("succeeded", "failed", "cancelled", "timed_out")


def status_of(target_id: str, wanted: tuple[str, ...]) -> Callable[[list[dict]], bool]:
    def seen(view: list[dict]) -> bool:
        return any(entry["id"] == target_id and entry["status"] in wanted for entry in view)

    return seen


def labels_of(
    target_id: str, set_labels: dict[str, str], removed: tuple[str, ...]
) -> Callable[[list[dict]], bool]:
    def seen(view: list[dict]) -> bool:
        for entry in view:
            if entry["id"] == target_id:
                labels = entry["labels"]
                return all(labels.get(k) == v for k, v in set_labels.items()) and not any(
                    k in labels for k in removed
                )
        return False

    return seen


def expected_dead_s(settings: dict[str, str], size: int) -> float:
    """formd's dead timeout for this cluster size (README: suspect_mult x log10(max(n,10)) ticks, x dead_mult)."""
    tick = float(settings["tick_interval_ms"]) / 1000
    return tick * float(settings["suspect_mult"]) * math.log10(max(size, 10)) * float(settings["dead_mult"])


class WorkloadRunner:
    def __init__(
        self, cluster: FormdCluster, scratch: Path, say: Callable[[str], None], stop: threading.Event
    ) -> None:
        self.cluster = cluster
        self.scratch = scratch
        self.say = say
        self.stop = stop
        self.detect_timeout = 2 * expected_dead_s(cluster.settings, len(cluster.nodes)) + 30
        self.jobs: list[dict[str, Any]] = []  # {"id", "via", "at_s"}
        self.submit_errors: list[str] = []
        self.steps: list[dict[str, Any]] = []  # what ran, when, and how it went
        self.failures: dict[str, list[dict[str, Any]]] = {"kill": [], "term": [], "restart": []}
        self.label_changes: list[dict[str, Any]] = []
        self._watchers: list[threading.Thread] = []
        self._contexts: dict[Path, Path] = {}
        self._round_robin = 0
        self.began = 0.0

    # ---- the timeline ------------------------------------------------------------------------

    def run(self, steps: list[Step]) -> None:
        """May be called again (the Serf comparison's kill): times stay offsets from the first call."""
        self.began = self.began or time.monotonic()
        faults = sorted((s for s in steps if s.is_fault), key=lambda s: s.at_s)
        fault_thread = threading.Thread(target=self._run_faults, args=(faults,), daemon=True, name="faults")
        fault_thread.start()
        for step in (s for s in steps if not s.is_fault):
            if not self._wait_for(step.at_s):
                break
            self._record(step, self._action)
        while fault_thread.is_alive():
            fault_thread.join(0.5)
        for watcher in self._watchers:
            while watcher.is_alive():
                watcher.join(0.5)

    def _run_faults(self, faults: list[Step]) -> None:
        for step in faults:
            if not self._wait_for(step.at_s):
                return
            self._record(step, self._fault)

    def _wait_for(self, at_s: float) -> bool:
        delay = self.began + at_s - time.monotonic()
        return not self.stop.wait(delay) if delay > 0 else not self.stop.is_set()

    def _record(self, step: Step, run: Callable[[Step], None]) -> None:
        entry = {"do": step.do, "what": step.describe(), "at_s": step.at_s, "started_s": self._now()}
        self.say(f"[{entry['started_s']:7.2f}s] {step.describe()}")
        try:
            run(step)
            entry["ok"] = True
        except Exception as exc:  # a step that cannot run is reported; the run goes on
            entry["ok"], entry["error"] = False, str(exc)
            self.say(f"           failed: {exc}")
        entry["done_s"] = self._now()
        self.steps.append(entry)

    def _now(self) -> float:
        return round(time.monotonic() - self.began, 3)

    # ---- actions ------------------------------------------------------------------------------

    def _action(self, step: Step) -> None:
        if step.do == "submit":
            self._submit(step)
        elif step.do == "label":
            self._label(step)
        elif step.do == "wait":
            if not self.wait_final(step.timeout_s):
                raise RuntimeError(f"jobs not final everywhere after {step.timeout_s:g}s")

    def _submit(self, step: Step) -> None:
        context = step.context or self._wasm_context(step.wasm_c)
        inputs = [item for path in step.inputs for item in ("--input", str(path))]
        replicas = _replicas(step.args)
        for _ in range(step.count):
            if self.stop.is_set():
                return
            node = self._submitter(step)
            done = node.form("submit", str(context), *step.args, *inputs, "--json", check=False)
            if done.returncode != 0:
                self.submit_errors.append(f"{node.name}: {done.stderr.strip() or done.stdout.strip()}")
                continue
            self.jobs.append(
                {
                    "id": json.loads(done.stdout)["id"],
                    "via": node.name,
                    "at_s": self._now(),
                    "replicas": replicas,
                }
            )

    def _submitter(self, step: Step):
        if step.node != ANY_NODE:
            return self.cluster.nodes[step.node]
        running = self.cluster.running()
        if not running:
            raise RuntimeError("no node is running")
        self._round_robin += 1
        return running[self._round_robin % len(running)]

    def _wasm_context(self, source: Path) -> Path:
        if source not in self._contexts:
            context = self.scratch / f"context-{len(self._contexts)}-{source.stem}"
            context.mkdir(parents=True)
            compile_wasi(source, context / f"{source.stem}.wasm")
            self._contexts[source] = context
        return self._contexts[source]

    def _label(self, step: Step) -> None:
        node = self.cluster.nodes[step.node]
        start = time.monotonic()
        if step.set_labels:
            node.form("label", "set", *(f"{k}={v}" for k, v in sorted(step.set_labels.items())))
        if step.remove_labels:
            node.form("label", "remove", *step.remove_labels)
        seen = labels_of(node.node_id, step.set_labels, step.remove_labels)
        times = time_until_seen(self.cluster.observers(), seen, start=start, timeout=60, stop=self.stop)
        self.label_changes.append({"node": node.name, **spread(times)})

    # ---- faults -------------------------------------------------------------------------------

    def _fault(self, step: Step) -> None:
        node = self.cluster.nodes[step.node]
        if step.do == "restart":  # timed from the moment it serves its control socket again
            began = time.monotonic()
            self.cluster.restart(step.node)
            self._watch(
                "restart",
                node,
                ("alive",),
                time.monotonic(),
                at_s=self._now(),
                serving_s=round(time.monotonic() - began, 3),
            )
            return
        start = time.monotonic()
        if step.do == "kill":
            self.cluster.kill(step.node)
            self._watch("kill", node, ("dead",), start, also=("suspect", ("suspect", "dead")))
        else:
            self.cluster.term(step.node)
            self._watch("term", node, ("left",), start)

    def _watch(
        self,
        kind: str,
        node,
        wanted: tuple[str, ...],
        start: float,
        also: tuple[str, tuple[str, ...]] | None = None,
        **extra: Any,
    ) -> None:
        """Measure in the background how long until every other running node shows `node` as
        `wanted` (and, for a kill, when each first suspected it)."""
        observers = [o for o in self.cluster.observers() if o.name != node.name]
        entry: dict[str, Any] = {"node": node.name, "at_s": round(start - self.began, 3)}
        entry.update(extra)
        self.failures[kind].append(entry)
        key = {"kill": "dead", "term": "left", "restart": "alive"}[kind]

        def measure(name: str, statuses: tuple[str, ...]) -> None:
            times = time_until_seen(
                observers,
                status_of(node.node_id, statuses),
                start=start,
                timeout=self.detect_timeout,
                stop=self.stop,
            )
            entry[name] = spread(times)
            self.say(
                f"           {node.name} {name} on every other node after {_seconds(entry[name]['all_s'])}"
            )

        for name, statuses in [(key, wanted)] + ([also] if also else []):
            thread = threading.Thread(
                target=measure, args=(name, statuses), daemon=True, name=f"{kind}-{node.name}-{name}"
            )
            thread.start()
            self._watchers.append(thread)

    # ---- jobs ---------------------------------------------------------------------------------

    def job_states(self, node) -> dict[str, str]:
        return {job["id"]: job["state"] for job in node.call("job.list")}

    def wait_final(self, timeout: float) -> bool:
        """Until every submitted job is final on every running node (True), or timeout (False)."""
        wanted = [job["id"] for job in self.jobs]
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            try:
                views = [self.job_states(node) for node in self.cluster.running()]
                if all(view.get(job_id) in FINAL_JOB_STATES for view in views for job_id in wanted):
                    return True
            except Exception:  # a node just killed or restarting: look again
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)
        return False

    def account(self, drain_timeout: float) -> dict[str, Any] | None:
        """Outcome of every submitted job as the first running node sees it once the drain is over."""
        if not self.jobs and not self.submit_errors:
            return None
        began = time.monotonic()
        drained = self.wait_final(drain_timeout)
        drain_s = round(time.monotonic() - began, 2)
        judge = self.cluster.running()[0]
        states = self.job_states(judge)
        counts = {state: 0 for state in FINAL_JOB_STATES}
        unknown = unfinished = duplicates = 0
        for job in self.jobs:
            state = states.get(job["id"])
            if state in counts:
                counts[state] += 1
            elif state is None:
                unknown += 1  # acknowledged by a node that died before anyone else got the job
            else:
                unfinished += 1  # still queued/running/unschedulable after the drain
            if state == "succeeded":
                explained = judge.call("job.explain", {"job": job["id"]})
                successes = sum(1 for row in explained["nodes"] if row["run"] == "succeeded")
                duplicates += max(0, successes - job["replicas"])
        others = [self.job_states(node) for node in self.cluster.running()[1:]]
        disagreements = sum(
            1 for job in self.jobs if any(view.get(job["id"]) != states.get(job["id"]) for view in others)
        )
        return {
            "submitted": len(self.jobs),
            "succeeded": counts["succeeded"],
            "failed": counts["failed"],
            "cancelled": counts["cancelled"],
            "timed_out": counts["timed_out"],
            "lost": unknown + unfinished,
            "lost_unknown": unknown,
            "lost_unfinished": unfinished,
            "duplicates": duplicates,
            "disagreements": disagreements,
            "submit_errors": len(self.submit_errors),
            "submit_error_messages": self.submit_errors[:10],
            "drained": drained,
            "drain_s": drain_s,
            "judged_by": judge.name,
        }


def _replicas(args: tuple[str, ...]) -> int:
    for index, arg in enumerate(args):
        if arg == "--replicas" and index + 1 < len(args) and args[index + 1].isdigit():
            return int(args[index + 1])
        if arg.startswith("--replicas=") and arg.split("=", 1)[1].isdigit():
            return int(arg.split("=", 1)[1])
    return 1


def _seconds(value: float | None) -> str:
    return "never (timed out)" if value is None else f"{value:.2f}s"
