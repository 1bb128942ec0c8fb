"""The job loop (daemon/jobs/loop.py) on Node objects over the simulated network under MockClock.

The executor is a stand-in (a gate the test opens), because the subject here is the loop's
protocol: who claims, who yields, who writes what; real executors are exercised by the
real-process tests (tests/integration/test_jobs_loop_cluster.py) and the executor tests.
"""

import os

import blake3
import trio
from sim_nodes import ListStore, Sim, wait_for

from crdt_state.signing import seal_record
from daemon.jobs.blobstore import BlobStore
from daemon.jobs.loop import JobLoop
from daemon.jobs.peer_requests import LiveLogs, PeerRequests
from daemon.transport.memory import SimNetwork
from pack_manager import scheduling
from pack_manager.executors.base import CANCELLED, SUCCEEDED, ExecutionResult
from pack_manager.jobspec import JobInput, JobSpec
from pack_manager.jobstate import RunReport
from pack_manager.placement import rank
from pack_manager.requirements import WorkloadRequirements

MODULE = b'(module (memory (export "memory") 1) (func (export "_start")))'


class Gate:
    """Runs until the test opens the gate (succeeded) or the loop cancels it."""

    name = "wasm"

    def __init__(self):
        self.opened = trio.Event()
        self.started = 0

    async def execute(self, spec, work, log, cancel):
        self.started += 1
        await log("started")
        async with trio.open_nursery() as nursery:

            async def watch(event):
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch, self.opened)
            nursery.start_soon(watch, cancel)
        return ExecutionResult(
            SUCCEEDED if self.opened.is_set() else CANCELLED, "gate" if self.opened.is_set() else "stopped"
        )


def runs(node, job_hex):
    out = {}
    for key, entry in node.document.items("runs").items():
        if key.startswith(job_hex):
            out[key.split(":")[1]] = RunReport.from_wire(entry.body)
    return out


async def start_cluster(nursery, tmp_path, n=3, **loop_options):
    network = SimNetwork(seed=11, latency=(0.001, 0.01))
    sim = Sim(nursery, network)
    addresses = [f"10.0.9.{i}:7946" for i in range(n)]
    loops, gates = {}, {}
    for i, address in enumerate(addresses):
        await start_node(nursery, sim, tmp_path, addresses, i, loops, gates, **loop_options)
    await wait_for(lambda: sim.everyone_sees(addresses, addresses))
    return sim, network, addresses, loops, gates


async def start_node(nursery, sim, tmp_path, addresses, i, loops, gates, **loop_options):
    """Node i with its job loop (in a cancel scope of its own, so a test can crash it)."""
    address = addresses[i]
    node = await sim.start(address, seeds=[a for a in addresses if a != address][:1] if i else [])
    node.wall_clock = lambda: 1.7e9 + trio.current_time()  # wall time that moves with the mock clock
    blobs = BlobStore(tmp_path / f"blobs{i}")
    blobs.put_bytes(MODULE)  # every node holds the module: no fetch needed for it
    node.side_handler = PeerRequests(blobs, LiveLogs()).serve  # peers fetch inputs from here
    gates[address] = Gate()
    loops[address] = JobLoop(node, blobs, tmp_path / f"work{i}", {"wasm": gates[address]}, **loop_options)
    node.on_change = loops[address].wake
    loops[address].configure_document()
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await loops[address].run(task_status=task_status)

    await nursery.start(run)
    sim.loop_scopes = getattr(sim, "loop_scopes", {})
    sim.loop_scopes[address] = scope


def wasm_spec(loop, inputs=()):
    return JobSpec(
        kind="wasm",
        submitter=loop.me,
        nonce=os.urandom(16),
        module=blake3.blake3(MODULE).hexdigest(),
        inputs=tuple(inputs),
        requirements=WorkloadRequirements.from_human(executor="wasm"),
    )


def submit(loop, inputs=(), spec=None):
    spec = spec or wasm_spec(loop, inputs)
    job_hex = spec.job_id().hex()
    loop.node.document.put_local(
        "jobs",
        job_hex,
        seal_record(loop.node.identity.private_key, "job", {"spec": spec.pack(), "submitted_ms": 1}),
    )
    loop.node.commit_local()
    loop.wake()
    return job_hex


def submit_ranked(loops, addresses):
    """A job submitted on the first node: (its id, the address of its top-ranked node, that node's hex id)."""
    job_hex = submit(loops[addresses[0]])
    top = ranked(loops, addresses, job_hex)[0]
    return job_hex, top, loops[top].node.identity.node_hex


def ranked(loops, addresses, job_hex):
    """Addresses in the job's placement order."""
    ids = {loops[a].me: a for a in addresses}
    return [ids[n] for n in rank(bytes.fromhex(job_hex), list(ids))]


async def test_only_the_top_ranked_node_claims_and_others_write_nothing(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        job_hex = submit(loops[addresses[0]])
        top = ranked(loops, addresses, job_hex)[0]
        await wait_for(lambda: gates[top].started == 1)
        gates[top].opened.set()
        top_hex = loops[top].node.identity.node_hex
        await wait_for(
            lambda: all(
                runs(loops[a].node, job_hex).get(top_hex, RunReport("claimed", 1)).state == "succeeded"
                for a in addresses
            )
        )
        for address in addresses:
            assert list(runs(loops[address].node, job_hex)) == [top_hex]
            assert gates[address].started == (1 if address == top else 0)
        nursery.cancel_scope.cancel()


async def test_a_partition_makes_two_claims_and_the_better_ranked_one_wins_after_healing(
    autojump_clock, tmp_path
):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        job_hex = submit(loops[addresses[0]])
        order = ranked(loops, addresses, job_hex)
        top, second = order[0], order[1]
        await wait_for(lambda: gates[top].started == 1)
        # The takeover counts as attempt 2 only if the successor saw the first claim before the cut.
        top_hex = loops[top].node.identity.node_hex
        await wait_for(lambda: top_hex in runs(loops[second].node, job_hex))
        # Cut the runner off: the others see it die and the next one takes over (attempt 2).
        network.partition([top], [a for a in addresses if a != top])
        await wait_for(lambda: gates[second].started == 1)
        second_hex = loops[second].node.identity.node_hex
        # A claim is written once its run has gone on for claim_quiet_s (JobLoop.unpublished).
        await wait_for(lambda: second_hex in runs(loops[second].node, job_hex))
        assert runs(loops[second].node, job_hex)[second_hex].attempt == 2
        network.heal()
        # Both claims meet: the better-ranked claimant keeps the job, the other stops and says why.
        await wait_for(
            lambda: runs(loops[top].node, job_hex).get(second_hex, RunReport("claimed", 1)).state == "yielded"
        )
        reason = runs(loops[top].node, job_hex)[second_hex].reason
        assert "ranks higher" in reason and loops[top].node.identity.node_hex[:12] in reason
        gates[top].opened.set()
        await wait_for(
            lambda: all(runs(loops[a].node, job_hex)[top_hex].state == "succeeded" for a in addresses)
        )
        assert runs(loops[second].node, job_hex)[top_hex].attempt == 1
        assert not loops[second].running and not loops[second].reservations
        nursery.cancel_scope.cancel()


def undecided(loop):
    """Jobs for which a full pass (every job decided afresh) would still act: the incremental
    loop must never leave one behind once the cluster is quiet."""
    nodes = loop.node_views()
    pending = {}
    for job_hex, job in loop.jobs().items():
        action = scheduling.decide(
            job.view(),
            nodes,
            loop.me,
            loop.own_capacity(),
            policy=loop.policy,
            max_attempts=loop.max_attempts,
        )
        if action is not None and not (isinstance(action, scheduling.Claim) and job_hex in loop.running):
            pending[job_hex[:12]] = action
    return pending


async def test_the_incremental_loop_leaves_nothing_a_full_pass_would_do(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        jobs = [submit(loops[addresses[i % 3]]) for i in range(9)]
        await wait_for(lambda: sum(g.started for g in gates.values()) == len(jobs))
        await trio.sleep(5)  # several ticks: capacity reports, heartbeats
        assert {a: undecided(loops[a]) for a in addresses} == {a: {} for a in addresses}
        for gate in gates.values():
            gate.opened.set()

        def all_succeeded():
            return all(
                {r.state for r in runs(loops[a].node, j).values()} == {"succeeded"}
                for a in addresses
                for j in jobs
            )

        await wait_for(all_succeeded)
        assert {a: undecided(loops[a]) for a in addresses} == {a: {} for a in addresses}
        nursery.cancel_scope.cancel()


async def test_a_claim_of_ours_that_comes_back_after_a_restart_without_state_is_yielded(
    autojump_clock, tmp_path
):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        job_hex = submit(loops[addresses[0]])
        top = ranked(loops, addresses, job_hex)[0]
        await wait_for(lambda: gates[top].started == 1)
        top_hex = loops[top].node.identity.node_hex
        others = [a for a in addresses if a != top]
        await wait_for(lambda: all(runs(loops[a].node, job_hex).get(top_hex) is not None for a in others))
        # Crash the runner and bring it back at once with its key but an empty document store:
        # its running claim reaches it again only through gossip, and nothing runs it there.
        sim.crash(top)
        sim.loop_scopes[top].cancel()
        sim.stores[top] = ListStore()
        await trio.sleep(0.5)  # the crashed node's tasks end and free its address
        await start_node(nursery, sim, tmp_path / "again", addresses, addresses.index(top), loops, gates)
        await wait_for(lambda: any(line[0] == "job yielded" for line in sim.logs[top].lines))
        yielded = [line for line in sim.logs[top].lines if line[0] == "job yielded"]
        assert yielded and yielded[0][1]["reason"] == "formd restarted during the run"
        # It is still the top-ranked node: it takes the job up again and runs it to the end.
        await wait_for(lambda: gates[top].started == 1)
        gates[top].opened.set()
        await wait_for(
            lambda: all(runs(loops[a].node, job_hex)[top_hex].state == "succeeded" for a in addresses)
        )
        nursery.cancel_scope.cancel()


def keys(loop):
    return {name: set(loop.node.document.items(name)) for name in ("jobs", "runs", "cancels")}


async def test_finished_jobs_are_retired_once_everywhere_with_their_blobs_and_running_ones_never(
    autojump_clock, tmp_path
):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path, retention_s=30)
        first = addresses[0]
        done = submit(loops[first])
        busy = submit(loops[first])
        while ranked(loops, addresses, busy)[0] == ranked(loops, addresses, done)[0]:
            busy = submit(loops[first])  # the extra jobs run (or wait) like any other
        finisher, keeper = ranked(loops, addresses, done)[0], ranked(loops, addresses, busy)[0]
        await wait_for(lambda: gates[finisher].started >= 1 and gates[keeper].started >= 1)
        gates[finisher].opened.set()
        finisher_hex = loops[finisher].node.identity.node_hex
        await wait_for(
            lambda: all(
                runs(loops[a].node, done).get(finisher_hex, RunReport("claimed", 1)).state == "succeeded"
                for a in addresses
            )
        )
        report = runs(loops[first].node, done)[finisher_hex]
        produced = [o.digest for o in report.outputs] + [report.log_digest]
        assert all(loops[finisher].blobs.has(d) for d in produced)
        await trio.sleep(150)  # retention (30 s) and then some: the finished job goes, the running one stays
        for address in addresses:
            assert done not in loops[address].node.document.items("jobs")
            assert not any(k.startswith(done) for k in loops[address].node.document.items("runs"))
            assert busy in loops[address].node.document.items("jobs")
            assert not any(loops[address].blobs.has(d) for d in produced)
            assert loops[address].blobs.has(
                blake3.blake3(MODULE).hexdigest()
            )  # the running job still needs it
        assert len({frozenset((n, frozenset(k)) for n, k in keys(loops[a]).items()) for a in addresses}) == 1
        deleters = [a for a in addresses if any(line[0] == "jobs retired" for line in sim.logs[a].lines)]
        assert len(deleters) == 1  # one node wrote the delete, the others took it
        # Once the running job ends too, it goes after retention, and nothing it named stays.
        for gate in gates.values():
            gate.opened.set()
        await trio.sleep(150)
        for address in addresses:
            assert keys(loops[address]) == {"jobs": set(), "runs": set(), "cancels": set()}
            assert list(loops[address].blobs.digests()) == []
        nursery.cancel_scope.cancel()


def watch_runs(loop, job_hex, node_hex):
    """Every state of node_hex's run record of the job that loop's document shows, in order,
    with the (mock) time it showed up."""
    seen = []

    def note(map_name, key):
        entry = loop.node.document.get(map_name, key)
        if map_name == "runs" and key == f"{job_hex}:{node_hex}" and entry is not None:
            seen.append((RunReport.from_wire(entry.body), trio.current_time()))

    loop.node.document.watch(note)
    return seen


def states(seen):
    return [report.state for report, _ in seen]


async def test_a_run_that_ends_within_the_quiet_time_writes_one_record(autojump_clock, tmp_path):
    # The quiet time is long here: under the mock clock, time jumps while a worker thread works.
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path, claim_quiet_s=3600)
        job_hex, top, top_hex = submit_ranked(loops, addresses)
        seen = {a: watch_runs(loops[a], job_hex, top_hex) for a in addresses}
        await wait_for(lambda: gates[top].started == 1)
        gates[top].opened.set()
        await wait_for(lambda: all(states(seen[a]) == ["succeeded"] for a in addresses))
        await trio.sleep(3)  # ticks: nothing else of it is written
        for address in addresses:
            [(result, _)] = seen[address]
            assert result.attempt == 1 and 0 < result.started_ms <= result.finished_ms
        assert not loops[top].unpublished and not loops[top].running
        assert list(loops[top].work_dir.iterdir()) == []  # nothing of the run is left behind
        nursery.cancel_scope.cancel()


async def test_a_run_that_goes_on_shows_its_claim_after_the_quiet_time(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        job_hex, top, top_hex = submit_ranked(loops, addresses)
        peer = next(a for a in addresses if a != top)
        seen = watch_runs(loops[peer], job_hex, top_hex)
        await wait_for(lambda: gates[top].started == 1 and states(seen) == ["running"])
        claim, shown_at = seen[0]
        claimed_at = claim.started_ms / 1000 - 1.7e9  # the claim's own time (node.wall_clock), in mock time
        assert shown_at - claimed_at >= loops[top].claim_quiet_s
        gates[top].opened.set()
        await wait_for(lambda: states(seen) == ["running", "succeeded"])
        assert seen[1][0].started_ms == claim.started_ms and seen[1][0].attempt == claim.attempt == 1
        nursery.cancel_scope.cancel()


async def test_a_cancel_stops_a_run_whose_claim_is_not_written_yet(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path, claim_quiet_s=3600)
        job_hex, top, top_hex = submit_ranked(loops, addresses)
        other = loops[next(a for a in addresses if a != top)]
        await wait_for(lambda: gates[top].started == 1)
        assert top_hex not in runs(other.node, job_hex)
        requested_ms = int(other.node.wall_clock() * 1000)  # a real stamp: retention counts from it
        other.node.document.put_local(
            "cancels",
            job_hex,
            seal_record(
                other.node.identity.private_key, "cancel", {"reason": "test", "requested_ms": requested_ms}
            ),
        )
        other.node.commit_local()
        await wait_for(
            lambda: runs(other.node, job_hex).get(top_hex, RunReport("claimed", 1)).state == "cancelled"
        )
        assert not loops[top].running and not loops[top].unpublished and not loops[top].reservations
        nursery.cancel_scope.cancel()


async def test_a_runner_that_cannot_reach_the_inputs_holder_declines_and_the_next_node_runs_it(
    autojump_clock, tmp_path
):
    """The link between the top-ranked node and the submitter (the input's only holder) is down,
    as a firewall between two hosts would have it; both still reach the third node, so
    membership keeps everyone alive. The top node declines for good, saying why, and the next
    node fetches the input and runs the job."""
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        submitter = addresses[0]
        data = os.urandom(4096)
        digest = loops[submitter].blobs.put_bytes(data)
        spec = wasm_spec(loops[submitter], [JobInput("data.bin", digest)])
        while ranked(loops, addresses, spec.job_id().hex())[0] == submitter:
            spec = wasm_spec(loops[submitter], [JobInput("data.bin", digest)])  # ranked first elsewhere
        order = ranked(loops, addresses, spec.job_id().hex())
        top = order[0]
        network.cut(top, submitter)
        job_hex = submit(loops[submitter], spec=spec)
        top_hex = loops[top].node.identity.node_hex

        def top_declined():
            run = runs(loops[submitter].node, job_hex).get(top_hex)
            return run is not None and run.state == "declined"

        await wait_for(top_declined, 600)
        declined = runs(loops[submitter].node, job_hex)[top_hex]
        assert declined.unable and "could not fetch the job's input" in declined.reason
        assert all(loops[submitter].node.peer_status(loops[a].me) == "alive" for a in addresses)
        runner = order[1]
        await wait_for(lambda: gates[runner].started == 1)
        gates[runner].opened.set()
        runner_hex = loops[runner].node.identity.node_hex
        await wait_for(
            lambda: (
                runs(loops[submitter].node, job_hex).get(runner_hex, RunReport("claimed", 1)).state
                == "succeeded"
            )
        )
        assert loops[runner].blobs.path(digest).read_bytes() == data
        assert gates[top].started == 0 and not loops[top].blobs.has(digest)
        nursery.cancel_scope.cancel()


async def test_an_input_no_node_can_fetch_fails_the_job_with_every_nodes_reason(autojump_clock, tmp_path):
    """The submitter (alive) lacks the input itself: each node in turn declines for good, and once
    all have, the job fails once, saying why each did."""
    async with trio.open_nursery() as nursery:
        sim, network, addresses, loops, gates = await start_cluster(nursery, tmp_path)
        lost = blake3.blake3(b"stored nowhere").hexdigest()
        job_hex = submit(loops[addresses[0]], [JobInput("data.bin", lost)])

        def given_up():
            return [r for r in runs(loops[addresses[0]].node, job_hex).values() if r.state == "failed"]

        await wait_for(given_up, 600)
        seen = runs(loops[addresses[0]].node, job_hex)
        (failure,) = given_up()  # once, by one node
        assert failure.reason.startswith("no node could get the job's image or inputs: ")
        assert failure.reason.count("could not fetch the job's input") == 3  # each node's reason
        assert sorted(r.state for r in seen.values()) == ["declined", "declined", "failed"]
        assert all(gate.started == 0 for gate in gates.values())
        nursery.cancel_scope.cancel()
