"""The active phase of a run: a timeline of scheduled events, run in simulated time.

From the start of the phase: traffic and document-size samples every second; the steady-state
traffic window and the convergence probes inside the quiet part; then crashes, restarts,
partitions and job submissions at their planned times. Events at the same instant run in the
order they were added, so the timeline is the same in every run of a seed.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio

from .facts import Submitted
from .run_record import CrashRecord, RunRecord
from .workload import Submission, submit
from .world import World

SAMPLE_EVERY_S = 1.0
DOC_SIZE_EVERY_S = 5.0
STEADY_SKIP_S = 2.0  # the first seconds after boot still carry the join's traffic


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
        at(
            partition.start_s,
            _partition_action(world, run, partition.minority, partition.end_s - partition.start_s),
        )
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
            self.run.traffic.append(
                (round(now - self.run.active_start, 3), (sent - before) / len(up) / (now - since))
            )
        self.last = (now, sent)
        self.run.progress("active")
        elapsed = now - self.run.active_start
        if (
            up
            and up[0].node is not None
            and round(elapsed / SAMPLE_EVERY_S) % round(DOC_SIZE_EVERY_S / SAMPLE_EVERY_S) == 0
        ):
            self.run.doc_sizes.append((round(elapsed, 3), len(up[0].node.document.full_state())))

    def steady_start(self) -> None:
        self.steady = (trio.current_time(), self.world.network.stats.bytes)

    def steady_end(self) -> None:
        if self.steady is None:
            return
        since, before = self.steady
        self.run.steady_bytes = (
            since - self.run.active_start,
            trio.current_time() - self.run.active_start,
            self.world.network.stats.bytes - before,
            len(self.world.up()),
        )


def probe(world: World, run: RunRecord) -> None:
    """A label change on a random live node that has not been probed yet (two probes on one
    node could overlap, and the second label would hide the first)."""
    up = world.up()
    probed = {p.target.index for p in run.recorder.probes}
    target = world.rng.choice([m for m in up if m.index not in probed] or up)
    run.recorder.start_probe(target, up)


def _crash_action(world: World, run: RunRecord, index: int, wipe: bool) -> Callable[[], None]:
    def crash() -> None:
        machine = world.machines[index]
        if machine.up:
            node_hex = machine.identity.node_hex
            run.crashes.append(
                CrashRecord(index, node_hex, trio.current_time(), world.crash(machine, wipe=wipe), wipe)
            )

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


def _partition_action(
    world: World, run: RunRecord, minority: tuple[int, ...], length: float
) -> Callable[[], None]:
    def split() -> None:
        small = {world.machines[i].address for i in minority}
        rest = [m.address for m in world.machines if m.address not in small]
        world.network.partition(small, rest)
        now = trio.current_time()
        run.partitions.append(
            (now, now + length, frozenset(world.machines[i].identity.node_hex for i in minority))
        )

    return split


def _submit_action(world: World, run: RunRecord, job: Submission) -> Callable[[], None]:
    def send() -> None:
        count = len(world.machines)
        for offset in range(count):
            machine = world.machines[(job.machine + offset) % count]
            if machine.up:
                for job_hex in submit(machine, job):  # one per shard of a sharded job
                    run.submitted.append(
                        Submitted(job_hex, job, machine.index, machine.identity.node_hex, trio.current_time())
                    )
                return
        run.not_accepted += 1

    return send
