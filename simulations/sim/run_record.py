"""Everything one run leaves behind for the report: what happened, when, and the end state."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import trio

from .facts import Submitted
from .faults import FaultPlan
from .invariants import FinalFacts
from .options import SimOptions
from .recorder import Recorder
from .world import World


@dataclass
class CrashRecord:
    machine: int
    node_hex: str  # the identity that crashed
    at: float  # simulated seconds
    running: list[str]  # jobs it was running
    wiped: bool
    restarted_at: float | None = None


@dataclass
class RunRecord:
    options: SimOptions
    plan: FaultPlan
    world: World | None = None
    recorder: Recorder = field(default_factory=Recorder)
    joined_at: float | None = None  # simulated seconds until everyone saw everyone alive
    active_start: float = 0.0
    steady_bytes: tuple[float, float, int, int] | None = None  # (from, to, bytes, nodes)
    traffic: list[tuple[float, float]] = field(default_factory=list)  # (t, bytes per node per s)
    doc_sizes: list[tuple[float, int]] = field(default_factory=list)
    submitted: list[Submitted] = field(default_factory=list)
    not_accepted: int = 0  # submissions that found no machine up
    crashes: list[CrashRecord] = field(default_factory=list)
    partitions: list[tuple[float, float, frozenset[str]]] = field(
        default_factory=list
    )  # (from, to, minority ids)
    settled_at: float | None = None
    converge_rounds: int | None = None
    injected: list[str] = field(default_factory=list)
    facts: FinalFacts | None = None
    violations: dict[str, list[str]] = field(default_factory=dict)
    end: float = 0.0
    real_s: dict[str, float] = field(default_factory=dict)  # wall-clock cost per phase
    real_start: float = field(default_factory=time.perf_counter)

    def progress(self, phase: str) -> None:
        """--progress: one line on stderr. Printed from existing steps only (no task of its
        own), so asking for progress does not change the run."""
        if self.options.progress:
            up = len(self.world.up()) if self.world is not None else 0
            print(
                f"[sim {trio.current_time():8.1f} s | real {time.perf_counter() - self.real_start:8.1f} s] "
                f"{phase}, {up} nodes up",
                file=sys.stderr,
                flush=True,
            )


def lost_state(run: RunRecord) -> dict[str, list[float]]:
    """Node id -> when its state was lost for good: a wipe, or a crash it never came back from."""
    lost: dict[str, list[float]] = {}
    for crash in run.crashes:
        if crash.wiped or crash.restarted_at is None:
            lost.setdefault(crash.node_hex, []).append(crash.at)
    return lost
