"""One simulation run, phase by phase, inside trio under MockClock.

    boot      machines start one after another over the join window (seeds first) and
              join through the seeds; the phase ends when every node sees every node alive
    active    `--seconds` of scheduled events: first the quiet part (steady-state traffic
              and convergence probes, nothing else), then job submissions, crashes,
              restarts and partitions as planned; traffic and document size are sampled
    settle    partitions healed; wait (at most `--settle`) until every job that can finish
              has finished and no node is running anything
    freeze    every node stops writing (no heartbeats, no job decisions); any `--inject`
              fault is written first
    converge  push-pull rounds with random peers (Node.exchange, the anti-entropy step)
              until every live node holds the same state vector
    facts     the end state is read out for the invariant checks and the report
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import trio

from crdt_state.state_vector import decode_state_vector
from pack_manager.jobstate import CLAIMED, RUNNING, SUCCEEDED

from .facts import Submitted, collect, orphan_claims, runs_by_job
from .faults import FaultPlan, plan_faults
from .invariants import FinalFacts, check_all
from .options import SimOptions
from .recorder import Recorder
from .workload import Submission, plan_jobs, submit
from .world import Machine, World

SAMPLE_EVERY_S = 1.0
DOC_SIZE_EVERY_S = 5.0
STEADY_SKIP_S = 2.0  # the first seconds after boot still carry the join's traffic
MAX_CONVERGE_ROUNDS = 60


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
    partitions: list[tuple[float, float, frozenset[str]]] = field(default_factory=list)  # (from, to, minority ids)
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
            print(f"[sim {trio.current_time():8.1f} s | real {time.perf_counter() - self.real_start:8.1f} s] "
                  f"{phase}, {up} nodes up", file=sys.stderr, flush=True)


async def simulate(options: SimOptions, root: Path) -> RunRecord:
    rng = random.Random(options.seed)
    run = RunRecord(options, FaultPlan((), (), ()))
    async with trio.open_nursery() as nursery:
        world = World(options, rng, root, nursery, run.recorder.logged, run.recorder.changed)
        run.world = world
        run.plan = plan_faults(options, rng)
        jobs = plan_jobs(options, rng)
        for index in run.plan.slow:
            world.make_slow(world.machines[index])
        await _timed(run, "boot", lambda: boot(world, run))
        await _timed(run, "active", lambda: active_phase(world, run, jobs))
        await _timed(run, "settle", lambda: settle(world, run))
        for name in options.inject:
            run.injected.append(inject(world, run, name))
        orphans = orphan_claims(world)
        world.freeze()
        await _timed(run, "converge", lambda: converge(world, run, rng))
        started = time.perf_counter()
        run.facts = collect(world, run.submitted, run.partitions, orphans, lost_state(world, run))
        run.violations = check_all(run.facts)
        run.real_s["facts"] = time.perf_counter() - started
        run.end = trio.current_time()
        nursery.cancel_scope.cancel()
    return run


async def _timed(run: RunRecord, phase: str, body: Callable[[], Awaitable[None]]) -> None:
    started = time.perf_counter()
    await body()
    run.real_s[phase] = time.perf_counter() - started


# ---- boot ------------------------------------------------------------------------------------


def everyone_sees_everyone(world: World) -> bool:
    now = trio.current_time()
    total = len(world.machines)
    return all(len(m.node.membership.alive_ids(now)) == total for m in world.up() if m.node is not None)


async def boot(world: World, run: RunRecord) -> None:
    interval = run.options.join_window / max(1, len(world.machines))
    for machine in world.machines:
        await world.start(machine)
        if interval:
            await trio.sleep(interval)
    limit = trio.current_time() + 60.0 + 0.1 * len(world.machines)
    while not everyone_sees_everyone(world):
        run.progress("boot: waiting until every node sees every node alive")
        if trio.current_time() > limit:
            return  # joined_at stays None: the report says the cluster never fully formed
        await trio.sleep(0.5)
    run.joined_at = trio.current_time()


# ---- the active phase ------------------------------------------------------------------------


async def active_phase(world: World, run: RunRecord, jobs: list[Submission]) -> None:
    options = run.options
    t0 = run.active_start = trio.current_time()
    events: list[tuple[float, int, Callable[[], Awaitable[None] | None]]] = []

    def at(seconds: float, action: Callable[[], Awaitable[None] | None]) -> None:
        events.append((seconds, len(events), action))

    samples = int(options.seconds / SAMPLE_EVERY_S)
    sampler = Sampler(world, run)
    for step in range(1, samples + 1):
        at(step * SAMPLE_EVERY_S, sampler.sample)
    steady_from = min(STEADY_SKIP_S, options.quiet / 2)
    at(steady_from, sampler.steady_start)
    at(options.quiet, sampler.steady_end)
    for number in range(options.probes):
        at(options.quiet * (number + 1) / (options.probes + 1), lambda: probe(world, run))
    for crash in run.plan.crashes:
        at(crash.at_s, _crash_action(world, run, crash.machine, crash.wipe))
        if crash.restart_at_s is not None:
            at(crash.restart_at_s, _restart_action(world, run, crash.machine))
    for partition in run.plan.partitions:
        at(partition.start_s, _partition_action(world, run, partition.minority, partition.end_s - partition.start_s))
        at(partition.end_s, world.network.heal)
    for job in jobs:
        at(job.at_s, _submit_action(world, run, job))
    events.sort(key=lambda event: (event[0], event[1]))
    for seconds, _, action in events:
        await trio.sleep_until(t0 + seconds)
        result = action()
        if result is not None:
            await result
    await trio.sleep_until(t0 + options.seconds)
    run.recorder.close_probes()


class Sampler:
    """Traffic per node per second and the document's size, on a fixed simulated schedule."""

    def __init__(self, world: World, run: RunRecord) -> None:
        self.world = world
        self.run = run
        self.last = (trio.current_time(), world.network.stats.bytes)
        self.steady: tuple[float, int] | None = None

    def sample(self) -> None:
        now, sent = trio.current_time(), self.world.network.stats.bytes
        up = self.world.up()
        since, before = self.last
        if up and now > since:
            self.run.traffic.append((round(now - self.run.active_start, 3), (sent - before) / len(up) / (now - since)))
        self.last = (now, sent)
        self.run.progress("active")
        elapsed = now - self.run.active_start
        if up and up[0].node is not None and round(elapsed / SAMPLE_EVERY_S) % round(DOC_SIZE_EVERY_S / SAMPLE_EVERY_S) == 0:
            self.run.doc_sizes.append((round(elapsed, 3), len(up[0].node.document.full_state())))

    def steady_start(self) -> None:
        self.steady = (trio.current_time(), self.world.network.stats.bytes)

    def steady_end(self) -> None:
        if self.steady is None:
            return
        since, before = self.steady
        self.run.steady_bytes = (since - self.run.active_start, trio.current_time() - self.run.active_start,
                                 self.world.network.stats.bytes - before, len(self.world.up()))


def probe(world: World, run: RunRecord) -> None:
    up = world.up()
    target = world.rng.choice(up)
    run.recorder.start_probe(target, up)


def _crash_action(world: World, run: RunRecord, index: int, wipe: bool) -> Callable[[], None]:
    def crash() -> None:
        machine = world.machines[index]
        if machine.up:
            node_hex = machine.identity.node_hex
            run.crashes.append(CrashRecord(index, node_hex, trio.current_time(), world.crash(machine, wipe=wipe), wipe))

    return crash


def _restart_action(world: World, run: RunRecord, index: int) -> Callable[[], Awaitable[None] | None]:
    def restart() -> Awaitable[None] | None:
        machine = world.machines[index]
        if machine.up:
            return None
        for record in reversed(run.crashes):
            if record.machine == index:
                record.restarted_at = trio.current_time()
                break
        return world.start(machine)

    return restart


def _partition_action(world: World, run: RunRecord, minority: tuple[int, ...], length: float) -> Callable[[], None]:
    def split() -> None:
        small = {world.machines[i].address for i in minority}
        rest = [m.address for m in world.machines if m.address not in small]
        world.network.partition(small, rest)
        now = trio.current_time()
        run.partitions.append((now, now + length, frozenset(world.machines[i].identity.node_hex for i in minority)))

    return split


def _submit_action(world: World, run: RunRecord, job: Submission) -> Callable[[], None]:
    def send() -> None:
        count = len(world.machines)
        for offset in range(count):
            machine = world.machines[(job.machine + offset) % count]
            if machine.up:
                run.submitted.append(Submitted(submit(machine, job), job, machine.index, machine.identity.node_hex,
                                               trio.current_time()))
                return
        run.not_accepted += 1

    return send


def lost_state(world: World, run: RunRecord) -> dict[str, list[float]]:
    """Node id -> when its state was lost for good: a wipe, or a crash it never came back from."""
    lost: dict[str, list[float]] = {}
    for crash in run.crashes:
        if crash.wiped or crash.restarted_at is None:
            lost.setdefault(crash.node_hex, []).append(crash.at)
    return lost


# ---- settle, inject, converge ------------------------------------------------------------------


def finished(world: World, run: RunRecord) -> bool:
    """Every job that can still finish has, as the first live node sees it, and nothing runs."""
    up = world.up()
    if not up or any(m.loop is not None and m.loop.running for m in up):
        return not up
    document = up[0].node.document
    runs = runs_by_job(document)
    alive = {m.index for m in up}
    for item in run.submitted:
        if document.get("jobs", item.job_hex) is None:
            if item.machine in alive:
                return False
            continue  # its only copy is on a machine that is down
        if not any(r.final for r in runs.get(item.job_hex, {}).values()):
            return False
    return True


async def settle(world: World, run: RunRecord) -> None:
    world.network.heal()
    limit = trio.current_time() + run.options.settle
    while not finished(world, run):
        run.progress("settle: waiting for the jobs to finish")
        if trio.current_time() >= limit:
            return  # settled_at stays None; the invariants will say what is unfinished
        await trio.sleep(1.0)
    run.settled_at = trio.current_time()


def inject(world: World, run: RunRecord, name: str) -> str:
    """Break an invariant on purpose, through the real document, so a test can see the
    checker catch it: a second node records a success it never ran (duplicate-success), or
    claims a job without running it (orphan-claim)."""
    up = world.up()
    runs = runs_by_job(up[0].node.document)
    for job_hex, job_runs in sorted(runs.items()):
        winners = [n for n, r in job_runs.items() if r.state == SUCCEEDED]
        if len(winners) != 1:
            continue
        for machine in up:
            if machine.identity.node_hex in job_runs:
                continue
            loop = machine.loop
            assert loop is not None
            report = loop.write_run(job_hex, None, CLAIMED, attempt=1, reason=f"injected by the simulation ({name})")
            if name == "duplicate-success":
                report = loop.write_run(job_hex, report, RUNNING, reason="injected")
                loop.write_run(job_hex, report, SUCCEEDED, reason="injected", result_digest=job_runs[winners[0]].result_digest)
            return f"{name}: n{machine.index} on job {job_hex[:12]}"
    return f"{name}: no succeeded job to inject into"


def state_vectors_agree(machines: list[Machine]) -> bool:
    vectors = {tuple(sorted(decode_state_vector(m.node.document.state_vector()).items())) for m in machines if m.node}
    return len(vectors) <= 1


async def converge(world: World, run: RunRecord, rng: random.Random) -> None:
    up = world.up()
    for rounds in range(MAX_CONVERGE_ROUNDS + 1):
        if state_vectors_agree(up):
            run.converge_rounds = rounds
            return
        if len(up) < 2:
            return
        async with trio.open_nursery() as nursery:
            for machine in up:
                assert machine.node is not None
                nursery.start_soon(machine.node.exchange, _other(rng, up, machine).address)


def _other(rng: random.Random, machines: list[Machine], machine: Machine) -> Machine:
    while True:
        peer = rng.choice(machines)
        if peer is not machine:
            return peer
