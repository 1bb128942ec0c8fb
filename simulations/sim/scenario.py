"""One simulation run, phase by phase, inside trio under MockClock.

boot      machines start one after another over the join window (seeds first) and
          join through the seeds; the phase ends when every node sees every node alive
active    `--seconds` of scheduled events (active.py): the quiet part (steady-state
          traffic, convergence probes), then job submissions, crashes, restarts and
          partitions as planned
settle, inject, freeze, converge   (ending.py; freezing is world.freeze)
facts     the end state is read out for the invariant checks and the report
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Awaitable, Callable

import trio

from crdt_state.records import DIRECT, Openers
from daemon.jobs.placement_orders import OrderNodes
from pack_manager import scheduling

from .active import active_phase
from .ending import converge, inject, settle
from .facts import collect, orphan_claims
from .faults import FaultPlan, plan_faults
from .gc_cost import freeze_survivors
from .invariants import check_all
from .options import SimOptions
from .run_record import RunRecord, lost_state
from .warm_start import warm_start
from .workload import plan_jobs
from .world import World


async def simulate(
    options: SimOptions,
    root: Path,
    openers: Openers = DIRECT,
    order_nodes: OrderNodes = scheduling.order_nodes,
) -> RunRecord:
    """`openers` and `order_nodes`: the pure steps every node runs, shared among the simulated
    nodes when the caller hands in shared ones (shared_verify.py, shared_placement.py)."""
    rng = random.Random(options.seed)
    run = RunRecord(options, FaultPlan((), (), ()))
    async with trio.open_nursery() as nursery:
        world = World(
            options,
            rng,
            root,
            nursery,
            run.recorder.logged,
            run.recorder.changed,
            on_run=run.recorder.ran,
            openers=openers,
            order_nodes=order_nodes,
        )
        run.world = world
        run.plan = plan_faults(options, rng)  # after the world: the seed's draws stay in this order
        jobs = plan_jobs(options, rng)
        for index in run.plan.slow:
            world.make_slow(world.machines[index])
        if options.warm_start:
            warm_start(world.machines, rng, openers)
        await _timed(run, "boot", lambda: boot(world, run))
        freeze_survivors()  # what the boot built lives all run: no collection need walk it again
        await _timed(run, "active", lambda: active_phase(world, run, jobs))
        await _timed(run, "settle", lambda: settle(world, run))
        for name in options.inject:
            run.injected.append(inject(world, run, name))
        orphans = orphan_claims(world)
        world.freeze()
        await _timed(run, "converge", lambda: converge(world, run, rng))
        started = time.perf_counter()
        run.facts = collect(
            world, run.submitted, run.partitions, orphans, lost_state(run), run.recorder.run_edges
        )
        run.violations = check_all(run.facts)
        run.real_s["facts"] = time.perf_counter() - started
        run.end = trio.current_time()
        nursery.cancel_scope.cancel()
    return run


async def _timed(run: RunRecord, phase: str, body: Callable[[], Awaitable[None]]) -> None:
    started = time.perf_counter()
    await body()
    run.real_s[phase] = time.perf_counter() - started


def everyone_sees_everyone(world: World) -> bool:
    now = trio.current_time()
    total = len(world.machines)
    return all(len(m.node.membership.alive_ids(now)) == total for m in world.up() if m.node is not None)


async def boot(world: World, run: RunRecord) -> None:
    interval = run.options.join_window / max(1, len(world.machines))
    for machine in world.machines:
        await world.start(machine)
        if machine.index % 100 == 99:
            run.progress(f"boot: {machine.index + 1} nodes started")
        if interval:
            await trio.sleep(interval)
    limit = trio.current_time() + 60.0 + 0.1 * len(world.machines)
    while not everyone_sees_everyone(world):
        run.progress("boot: waiting until every node sees every node alive")
        if trio.current_time() > limit:
            return  # joined_at stays None: the report says the cluster never fully formed
        await trio.sleep(0.5)
    run.joined_at = trio.current_time()
