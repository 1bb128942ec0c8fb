"""What the harness notices while a run goes on, without polling the nodes.

- Log lines: every node logs through SimLog into `logged`. Membership verdicts ("peer dead",
  "peer suspect") are kept with their simulated time, for failure detection; warnings and
  errors are counted by message, with the first few kept whole, for the report.
- Convergence probes: a probe is a label change on one node. Every node's on_change hook
  (called by the Node when an accepted update changes a record's shape, which a label
  change does) lands in `changed`, which notes when that node first holds the new label.
  The times are exact in simulated time; no polling interval is involved.
- Runs needing named capabilities: every machine's simulated executor reports each run's start
  and end (`ran`), kept in order as RunEdges for the capability_slots invariant.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from pack_manager.jobspec import JobSpec

from .invariants import RunEdge
from .world import Machine

PROBE_LABEL = "sim-probe"
KEPT_EXAMPLES = 5


@dataclass
class Probe:
    number: int
    target: Machine
    value: str
    started: float
    observers: set[int]  # machines up when it started
    seen: dict[int, float] = field(default_factory=dict)  # machine -> seconds after the start

    def holds(self, machine: Machine) -> bool:
        node = machine.node
        entry = node.document.get("nodes", self.target.identity.node_hex) if node is not None else None
        if entry is None or entry.node is None:
            return False
        labels = entry.node.capabilities.get("labels")
        return isinstance(labels, dict) and labels.get(PROBE_LABEL) == self.value


def _nothing() -> None:
    pass


class Recorder:
    def __init__(self) -> None:
        self.verdicts: dict[
            tuple[str, str], list[tuple[float, int]]
        ] = {}  # (verdict, short id) -> [(t, observer)]
        self.warnings: Counter[str] = Counter()
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.probes: list[Probe] = []
        self._open: list[Probe] = []
        self.run_edges: list[RunEdge] = []

    # ---- runs -------------------------------------------------------------------------------

    def ran(self, machine: Machine, spec: JobSpec) -> Callable[[], None]:
        """A run starts; returns what to call as it ends. The end is booked on the node that
        started the run: a wiped crash gives the machine a new identity before its runs end."""
        needs = spec.requirements.capabilities
        if not needs:
            return _nothing
        node_hex = machine.identity.node_hex
        self.run_edges.append(RunEdge(trio.current_time(), node_hex, needs, 1))

        def ended() -> None:
            self.run_edges.append(RunEdge(trio.current_time(), node_hex, needs, -1))

        return ended

    # ---- log lines ----------------------------------------------------------------------------

    def logged(self, index: int, level: int, message: str, fields: dict[str, Any]) -> None:
        if message in ("peer dead", "peer suspect"):
            self.verdicts.setdefault((message, fields.get("id", "")), []).append((trio.current_time(), index))
        elif level >= logging.WARNING:
            self.warnings[message] += 1
            kept = self.examples.setdefault(message, [])
            if len(kept) < KEPT_EXAMPLES:
                kept.append(
                    {
                        "node": index,
                        "at_s": round(trio.current_time(), 3),
                        **{k: str(v)[:300] for k, v in fields.items()},
                    }
                )

    def first_verdict(self, verdict: str, node_hex: str, observer: int, after: float) -> float | None:
        for at, who in self.verdicts.get((verdict, node_hex[:12]), ()):
            if who == observer and at >= after:
                return at
        return None

    # ---- convergence probes -------------------------------------------------------------------

    def start_probe(self, target: Machine, observers: list[Machine]) -> Probe:
        assert target.node is not None
        probe = Probe(
            len(self.probes),
            target,
            str(len(self.probes)),
            trio.current_time(),
            {m.index for m in observers if m is not target},
        )
        self.probes.append(probe)
        self._open.append(probe)
        target.node.set_labels({**target.node.capabilities.labels, PROBE_LABEL: probe.value})
        return probe

    def changed(self, machine: Machine) -> None:
        if not self._open:
            return
        index = machine.index
        for probe in self._open:
            if index in probe.observers and index not in probe.seen and probe.holds(machine):
                probe.seen[index] = trio.current_time() - probe.started
        self._open = [p for p in self._open if len(p.seen) < len(p.observers)]

    def close_probes(self) -> None:
        self._open = []
