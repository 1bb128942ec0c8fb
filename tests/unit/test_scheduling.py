"""The job decisions each node makes alone: claim, decline, yield, take over, give up, status."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scheduling_views import NODES, actions, capacity, caps, cluster, job, spec, view

from metrics_agent.capacity import Reservation
from metrics_agent.units import GIB
from pack_manager.jobspec import JobSpec
from pack_manager.jobstate import (
    CLAIMED,
    DECLINED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    YIELDED,
    RunReport,
    TransitionError,
    advance,
)
from pack_manager.requirements import WorkloadRequirements
from pack_manager.scheduling import (
    Claim,
    Decline,
    GiveUp,
    JobView,
    Stop,
    Yield,
    decide,
    job_status,
    order_nodes,
)


def test_only_the_top_ranked_node_claims():
    j = job()
    nodes = cluster()
    first = order_nodes(j, nodes)[0]
    result = actions(j, nodes)
    assert isinstance(result[first], Claim) and result[first].attempt == 1
    assert all(result[n] is None for n in nodes if n != first)


def test_top_node_without_capacity_declines_then_the_next_claims():
    j = job(spec(memory="6GiB"))
    nodes = cluster()
    first, second, _ = order_nodes(j, nodes)
    busy = capacity(nodes[first].capabilities, [Reservation(memory_bytes=4 * GIB)])
    verdict = decide(j, nodes, first, busy)
    assert verdict == Decline(("memory: needs 6.0 GiB, 4.0 GiB available of 8.0 GiB",))
    # Before the decline is seen, the second node still waits for the first (its gossiped capacity fits).
    assert decide(j, nodes, second, nodes[second].capacity) is None
    declined = RunReport(DECLINED, 1, "; ".join(verdict.reasons), updated_ms=2000)
    j2 = job(j.spec, {first: declined})
    assert isinstance(decide(j2, nodes, second, nodes[second].capacity), Claim)
    # The first does not rewrite the same decline every tick.
    assert decide(j2, nodes, first, busy) is None


def test_gossiped_capacity_that_cannot_fit_passes_the_turn_without_a_decline():
    j = job(spec(memory="6GiB"))
    nodes = cluster()
    first, second, _ = order_nodes(j, nodes)
    nodes[first] = view(held=[Reservation(memory_bytes=4 * GIB)])
    assert isinstance(decide(j, nodes, second, nodes[second].capacity), Claim)


def test_conflicting_claims_better_ranked_wins():
    j = job()
    nodes = cluster()
    first, second, _ = order_nodes(j, nodes)
    runs = {first: RunReport(RUNNING, 1), second: RunReport(CLAIMED, 1)}
    j2 = job(j.spec, runs)
    assert isinstance(decide(j2, nodes, second, None), Yield)
    assert decide(j2, nodes, first, None) is None


def test_dead_claimant_is_replaced_with_the_next_attempt():
    j = job()
    first, second, third = order_nodes(j, cluster())
    nodes = cluster(**{})
    nodes[first] = view(status="dead")
    j2 = job(j.spec, {first: RunReport(RUNNING, 1)})
    result = actions(j2, nodes)
    assert result[second] == Claim(2, result[second].reason) and "taking over" in result[second].reason
    assert result[third] is None and result[first] is None


def test_attempts_are_bounded():
    j = job()
    first, second, third = order_nodes(j, cluster())
    nodes = cluster()
    nodes[first] = view(status="dead")
    nodes[second] = view(status="dead")
    runs = {first: RunReport(RUNNING, 1), second: RunReport(RUNNING, 2)}
    verdict = decide(job(j.spec, runs), nodes, third, nodes[third].capacity, max_attempts=2)
    assert isinstance(verdict, GiveUp) and "gave up after 2 attempts" in verdict.reason


def test_replicas_run_on_the_first_k():
    j = job(spec(replicas=2))
    nodes = cluster()
    order = order_nodes(j, nodes)
    result = actions(j, nodes)
    assert [n for n in order if isinstance(result[n], Claim)] == order[:2]


def test_cancel_stops_the_runner_and_nobody_claims():
    j = job()
    nodes = cluster()
    first = order_nodes(j, nodes)[0]
    assert all(a is None for a in actions(job(j.spec, cancelled=True), nodes).values())
    running = job(j.spec, {first: RunReport(RUNNING, 1)}, cancelled=True)
    assert isinstance(decide(running, nodes, first, None), Stop)
    assert job_status(job(j.spec, cancelled=True), nodes).state == "cancelled"


def test_unschedulable_with_reasons_and_schedulable_again_when_a_node_joins():
    j = job(spec(memory="64GiB"))
    nodes = cluster()
    status = job_status(j, nodes)
    assert status.state == "unschedulable"
    assert "memory: needs 64.0 GiB, node has 8.0 GiB" in status.reason and len(status.reasons) == 3
    nodes[bytes([9]) * 32] = view(caps(memory=128 * GIB))
    assert job_status(j, nodes).state == "queued"
    assert isinstance(decide(j, nodes, bytes([9]) * 32, nodes[bytes([9]) * 32].capacity), Claim)


def test_status_follows_the_runs():
    j = job(spec(replicas=2))
    nodes = cluster()
    a, b, _ = order_nodes(j, nodes)
    assert job_status(j, nodes).state == "queued"
    assert job_status(job(j.spec, {a: RunReport(RUNNING, 1)}), nodes).state == "running"
    d = "ab" * 32
    done = {a: RunReport(SUCCEEDED, 1, result_digest=d), b: RunReport(SUCCEEDED, 1, result_digest=d)}
    status = job_status(job(j.spec, done), nodes)
    assert status.state == "succeeded" and status.verified and status.node == a
    differ = {a: done[a], b: RunReport(SUCCEEDED, 1, result_digest="cd" * 32)}
    status = job_status(job(j.spec, differ), nodes)
    assert status.state == "succeeded" and not status.verified
    failed = {a: done[a], b: RunReport(FAILED, 1, "exit code 1")}
    assert job_status(job(j.spec, failed), nodes).state == "failed"


def test_state_machine_moves():
    r = advance(None, CLAIMED, attempt=1, reason="ranked 1")
    r = advance(r, RUNNING)
    r = advance(r, SUCCEEDED, exit_code=0)
    assert r.state == SUCCEEDED and r.attempt == 1 and r.exit_code == 0
    with pytest.raises(TransitionError):
        advance(r, RUNNING)
    with pytest.raises(TransitionError):
        advance(None, SUCCEEDED, attempt=1)  # a result needs a claim first
    with pytest.raises(TransitionError):
        advance(advance(None, DECLINED, attempt=1), SUCCEEDED)
    assert advance(None, RUNNING, attempt=1).active  # a claim that starts at once (inputs held)
    y = advance(advance(None, CLAIMED, attempt=1), YIELDED, reason="lost")
    assert advance(y, CLAIMED, attempt=2).state == CLAIMED


def test_run_report_wire_round_trip_and_validation():
    from metrics_agent.wire import WireError

    r = RunReport(SUCCEEDED, 2, "ok", 1, 2, 3, 0, result_digest="ab" * 32)
    assert RunReport.from_wire(r.to_wire()) == r
    bad = r.to_wire() | {"state": "exploded"}
    with pytest.raises(WireError):
        RunReport.from_wire(bad)
    with pytest.raises(WireError):
        RunReport.from_wire(r.to_wire() | {"result_digest": "zz"})


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    replicas=st.integers(1, 3),
    dead=st.sets(st.integers(0, 7)),
    busy=st.sets(st.integers(0, 7)),
    seed=st.binary(min_size=16, max_size=16),
)
def test_on_one_view_at_most_k_nodes_claim(n, replicas, dead, busy, seed):
    """Same view everywhere -> never more claims than replicas, and someone claims if anyone can."""
    ids = [bytes([i + 1]) * 32 for i in range(n)]
    nodes = {}
    for i, node_id in enumerate(ids):
        held = [Reservation(memory_bytes=7 * GIB)] if i in busy else []
        nodes[node_id] = view(status="dead" if i in dead else "alive", held=held)
    s = JobSpec(
        kind="run",
        submitter=b"s" * 32,
        nonce=seed,
        image="img",
        command=("true",),
        requirements=WorkloadRequirements.from_human(memory="2GiB"),
        replicas=replicas,
    )
    j = job(s)
    result = actions(j, nodes)
    claims = [x for x in result.values() if isinstance(x, Claim)]
    assert len(claims) <= replicas
    able = [i for i in range(n) if i not in dead and i not in busy]
    assert len(claims) == min(replicas, len(able))


def prefer_local_spec(**req):
    requirements = WorkloadRequirements.from_human(memory="1GiB", **req)
    return JobSpec(
        kind="run",
        submitter=NODES[0],
        nonce=os.urandom(16),
        image="localhost/formnet/busybox",
        command=("true",),
        requirements=requirements,
        context="ab" * 32,
        prefer_local_inputs=True,
    )


def test_prefer_local_inputs_ranks_holders_first_and_claims_there():
    for _ in range(20):  # whatever the placement order of the job id
        s = prefer_local_spec()
        plain = order_nodes(job(s), cluster())
        holder = plain[-1]  # the node placement ranks last holds the context
        j = JobView(s.job_id(), s, {}, holdings={holder: 1})
        assert order_nodes(j, cluster())[0] == holder
        assert order_nodes(j, cluster())[1:] == plain[:-1]  # the rest keep the policy's order
        assert {n for n, a in actions(j, cluster()).items() if isinstance(a, Claim)} == {holder}


def test_more_held_blobs_rank_higher_and_without_the_option_holdings_are_ignored():
    s = prefer_local_spec()
    plain = order_nodes(job(s), cluster())
    holdings = {plain[2]: 2, plain[1]: 1}
    assert order_nodes(JobView(s.job_id(), s, {}, holdings=holdings), cluster()) == [
        plain[2],
        plain[1],
        plain[0],
    ]
    unset = JobSpec(
        kind="run",
        submitter=NODES[0],
        nonce=s.nonce,
        image="localhost/formnet/busybox",
        command=("true",),
        requirements=s.requirements,
        context="ab" * 32,
    )
    assert order_nodes(JobView(unset.job_id(), unset, {}, holdings=holdings), cluster()) == order_nodes(
        job(unset), cluster()
    )


def test_a_preferred_label_outweighs_any_number_of_held_blobs():
    s = prefer_local_spec(preferred=["zone=a"])
    plain = order_nodes(job(s), cluster())
    labelled, holder = plain[2], plain[0]
    nodes = cluster(**{})
    nodes[labelled] = view(caps(labels={"zone": "a"}))
    j = JobView(s.job_id(), s, {}, holdings={holder: 50})
    assert order_nodes(j, nodes)[:2] == [labelled, holder]


@settings(max_examples=40, deadline=None)
@given(held=st.dictionaries(st.sampled_from(NODES), st.integers(1, 3)), seed=st.randoms())
def test_the_order_with_holdings_does_not_depend_on_the_order_of_the_views(held, seed):
    s = prefer_local_spec()
    j = JobView(s.job_id(), s, {}, holdings=held)
    items = list(cluster().items())
    seed.shuffle(items)
    assert order_nodes(j, dict(items)) == order_nodes(j, cluster())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40, unique=True),
    st.lists(st.sampled_from(["a", "b"]), max_size=40),
    st.booleans(),
    st.sampled_from(["hashed-xor", "xor"]),
)
def test_order_nodes_is_labels_first_then_the_policy_with_or_without_preferences(ids, labels, prefer, policy):
    from pack_manager.placement import rank, rank_with_preferences

    nodes = {n: view(caps(labels={"zone": labels[i]} if i < len(labels) else {})) for i, n in enumerate(ids)}
    j = job(spec(preferred={"zone": "a"}) if prefer else spec())
    scores = {n: int(prefer and nodes[n].capabilities.labels.get("zone") == "a") for n in ids}
    order = order_nodes(j, nodes, policy)
    assert order == rank_with_preferences(j.job_id, scores, policy)
    if not prefer:  # no preferences: the policy's own order (the fast path)
        assert order == rank(j.job_id, ids, policy)
    else:  # every node matching the preference comes before every other
        matching = [n for n in order if scores[n]]
        assert order[: len(matching)] == matching
