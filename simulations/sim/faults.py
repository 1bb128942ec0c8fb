"""The fault schedule of a run, drawn up front from the run's seeded Random (pure).

- Crashes: `--crash` machines, never the seeds (so a wiped machine can always join again),
  each at a random time in the first half of the fault window; `--restart` of them come back
  `--restart-after` later, `--wipe` of those without their state dir.
- Partitions: as given; the smaller side is a random set of machines of the given share.
- Slow machines: `--slow` machines (never the seeds), slow for the whole run.

Times are seconds from the start of the active phase. The fault window starts after the
quiet part (which measures steady-state traffic and convergence undisturbed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .options import SimOptions
from .world import SEEDS


@dataclass(frozen=True)
class CrashPlan:
    machine: int
    at_s: float
    restart_at_s: float | None  # None: stays down
    wipe: bool


@dataclass(frozen=True)
class PartitionPlan:
    start_s: float
    end_s: float
    minority: tuple[int, ...]  # machine indexes on the smaller side


@dataclass(frozen=True)
class FaultPlan:
    crashes: tuple[CrashPlan, ...]
    partitions: tuple[PartitionPlan, ...]
    slow: tuple[int, ...]


def plan_faults(options: SimOptions, rng: random.Random) -> FaultPlan:
    candidates = list(range(min(SEEDS, options.nodes), options.nodes))
    crash_count = min(options.crash.of(options.nodes), len(candidates))
    crashed = sorted(rng.sample(candidates, crash_count))
    window_start = options.quiet
    window_end = options.quiet + (options.seconds - options.quiet) / 2
    crashes = []
    for machine in crashed:
        at = round(rng.uniform(window_start, window_end), 3)
        comes_back = rng.random() < options.restart
        wipe = comes_back and rng.random() < options.wipe
        restart_at = round(at + options.restart_after, 3) if comes_back else None
        crashes.append(CrashPlan(machine, at, restart_at, wipe))
    partitions = []
    for partition in options.partitions:
        size = max(1, round(partition.minority * options.nodes))
        minority = tuple(sorted(rng.sample(range(options.nodes), min(size, options.nodes - 1))))
        partitions.append(PartitionPlan(partition.start_s, partition.end_s, minority))
    slow_count = min(options.slow.of(options.nodes), len(candidates))
    slow = tuple(sorted(rng.sample(candidates, slow_count)))
    return FaultPlan(tuple(sorted(crashes, key=lambda c: (c.at_s, c.machine))), tuple(partitions), slow)
