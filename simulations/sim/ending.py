"""The end of a run: settle, inject (on request), converge.

settle    partitions healed; wait (at most `--settle`) until every job that can finish has
          finished, as the first live node sees it, and no node runs anything
inject    `--inject`: a live node writes, through its real job loop, records that break an
          invariant, so a test can watch the checker fail
converge  after the world is frozen (no heartbeats, no job decisions): rounds of push-pull
          exchanges with random peers (Node.exchange, the anti-entropy step) until every live
          node holds the same state vector
"""

from __future__ import annotations

import random

import trio

from crdt_state.state_vector import decode_state_vector
from pack_manager.jobstate import CLAIMED, RUNNING, SUCCEEDED

from .facts import runs_by_job
from .run_record import RunRecord
from .world import Machine, World

MAX_CONVERGE_ROUNDS = 60


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
            report = loop.write_run(
                job_hex, None, CLAIMED, attempt=1, reason=f"injected by the simulation ({name})"
            )
            if name == "duplicate-success":
                report = loop.write_run(job_hex, report, RUNNING, reason="injected")
                loop.write_run(
                    job_hex,
                    report,
                    SUCCEEDED,
                    reason="injected",
                    result_digest=job_runs[winners[0]].result_digest,
                )
            return f"{name}: n{machine.index} on job {job_hex[:12]}"
    return f"{name}: no succeeded job to inject into"


def state_vectors_agree(machines: list[Machine]) -> bool:
    encoded = {m.node.document.state_vector() for m in machines if m.node}
    if len(encoded) <= 1:
        return True  # the same bytes: no need to decode 1000 vectors of 2000 writers each round
    # The encoding's entry order is not canonical: equal vectors may differ in bytes.
    return len({tuple(sorted(decode_state_vector(vector).items())) for vector in encoded}) <= 1


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
